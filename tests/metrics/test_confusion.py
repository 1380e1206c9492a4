import math

import numpy as np
import pytest
import torch

from segnotes.metrics import ConfusionMatrix, confusion_matrix, segmentation_scores



def numpy_confusion(pred: np.ndarray, target: np.ndarray, num_classes: int, ignore_index) -> np.ndarray:
    """The FCN repository's fast_hist: a bincount over the valid pixels."""
    valid = (target >= 0) & (target < num_classes)
    if ignore_index is not None:
        valid &= target != ignore_index
    counts = np.bincount(num_classes * target[valid].astype(int) + pred[valid], minlength=num_classes**2)
    return counts.reshape(num_classes, num_classes)


def random_labels(shape, num_classes, ignore_index, ignore_fraction=0.1, dtype=torch.int64, seed=0):
    g = torch.Generator().manual_seed(seed)
    pred = torch.randint(0, num_classes, shape, generator=g)
    target = torch.randint(0, num_classes, shape, generator=g)
    if ignore_index is not None:
        target[torch.rand(shape, generator=g) < ignore_fraction] = ignore_index
    return pred.to(dtype), target.to(dtype)


# ---------------------------------------------------------------- counting


@pytest.mark.parametrize(
    "num_classes, ignore_index, dtype",
    [
        (21, 255, torch.int64),  # VOC
        (21, 255, torch.uint8),  # labels loaded from PNGs; C * 255 must not overflow
        (5, None, torch.int32),
        (5, 0, torch.int64),  # ignore label inside [0, C): masked, not binned
        (5, -1, torch.int16),
        (3, 100_000, torch.int64),  # ignore label so large that binning it would be wasteful
    ],
)
def test_matches_numpy_bincount(device, num_classes, ignore_index, dtype):
    pred, target = random_labels((3, 17, 23), num_classes, ignore_index, dtype=torch.int64, seed=num_classes)
    expected = numpy_confusion(pred.numpy(), target.numpy(), num_classes, ignore_index)
    result = confusion_matrix(pred.to(dtype).to(device), target.to(dtype).to(device), num_classes, ignore_index)
    assert result.dtype == torch.int64 and result.device.type == device
    np.testing.assert_array_equal(result.cpu().numpy(), expected)
    unchecked = confusion_matrix(pred.to(dtype).to(device), target.to(dtype).to(device), num_classes, ignore_index,
                                 validate=False)
    assert torch.equal(unchecked, result)


def test_matches_torchmetrics():
    tm = pytest.importorskip("torchmetrics.functional.classification")
    pred, target = random_labels((2, 32, 32), 21, 255, seed=1)
    expected = tm.multiclass_confusion_matrix(pred, target, num_classes=21, ignore_index=255)
    assert torch.equal(confusion_matrix(pred, target, 21), expected)


def test_rows_are_ground_truth():
    # Two pixels of class 0, both predicted as class 1: n[0, 1] = 2.
    result = confusion_matrix(torch.tensor([1, 1]), torch.tensor([0, 0]), num_classes=2)
    assert result.tolist() == [[0, 2], [0, 0]]


def test_empty_and_all_ignored_inputs():
    empty = torch.zeros(0, dtype=torch.int64)
    assert confusion_matrix(empty, empty, 3).tolist() == [[0] * 3] * 3
    ignored = torch.full((4, 4), 255)
    assert confusion_matrix(torch.zeros(4, 4, dtype=torch.int64), ignored, 3).sum() == 0


def test_accumulates_over_batches():
    pred, target = random_labels((6, 9, 9), 4, 255, seed=2)
    metric = ConfusionMatrix(num_classes=4)
    assert metric.matrix.device.type == "cpu" and metric.matrix.dtype == torch.int64
    for batch in range(3):
        returned = metric.update(pred[2 * batch : 2 * batch + 2], target[2 * batch : 2 * batch + 2])
        assert returned is metric
    assert torch.equal(metric.matrix, confusion_matrix(pred, target, 4))
    assert metric.compute()["mean_iu"] == segmentation_scores(metric.matrix)["mean_iu"]
    assert metric.all_reduce() is metric  # not distributed: a no-op
    assert torch.equal(metric.matrix, confusion_matrix(pred, target, 4))
    assert "num_classes=4" in repr(metric) and f"pixels={int(metric.matrix.sum())}" in repr(metric)
    metric.reset()
    assert metric.matrix.sum() == 0


def test_accumulator_to_device(device):
    metric = ConfusionMatrix(num_classes=3, ignore_index=None).to(device)
    assert metric.matrix.device.type == device
    metric.update(torch.tensor([0, 1, 2], device=device), torch.tensor([0, 1, 1], device=device))
    assert metric.matrix.tolist() == [[1, 0, 0], [0, 1, 1], [0, 0, 0]]


# ---------------------------------------------------------------- the four metrics


def test_scores_hand_worked():
    # 3 classes; the last pixel is ignored (255).
    target = torch.tensor([0, 0, 0, 0, 1, 1, 1, 2, 2, 255])
    pred = torch.tensor([0, 0, 1, 2, 1, 1, 0, 2, 2, 0])
    # n = [[2, 1, 1],      t = (4, 3, 2), 9 pixels; column sums (3, 3, 3)
    #      [1, 2, 0],
    #      [0, 0, 2]]
    n = confusion_matrix(pred, target, num_classes=3)
    assert n.tolist() == [[2, 1, 1], [1, 2, 0], [0, 0, 2]]
    scores = segmentation_scores(n)
    # pixel accuracy = (2 + 2 + 2) / 9 = 2/3
    assert scores["pixel_accuracy"] == pytest.approx(2 / 3)
    # per-class accuracy = (2/4, 2/3, 2/2); mean = 13/18
    assert scores["accuracy"].tolist() == pytest.approx([1 / 2, 2 / 3, 1.0])
    assert scores["mean_accuracy"] == pytest.approx(13 / 18)
    # IU_i = n_ii / (t_i + col_i - n_ii) = 2/(4+3-2), 2/(3+3-2), 2/(2+3-2) = 2/5, 1/2, 2/3
    assert scores["iu"].tolist() == pytest.approx([2 / 5, 1 / 2, 2 / 3])
    # mean IU = (2/5 + 1/2 + 2/3) / 3 = 47/90
    assert scores["mean_iu"] == pytest.approx(47 / 90)
    # f.w. IU = (4 * 2/5 + 3 * 1/2 + 2 * 2/3) / 9 = 133/270
    assert scores["frequency_weighted_iu"] == pytest.approx(133 / 270)
    assert scores["iu"].dtype == torch.float64 and all(isinstance(scores[k], float) for k in
                                                       ("pixel_accuracy", "mean_accuracy", "mean_iu",
                                                        "frequency_weighted_iu"))


def test_absent_classes_are_nan_and_skipped():
    # Class 2 is predicted but absent from the ground truth; class 3 is absent from both.
    n = torch.tensor([[3, 1, 0, 0], [0, 2, 2, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    scores = segmentation_scores(n)
    assert math.isnan(scores["accuracy"][2]) and math.isnan(scores["accuracy"][3])
    assert scores["iu"][2] == 0.0 and math.isnan(scores["iu"][3])
    # mean accuracy over classes 0, 1: (3/4 + 2/4) / 2; mean IU over 0, 1, 2: (3/4 + 2/5 + 0) / 3
    assert scores["mean_accuracy"] == pytest.approx(0.625)
    assert scores["mean_iu"] == pytest.approx((3 / 4 + 2 / 5) / 3)
    # f.w. IU weighs by t = (4, 4, 0, 0): (4 * 3/4 + 4 * 2/5) / 8
    assert scores["frequency_weighted_iu"] == pytest.approx((3 + 1.6) / 8)
    assert scores["pixel_accuracy"] == pytest.approx(5 / 8)


def test_scores_match_fcn_repository_formulas():
    # The FCN repository's score.py, in NumPy, on a random matrix.
    rng = np.random.default_rng(0)
    hist = rng.integers(0, 50, size=(6, 6))
    hist[4] = 0  # a class absent from the ground truth
    with np.errstate(divide="ignore", invalid="ignore"):
        acc = np.diag(hist).sum() / hist.sum()
        acc_cls = np.nanmean(np.diag(hist) / hist.sum(1))
        iu = np.diag(hist) / (hist.sum(1) + hist.sum(0) - np.diag(hist))
        freq = hist.sum(1) / hist.sum()
    scores = segmentation_scores(torch.from_numpy(hist))
    assert scores["pixel_accuracy"] == pytest.approx(acc)
    assert scores["mean_accuracy"] == pytest.approx(acc_cls)
    assert scores["mean_iu"] == pytest.approx(np.nanmean(iu))
    assert scores["frequency_weighted_iu"] == pytest.approx((freq[freq > 0] * iu[freq > 0]).sum())


# ---------------------------------------------------------------- errors


def test_error_messages():
    labels = torch.zeros(2, 3, dtype=torch.int64)
    with pytest.raises(ValueError, match=r"confusion_matrix: pred and target must have the same shape, got pred of shape \(2, 3\) and target of shape \(3, 2\)"):
        confusion_matrix(labels, labels.T, 3)
    with pytest.raises(TypeError, match="confusion_matrix: pred must have an integer dtype .* torch.float32"):
        confusion_matrix(labels.float(), labels, 3)
    with pytest.raises(TypeError, match="confusion_matrix: target must have an integer dtype .* torch.bool"):
        confusion_matrix(labels, labels.bool(), 3)
    with pytest.raises(TypeError, match="confusion_matrix: pred must be a torch.Tensor, got list"):
        confusion_matrix([0, 1], labels, 3)
    with pytest.raises(ValueError, match="confusion_matrix: pred and target must be on the same device, got cpu and meta"):
        confusion_matrix(labels, labels.to("meta"), 3)
    with pytest.raises(ValueError, match=r"confusion_matrix: num_classes must be >= 1, got 0"):
        confusion_matrix(labels, labels, 0)
    with pytest.raises(TypeError, match=r"confusion_matrix: ignore_index must be an int, got float"):
        confusion_matrix(labels, labels, 3, ignore_index=255.0)


@pytest.mark.parametrize(
    "bad_pred, bad_target, ignore_index, message",
    [
        (3, None, 255, r"pred values must be in \[0, 3\), got 3"),
        (-1, None, 255, r"pred values must be in \[0, 3\), got -1"),
        (255, None, 255, r"pred values must be in \[0, 3\), got 255"),  # the ignore label is not a prediction
        (None, 7, 255, r"target values must be in \[0, 3\) or ignore_index=255, got 7"),  # between C and 255
        (None, 256, 255, r"target values must be in \[0, 3\) or ignore_index=255, got 256"),
        (None, -2, 255, r"target values must be in \[0, 3\) or ignore_index=255, got -2"),
        (None, 3, None, r"target values must be in \[0, 3\) or ignore_index=None, got 3"),
        (None, 4, -1, r"target values must be in \[0, 3\) or ignore_index=-1, got 4"),
    ],
)
def test_label_range_errors(bad_pred, bad_target, ignore_index, message):
    pred = torch.tensor([[0, 1], [2, 0]])
    target = torch.tensor([[0, 1], [2, 255 if ignore_index == 255 else 0]])
    if bad_pred is not None:
        pred[0, 1] = bad_pred
    if bad_target is not None:
        target[1, 0] = bad_target
    with pytest.raises(ValueError, match="confusion_matrix: " + message):
        confusion_matrix(pred, target, 3, ignore_index)


def test_accumulator_and_scores_errors():
    with pytest.raises(ValueError, match="ConfusionMatrix: num_classes must be >= 1, got -2"):
        ConfusionMatrix(-2)
    with pytest.raises(ValueError, match=r"confusion_matrix: pred values must be in \[0, 2\), got 5"):
        ConfusionMatrix(2).update(torch.tensor([5]), torch.tensor([0]))
    with pytest.raises(ValueError, match=r"segmentation_scores: confmat must be a square Tensor\[C, C\], got Tensor of shape \(2, 3\)"):
        segmentation_scores(torch.zeros(2, 3, dtype=torch.int64))
    with pytest.raises(TypeError, match="segmentation_scores: confmat must hold integer counts, got .* torch.float32"):
        segmentation_scores(torch.zeros(2, 2))
    with pytest.raises(TypeError, match="segmentation_scores: confmat must be a torch.Tensor, got ndarray"):
        segmentation_scores(np.zeros((2, 2), dtype=np.int64))


def test_pair_counts_by_hand_and_bad_input():
    from segnotes.metrics import pair_counts

    counts = pair_counts(torch.tensor([[0, 1], [1, 1]]), torch.tensor([[0, 0], [1, 1]]), 2)  # (t, p) pairs
    assert counts.tolist() == [1, 1, 0, 2]  # (0,0) (0,1) (1,0) (1,1)
    with pytest.raises(TypeError, match=r"pair_counts: pred must have an integer dtype"):
        pair_counts(torch.zeros(2), torch.zeros(2, dtype=torch.int64), 2)
    with pytest.raises(ValueError, match=r"pair_counts: pred and target must have the same shape"):
        pair_counts(torch.zeros(2, dtype=torch.int64), torch.zeros(3, dtype=torch.int64), 2)


def test_segmentation_scores_refuses_negative_counts():
    # Issue 22, finding 7: a negative count gave a pixel accuracy of -2.0 without complaint.
    with pytest.raises(ValueError, match=r"segmentation_scores: confmat must hold counts >= 0, got -3"):
        segmentation_scores(torch.tensor([[2, 0], [0, -3]]))
