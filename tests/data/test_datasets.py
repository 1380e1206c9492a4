import contextlib
import io
import json
import re
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from segnotes.data import GROUPS, CocoInstances, ShapesInstances, ShapesSemantic, VOCSemantic, voc_palette

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def _check_target(image, target, height, width):
    assert image.dtype == torch.float32 and image.shape == (3, height, width)
    assert 0.0 <= image.min() and image.max() <= 1.0
    n = target["labels"].shape[0]
    expected = dict(
        boxes=((n, 4), torch.float32),
        labels=((n,), torch.int64),
        masks=((n, height, width), torch.uint8),
        image_id=((), torch.int64),
        area=((n,), torch.float32),
        iscrowd=((n,), torch.int64),
    )
    for key, (shape, dtype) in expected.items():
        assert target[key].shape == shape and target[key].dtype == dtype, key
    return n


# ------------------------------------------------------------------------------ shapes


def test_shapes_instances_items(shapes_root, tiny):
    dataset = ShapesInstances(shapes_root, "train")
    assert len(dataset) == tiny["num_train"]
    assert dataset.ann_file == shapes_root / "train" / "instances.json"
    assert [c["name"] for c in dataset.categories][:3] == ["circle", "ring", "square"]
    for index in range(len(dataset)):
        image, target = dataset[index]
        n = _check_target(image, target, 128, 128)
        assert n >= 2 and target["mask_valid"].dtype == torch.bool and target["mask_valid"].all()
        assert not target["iscrowd"].any()  # crowd dropped by default
        annotations = [a for a in dataset.coco.imgToAnns[int(target["image_id"])] if not a["iscrowd"]]
        for k, annotation in enumerate(annotations):
            x, y, w, h = annotation["bbox"]
            assert target["boxes"][k].tolist() == [x, y, x + w, y + h]
            rle = dict(annotation["segmentation"], counts=annotation["segmentation"]["counts"].encode())
            np.testing.assert_array_equal(target["masks"][k].numpy(), mask_utils.decode(rle))
            assert target["area"][k] == target["masks"][k].sum()
        with Image.open(shapes_root / "train" / "images" / f"{index:06d}.png") as png:
            np.testing.assert_allclose(image.permute(1, 2, 0).numpy() * 255, np.asarray(png), atol=1e-4)


def test_shapes_instances_crowd(shapes_root):
    with_crowd = ShapesInstances(shapes_root, "train", include_crowd=True)
    without = ShapesInstances(shapes_root, "train")
    crowd_counts = [int(with_crowd[i][1]["iscrowd"].sum()) for i in range(len(with_crowd))]
    assert sum(crowd_counts) >= 1
    for i, crowds in enumerate(crowd_counts):
        assert with_crowd[i][1]["labels"].shape[0] == without[i][1]["labels"].shape[0] + crowds


@pytest.mark.parametrize("partial", ["A", "B", (3, 4), [9]])
def test_partial_withholds_exactly_one_groups_masks(shapes_root, partial):
    full = ShapesInstances(shapes_root, "train", include_crowd=True)
    half = ShapesInstances(shapes_root, "train", partial=partial, include_crowd=True)
    ids = GROUPS[partial] if isinstance(partial, str) else partial
    withheld_seen = kept_seen = 0
    for index in range(len(full)):
        _, target = full[index]
        _, partial_target = half[index]
        withheld = torch.tensor([int(c) in ids for c in target["labels"]], dtype=torch.bool)
        assert torch.equal(partial_target["mask_valid"], ~withheld)
        assert torch.equal(partial_target["labels"], target["labels"])  # boxes and labels stay
        assert torch.equal(partial_target["boxes"], target["boxes"])
        assert not partial_target["masks"][withheld].any()
        assert torch.equal(partial_target["masks"][~withheld], target["masks"][~withheld])
        withheld_seen += int(withheld.sum())
        kept_seen += int((~withheld).sum())
    assert withheld_seen > 0 and kept_seen > 0


@pytest.mark.parametrize("partial", [(0,), (10,), [3, "4"], (True,), 3])
def test_partial_rejects_what_is_not_category_ids(shapes_root, partial):
    with pytest.raises(ValueError, match="ShapesInstances: partial must be None, 'A', 'B' or a sequence of category ids"):
        ShapesInstances(shapes_root, "train", partial=partial)


def test_shapes_semantic_items(shapes_root, tiny):
    dataset = ShapesSemantic(shapes_root, "val")
    assert len(dataset) == tiny["num_val"]
    image, label = dataset[1]
    assert image.shape == (3, 128, 128) and image.dtype == torch.float32
    assert label.shape == (128, 128) and label.dtype == torch.int64
    with Image.open(shapes_root / "val" / "labels" / "000001.png") as png:
        np.testing.assert_array_equal(label.numpy(), np.asarray(png))
    assert set(label.unique().tolist()) <= set(range(10)) | {255} and (label == 255).any()


def test_transforms_are_applied(shapes_root):
    def flip(image, target):
        return image.flip(-1), target

    plain, flipped = ShapesSemantic(shapes_root, "train"), ShapesSemantic(shapes_root, "train", transforms=flip)
    assert torch.equal(flipped[0][0], plain[0][0].flip(-1))
    instances = ShapesInstances(shapes_root, "train", transforms=lambda i, t: (i, dict(t, seen=True)))
    assert instances[0][1]["seen"] is True and "mask_valid" in instances[0][1]


def test_missing_or_incomplete_shapes_name_the_command(shapes_root, tmp_path):
    missing = tmp_path / "nothing"
    for cls in (ShapesInstances, ShapesSemantic):
        with pytest.raises(FileNotFoundError, match=f"{cls.__name__}: no shapes data set at {missing}.*"
                           f"segnotes data shapes --root {missing}` or `make data`"):
            cls(missing)
    incomplete = tmp_path / "half"
    incomplete.mkdir()
    meta = json.loads((shapes_root / "meta.json").read_text())
    (incomplete / "meta.json").write_text(json.dumps(dict(meta, complete=False)))
    with pytest.raises(FileNotFoundError, match="is incomplete.*segnotes data shapes --root"):
        ShapesInstances(incomplete)


def test_default_root_is_used(shapes_root, monkeypatch):
    monkeypatch.setenv("SEGNOTES_DATA", str(shapes_root))
    assert len(ShapesSemantic(split="val")) == len(ShapesInstances(split="val"))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(split="test"), r"ShapesInstances: split must be one of \['train', 'val'\], got 'test'"),
        (dict(partial="C"), r"ShapesInstances: partial must be one of \[None, 'A', 'B'\], got 'C'"),
    ],
)
def test_shapes_instances_bad_arguments(shapes_root, kwargs, match):
    with pytest.raises(ValueError, match=match):
        ShapesInstances(shapes_root, **kwargs)


def test_shapes_semantic_bad_transforms(shapes_root):
    with pytest.raises(TypeError, match="ShapesSemantic: transforms must be callable or None, got int 3"):
        ShapesSemantic(shapes_root, transforms=3)


# ------------------------------------------------------------------------------ real COCO layout


@pytest.fixture
def fake_coco(tmp_path):
    """Three JPEG images: polygons, compressed and uncompressed (crowd) RLE, and one without annotations."""
    image_dir = tmp_path / "val2017"
    image_dir.mkdir()
    rng = np.random.default_rng(0)
    images = []
    for image_id, (h, w) in zip((7, 9, 11), ((20, 30), (16, 16), (10, 12))):
        name = f"{image_id:012d}.jpg"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(image_dir / name, quality=90)
        images.append(dict(id=image_id, file_name=name, height=h, width=w))
    square = np.zeros((16, 16), np.uint8)
    square[2:6, 3:9] = 1
    compressed = mask_utils.encode(np.asfortranarray(square))
    compressed["counts"] = compressed["counts"].decode()
    uncompressed = dict(size=[16, 16], counts=[40, 10, 6, 10, 190])  # column-major runs
    annotations = [
        dict(id=1, image_id=7, category_id=1, iscrowd=0, area=60.0, bbox=[2.0, 3.0, 10.0, 6.0],
             segmentation=[[2, 3, 12, 3, 12, 9, 2, 9]]),
        dict(id=2, image_id=7, category_id=2, iscrowd=0, area=12.5, bbox=[15.0, 10.0, 5.0, 5.0],
             segmentation=[[15, 10, 20, 10, 15, 15]]),
        dict(id=3, image_id=9, category_id=2, iscrowd=0, area=24.0, bbox=[3.0, 2.0, 6.0, 4.0],
             segmentation=compressed),
        dict(id=4, image_id=9, category_id=1, iscrowd=1, area=20.0, bbox=[2.0, 8.0, 2.0, 10.0],
             segmentation=uncompressed),
        dict(id=5, image_id=9, category_id=1, iscrowd=0, area=0.0, bbox=[4.0, 4.0, 0.0, 3.0],
             segmentation=[[4, 4, 4, 7, 4, 5]]),  # degenerate box: dropped
    ]
    categories = [dict(id=1, name="thing", supercategory="x"), dict(id=2, name="stuff", supercategory="x")]
    ann_file = tmp_path / "instances_val2017.json"
    ann_file.write_text(json.dumps(dict(images=images, annotations=annotations, categories=categories)))
    return image_dir, ann_file


def test_coco_instances_on_a_real_layout(fake_coco):
    image_dir, ann_file = fake_coco
    dataset = CocoInstances(image_dir, ann_file)
    with contextlib.redirect_stdout(io.StringIO()):
        reference = COCO(str(ann_file))
    assert len(dataset) == 3 and [c["name"] for c in dataset.categories] == ["thing", "stuff"]
    image, target = dataset[0]
    assert _check_target(image, target, 20, 30) == 2
    assert target["boxes"].tolist() == [[2, 3, 12, 9], [15, 10, 20, 15]]
    assert target["labels"].tolist() == [1, 2] and int(target["image_id"]) == 7
    for k, ann_id in enumerate((1, 2)):
        np.testing.assert_array_equal(target["masks"][k].numpy(), reference.annToMask(reference.anns[ann_id]))
    assert target["masks"][0].sum() > 0
    _, target = dataset[1]  # compressed RLE kept; crowd and degenerate dropped
    assert target["labels"].tolist() == [2] and target["iscrowd"].tolist() == [0]
    assert target["masks"][0].sum() == 24 and target["area"].tolist() == [24.0]
    image, target = dataset[2]  # no annotations
    assert _check_target(image, target, 10, 12) == 0


def test_coco_instances_crowd_uncompressed_rle(fake_coco):
    _, target = CocoInstances(*fake_coco, include_crowd=True)[1]
    assert target["iscrowd"].tolist() == [0, 1]
    expected = np.zeros(16 * 16, np.uint8)
    expected[40:50] = expected[56:66] = 1
    np.testing.assert_array_equal(target["masks"][1].numpy(), expected.reshape(16, 16).T)


def test_coco_instances_missing_files(fake_coco, tmp_path):
    image_dir, ann_file = fake_coco
    with pytest.raises(FileNotFoundError, match=f"CocoInstances: annotation file {tmp_path / 'no.json'} not found"):
        CocoInstances(image_dir, tmp_path / "no.json")
    with pytest.raises(FileNotFoundError, match=f"CocoInstances: image folder {tmp_path / 'nope'} not found"):
        CocoInstances(tmp_path / "nope", ann_file)


# ------------------------------------------------------------------------------ real VOC layout


@pytest.fixture
def fake_voc(tmp_path):
    """VOCdevkit/VOC2012 with two images in train.txt, palette PNG labels holding 255."""
    voc = tmp_path / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    labels = {}
    for name in ("2007_000032", "2007_000039"):
        Image.fromarray(rng.integers(0, 256, (12, 17, 3), dtype=np.uint8)).save(voc / "JPEGImages" / f"{name}.jpg")
        label = rng.choice(np.array([0, 1, 15, 255], np.uint8), size=(12, 17))
        png = Image.fromarray(label, mode="P")
        png.putpalette(voc_palette().ravel().tolist())
        png.save(voc / "SegmentationClass" / f"{name}.png")
        labels[name] = label
    (voc / "ImageSets" / "Segmentation" / "train.txt").write_text("2007_000032\n2007_000039\n")
    return tmp_path, labels


def test_voc_semantic_on_a_real_layout(fake_voc):
    root, labels = fake_voc
    dataset = VOCSemantic(root, image_set="train")
    assert len(dataset) == 2
    image, label = dataset[1]
    assert image.shape == (3, 12, 17) and image.dtype == torch.float32 and image.max() <= 1.0
    assert label.dtype == torch.int64
    np.testing.assert_array_equal(label.numpy(), labels["2007_000039"])
    assert (label == 255).any()
    flipped = VOCSemantic(root, transforms=lambda i, t: (i.flip(-1), t.flip(-1)))
    assert torch.equal(flipped[1][1], label.flip(-1))


def test_voc_semantic_missing(tmp_path):
    expected = tmp_path / "VOCdevkit" / "VOC2012"
    with pytest.raises(FileNotFoundError, match=f"VOCSemantic: no VOC2012 at {re.escape(str(expected))} .*; download it with"):
        VOCSemantic(tmp_path)
    with pytest.raises(TypeError, match="VOCSemantic: root must be a str or os.PathLike, got NoneType None"):
        VOCSemantic(None)


# ------------------------------------------------------------------------------ COCO as label maps


def test_coco_semantic_paints_small_over_large_and_crowd_as_void(coco_folder):
    from segnotes.data import CocoSemantic

    instances = CocoInstances(coco_folder / "train", coco_folder / "annotations" / "instances_train.json",
                              include_crowd=True)
    dataset = CocoSemantic(instances, labels={3: 1, 7: 2})
    assert len(dataset) == len(instances)
    for index in range(len(dataset)):
        image, label = dataset[index]
        _, target = instances[index]
        assert label.shape == image.shape[1:] and label.dtype == torch.int64
        expected = torch.zeros_like(label)
        for k in torch.argsort(target["masks"].flatten(1).sum(1), descending=True, stable=True).tolist():
            value = 255 if target["iscrowd"][k] else {3: 1, 7: 2}[int(target["labels"][k])]
            expected[target["masks"][k].bool()] = value
        assert torch.equal(label, expected)
    assert (dataset[1][1] == 255).any()  # the fixture's crowd region
    identity = CocoSemantic(instances)  # labels default to the category ids
    assert set(identity[0][1].unique().tolist()) <= {0, 3, 7, 255}
    with pytest.raises(TypeError, match="CocoSemantic: instances must be a CocoInstances"):
        CocoSemantic([1, 2])


def test_coco_files_are_checked(tmp_path, coco_folder):
    import shutil

    root = tmp_path / "c"
    shutil.copytree(coco_folder, root)
    ann = root / "annotations" / "instances_train.json"
    ann.write_text("{not json")
    with pytest.raises(ValueError, match=f"CocoInstances: {re.escape(str(ann))} is not a JSON file"):
        CocoInstances(root / "train", ann)
    ann.write_text(json.dumps({"annotations": []}))
    with pytest.raises(ValueError, match="is not a COCO annotation file \\(no 'images' list\\)"):
        CocoInstances(root / "train", ann)
    (root / "train" / "train_000.jpg").write_bytes(b"not a jpeg")
    shutil.copy(coco_folder / "annotations" / "instances_train.json", ann)
    with pytest.raises(OSError, match="CocoInstances: cannot read the image .*train_000.jpg"):
        CocoInstances(root / "train", ann).check_files()


# ------------------------------------------------------------------------------ hostile files (issue 22)


def _rewrite(ann_file, change):
    dataset = json.loads(ann_file.read_text())
    change(dataset)
    ann_file.write_text(json.dumps(dataset))


def _set_annotation(index, **values):
    return lambda dataset: dataset["annotations"][index].update(values)


def _drop_key(index, key):
    return lambda dataset: dataset["annotations"][index].pop(key)


@pytest.mark.parametrize("change, message", [
    # finding 9: an annotation of an image that is not listed was dropped silently
    (_set_annotation(0, image_id=99), r"annotation id 1 has image_id 99, which the file's images do not list"),
    (_set_annotation(1, segmentation=[[15, 10, 20, 10]]),
     r"annotation id 2: segmentation\[0\] must be a polygon of at least 3 points \(an even number of coordinates, "
     r"6 or more\), got 4 numbers"),
    (_drop_key(2, "bbox"), r"annotation id 3 is missing the keys \['bbox'\]"),
    (_set_annotation(0, bbox=[2.0, 3.0, 10.0]),
     r"annotation id 1: bbox must be \[x, y, width, height\], four finite numbers with width and height >= 0, "
     r"got \[2.0, 3.0, 10.0\]"),
    (_set_annotation(1, category_id=7), r"annotation id 2 has category_id 7, which the file's categories do not list"),
    # finding 2: RLE runs adding up to more than the image made uint8 masks holding up to 255
    (_set_annotation(3, segmentation={"size": [16, 16], "counts": [42, 8, 0, 10, 10, 10, 10, 10, 10, 246]}),
     r"annotation id 4: segmentation run lengths add up to 356, not height \* width = 16 \* 16 = 256"),
    (_set_annotation(2, segmentation={"size": [16, 16], "counts": "1R"}),
     r"annotation id 3: segmentation\['counts'\] is not a compressed RLE string"),
    (_set_annotation(2, segmentation={"size": [20, 30], "counts": [600]}),
     r"annotation id 3: segmentation has size \[20, 30\], but image 9 is \[16, 16\] \(height, width\)"),
])
def test_coco_instances_names_the_file_and_annotation_of_a_bad_annotation(fake_coco, change, message):
    image_dir, ann_file = fake_coco
    _rewrite(ann_file, change)
    with pytest.raises(ValueError, match=rf"CocoInstances: {ann_file}, " + message):
        CocoInstances(image_dir, ann_file, include_crowd=True)


def _truncate(path):
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


def test_truncated_images_name_their_file(fake_coco, fake_voc, shapes_root, tmp_path):
    # Issue 22, finding 13: "OSError: image file is truncated" did not say which file.
    image_dir, ann_file = fake_coco
    _truncate(image_dir / f"{9:012d}.jpg")
    with pytest.raises(OSError, match=rf"CocoInstances: cannot read the image {image_dir / f'{9:012d}.jpg'}: "):
        CocoInstances(image_dir, ann_file)[1]
    root, _ = fake_voc
    label = root / "VOCdevkit" / "VOC2012" / "SegmentationClass" / "2007_000039.png"
    _truncate(label)
    with pytest.raises(OSError, match=rf"VOCSemantic: cannot read the label {label}: "):
        VOCSemantic(root)[1]
    copy = tmp_path / "shapes_copy"
    shutil.copytree(shapes_root, copy)
    _truncate(copy / "val" / "images" / "000001.png")
    with pytest.raises(OSError, match=rf"ShapesSemantic: cannot read the image {copy / 'val' / 'images' / '000001.png'}: "):
        ShapesSemantic(copy, "val")[1]


def test_a_label_of_another_size_than_its_image_is_refused(fake_voc):
    # Issue 22, finding 8: it was returned beside its image without complaint.
    root, _ = fake_voc
    label = root / "VOCdevkit" / "VOC2012" / "SegmentationClass" / "2007_000032.png"
    png = Image.fromarray(np.zeros((12, 16), np.uint8), mode="P")
    png.putpalette(voc_palette().ravel().tolist())
    png.save(label)
    with pytest.raises(ValueError, match=rf"VOCSemantic: label {label} is 12 x 16 pixels \(H x W\), but its image is "
                                         r"12 x 17"):
        VOCSemantic(root)[0]
