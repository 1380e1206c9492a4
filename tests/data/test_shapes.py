import contextlib
import hashlib
import io
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from segnotes.data import (
    CATEGORIES,
    GROUPS,
    HANDLE_IN_MASK,
    area_ranges,
    default_root,
    ensure_shapes,
    generate,
    render,
    statistics,
    verify,
    write_checksums,
)
from segnotes.data import shapes

# pycocotools' decode trips a NumPy 2 deprecation warning inside the library
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def _hashes(root: Path) -> dict:
    files = (p for p in root.rglob("*") if p.is_file())
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def _coco(path) -> COCO:
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


def _owners_from_masks(coco: COCO, image_id: int, size: int) -> np.ndarray:
    """The owner map rebuilt from the instance masks (crowd included): 0 background, else annotation id."""
    owners = np.zeros((size, size), np.int64)
    total = np.zeros((size, size), np.int64)
    for annotation in coco.imgToAnns[image_id]:
        mask = coco.annToMask(annotation).astype(bool)
        owners[mask] = annotation["id"]
        total += mask
    assert total.max() <= 1, "instance masks overlap"
    return owners


def _boundary(owners: np.ndarray) -> np.ndarray:
    """Pixels with an owner painted above theirs in their 3x3 neighbourhood (outside the image ignored)."""
    x = torch.from_numpy(owners).double()[None, None]
    high = F.max_pool2d(x, 3, stride=1, padding=1)
    return (high > x)[0, 0].numpy()


# ------------------------------------------------------------------------------ categories and ranges


def test_categories_and_groups():
    assert [c["id"] for c in CATEGORIES] == list(range(1, 10))
    names = {c["name"]: c for c in CATEGORIES}
    assert set(names) == {"circle", "ring", "square", "frame", "triangle", "star", "crescent", "cross", "bar"}
    assert set(GROUPS["A"]) & set(GROUPS["B"]) == set()
    assert sorted(GROUPS["A"] + GROUPS["B"]) == list(range(1, 10))
    for c in CATEGORIES:
        assert c["id"] in GROUPS[c["group"]]
    # look-alikes sit in different groups
    for a, b in [("circle", "square"), ("ring", "frame"), ("triangle", "star"), ("cross", "bar")]:
        assert names[a]["group"] != names[b]["group"]
    assert names["ring"]["supercategory"] == names["frame"]["supercategory"] == "holed"


def test_area_ranges_scale_coco_thresholds_by_image_area():
    ranges = area_ranges(128)
    s, m = 32**2 * 128**2 / (640 * 480), 96**2 * 128**2 / (640 * 480)
    assert ranges == {"all": (0, math.inf), "small": (0, s), "medium": (s, m), "large": (m, math.inf)}
    assert ranges["small"][1] == pytest.approx(54.61, abs=0.01) and ranges["medium"][1] == pytest.approx(491.52)
    with pytest.raises(TypeError, match="area_ranges: image_size must be an int, got float 128.0"):
        area_ranges(128.0)


# ------------------------------------------------------------------------------ rendering


def test_majority_owner_ties_go_to_the_top_most():
    owner2x = np.array(
        [
            [0, 0, 1, 2],
            [1, 1, 2, 1],
            [3, 3, 0, 0],
            [2, 2, 1, 2],
        ]
    )
    # pixel (0,0): {0,0,1,1} tie -> 1; (0,1): {1,2,2,1} tie -> 2; (1,0): {3,3,2,2} tie -> 3; (1,1): {0,0,1,2} -> 0
    np.testing.assert_array_equal(shapes._majority_owner(owner2x), [[1, 2], [3, 0]])
    # a shape alone owns the pixels where it has 2 or more of the 4 samples (a tie with the background wins)
    assert shapes._alone_area(np.array([[1, 1, 1, 0], [0, 0, 0, 0]], bool)) == 1
    assert shapes._alone_area(np.array([[1, 1, 1, 1], [1, 0, 0, 0]], bool)) == 2


def test_render_is_deterministic_and_ignores_global_random_state():
    first = render(3, "val", 5)
    np.random.seed(123)
    torch.manual_seed(123)
    second = render(3, "val", 5)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(render(3, "train", 5).image, first.image)


def test_render_outputs_agree():
    r = render(0, "train", 1)
    assert r.image.shape == (128, 128, 3) and r.image.dtype == np.uint8
    assert r.owners.shape == r.label.shape == (128, 128)
    assert r.owners.max() == len(r.category_ids) == len(r.iscrowd) == len(r.full_areas)
    classes = np.asarray((0,) + r.category_ids)[r.owners]
    keep = r.label != 255
    np.testing.assert_array_equal(r.label[keep], classes[keep])
    np.testing.assert_array_equal(r.label == 255, _boundary(r.owners))
    assert not (render(0, "train", 1, void_width=0).label == 255).any()
    assert render(0, "train", 1, image_size=64).image.shape == (64, 64, 3)


def test_no_instance_below_the_visibility_threshold():
    for index in range(40):
        r = render(0, "train", index)
        assert 2 <= len(r.category_ids) <= 9
        for k, full in enumerate(r.full_areas, start=1):
            visible = int((r.owners == k).sum())
            assert visible >= shapes.MIN_VISIBLE_FRACTION * full and visible >= shapes.MIN_VISIBLE_PIXELS


def test_instances_show_their_shapes():
    """Spot checks of the geometry: rings and frames have holes, bars and crosses are thin."""
    seen = set()
    for index in range(60):
        r = render(0, "train", index)
        for k, (category, crowd) in enumerate(zip(r.category_ids, r.iscrowd), start=1):
            mask = r.owners == k
            name = CATEGORIES[category - 1]["name"]
            if crowd or mask.sum() < r.full_areas[k - 1] or mask.sum() < 150:
                continue  # occluded or small: skip
            rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
            box = mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
            if name in ("ring", "frame"):  # the box centre is background: a hole
                assert not box[box.shape[0] // 2, box.shape[1] // 2], (index, k, name)
            if name in ("bar", "cross"):  # thin: a 3x3... erosion keeps little
                eroded = box[:-4, :-4] & box[4:, 4:] & box[:-4, 4:] & box[4:, :-4] & box[2:-2, 2:-2]
                assert eroded.sum() <= 0.1 * box.sum(), (index, k, name)
            if name in ("circle", "square", "triangle"):  # solid: the centre of the box is inside
                assert box[box.shape[0] // 2, box.shape[1] // 2], (index, k, name)
            seen.add(name)
    assert {"ring", "frame", "bar", "cross", "circle", "square", "triangle"} <= seen


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(split="test"), ValueError, r"render: split must be one of \['train', 'val'\], got 'test'"),
        (dict(index=-1), ValueError, "render: index must be >= 0, got -1"),
        (dict(image_size=48), ValueError, "render: image_size must be >= 64, got 48"),
        (dict(seed=1.0), TypeError, "render: seed must be an int, got float"),
    ],
)
def test_render_bad_inputs(kwargs, error, match):
    with pytest.raises(error, match=match):
        render(**kwargs)


# ------------------------------------------------------------------------------ the files


def test_layout_and_meta(shapes_root, tiny):
    meta = json.loads((shapes_root / "meta.json").read_text())
    assert meta["complete"] is True and meta["generator"] == "segnotes.data.shapes"
    assert meta["arguments"] == dict(tiny, image_size=128, void_width=1)
    assert meta["categories"] == CATEGORIES and meta["groups"] == {k: list(v) for k, v in GROUPS.items()}
    for split, count in (("train", 6), ("val", 4)):
        names = [f"{i:06d}.png" for i in range(count)]
        assert sorted(p.name for p in (shapes_root / split / "images").iterdir()) == names
        assert sorted(p.name for p in (shapes_root / split / "labels").iterdir()) == names
        with Image.open(shapes_root / split / "labels" / names[0]) as label:
            assert label.mode == "P"


def test_regeneration_is_byte_identical_whatever_the_workers(shapes_root, tmp_path, tiny):
    expected = _hashes(shapes_root)
    for name, workers in (("two", 2), ("again", 2), ("inline", 0)):
        root = generate(tmp_path / name, **tiny, workers=workers, progress=False)
        assert _hashes(root) == expected


def test_json_loads_and_every_rle_matches_its_bbox_and_area(shapes_root, tiny):
    for split in ("train", "val"):
        coco = _coco(shapes_root / split / "instances.json")
        assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == [c["name"] for c in CATEGORIES]
        assert len(coco.imgs) == tiny[f"num_{split}"]
        for annotation in coco.anns.values():
            rle = annotation["segmentation"]
            assert isinstance(rle["counts"], str)
            mask = mask_utils.decode(dict(rle, counts=rle["counts"].encode()))
            assert int(mask.sum()) == annotation["area"] > 0
            rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
            tight = [cols[0], rows[0], cols[-1] - cols[0] + 1, rows[-1] - rows[0] + 1]
            assert annotation["bbox"] == tight
            assert list(mask_utils.toBbox(dict(rle, counts=rle["counts"].encode()))) == tight


def test_semantic_labels_agree_with_instance_masks(shapes_root):
    for split in ("train", "val"):
        coco = _coco(shapes_root / split / "instances.json")
        classes = {a["id"]: a["category_id"] for a in coco.anns.values()}
        classes[0] = 0
        for image_id, info in coco.imgs.items():
            owners = _owners_from_masks(coco, image_id, 128)  # also checks that masks are disjoint
            label = np.asarray(Image.open(shapes_root / split / info["file_name"].replace("images", "labels")))
            void = label == 255
            expected = np.vectorize(classes.get)(owners)
            np.testing.assert_array_equal(label[~void], expected[~void])
            np.testing.assert_array_equal(void, _boundary(owners))  # void band = lower side of boundaries, exactly


def test_json_annotations_equal_render(shapes_root, tiny):
    coco = _coco(shapes_root / "val" / "instances.json")
    r = render(tiny["seed"], "val", 2)
    annotations = coco.imgToAnns[3]  # image ids are 1-based
    assert [a["category_id"] for a in annotations] == list(r.category_ids)
    assert [a["area"] for a in annotations] == [int((r.owners == k).sum()) for k in range(1, len(r.category_ids) + 1)]
    with Image.open(shapes_root / "val" / "images" / "000002.png") as image:
        np.testing.assert_array_equal(np.asarray(image), r.image)


def test_a_crowd_region_is_one_annotation(shapes_root, tiny):
    for split in ("train", "val"):
        coco = _coco(shapes_root / split / "instances.json")
        crowds = [a for a in coco.anns.values() if a["iscrowd"]]
        assert len(crowds) >= 1  # the fixture's seed is chosen so
        for crowd in crowds:  # at most one per image, painted first (the bottom layer)
            assert coco.imgToAnns[crowd["image_id"]][0] is crowd
            assert sum(a["iscrowd"] for a in coco.imgToAnns[crowd["image_id"]]) == 1
    r = render(tiny["seed"], "train", 2)
    assert r.iscrowd[0] == 1 and set(r.iscrowd[1:]) == {0}


# ------------------------------------------------------------------------------ generate's contract


def test_generate_is_idempotent(shapes_root, tiny):
    before = {p: p.stat().st_mtime_ns for p in shapes_root.rglob("*")}
    assert generate(shapes_root, **tiny, progress=False) == shapes_root
    assert ensure_shapes(shapes_root, **tiny, progress=False) == shapes_root
    assert {p: p.stat().st_mtime_ns for p in shapes_root.rglob("*")} == before


def test_an_incomplete_data_set_is_made_again(shapes_root, tmp_path, tiny):
    root = Path(shutil.copytree(shapes_root, tmp_path / "copy"))
    meta = json.loads((root / "meta.json").read_text())
    (root / "meta.json").write_text(json.dumps(dict(meta, complete=False)))
    (root / "train" / "images" / "000003.png").unlink()
    (root / "val" / "labels" / "000001.png.part").write_bytes(b"half a file")
    generate(root, **tiny, progress=False)
    assert _hashes(root) == _hashes(shapes_root)


def test_other_arguments_are_refused(shapes_root):
    with pytest.raises(ValueError, match=r"made with \{.*'seed': 1.*\}, not the requested \{.*'seed': 2.*\}"):
        generate(shapes_root, 6, 4, seed=2, progress=False)


def test_a_foreign_non_empty_root_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="is not empty and holds no segnotes shapes data set"):
        generate(tmp_path, 1, 1, progress=False)


def test_an_empty_existing_directory_is_fine_and_options_reach_the_files(tmp_path):
    assert generate(tmp_path, 1, 0, image_size=64, progress=False, void_width=0) == tmp_path
    with Image.open(tmp_path / "train" / "labels" / "000000.png") as label:
        assert label.size == (64, 64) and 255 not in np.asarray(label) and np.asarray(label).any()
    assert json.loads((tmp_path / "val" / "instances.json").read_text())["images"] == []


def test_unwritable_roots_are_named(tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    with pytest.raises(NotADirectoryError, match=f"generate: cannot write to root '{a_file}': it is an existing file"):
        generate(a_file, 1, 1, progress=False)
    with pytest.raises(OSError, match=f"generate: cannot write to root '{a_file / 'below'}'"):
        generate(a_file / "below", 1, 1, progress=False)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores directory permissions")
def test_a_read_only_directory_is_named(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(PermissionError, match=f"generate: cannot write to root '{locked}'"):
            generate(locked, 1, 1, progress=False)
    finally:
        locked.chmod(0o700)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(root=3), TypeError, "generate: root must be a str or os.PathLike, got int 3"),
        (dict(num_train=-1), ValueError, "generate: num_train must be >= 0, got -1"),
        (dict(num_val=1.5), TypeError, "generate: num_val must be an int, got float 1.5"),
        (dict(seed=True), TypeError, "generate: seed must be an int, got bool True"),
        (dict(seed=-3), ValueError, "generate: seed must be >= 0, got -3"),
        (dict(image_size=32), ValueError, "generate: image_size must be >= 64, got 32"),
        (dict(image_size="128"), TypeError, "generate: image_size must be an int, got str '128'"),
        (dict(void_width=-1), ValueError, "generate: void_width must be >= 0, got -1"),
        (dict(workers=-2), ValueError, "generate: workers must be >= 0, got -2"),
        (dict(progress="yes"), TypeError, "generate: progress must be a bool, got str 'yes'"),
    ],
)
def test_generate_bad_arguments(tmp_path, kwargs, error, match):
    arguments = dict(root=tmp_path / "never", num_train=1, num_val=1, progress=False)
    arguments.update(kwargs)
    with pytest.raises(error, match=match):
        generate(**arguments)
    assert not (tmp_path / "never").exists()


# ------------------------------------------------------------------------------ checksums


def test_checksums_write_and_verify(shapes_root, tmp_path):
    listing = write_checksums(shapes_root, tmp_path / "shapes.sha256")
    lines = listing.read_text().splitlines()
    names = [line.split("  ", 1)[1] for line in lines]
    assert names == sorted(names) and "meta.json" in names and "train/instances.json" in names
    assert len(lines) == len(_hashes(shapes_root))
    digest, name = lines[0].split("  ")
    assert hashlib.sha256((shapes_root / name).read_bytes()).hexdigest() == digest
    assert verify(shapes_root, listing) == len(_hashes(shapes_root))


def test_verify_catches_a_changed_byte_and_missing_and_extra_files(shapes_root, tmp_path):
    root = Path(shutil.copytree(shapes_root, tmp_path / "copy"))
    listing = write_checksums(root, root / "SHA256SUMS")  # inside root: skipped, not "extra"
    assert verify(root, listing) == len(_hashes(shapes_root))
    image = root / "val" / "images" / "000001.png"
    data = bytearray(image.read_bytes())
    data[100] ^= 1
    image.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"verify: .*1 mismatched: val/images/000001.png"):
        verify(root, listing)
    image.unlink()
    (root / "train" / "stray.txt").write_text("?")
    with pytest.raises(ValueError, match=r"1 missing: val/images/000001.png; 1 extra: train/stray.txt"):
        verify(root, listing)
    broken = tmp_path / "broken.sha256"
    broken.write_text("abc meta.json\n")
    with pytest.raises(ValueError, match="verify: line 1 of .* is not '<sha256 hex>  <path>'"):
        verify(root, broken)


# ------------------------------------------------------------------------------ defaults and statistics


def test_default_root(monkeypatch, tmp_path):
    monkeypatch.setenv("SEGNOTES_DATA", str(tmp_path / "elsewhere"))
    assert default_root() == tmp_path / "elsewhere"
    monkeypatch.delenv("SEGNOTES_DATA")
    checkout = Path(shapes.__file__).resolve().parents[2]
    assert (checkout / "pyproject.toml").is_file()  # this test runs in a source checkout
    assert default_root() == checkout / "data" / "shapes"


def test_ensure_shapes_generates_when_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGNOTES_DATA", str(tmp_path / "env"))
    root = ensure_shapes(num_train=1, num_val=1, progress=False)
    assert root == tmp_path / "env" and json.loads((root / "meta.json").read_text())["complete"] is True


def test_statistics(shapes_root, tiny):
    stats = statistics(shapes_root)
    assert stats["arguments"]["seed"] == tiny["seed"]
    for split in ("train", "val"):
        coco = json.loads((shapes_root / split / "instances.json").read_text())
        single = [a for a in coco["annotations"] if not a["iscrowd"]]
        s = stats[split]
        assert s["images"] == tiny[f"num_{split}"] and s["instances"] == len(single)
        assert s["crowd"] == len(coco["annotations"]) - len(single) >= 1
        assert sum(s["per_category"].values()) == len(single)
        assert s["instances_per_image"]["mean"] == pytest.approx(len(single) / s["images"])
        assert sum(s["area_shares"].values()) == pytest.approx(1.0)
        assert sum(s["pixel_shares"].values()) == pytest.approx(1.0)
        assert 0.5 < s["pixel_shares"]["background"] < 0.95
    with pytest.raises(FileNotFoundError, match="statistics: no complete shapes data set"):
        statistics(shapes_root / "nowhere")


# ----------------------------------------------------------------------------------------------
# The variant with handles (the LSE chapter's data)


def test_handles_off_leaves_every_image_unchanged():
    # the option draws its random numbers after everything else: without it, nothing moves
    for index in range(4):
        plain = render(3, "train", index)
        explicit = render(3, "train", index, handles=False)
        assert plain.handles is None and explicit.handles is None
        np.testing.assert_array_equal(plain.image, explicit.image)
        np.testing.assert_array_equal(plain.owners, explicit.owners)


def test_handles_follow_each_category_rule():
    seen = {True: 0, False: 0}
    for index in range(12):
        rendered = render(0, "train", index, handles=True)
        annotations = shapes._annotations(rendered)
        for k, annotation in enumerate(annotations, start=1):
            if annotation["iscrowd"]:
                continue
            owned = rendered.owners == k
            mask = mask_utils.decode(dict(annotation["segmentation"], counts=annotation["segmentation"]["counts"].encode())).astype(bool)
            handle = mask_utils.decode(dict(annotation["handle"], counts=annotation["handle"]["counts"].encode())).astype(bool)
            assert not (handle & ~owned).any()
            rule = HANDLE_IN_MASK[annotation["category_id"]]
            if rule:
                np.testing.assert_array_equal(mask, owned)
            else:
                np.testing.assert_array_equal(mask, owned & ~handle)
                assert (rendered.label[handle] == 255).all()  # left out of the mask: void, not background
            assert annotation["area"] == mask.sum() > 0
            # the box covers the whole object, handle included
            x, y, w, h = annotation["bbox"]
            rows, cols = np.flatnonzero(owned.any(1)), np.flatnonzero(owned.any(0))
            assert (x, y, x + w - 1, y + h - 1) == (cols[0], rows[0], cols[-1], rows[-1])
            seen[rule] += bool(handle.any())
    assert seen[True] > 10 and seen[False] > 10  # both rules occur with visible handles


def test_handle_rule_pairs_look_alike_categories_across_groups():
    supercategory = {c["id"]: c["supercategory"] for c in CATEGORIES}
    for a in GROUPS["A"]:
        for b in GROUPS["B"]:
            if supercategory[a] == supercategory[b]:
                assert HANDLE_IN_MASK[a] == HANDLE_IN_MASK[b]
    for group, other in (("A", "B"), ("B", "A")):  # every rule of one group occurs in the other
        assert {HANDLE_IN_MASK[c] for c in GROUPS[group]} == {HANDLE_IN_MASK[c] for c in GROUPS[other]}


def test_generate_with_handles_records_the_option(tmp_path):
    root = generate(tmp_path / "h", 2, 1, seed=1, workers=1, progress=False, handles=True)
    meta = json.loads((root / "meta.json").read_text())
    assert meta["arguments"]["handles"] is True
    assert all("handle_in_mask" in c for c in meta["categories"])
    coco = json.loads((root / "train" / "instances.json").read_text())
    assert all("handle" in a for a in coco["annotations"] if not a["iscrowd"])
    with pytest.raises(ValueError, match="made with"):
        generate(root, 2, 1, seed=1, workers=1, progress=False)  # the same folder without handles
    with pytest.raises(TypeError, match="handles must be a bool"):
        generate(tmp_path / "x", 2, 1, handles="yes")


# ------------------------------------------------------------------------------ concurrent callers


_CONCURRENT_CALLER = """
import json, sys, time
from pathlib import Path
from segnotes.data import ShapesSemantic, ensure_shapes, verify

base, me, processes, attempts = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])


def barrier(name):
    (base / f"{name}.{me}").touch()
    while not all((base / f"{name}.{k}").exists() for k in range(processes)):
        time.sleep(0.002)


for attempt in range(attempts):
    barrier(f"start{attempt}")  # every process ready: start together...
    time.sleep(me * 0.04 * (attempt % 4))  # ...or one after another, while the first is writing
    root = base / f"shared{attempt}"
    try:
        ensure_shapes(root, num_train=12, num_val=4, image_size=64, progress=False)
        # What this caller gets back must be complete at once, other callers or not.
        result = {"files": verify(root, base / "reference.sha256"), "train": len(ShapesSemantic(root, "train"))}
    except Exception as error:
        result = {"error": f"{type(error).__name__}: {error}"}
    print(json.dumps(result), flush=True)
"""


def test_concurrent_ensure_shapes_all_return_the_complete_data_set(tmp_path, child_env, processes=4, attempts=6):
    # Issue 22, finding 3: a second caller saw "complete: false" and deleted the splits the first
    # was writing; the first then returned a partial data set, or crashed on a shared temporary
    # name. Each attempt is a new race on a new folder, started together or staggered.
    reference = generate(tmp_path / "reference", num_train=12, num_val=4, image_size=64, workers=1, progress=False)
    write_checksums(reference, tmp_path / "reference.sha256")
    children = [subprocess.Popen([sys.executable, "-c", _CONCURRENT_CALLER, str(tmp_path), str(k), str(processes),
                                  str(attempts)], env=child_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True)
                for k in range(processes)]
    results = []
    for child in children:
        try:
            out, err = child.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            for c in children:
                c.kill()
            pytest.fail("a concurrent ensure_shapes hung")
        assert child.returncode == 0, err
        results.append([json.loads(line) for line in out.strip().splitlines()])
    # 32 PNGs, 2 instances.json and meta.json, for every caller in every attempt
    assert results == [[{"files": 35, "train": 12}] * attempts] * processes, results
