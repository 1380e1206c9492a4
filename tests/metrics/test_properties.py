"""Property-based tests of segnotes.metrics (hypothesis; profile "segnotes" in tests/conftest.py).

Each property draws inputs (shapes, dtypes, empty and non-contiguous tensors, NaN and inf) and
requires either the reference's result (a float64 loop, torchvision, pycocotools) within a stated
tolerance, or a TypeError / ValueError that names the argument. Anything that could hang in
pycocotools' C code runs in a child process with a timeout.
"""
import math

import numpy as np
import pycocotools.mask as mask_utils
import pytest
import torch
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from segnotes.metrics import (
    box_iou,
    confusion_matrix,
    decode_segmentation,
    detections_from_predictions,
    encode_masks,
    mask_iou,
    segmentation_scores,
)

INTEGER_DTYPES = [torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64]
FLOAT_DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]


def layouts(x: torch.Tensor, how: str) -> torch.Tensor:
    """``x`` itself, or the same values in a non-contiguous tensor (a strided view of a larger one)."""
    if how == "contiguous" or x.ndim == 0:
        return x
    wider = torch.zeros(*x.shape[:-1], 2 * x.shape[-1] + 1, dtype=x.dtype)
    wider[..., 1::2] = x
    view = wider[..., 1::2]
    assert torch.equal(view, x) and (x.numel() <= 1 or not view.is_contiguous() or x.shape[-1] <= 1)
    return view


# ---------------------------------------------------------------- confusion matrix and the FCN scores


def confusion_loop(pred, target, num_classes, ignore_index):
    """float64 loop reference: n[t, p] += 1 for every pixel whose target is not ignored."""
    n = np.zeros((num_classes, num_classes), dtype=np.int64)
    for p, t in zip(pred.reshape(-1).tolist(), target.reshape(-1).tolist()):
        if ignore_index is not None and t == ignore_index:
            continue
        n[t, p] += 1
    return n


@st.composite
def label_pairs(draw):
    num_classes = draw(st.integers(1, 6))
    dtype = draw(st.sampled_from(INTEGER_DTYPES))
    shape = draw(st.lists(st.integers(0, 5), min_size=1, max_size=3))
    big = 255 if dtype in (torch.uint8, torch.int16, torch.int32, torch.int64) else 100
    # None, VOC's 255, just past the classes, one of the classes, or negative (masked, not binned)
    ignore_index = draw(st.sampled_from([None, big, num_classes + 1, draw(st.integers(0, num_classes - 1))]
                                        + ([] if dtype == torch.uint8 else [-1])))
    size = int(np.prod(shape))
    labels = st.integers(0, num_classes - 1)
    pred = draw(st.lists(labels, min_size=size, max_size=size))
    target_values = labels if ignore_index is None else st.one_of(labels, st.just(ignore_index))
    target = draw(st.lists(target_values, min_size=size, max_size=size))
    return (torch.tensor(pred, dtype=dtype).reshape(shape), torch.tensor(target, dtype=dtype).reshape(shape),
            num_classes, ignore_index, draw(st.sampled_from(["contiguous", "strided"])))


@given(label_pairs())
def test_confusion_matrix_equals_the_loop(case):
    pred, target, num_classes, ignore_index, how = case
    counts = confusion_matrix(layouts(pred, how), layouts(target, how), num_classes, ignore_index)
    assert counts.dtype == torch.int64 and counts.shape == (num_classes, num_classes)
    np.testing.assert_array_equal(counts.numpy(), confusion_loop(pred, target, num_classes, ignore_index))


@given(label_pairs(), st.sampled_from(["pred", "target"]), st.sampled_from([-1, "too big", "float"]))
def test_confusion_matrix_refuses_bad_labels_by_name(case, name, bad):
    pred, target, num_classes, ignore_index, _ = case
    values = {"pred": pred.long(), "target": target.long()}
    if values[name].numel() == 0:
        return
    if bad == "float":
        values[name] = values[name].float()
        with pytest.raises(TypeError, match=rf"confusion_matrix: {name} must have an integer dtype"):
            confusion_matrix(values["pred"], values["target"], num_classes, ignore_index)
        return
    wrong = -1 if bad == -1 else num_classes + 2
    if name == "target" and wrong == ignore_index:
        return
    values[name] = values[name].clone()
    values[name].view(-1)[0] = wrong
    with pytest.raises(ValueError, match=rf"confusion_matrix: {name} values must be in \[0, {num_classes}\)"):
        confusion_matrix(values["pred"], values["target"], num_classes, ignore_index)


def scores_loop(n: np.ndarray) -> dict:
    """The FCN paper's four formulas, class by class in float64, skipping undefined classes."""
    num_classes = n.shape[0]
    t = [float(n[i].sum()) for i in range(num_classes)]
    predicted = [float(n[:, i].sum()) for i in range(num_classes)]
    total = sum(t)
    acc = [n[i, i] / t[i] if t[i] else math.nan for i in range(num_classes)]
    iu = [n[i, i] / (t[i] + predicted[i] - n[i, i]) if t[i] + predicted[i] - n[i, i] else math.nan
          for i in range(num_classes)]

    def mean(values):
        defined = [v for v in values if not math.isnan(v)]
        return sum(defined) / len(defined) if defined else math.nan

    return {
        "pixel_accuracy": sum(n[i, i] for i in range(num_classes)) / total if total else math.nan,
        "mean_accuracy": mean(acc),
        "mean_iu": mean(iu),
        "frequency_weighted_iu": sum(t[i] * iu[i] for i in range(num_classes) if t[i]) / total if total else math.nan,
    }


@given(hnp.arrays(np.int64, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=6).map(lambda s: (s[0], s[0])),
                  elements=st.integers(0, 10**6)),
       st.sampled_from([torch.int64, torch.int32]), st.sampled_from(["contiguous", "strided"]))
def test_segmentation_scores_equal_the_formulas(n, dtype, how):
    scores = segmentation_scores(layouts(torch.from_numpy(n).to(dtype), how))
    for key, expected in scores_loop(n).items():
        if math.isnan(expected):
            assert math.isnan(scores[key]), key
        else:
            assert scores[key] == pytest.approx(expected, rel=1e-12, abs=1e-15), key


@given(hnp.arrays(np.int64, st.just((3, 3)), elements=st.integers(-5, 5)))
def test_segmentation_scores_refuse_negative_or_float_counts(n):
    if n.min() < 0:
        with pytest.raises(ValueError, match=rf"segmentation_scores: confmat must hold counts >= 0, got {n.min()}"):
            segmentation_scores(torch.from_numpy(n))
    with pytest.raises(TypeError, match=r"segmentation_scores: confmat must hold integer counts"):
        segmentation_scores(torch.from_numpy(n).double())


# ---------------------------------------------------------------- mask and box IoU


@st.composite
def mask_sets(draw):
    n, m = draw(st.integers(0, 4)), draw(st.integers(0, 4))
    h, w = draw(st.integers(0, 7)), draw(st.integers(0, 7))
    masks1 = draw(hnp.arrays(np.bool_, (n, h, w)))
    masks2 = draw(hnp.arrays(np.bool_, (m, h, w)))
    return torch.from_numpy(masks1), torch.from_numpy(masks2), draw(st.sampled_from(["contiguous", "strided",
                                                                                          "transposed"]))


@given(mask_sets())
def test_mask_iou_equals_the_loop(case):
    masks1, masks2, how = case
    if how == "transposed":  # the same masks, stored column-major
        a, b = masks1.transpose(1, 2).contiguous().transpose(1, 2), masks2.transpose(1, 2).contiguous().transpose(1, 2)
    else:
        a, b = layouts(masks1, how), layouts(masks2, how)
    iou = mask_iou(a, b)
    assert iou.shape == (masks1.shape[0], masks2.shape[0]) and iou.dtype == torch.float32
    for i in range(masks1.shape[0]):
        for j in range(masks2.shape[0]):
            inter = float((masks1[i] & masks2[j]).sum())
            union = float((masks1[i] | masks2[j]).sum())
            assert float(iou[i, j]) == pytest.approx(inter / union if union else 0.0, abs=1e-7)


@given(st.sampled_from([torch.uint8, torch.float32, torch.int64]))
def test_mask_iou_refuses_non_bool_masks_by_name(dtype):
    masks = torch.zeros(2, 3, 3, dtype=dtype)
    with pytest.raises(TypeError, match=r"mask_iou: masks1 must have dtype torch.bool"):
        mask_iou(masks, masks.bool())


# Tolerance of each dtype's IoU against the float64 reference on the same (rounded) boxes: the
# result is rounded to the dtype once (areas are computed in float32 or float64).
BOX_IOU_ATOL = {torch.float16: 2**-10, torch.bfloat16: 2**-7, torch.float32: 1e-5, torch.float64: 1e-12}


@st.composite
def box_sets(draw, dtype=None):
    dtype = draw(st.sampled_from(FLOAT_DTYPES)) if dtype is None else dtype
    # Coordinates up to 2000, float16 values (exact in every dtype); sides of 256 and more make
    # areas past float16's largest number, 65504.
    corner = st.floats(0, 1000, allow_nan=False, width=16)
    side = st.one_of(st.floats(0, 1000, allow_nan=False, width=16), st.sampled_from([256.0, 512.0, 1000.0]))

    def boxes(n):
        rows = draw(st.lists(st.tuples(corner, corner, side, side), min_size=n, max_size=n))
        return torch.tensor([[x, y, x + w, y + h] for x, y, w, h in rows], dtype=torch.float64).reshape(-1, 4)

    n, m = draw(st.integers(0, 5)), draw(st.integers(0, 5))
    return boxes(n).to(dtype), boxes(m).to(dtype), draw(st.sampled_from(["contiguous", "strided"]))


@settings(max_examples=150)  # enough to meet a float16 box of side 256 (d737f74 gave IoU 0 there)
@given(box_sets())
def test_box_iou_equals_torchvision_in_float64(case):
    boxes1, boxes2, how = case
    iou = box_iou(layouts(boxes1, how), layouts(boxes2, how))
    assert iou.dtype == boxes1.dtype and iou.shape == (boxes1.shape[0], boxes2.shape[0])
    # torchvision on the same rounded boxes in float64; its 0/0 for two empty boxes is our 0
    expected = torchvision.ops.box_iou(boxes1.double(), boxes2.double()).nan_to_num(0.0)
    torch.testing.assert_close(iou.double(), expected, rtol=0, atol=BOX_IOU_ATOL[boxes1.dtype])


@given(box_sets(), st.sampled_from(["boxes1", "boxes2"]), st.sampled_from([math.nan, math.inf, -math.inf]),
       st.integers(0, 3))
def test_box_iou_refuses_non_finite_coordinates_by_name(case, name, value, column):
    boxes = {"boxes1": case[0].clone(), "boxes2": case[1].clone()}
    if boxes[name].shape[0] == 0:
        return
    boxes[name][-1, column] = value
    with pytest.raises(ValueError, match=rf"box_iou: {name} must be \(x1, y1, x2, y2\) boxes with "):
        box_iou(boxes["boxes1"], boxes["boxes2"])


# ---------------------------------------------------------------- masks as COCO RLE


@st.composite
def binary_masks(draw):
    n, h, w = draw(st.integers(0, 4)), draw(st.integers(1, 9)), draw(st.integers(1, 9))
    masks = draw(hnp.arrays(np.bool_, (n, h, w)))
    dtype = draw(st.sampled_from([torch.bool, torch.uint8, torch.int64]))
    return layouts(torch.from_numpy(masks).to(dtype), draw(st.sampled_from(["contiguous", "strided"]))), masks


@given(binary_masks())
def test_encode_masks_is_pycocotools_encoding_and_decodes_back(case):
    masks, expected = case
    rles = encode_masks(masks)
    assert len(rles) == expected.shape[0]
    if expected.shape[0]:
        reference = mask_utils.encode(np.asfortranarray(expected.transpose(1, 2, 0).astype(np.uint8)))
        assert [r["counts"] for r in rles] == [r["counts"].decode("ascii") for r in reference]
    for rle, mask in zip(rles, expected):
        np.testing.assert_array_equal(decode_segmentation(rle, *mask.shape), mask)


@given(binary_masks(), st.sampled_from([2, -1, 255]))
def test_encode_masks_refuses_values_other_than_0_and_1(case, value):
    masks, expected = case
    if expected.shape[0] == 0:
        return
    masks = masks.to(torch.int64).clone()
    masks.view(-1)[0] = value
    with pytest.raises(ValueError, match=r"encode_masks: integer masks must hold only 0 and 1"):
        encode_masks(masks)


def runs_of_compressed(text: str) -> list:
    """pycocotools' rleFrString, one character at a time: the reference for our NumPy decoder."""
    runs, p = [], 0
    while p < len(text):
        x, k, more = 0, 0, True
        while more:
            if p >= len(text):
                return None  # the last value is cut short
            c = ord(text[p]) - 48
            if not 0 <= c <= 63 or k >= 6:
                return None
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(runs) > 2:
            x += runs[-2]
        runs.append(x)
    return runs


def decode_runs(runs, h, w) -> np.ndarray:
    flat = np.zeros(h * w, dtype=bool)
    position, value = 0, False
    for run in runs:
        flat[position : position + run] = value
        position, value = position + run, not value
    return flat.reshape(w, h).T


RLE_ALPHABET = "".join(chr(48 + c) for c in range(64))


@st.composite
def compressed_strings(draw):
    """(h, w, text): pycocotools' encoding of a random mask, perhaps with one character changed,
    added or removed, or any short string over the alphabet (and one character outside it)."""
    h, w = draw(st.integers(0, 6)), draw(st.integers(0, 6))
    if draw(st.booleans()):
        return h, w, draw(st.text(RLE_ALPHABET + "~", max_size=8))
    mask = draw(hnp.arrays(np.uint8, (h, w), elements=st.integers(0, 1)))
    text = mask_utils.encode(np.asfortranarray(mask))["counts"].decode("ascii")
    edit = draw(st.sampled_from(["none", "change", "add", "drop"]))
    at = draw(st.integers(0, len(text)))
    char = draw(st.sampled_from(RLE_ALPHABET))
    if edit == "change" and text:
        text = text[: min(at, len(text) - 1)] + char + text[min(at, len(text) - 1) + 1 :]
    elif edit == "add":
        text = text[:at] + char + text[at:]
    elif edit == "drop" and text:
        text = text[: min(at, len(text) - 1)] + text[min(at, len(text) - 1) + 1 :]
    return h, w, text


@settings(max_examples=200)
@given(compressed_strings())
def test_decode_segmentation_of_any_compressed_string_is_the_reference_or_an_error(case):
    # A string pycocotools would read past its buffers with must be refused before it gets there.
    h, w, text = case
    runs = runs_of_compressed(text)
    valid = runs is not None and all(r >= 0 for r in runs) and sum(runs) == h * w
    rle = {"size": [h, w], "counts": text}
    if valid:
        np.testing.assert_array_equal(decode_segmentation(rle, h, w), decode_runs(runs, h, w))
    else:
        with pytest.raises(ValueError, match=r"decode_segmentation: annotation\['segmentation'\]"):
            decode_segmentation(rle, h, w)


@settings(max_examples=100)
@given(st.integers(0, 5), st.integers(0, 5), st.lists(st.integers(-3, 30), max_size=6))
def test_decode_segmentation_of_any_uncompressed_counts_is_the_reference_or_an_error(h, w, counts):
    rle = {"size": [h, w], "counts": counts}
    if all(c >= 0 for c in counts) and sum(counts) == h * w:
        np.testing.assert_array_equal(decode_segmentation(rle, h, w), decode_runs(counts, h, w))
    else:
        with pytest.raises(ValueError, match=r"decode_segmentation: annotation\['segmentation'\]"):
            decode_segmentation(rle, h, w)


# ---------------------------------------------------------------- COCO AP against COCOeval

# average_precision and coco_evaluate on random cases, with random damage to the RLEs, in a child
# process: a malformed RLE that slipped through would hang pycocotools' iou.
_AP_PROPERTY = r'''
import copy, numpy as np, pycocotools.mask as mask_utils
from hypothesis import given, settings, strategies as st
from segnotes.metrics import average_precision, coco_evaluate
from segnotes.metrics._synthetic import synthetic_instances

found = {"agree": 0, "refused": 0}

@settings(max_examples=12, derandomize=True, database=None, deadline=None)
@given(st.integers(0, 10**6), st.integers(1, 3), st.sampled_from(["segm", "bbox"]),
       st.sampled_from(["none", "gt_runs", "det_runs", "det_string"]), st.integers(-3, 3))
def check(seed, num_categories, iou_type, damage, delta):
    gt, dets = synthetic_instances(num_images=3, image_size=24, num_categories=num_categories, detections_per_image=6,
                                   crowd_fraction=0.2, score_decimals=1, seed=seed)
    if damage != "none" and delta:
        if damage == "gt_runs" and gt["annotations"]:
            ann = gt["annotations"][0]
            mask = mask_utils.decode(dict(ann["segmentation"], counts=ann["segmentation"]["counts"].encode()))
            flat = mask.flatten(order="F").astype(np.int8)  # runs of 0s and 1s, 0s first
            runs = np.diff(np.r_[0, np.flatnonzero(np.diff(np.r_[0, flat, 1 - flat[-1]]))]).tolist()
            runs[-1] += delta
            ann["segmentation"] = {"size": list(mask.shape), "counts": runs}
        elif damage == "det_runs" and dets:
            dets[0]["segmentation"] = {"size": [24, 24], "counts": [100, 50, 24 * 24 - 150 + delta]}
        elif damage == "det_string" and dets:
            counts = dets[0]["segmentation"]["counts"]
            dets[0]["segmentation"] = dict(dets[0]["segmentation"], counts=counts[:-1] if delta < 0 else counts + "1")
    try:
        ours = average_precision(gt, dets, iou_type=iou_type)
    except ValueError as error:
        assert "segmentation" in str(error), error
        try:
            coco_evaluate(gt, dets, iou_type=iou_type)
        except ValueError as again:
            assert str(again).replace("coco_evaluate", "average_precision") == str(error)
        else:
            raise AssertionError("coco_evaluate accepted what average_precision refused")
        found["refused"] += 1
        return
    reference = coco_evaluate(gt, dets, iou_type=iou_type)
    for key in ("AP", "AP50", "AP75", "APs", "APm", "APl"):
        assert abs(ours[key] - reference[key]) <= 1e-6, (key, ours[key], reference[key])
    np.testing.assert_allclose(ours["precision"], reference["precision"], atol=1e-6, rtol=0)
    found["agree"] += 1

check()
print(found)
'''


def test_average_precision_equals_cocoeval_or_refuses_damaged_masks_without_hanging(run_isolated):
    result = run_isolated(_AP_PROPERTY, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    found = eval(result.stdout.strip().splitlines()[-1])
    assert found["agree"] > 0 and found["refused"] > 0, found  # both branches were exercised


# ---------------------------------------------------------------- model outputs as COCO results


@st.composite
def predictions(draw):
    n = draw(st.integers(0, 4))
    size = draw(st.integers(2, 8))
    coords = st.floats(0, size, allow_nan=False, width=32)
    rows = draw(st.lists(st.tuples(coords, coords, coords, coords), min_size=n, max_size=n))
    boxes = torch.tensor([[min(a, c), min(b, d), max(a, c), max(b, d)] for a, b, c, d in rows]).reshape(-1, 4)
    scores = torch.tensor(draw(st.lists(st.floats(0, 1, width=32), min_size=n, max_size=n)), dtype=torch.float32)
    labels = torch.tensor(draw(st.lists(st.integers(1, 5), min_size=n, max_size=n)), dtype=torch.int64)
    masks = torch.from_numpy(draw(hnp.arrays(np.float32, (n, 1, size, size), elements=st.floats(0, 1, width=32))))
    return {"boxes": boxes, "labels": labels, "scores": scores, "masks": masks}


@given(predictions(), st.floats(0, 1, width=32))
def test_detections_from_predictions_equal_the_loop(prediction, threshold):
    results = detections_from_predictions([prediction], [7], score_threshold=threshold)
    kept = [k for k in range(len(prediction["scores"])) if prediction["scores"][k] >= threshold]
    assert len(results) == len(kept)
    for det, k in zip(results, kept):
        x1, y1, x2, y2 = prediction["boxes"][k].double().tolist()
        assert det["bbox"] == pytest.approx([x1, y1, x2 - x1, y2 - y1], abs=1e-6)
        assert det["category_id"] == int(prediction["labels"][k]) and det["image_id"] == 7
        np.testing.assert_array_equal(decode_segmentation(det["segmentation"], *prediction["masks"].shape[-2:]),
                                      (prediction["masks"][k, 0] > 0.5).numpy())


@given(predictions(), st.sampled_from(["boxes", "scores"]), st.sampled_from([math.nan, math.inf]))
def test_detections_from_predictions_refuse_non_finite_values_by_name(prediction, name, value):
    if prediction["boxes"].shape[0] == 0:
        return
    prediction = dict(prediction, **{name: prediction[name].clone()})
    prediction[name].view(-1)[0] = value
    with pytest.raises(ValueError, match=rf"detections_from_predictions: predictions\[0\]\['{name}'\] must be finite"):
        detections_from_predictions([prediction], [1])
