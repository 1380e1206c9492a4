import matplotlib
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from pycocotools import mask as mask_utils

from segnotes.metrics import average_precision, coco_evaluate
from segnotes.viz import detections_figure, pr_curve_figure, precision_recall_curve

matplotlib.use("Agg")

SIZE = 32


def box_mask(top, left, height, width):
    mask = np.zeros((SIZE, SIZE), dtype=bool)
    mask[top : top + height, left : left + width] = True
    return mask


def rle(mask):
    encoded = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    encoded["counts"] = encoded["counts"].decode("ascii")
    return encoded


def tiny_case():
    """Two 32x32 images; every number below is worked out by hand.

    Image 1: A (category 1, 8x8), B (category 2, 6x10 = 60 px), C (a crowd region of category 1).
    Image 2: D (category 1), never detected.
    Detections: 0 = A exactly (0.9, matched at every threshold); 1 = B moved 2 px right (0.8, IoU 48/72 = 0.667:
    matched up to 0.65); 2 = a box where nothing is (0.7, false positive); 3 = A moved by (1, 1) (0.5: A is
    taken, so a false positive); 4 = a box inside the crowd region (0.6, ignored); 5 = image 2, category 2,
    nothing there (0.3, false positive).
    """
    masks = {"A": box_mask(2, 2, 8, 8), "B": box_mask(20, 4, 6, 10), "C": box_mask(2, 20, 10, 10),
             "D": box_mask(10, 10, 8, 8)}
    rows = [(1, 1, 1, "A", 0), (2, 1, 2, "B", 0), (3, 1, 1, "C", 1), (4, 2, 1, "D", 0)]
    annotations = [
        {"id": i, "image_id": image, "category_id": category, "segmentation": rle(masks[name]),
         "area": float(masks[name].sum()), "bbox": mask_utils.toBbox(rle(masks[name])).tolist(), "iscrowd": crowd}
        for i, image, category, name, crowd in rows
    ]
    ground_truth = {
        "images": [{"id": 1, "height": SIZE, "width": SIZE}, {"id": 2, "height": SIZE, "width": SIZE}],
        "annotations": annotations,
        "categories": [{"id": 1, "name": "one"}, {"id": 2, "name": "two"}],
    }
    shifted_a = np.roll(np.roll(masks["A"], 1, 0), 1, 1)
    detections = [
        (1, 1, masks["A"], 0.9),
        (1, 2, np.roll(masks["B"], 2, 1), 0.8),
        (1, 2, box_mask(12, 22, 5, 5), 0.7),
        (1, 1, shifted_a, 0.5),
        (1, 1, box_mask(4, 22, 4, 4), 0.6),
        (2, 2, box_mask(0, 0, 5, 5), 0.3),
    ]
    detections = [{"image_id": image, "category_id": category, "score": score, "segmentation": rle(mask),
                   "bbox": mask_utils.toBbox(rle(mask)).tolist()} for image, category, mask, score in detections]
    return ground_truth, detections, masks


@pytest.fixture(scope="module")
def case():
    ground_truth, detections, masks = tiny_case()
    return ground_truth, detections, masks, average_precision(ground_truth, detections)


def test_the_hand_worked_case_is_what_cocoeval_says(case):
    ground_truth, detections, _, result = case
    category_1 = 51 / 101  # recall 0.5 (A of A, D) at precision 1: recall points 0.00..0.50
    category_2 = [1.0] * 4 + [0.0] * 6  # B found at IoU 0.667: thresholds 0.50..0.65
    reference = coco_evaluate(ground_truth, detections)
    assert result["AP50"] == pytest.approx((category_1 + 1.0) / 2)
    assert result["AP75"] == pytest.approx(category_1 / 2)
    assert result["AP"] == pytest.approx((category_1 + np.mean(category_2)) / 2)
    for key in ("AP", "AP50", "AP75"):
        assert result[key] == pytest.approx(reference[key], abs=1e-6)


def test_precision_recall_curve_by_hand(case):
    *_, result = case
    curve = precision_recall_curve(result, category_id=1, iou_threshold=0.5)
    # Detection 4 (in the crowd) is ignored; 0 is right, 3 is a duplicate.
    np.testing.assert_allclose(curve["scores"], [0.9, 0.5])
    assert curve["true_positive"].tolist() == [True, False]
    np.testing.assert_allclose(curve["recall"], [0.5, 0.5])
    np.testing.assert_allclose(curve["precision"], [1.0, 0.5])
    np.testing.assert_allclose(curve["envelope"], [1.0, 0.5])
    assert curve["num_positives"] == 2
    assert (curve["interpolated"][:51] == 1).all() and (curve["interpolated"][51:] == 0).all()
    assert curve["ap"] == pytest.approx(51 / 101)
    strict = precision_recall_curve(result, category_id=2, iou_threshold=0.7)
    assert strict["true_positive"].tolist() == [False, False, False] and strict["ap"] == 0


def test_interpolated_curves_equal_cocoeval_precision_on_random_cases():
    from segnotes.widgets import simulated_detections

    generator = np.random.default_rng(0)
    images, annotations = [], []
    for image_id in range(1, 9):
        images.append({"id": image_id, "height": 48, "width": 48})
        for _ in range(generator.integers(1, 5)):
            top, left = generator.integers(0, 36, size=2)
            height, width = generator.integers(3, 12, size=2)
            mask = np.zeros((48, 48), dtype=bool)
            mask[top : top + height, left : left + width] = True
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": int(generator.integers(1, 4)), "segmentation": rle(mask),
                                "area": float(mask.sum()), "bbox": mask_utils.toBbox(rle(mask)).tolist(),
                                "iscrowd": int(generator.random() < 0.1)})
    ground_truth = {"images": images, "annotations": annotations, "categories": [{"id": c} for c in (1, 2, 3)]}
    detections = simulated_detections(ground_truth, seed=1, duplicate_rate=0.3, false_positives_per_image=2.0)
    result = average_precision(ground_truth, detections)
    reference = coco_evaluate(ground_truth, detections)["precision"]  # [T, R, K, A, M]
    for t, threshold in enumerate(result["iou_thresholds"]):
        for k, category_id in enumerate(result["category_ids"]):
            curve = precision_recall_curve(result, int(category_id), float(threshold))
            expected = reference[t, :, k, 0, -1]
            if curve["num_positives"] == 0:
                assert (expected == -1).all()
            else:
                np.testing.assert_allclose(curve["interpolated"], expected, atol=1e-9)


def test_pr_curve_figure_titles(case):
    *_, result = case
    figure = pr_curve_figure(result, iou_threshold=0.5, category_id=1, score_threshold=0.55,
                             category_names={1: "one", 2: "two"})
    assert isinstance(figure, Figure)
    figure.canvas.draw()
    assert figure.axes[0].get_title() == ("one at IoU 0.50: AP 0.505\n"
                                          "score ≥ 0.55: precision 1.00, recall 0.50")
    everything = pr_curve_figure(result, iou_threshold=0.75)
    everything.canvas.draw()
    assert everything.axes[0].get_title().startswith(f"all categories at IoU 0.75: AP {result['AP75']:.3f}")


def test_pr_curve_figure_bad_input(case):
    *_, result = case
    with pytest.raises(ValueError, match=r"pr_curve_figure: iou_threshold must be one of \[0.5, 0.55, .*0.95\], got 0.52"):
        pr_curve_figure(result, iou_threshold=0.52)
    with pytest.raises(ValueError, match=r"pr_curve_figure: category_id must be None \(all categories\) or one of \[1, 2\], got 7"):
        pr_curve_figure(result, category_id=7)
    with pytest.raises(ValueError, match=r"pr_curve_figure: score_threshold must be >= 0, got -0.1"):
        pr_curve_figure(result, score_threshold=-0.1)
    with pytest.raises(ValueError, match=r"pr_curve_figure: ap_result must be the dict returned by "
                                         r"segnotes.metrics.average_precision, it lacks the key 'matches'"):
        pr_curve_figure({k: v for k, v in result.items() if k != "matches"})
    with pytest.raises(TypeError, match=r"pr_curve_figure: ap_result must be the dict returned by .*got list"):
        pr_curve_figure([result])
    with pytest.raises(ValueError, match=r"precision_recall_curve: category_id must be one of \[1, 2\], got None"):
        precision_recall_curve(result, category_id=None)


def _title(figure):
    figure.canvas.draw()
    return figure.axes[0].get_title()


@pytest.mark.parametrize(
    "iou_threshold, score_threshold, expected",
    [
        (0.5, 0.0, "2 TP, 2 FP, 0 missed"),
        (0.75, 0.0, "1 TP, 3 FP, 1 missed"),  # B's detection (IoU 0.667) no longer matches
        (0.5, 0.85, "1 TP, 0 FP, 1 missed"),  # B's detection (0.8) is not drawn: B counts as missed
    ],
)
def test_detections_figure_counts(case, iou_threshold, score_threshold, expected):
    ground_truth, detections, _, result = case
    image = torch.rand(3, SIZE, SIZE)
    annotations = [a for a in ground_truth["annotations"] if a["image_id"] == 1]
    figure = detections_figure(image, annotations, detections, result, iou_threshold, score_threshold)
    assert isinstance(figure, Figure)
    assert _title(figure).endswith(expected)


def test_detections_figure_takes_torchvision_targets(case):
    ground_truth, detections, masks, result = case
    image = torch.rand(3, SIZE, SIZE)
    without_crowd = {"masks": torch.from_numpy(np.stack([masks["A"], masks["B"]])), "image_id": torch.tensor(1)}
    with_crowd = {"masks": torch.from_numpy(np.stack([masks["A"], masks["B"], masks["C"]]))}
    assert _title(detections_figure(image, without_crowd, detections, result, 0.75)).endswith("1 missed")
    assert _title(detections_figure(image, with_crowd, detections, result, 0.75, image_id=1)).endswith("1 missed")
    with pytest.raises(ValueError, match=r"detections_figure: target holds 1 masks but the ground truth of image 1 "
                                         r"in ap_result has 2 objects"):
        detections_figure(image, {"masks": torch.from_numpy(masks["A"][None]), "image_id": 1}, detections, result)
    with pytest.raises(ValueError, match=r"detections_figure: image_id is needed when target carries no image_id"):
        detections_figure(image, with_crowd, detections, result)
    with pytest.raises(ValueError, match=r"detections_figure: detections must be the list given to average_precision"):
        detections_figure(image, without_crowd, detections[:2], result)
    with pytest.raises(ValueError, match=r"detections_figure: target must be COCO annotations of image 1"):
        detections_figure(image, [{"id": 4, "segmentation": rle(masks["D"])}], detections, result, image_id=1)
