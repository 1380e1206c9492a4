"""Property-based tests of segnotes.data (hypothesis; profile "segnotes" in tests/conftest.py).

Each property draws inputs (image shapes and dtypes, non-contiguous arrays, palettes, random and
damaged COCO annotations, file trees) and requires the reference's result (Pillow's decoding,
pycocotools' masks, the rendering's own owners map, sha256 of the files) or a TypeError /
ValueError that names the argument, or the file and annotation.
"""
import hashlib
import json
import math

import numpy as np
import pycocotools.mask as mask_utils
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from segnotes.data import CocoInstances, area_ranges, encode_png, render, verify, voc_palette, write_checksums, write_png


def strided(array: np.ndarray, how: str) -> np.ndarray:
    """The same values as ``array`` [H, W, ...], contiguous, transposed twice (Fortran order) or a strided view."""
    if how == "fortran":
        return np.asfortranarray(array)
    if how == "strided":
        wider = np.zeros((array.shape[0], 2 * array.shape[1], *array.shape[2:]), dtype=array.dtype)
        wider[:, ::2] = array
        return wider[:, ::2]
    return array


# ---------------------------------------------------------------- PNG files


LAYOUTS = st.sampled_from(["contiguous", "fortran", "strided"])


@given(hnp.arrays(np.uint8, st.tuples(st.integers(1, 12), st.integers(1, 12), st.just(3))), LAYOUTS)
def test_encode_png_rgb_decodes_to_the_same_pixels(image, how):
    png = encode_png(strided(image, how))
    with Image.open(__import__("io").BytesIO(png)) as decoded:
        assert decoded.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(decoded), image)
    assert png == encode_png(np.ascontiguousarray(image))  # the bytes do not depend on the layout


@st.composite
def palette_images(draw):
    colours = draw(st.integers(1, 256))
    palette = draw(hnp.arrays(np.int64, (colours, 3), elements=st.integers(0, 255)))
    shape = (draw(st.integers(1, 12)), draw(st.integers(1, 12)))
    indices = draw(hnp.arrays(np.uint8, shape, elements=st.integers(0, colours - 1)))
    return indices, palette


@given(palette_images(), LAYOUTS)
def test_encode_png_palette_decodes_to_the_same_indices_and_colours(case, how):
    indices, palette = case
    png = encode_png(strided(indices, how), palette=palette)
    with Image.open(__import__("io").BytesIO(png)) as decoded:
        assert decoded.mode == "P"
        np.testing.assert_array_equal(np.asarray(decoded), indices)
        colours = np.asarray(decoded.getpalette()[: 3 * len(palette)]).reshape(-1, 3)
        np.testing.assert_array_equal(colours, palette)


@given(st.sampled_from([np.float32, np.int64, np.uint16, np.bool_]),
       st.sampled_from([(0, 4, 3), (4, 0, 3), (4, 4), (4, 4, 4)]))
def test_encode_png_refuses_other_dtypes_and_shapes_by_name(dtype, shape):
    with pytest.raises(TypeError, match=r"encode_png: image must have dtype uint8"):
        encode_png(np.zeros((4, 4, 3), dtype=dtype)) if dtype is not np.uint8 else None
    if len(shape) == 3 and shape[2] == 3 and 0 in shape:
        with pytest.raises(ValueError, match=r"encode_png: image must not be empty"):
            encode_png(np.zeros(shape, np.uint8))
    elif len(shape) != 3 or shape[2] != 3:
        with pytest.raises(ValueError, match=r"encode_png: an RGB image must have shape \(H, W, 3\)"):
            encode_png(np.zeros(shape, np.uint8))


@given(palette_images())
def test_encode_png_refuses_indices_past_the_palette(case):
    indices, palette = case
    if len(palette) == 256:
        return
    indices = indices.copy()
    indices[0, 0] = len(palette)
    with pytest.raises(ValueError, match=rf"encode_png: image holds index {len(palette)} but the palette has only "
                                         rf"{len(palette)} colours"):
        encode_png(indices, palette=palette)


@settings(max_examples=15)
@given(hnp.arrays(np.uint8, st.tuples(st.integers(1, 6), st.integers(1, 6), st.just(3))))
def test_write_png_leaves_exactly_the_file(tmp_path_factory, image):
    folder = tmp_path_factory.mktemp("png")
    path = write_png(folder / "a.png", image)
    assert path.read_bytes() == encode_png(image)
    assert [p.name for p in folder.iterdir()] == ["a.png"]  # no temporary file left


# ---------------------------------------------------------------- the rendered shapes


@settings(max_examples=12, deadline=10000)
@given(st.integers(0, 2**31 - 1), st.sampled_from(["train", "val"]), st.integers(0, 10**6),
       st.sampled_from([64, 80]), st.integers(0, 2), st.booleans())
def test_render_is_deterministic_and_its_outputs_agree(seed, split, index, image_size, void_width, handles):
    out = render(seed, split, index, image_size, void_width, handles)
    again = render(seed, split, index, image_size, void_width, handles)
    for a, b in zip(out, again):
        assert (a is None and b is None) or np.array_equal(np.asarray(a), np.asarray(b))
    assert out.image.shape == (image_size, image_size, 3) and out.image.dtype == np.uint8
    labels = set(np.unique(out.label).tolist())
    assert labels <= set(range(10)) | {255}
    # Every labelled pixel (not void, not background) is owned by an annotation of that category.
    category = np.asarray((0,) + tuple(out.category_ids))[out.owners]
    labelled = (out.label != 255) & (out.label != 0)
    np.testing.assert_array_equal(out.label[labelled], category[labelled])
    assert (out.owners[out.label == 0] == 0).all()
    assert len(out.category_ids) == len(out.iscrowd) == len(out.full_areas)


@given(st.integers(1, 4096))
def test_area_ranges_are_cocos_fractions_of_the_image(image_size):
    ranges = area_ranges(image_size)
    scale = image_size**2 / (640 * 480)
    assert ranges["small"] == (0.0, pytest.approx(32**2 * scale)) and ranges["all"] == (0.0, math.inf)
    assert ranges["medium"][0] == ranges["small"][1] and ranges["large"][0] == ranges["medium"][1]
    assert ranges["medium"][1] == pytest.approx(96**2 * scale)


@given(st.one_of(st.integers(-5, 0), st.floats(allow_nan=True), st.text(max_size=2)))
def test_area_ranges_refuse_what_is_not_a_positive_int_by_name(image_size):
    with pytest.raises((TypeError, ValueError), match=r"area_ranges: image_size must be"):
        area_ranges(image_size)


# ---------------------------------------------------------------- COCO files, whole or damaged

SIZE = 12
IMAGE_IDS = (3, 5)


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("coco")
    rng = np.random.default_rng(0)
    for image_id in IMAGE_IDS:
        Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(folder / f"{image_id}.png")
    return folder


DAMAGE = ["none", "image_id", "category_id", "drop_key", "bbox_3", "bbox_nan", "polygon_4", "polygon_odd",
          "runs_long", "runs_short", "runs_negative", "string_cut", "rle_size"]


@st.composite
def annotations(draw):
    """(annotation, expected mask or None) pairs: polygons, compressed and uncompressed RLE."""
    anns = []
    for ann_id in range(1, draw(st.integers(1, 4)) + 1):
        mask = draw(hnp.arrays(np.uint8, (SIZE, SIZE), elements=st.integers(0, 1)))
        rows, cols = np.nonzero(mask)
        if rows.size == 0:
            mask[0, 0], rows, cols = 1, np.array([0]), np.array([0])
        bbox = [float(cols.min()), float(rows.min()), float(cols.max() - cols.min() + 1),
                float(rows.max() - rows.min() + 1)]
        form = draw(st.sampled_from(["compressed", "uncompressed", "polygon"]))
        if form == "polygon":  # the bbox's outline: pycocotools rasterises it
            x, y, w, h = bbox
            segmentation = [[x, y, x + w, y, x + w, y + h, x, y + h]]
        else:
            rle = mask_utils.encode(np.asfortranarray(mask))
            segmentation = {"size": [SIZE, SIZE], "counts": rle["counts"].decode("ascii")}
            if form == "uncompressed":
                flat = mask.flatten(order="F").astype(np.int8)  # runs of 0s and 1s, 0s first
                edges = np.flatnonzero(np.diff(np.r_[0, flat, 1 - flat[-1]]))
                segmentation["counts"] = np.diff(np.r_[0, edges]).tolist()
        anns.append(dict(id=ann_id, image_id=draw(st.sampled_from(IMAGE_IDS)), category_id=draw(st.integers(1, 2)),
                         iscrowd=0, area=float(mask.sum()), bbox=bbox, segmentation=segmentation))
    return anns


def damage(ann: dict, how: str) -> None:
    seg = ann["segmentation"]
    if how == "image_id":
        ann["image_id"] = 99
    elif how == "category_id":
        ann["category_id"] = 7
    elif how == "drop_key":
        del ann["area"]
    elif how == "bbox_3":
        ann["bbox"] = ann["bbox"][:3]
    elif how == "bbox_nan":
        ann["bbox"][1] = math.nan
    elif how == "polygon_4":
        ann["segmentation"] = [[1.0, 1.0, 5.0, 5.0]]
    elif how == "polygon_odd":
        ann["segmentation"] = [[1.0, 1.0, 5.0, 1.0, 5.0, 5.0, 1.0]]
    elif how in ("runs_long", "runs_short", "runs_negative"):
        counts = [SIZE * SIZE - 10, 10] if not isinstance(seg, dict) or not isinstance(seg["counts"], list) \
            else list(seg["counts"])
        counts[-1] += {"runs_long": 3, "runs_short": -1, "runs_negative": -(counts[-1] + 2)}[how]
        ann["segmentation"] = {"size": [SIZE, SIZE], "counts": counts}
    elif how == "string_cut":
        mask = np.zeros((SIZE, SIZE), np.uint8)
        mask[2:9, 3:7] = 1
        text = mask_utils.encode(np.asfortranarray(mask))["counts"].decode("ascii")
        ann["segmentation"] = {"size": [SIZE, SIZE], "counts": text[:-1]}
    elif how == "rle_size":
        ann["segmentation"] = {"size": [SIZE, SIZE + 1], "counts": [SIZE * (SIZE + 1)]}


@settings(max_examples=30)
@given(annotations(), st.sampled_from(DAMAGE), st.data())
def test_coco_instances_give_pycocotools_masks_or_name_the_bad_annotation(image_dir, tmp_path_factory, anns, how,
                                                                          data):
    victim = data.draw(st.integers(0, len(anns) - 1))
    if how != "none":
        damage(anns[victim], how)
    images = [dict(id=i, file_name=f"{i}.png", height=SIZE, width=SIZE) for i in IMAGE_IDS]
    categories = [dict(id=1, name="a"), dict(id=2, name="b")]
    ann_file = tmp_path_factory.mktemp("ann") / "instances.json"
    ann_file.write_text(json.dumps(dict(images=images, annotations=anns, categories=categories)))
    if how != "none":
        # Each damage is refused when the file is opened, naming the file and the annotation.
        with pytest.raises(ValueError, match=rf"CocoInstances: {ann_file}, annotation id {anns[victim]['id']}"):
            CocoInstances(image_dir, ann_file)
        return
    dataset = CocoInstances(image_dir, ann_file)
    for index, image_id in enumerate(IMAGE_IDS):
        _, target = dataset[index]
        mine = [a for a in anns if a["image_id"] == image_id]
        assert target["ann_ids"].tolist() == [a["id"] for a in mine]
        assert target["masks"].dtype == torch.uint8 and (target["masks"] <= 1).all()
        for k, ann in enumerate(mine):
            expected = dataset.coco.annToMask(ann)
            np.testing.assert_array_equal(target["masks"][k].numpy(), expected)
            x, y, w, h = ann["bbox"]
            assert target["boxes"][k].tolist() == [x, y, x + w, y + h]


# ---------------------------------------------------------------- checksums


@settings(max_examples=15)
@given(st.dictionaries(st.sampled_from(["a.png", "b/c.json", "b/d/e.txt", "f"]), st.binary(max_size=64),
                       min_size=1), st.data())
def test_write_checksums_and_verify_agree_with_sha256(tmp_path_factory, files, data):
    root = tmp_path_factory.mktemp("tree")
    for name, content in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(content)
    sums = write_checksums(root, root.parent / f"{root.name}.sha256")
    lines = sums.read_text().splitlines()
    assert lines == [f"{hashlib.sha256(files[n]).hexdigest()}  {n}" for n in sorted(files)]
    assert verify(root, sums) == len(files)
    changed = data.draw(st.sampled_from(sorted(files)))
    (root / changed).write_bytes(files[changed] + b"!")
    with pytest.raises(ValueError, match=rf"verify: files under '{root}' do not match .*1 mismatched: {changed}"):
        verify(root, sums)


def test_voc_palette_is_the_voc_colour_map():
    palette = voc_palette()
    assert palette.shape == (256, 3) and palette.dtype == np.uint8
    assert palette[:3].tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0]] and palette[255].tolist() == [224, 224, 192]
