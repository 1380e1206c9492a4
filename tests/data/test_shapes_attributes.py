"""The attributes variant of the shapes data (50 categories: outline x colour family x texture),
the data of the LSE chapter's curve over the number of mask classes."""
import colorsys
import json
from collections import Counter

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from segnotes.data import (
    ATTRIBUTE_CATEGORIES,
    ATTRIBUTE_GROUPS,
    ATTRIBUTE_HANDLE_IN_MASK,
    ATTRIBUTE_MASK_ORDER,
    ShapesInstances,
    generate,
    render,
    statistics,
    variant_folder,
)
from segnotes.data import shapes
from segnotes.data.shapes import ATTRIBUTE_COLOURS, ATTRIBUTE_MIN_RADIUS, ATTRIBUTE_OUTLINES, ATTRIBUTE_TEXTURES

BY_ID = {c["id"]: c for c in ATTRIBUTE_CATEGORIES}
ATTRIBUTES = {"outline": ATTRIBUTE_OUTLINES, "colour": ATTRIBUTE_COLOURS, "texture": ATTRIBUTE_TEXTURES}
TINY = dict(num_train=5, num_val=3, seed=2, workers=1, progress=False, handles=True, attributes=True)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("attributes") / "shapes_attributes", **TINY)


def _decode(rle):
    return mask_utils.decode(dict(rle, counts=rle["counts"].encode())).astype(bool)


def _counts(ids, attribute):
    return Counter(BY_ID[i][attribute] for i in ids)


# ----------------------------------------------------------------------------------------------
# Categories, groups and the order of the mask classes


def test_fifty_categories_one_per_combination():
    assert [c["id"] for c in ATTRIBUTE_CATEGORIES] == list(range(1, 51))
    combinations = {(c["outline"], c["colour"], c["texture"]) for c in ATTRIBUTE_CATEGORIES}
    assert len(combinations) == 50 == len(ATTRIBUTE_OUTLINES) * len(ATTRIBUTE_COLOURS) * len(ATTRIBUTE_TEXTURES)
    assert len({c["name"] for c in ATTRIBUTE_CATEGORIES}) == 50
    for category in ATTRIBUTE_CATEGORIES:
        assert category["supercategory"] == category["outline"]
        assert category["name"] == f"{category['colour']} {category['texture']} {category['outline']}"


def test_groups_are_disjoint_and_cover_every_category():
    a, b = set(ATTRIBUTE_GROUPS["A"]), set(ATTRIBUTE_GROUPS["B"])
    assert len(a) == 40 and len(b) == 10 and not a & b and a | b == set(BY_ID)
    assert {c["id"] for c in ATTRIBUTE_CATEGORIES if c["group"] == "B"} == b
    assert sorted(ATTRIBUTE_MASK_ORDER) == sorted(a) and len(set(ATTRIBUTE_MASK_ORDER)) == 40


@pytest.mark.parametrize("attribute", list(ATTRIBUTES))
def test_every_attribute_value_is_in_both_groups_in_equal_shares(attribute):
    values = ATTRIBUTES[attribute]
    b = _counts(ATTRIBUTE_GROUPS["B"], attribute)
    a = _counts(ATTRIBUTE_GROUPS["A"], attribute)
    assert set(b) == set(a) == set(values)
    assert set(b.values()) == {10 // len(values)} and set(a.values()) == {40 // len(values)}


@pytest.mark.parametrize("count", [5, 10, 20, 40])
def test_each_prefix_of_the_mask_order_is_balanced(count):
    prefix = ATTRIBUTE_MASK_ORDER[:count]
    for attribute in ("outline", "colour"):  # every value count / 5 times
        assert _counts(prefix, attribute) == Counter({v: count // 5 for v in ATTRIBUTES[attribute]})
    textures = _counts(prefix, "texture")
    assert set(textures) == set(ATTRIBUTE_TEXTURES) and abs(textures["plain"] - textures["striped"]) <= 1
    assert {ATTRIBUTE_HANDLE_IN_MASK[c] for c in prefix} == {True, False}  # both rules to learn from


def test_handle_rule_follows_the_outline_alone():
    rule_of_outline = {}
    for category in ATTRIBUTE_CATEGORIES:
        rule = rule_of_outline.setdefault(category["outline"], ATTRIBUTE_HANDLE_IN_MASK[category["id"]])
        assert ATTRIBUTE_HANDLE_IN_MASK[category["id"]] == rule
    assert set(rule_of_outline.values()) == {True, False}
    for group in ("A", "B"):
        assert {ATTRIBUTE_HANDLE_IN_MASK[c] for c in ATTRIBUTE_GROUPS[group]} == {True, False}


# ----------------------------------------------------------------------------------------------
# Rendering


def test_render_is_deterministic():
    for index in range(3):
        first = render(4, "val", index, handles=True, attributes=True)
        second = render(4, "val", index, handles=True, attributes=True)
        np.testing.assert_array_equal(first.image, second.image)
        np.testing.assert_array_equal(first.owners, second.owners)
        np.testing.assert_array_equal(first.label, second.label)
        assert first.category_ids == second.category_ids


def test_attributes_off_leaves_the_other_variants_unchanged():
    for handles in (False, True):
        plain = render(3, "train", 1, handles=handles)
        explicit = render(3, "train", 1, handles=handles, attributes=False)
        np.testing.assert_array_equal(plain.image, explicit.image)
        assert max(plain.category_ids) <= 9


def test_objects_show_their_colour_family_and_their_size():
    hue_centre = dict(zip(ATTRIBUTE_COLOURS, (0.0, 55.0, 125.0, 225.0, 300.0)))
    checked = 0
    for index in range(8):
        rendered = render(0, "train", index, handles=True, attributes=True)
        for k, (category_id, crowd) in enumerate(zip(rendered.category_ids, rendered.iscrowd), start=1):
            category = BY_ID[category_id]
            assert 1 <= category_id <= 50
            if crowd:
                continue
            # the object's own pixels away from every edge: its colour, or its darker stripe colour
            owned = rendered.owners == k
            inner = owned.copy()
            for axis in (0, 1):
                for shift in (-1, 1):
                    inner &= np.roll(owned, shift, axis=axis)
            pixels = rendered.image[inner].astype(float) / 255
            if len(pixels) < 10:
                continue
            hues = np.array([colorsys.rgb_to_hsv(*p)[0] * 360 for p in pixels])
            off = np.abs((hues - hue_centre[category["colour"]] + 180) % 360 - 180)
            assert np.median(off) <= 12, (index, k, category["name"])
            checked += 1
        assert min(rendered.full_areas) >= 0
    assert checked > 20


def test_handles_follow_the_outline_rule():
    seen = Counter()
    for index in range(10):
        rendered = render(1, "train", index, handles=True, attributes=True)
        assert rendered.handle_in_mask == tuple(ATTRIBUTE_HANDLE_IN_MASK[c] for c in rendered.category_ids)
        for k, annotation in enumerate(shapes._annotations(rendered), start=1):
            if annotation["iscrowd"]:
                continue
            owned, mask, handle = rendered.owners == k, _decode(annotation["segmentation"]), _decode(annotation["handle"])
            if ATTRIBUTE_HANDLE_IN_MASK[annotation["category_id"]]:
                np.testing.assert_array_equal(mask, owned)
            else:
                np.testing.assert_array_equal(mask, owned & ~handle)
                assert (rendered.label[handle] == 255).all()
            seen[ATTRIBUTE_HANDLE_IN_MASK[annotation["category_id"]]] += bool(handle.any())
    assert seen[True] > 5 and seen[False] > 5


def test_min_radius_keeps_objects_large_enough_to_show_texture():
    areas = []
    for index in range(10):
        rendered = render(0, "val", index, attributes=True)
        areas += [a for a, crowd in zip(rendered.full_areas, rendered.iscrowd) if not crowd]
    # a triangle of circumradius r has area 1.3 r^2, the thinnest outline here
    assert min(areas) >= 1.2 * ATTRIBUTE_MIN_RADIUS**2


@pytest.mark.parametrize("name", ["attributes", "handles"])
def test_render_refuses_non_bool_options(name):
    with pytest.raises(TypeError, match=f"render: {name} must be a bool, got str"):
        render(0, "train", 0, **{name: "yes"})


# ----------------------------------------------------------------------------------------------
# Generating, and reading it back


def test_generate_records_the_variant_and_writes_its_categories(root):
    meta = json.loads((root / "meta.json").read_text())
    assert meta["arguments"]["attributes"] is True and meta["arguments"]["handles"] is True
    assert meta["mask_order"] == list(ATTRIBUTE_MASK_ORDER)
    assert meta["groups"] == {name: list(ids) for name, ids in ATTRIBUTE_GROUPS.items()}
    assert [c["handle_in_mask"] for c in meta["categories"]] == [ATTRIBUTE_HANDLE_IN_MASK[i] for i in range(1, 51)]
    coco = json.loads((root / "train" / "instances.json").read_text())
    assert [c["id"] for c in coco["categories"]] == list(range(1, 51))
    assert coco["categories"][0]["outline"] == "circle"
    assert {a["category_id"] for a in coco["annotations"]} <= set(range(1, 51))


def test_generate_is_byte_identical_whatever_the_workers(root, tmp_path):
    other = generate(tmp_path / "again", **dict(TINY, workers=2))
    files = sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(other) for p in other.rglob("*") if p.is_file())
    for name in files:
        assert (root / name).read_bytes() == (other / name).read_bytes(), name


def test_the_same_folder_with_another_variant_is_refused(root):
    with pytest.raises(ValueError, match="made with .* not the requested"):
        generate(root, **dict(TINY, attributes=False))


def test_statistics_name_the_fifty_categories(root):
    result = statistics(root)
    assert len(result["train"]["per_category"]) == 50
    assert "red plain circle" in result["val"]["pixel_shares"]


def test_partial_groups_come_from_the_data_set(root):
    train = ShapesInstances(root, "train", partial="B")
    assert tuple(train._withheld.tolist()) == ATTRIBUTE_GROUPS["B"]
    for image, target in train:
        withheld = np.isin(target["labels"].numpy(), ATTRIBUTE_GROUPS["B"])
        assert (target["mask_valid"].numpy() == ~withheld).all()
        assert not target["masks"][~target["mask_valid"]].any()


def test_partial_ids_are_checked_against_the_data_set(root, shapes_root):
    assert len(ShapesInstances(root, "val", partial=(50, 12))) == 3
    with pytest.raises(ValueError, match=r"partial must be .* category ids from 1\.\.50"):
        ShapesInstances(root, "val", partial=(51,))
    with pytest.raises(ValueError, match=r"category ids from \[1, 2, 3, 4, 5, 6, 7, 8, 9\]"):
        ShapesInstances(shapes_root, "val", partial=(12,))  # the nine-category data set has no 12


def test_variant_folders():
    assert variant_folder() == "shapes"
    assert variant_folder(handles=True) == "shapes_handles"
    assert variant_folder(handles=True, attributes=True) == "shapes_attributes"
    assert variant_folder(attributes=True) == "shapes_attributes_plain"
