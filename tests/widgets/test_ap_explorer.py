import numpy as np
import pytest

from segnotes.viz import detections_figure, pr_curve_figure
from segnotes.widgets import APExplorer


@pytest.fixture
def explorer(ap_case):
    return APExplorer(ap_case["images"], ap_case["targets"], ap_case["detections"], ap_case["result"],
                      category_names={1: "one", 2: "two"})


def test_initial_state(explorer, ap_case):
    assert explorer.values == {"image": 0, "iou_threshold": 0.5, "score_threshold": 0.5, "category": 0}
    assert explorer.result["ap"] == pytest.approx(ap_case["result"]["AP50"])
    assert explorer.result["counts"]["true positive"] == 2  # detections 0 and 1 (scores 0.9, 0.8)
    assert explorer.result["counts"]["false positive"] == 2  # detections 2 (0.7) and 3 (0.5: kept, score >= 0.5)


def test_thresholds_and_category(explorer, ap_case):
    result = explorer.update(iou_threshold=0.75, score_threshold=0.0)
    assert result["ap"] == pytest.approx(ap_case["result"]["AP75"])
    assert result["counts"] == {"true positive": 1, "false positive": 3, "ignored": 1, "found": 1, "missed": 1}
    one = explorer.update(category=1)
    assert one["ap"] == pytest.approx(51 / 101)
    assert one["curve"]["operating_point"] == (0.5, 0.5, 2)  # both category-1 detections kept
    two = explorer.update(category=2, iou_threshold=0.65)
    assert two["ap"] == 1.0
    other_image = explorer.update(image=1, category=0)
    assert other_image["counts"]["missed"] == 1 and other_image["counts"]["true positive"] == 0


def test_score_threshold_moves_along_the_curve_but_not_the_ap(explorer):
    low = explorer.update(category=1, score_threshold=0.0)
    high = explorer.update(score_threshold=0.55)
    assert low["ap"] == high["ap"]
    assert high["curve"]["operating_point"] == (0.5, 1.0, 1)


def test_same_picture_as_the_figure_functions(explorer, ap_case):
    """The widget's panels show what pr_curve_figure and detections_figure show."""
    explorer.update(iou_threshold=0.75, score_threshold=0.0, category=1)
    curve = pr_curve_figure(ap_case["result"], 0.75, 1, 0.0, category_names={1: "one", 2: "two"})
    detections = detections_figure(ap_case["images"][0], ap_case["targets"][0], ap_case["detections"],
                                   ap_case["result"], 0.75, 0.0)
    for figure in (curve, detections):
        figure.canvas.draw()
    assert explorer.figure.axes[1].get_title() == curve.axes[0].get_title()
    assert explorer.figure.axes[0].get_title() == detections.axes[0].get_title()
    np.testing.assert_array_equal(explorer.figure.axes[0].images[0].get_array(),
                                  detections.axes[0].images[0].get_array())


def test_bad_input(explorer, ap_case):
    with pytest.raises(ValueError, match=r"APExplorer.update: iou_threshold must be one of \[0.5, 0.55, .*\], got 0.52"):
        explorer.update(iou_threshold=0.52)
    with pytest.raises(ValueError, match=r"APExplorer.update: category must be one of \[0, 1, 2\], got 5"):
        explorer.update(category=5)
    with pytest.raises(ValueError, match=r"APExplorer: targets must be a list with one entry per image \(2\), got list of length 1"):
        APExplorer(ap_case["images"], ap_case["targets"][:1], ap_case["detections"], ap_case["result"])
    with pytest.raises(ValueError, match=r"APExplorer: ap_result must be the dict returned by segnotes.metrics.average_precision"):
        APExplorer(ap_case["images"], ap_case["targets"], ap_case["detections"], {"AP": 0.5})
