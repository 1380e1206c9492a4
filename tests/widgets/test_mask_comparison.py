import pytest
import torch

from segnotes.metrics import confusion_matrix, segmentation_scores
from segnotes.viz import perturb_mask
from segnotes.widgets import MaskComparison


def square(size=32):
    mask = torch.zeros(size, size, dtype=torch.bool)
    mask[10:20, 10:20] = True
    return mask


def test_perfect_prediction_scores_one():
    scores = MaskComparison(square()).result
    assert scores["iou"] == 1 and scores["pixel_accuracy"] == 1 and scores["mean_iu"] == 1
    assert scores["false_positives"] == scores["false_negatives"] == 0


def test_shift_by_hand():
    scores = MaskComparison(square()).update(shift_x=2)
    # 10x10 square moved 2 px: 80 px overlap, 20 gained, 20 lost.
    assert (scores["true_positives"], scores["false_positives"], scores["false_negatives"]) == (80, 20, 20)
    assert scores["iou"] == pytest.approx(80 / 120)
    assert scores["pixel_accuracy"] == pytest.approx((1024 - 40) / 1024)
    background_iou = (1024 - 120) / (1024 - 80)
    assert scores["mean_iu"] == pytest.approx((80 / 120 + background_iou) / 2)


def test_sliders_feed_perturb_mask_and_the_metrics_module():
    target = square()
    ignore = perturb_mask(target, dilate=1) & ~perturb_mask(target, dilate=-1)
    widget = MaskComparison(target, ignore=ignore, image=torch.rand(3, 32, 32))
    for values in ({"coarsen": 8, "upsample": "nearest"}, {"dilate": -2, "shift_y": 1}, {"coarsen": 32}):
        widget.update(**{"shift_y": 0, "shift_x": 0, "dilate": 0, "coarsen": 1, "upsample": "bilinear", **values})
        v = widget.values
        predicted = perturb_mask(target, shift=(v["shift_y"], v["shift_x"]), dilate=v["dilate"],
                                 coarsen=v["coarsen"], upsample=v["upsample"])
        expected = segmentation_scores(confusion_matrix(predicted.long(), target.long().masked_fill(ignore, 255), 2))
        assert widget.result["mean_iu"] == pytest.approx(expected["mean_iu"], nan_ok=True)
        assert widget.result["pixel_accuracy"] == pytest.approx(expected["pixel_accuracy"])


def test_coarsening_costs_iou_more_than_pixel_accuracy():
    widget = MaskComparison(square(64))
    coarse = widget.update(coarsen=32)
    # The 10x10 square fills under half of its 32x32 cell: a stride-32 prediction loses it entirely,
    # yet 97.6% of the pixels (the background) are still right.
    assert coarse["iou"] == 0
    assert coarse["pixel_accuracy"] == pytest.approx(1 - 100 / 64**2)
    assert coarse["mean_iu"] == pytest.approx((1 - 100 / 64**2) / 2)


def test_prediction_different_from_target():
    target = square()
    widget = MaskComparison(target, prediction=perturb_mask(target, dilate=2))
    assert widget.result["false_positives"] > 0 and widget.result["false_negatives"] == 0


def test_bad_input():
    with pytest.raises(TypeError, match=r"MaskComparison: target must have dtype torch.bool"):
        MaskComparison(square().float())
    with pytest.raises(ValueError, match=r"MaskComparison: prediction and target must have the same shape"):
        MaskComparison(square(), prediction=square(16))
