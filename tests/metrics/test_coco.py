import copy
import json

import numpy as np
import pycocotools.mask as mask_utils
import pytest
import torch
from pycocotools.coco import COCO

from segnotes.metrics import (
    average_precision,
    coco_evaluate,
    decode_segmentation,
    detections_from_predictions,
    encode_masks,
)
from segnotes.metrics._synthetic import synthetic_instances
from segnotes.metrics.coco import IOU_THRESHOLDS, greedy_match

SUMMARY = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def assert_same_as_cocoeval(coco_gt, detections, **options):
    """average_precision == COCOeval to 1e-6 (summary, precision, recall, scores); returns ours."""
    ours = average_precision(coco_gt, detections, **options)
    reference = coco_evaluate(coco_gt, detections, **options)
    for key in SUMMARY:
        assert ours[key] == pytest.approx(reference[key], abs=1e-6), key
    for key in ("precision", "recall", "scores"):
        assert ours[key].shape == reference[key].shape, key
        np.testing.assert_allclose(ours[key], reference[key], atol=1e-6, rtol=0, err_msg=key)
    return ours


# ---------------------------------------------------------------- hand-made data sets


def rle(mask: np.ndarray) -> dict:
    encoded = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    encoded["counts"] = encoded["counts"].decode("ascii")
    return encoded


def box_mask(x0, y0, x1, y1, size=32):
    """bool [size, size] with the pixels [y0, y1) x [x0, x1) set."""
    mask = np.zeros((size, size), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE: run lengths of 0s and 1s, column by column, starting with 0s."""
    flat = mask.flatten(order="F").astype(np.int8)
    edges = np.flatnonzero(np.diff(np.r_[0, flat, 1 - flat[-1]]))  # where the value changes
    return {"size": list(mask.shape), "counts": np.diff(np.r_[0, edges]).tolist()}


def make_gt(objects, num_images=1, size=32, num_categories=2):
    """COCO dict; objects are (image_id, category_id, mask, iscrowd), ids from 1."""
    annotations = []
    for ann_id, (image_id, category_id, mask, iscrowd) in enumerate(objects, start=1):
        segmentation = rle(mask)
        annotations.append({"id": ann_id, "image_id": image_id, "category_id": category_id, "iscrowd": iscrowd,
                            "segmentation": segmentation, "area": float(mask.sum()),
                            "bbox": mask_utils.toBbox(segmentation).tolist()})
    return {
        "images": [{"id": i, "height": size, "width": size} for i in range(1, num_images + 1)],
        "annotations": annotations,
        "categories": [{"id": k, "name": str(k)} for k in range(1, num_categories + 1)],
    }


def make_dets(detections, with_bbox=True):
    """COCO results from (image_id, category_id, mask, score)."""
    results = []
    for image_id, category_id, mask, score in detections:
        segmentation = rle(mask)
        det = {"image_id": image_id, "category_id": category_id, "segmentation": segmentation, "score": score}
        if with_bbox:
            det["bbox"] = mask_utils.toBbox(segmentation).tolist()
        results.append(det)
    return results


@pytest.fixture(scope="module")
def synthetic():
    """A small random case: 12 images, 3 categories, crowd regions, tied scores."""
    return synthetic_instances(num_images=12, image_size=48, num_categories=3, detections_per_image=25,
                               crowd_fraction=0.2, score_decimals=1, seed=7)


# ---------------------------------------------------------------- equal to COCOeval


@pytest.mark.parametrize("iou_type", ["segm", "bbox"])
def test_perfect_detections(synthetic, iou_type):
    gt, _ = synthetic
    dets = [{"image_id": a["image_id"], "category_id": a["category_id"], "segmentation": a["segmentation"],
             "bbox": a["bbox"], "score": 1.0} for a in gt["annotations"] if not a["iscrowd"]]
    result = assert_same_as_cocoeval(gt, dets, iou_type=iou_type)
    assert result["AP"] == pytest.approx(1.0) and result["AP75"] == pytest.approx(1.0)


@pytest.mark.parametrize("iou_type", ["segm", "bbox"])
def test_shuffled_scores(synthetic, iou_type):
    gt, dets = synthetic
    rng = np.random.default_rng(0)
    shuffled = [dict(d, score=float(s)) for d, s in zip(dets, rng.permutation([d["score"] for d in dets]))]
    shuffled = [shuffled[i] for i in rng.permutation(len(shuffled))]
    assert_same_as_cocoeval(gt, shuffled, iou_type=iou_type)


def test_tied_scores_keep_input_order():
    # One object, two detections with the same score: the first listed takes the object (as
    # COCOeval's stable sort), so a perfect one listed second is a false positive.
    gt = make_gt([(1, 1, box_mask(0, 0, 10, 10), 0)])
    good, poor = box_mask(0, 0, 10, 10), box_mask(0, 0, 10, 7)  # IoU 1 and 0.7
    poor_first = assert_same_as_cocoeval(gt, make_dets([(1, 1, poor, 0.5), (1, 1, good, 0.5)]))
    good_first = assert_same_as_cocoeval(gt, make_dets([(1, 1, good, 0.5), (1, 1, poor, 0.5)]))
    assert good_first["AP"] == pytest.approx(1.0) and poor_first["AP"] < 1.0
    assert poor_first["matches"]["gt_id"][0].tolist() == [1] * 5 + [0] * 5  # the poor one, up to IoU 0.7


def test_classes_without_detections_or_ground_truth(synthetic):
    gt, dets = copy.deepcopy(synthetic)
    gt["categories"].append({"id": 9, "name": "no ground truth"})
    for det in dets[:5]:
        det["category_id"] = 9
    dets = [d for d in dets if d["category_id"] != 2]  # category 2 has ground truth but no detections
    result = assert_same_as_cocoeval(gt, dets)
    k_no_dets, k_no_gt = list(result["category_ids"]).index(2), list(result["category_ids"]).index(9)
    all_ = list(result["area_ranges"]).index("all")
    assert (result["precision"][:, :, k_no_dets, all_] == 0).all() and (result["recall"][:, k_no_dets, all_] == 0).all()
    assert (result["precision"][:, :, k_no_gt] == -1).all()


def test_crowd_regions():
    crowd = box_mask(10, 10, 30, 30)
    gt = make_gt([(1, 1, box_mask(0, 0, 8, 8), 0), (1, 1, crowd, 1)])
    dets = make_dets([
        (1, 1, box_mask(0, 0, 8, 8), 0.9),  # the object
        (1, 1, box_mask(12, 12, 16, 16), 0.8),  # three small detections inside the crowd:
        (1, 1, box_mask(20, 20, 28, 24), 0.7),  # IoU with a crowd region is intersection / detection
        (1, 1, box_mask(15, 15, 25, 25), 0.6),  # area = 1, so each matches it and is ignored
        (1, 1, box_mask(5, 20, 15, 30), 0.5),  # half inside: matched only up to IoU 0.5
    ])
    result = assert_same_as_cocoeval(gt, dets)
    assert result["AP"] == pytest.approx(1.0)  # the one false positive ranks below the one true positive
    matches = result["matches"]
    order = np.argsort(matches["detection_index"])
    assert matches["gt_id"][order][:, 0].tolist() == [1, 2, 2, 2, 2]
    assert matches["ignored"][order][1:4].all() and matches["ignored"][order][4, 0]
    assert not matches["ignored"][order][4, 1]  # at IoU 0.55 the half-inside one is a false positive
    assert result["gt_matches"]["ignored"].tolist() == [False, True]


def test_synthetic_crowds_and_overlaps():
    gt, dets = synthetic_instances(num_images=10, image_size=48, num_categories=2, detections_per_image=20,
                                   crowd_fraction=0.4, max_objects=8, score_decimals=2, seed=3)
    assert_same_as_cocoeval(gt, dets)


@pytest.mark.parametrize("max_dets", [100, 10, 20])
def test_more_than_max_dets_per_image(max_dets):
    # 130 detections of one category per image: only the best max_dets per image count.
    gt, dets = synthetic_instances(num_images=3, image_size=48, num_categories=1, detections_per_image=130,
                                   score_decimals=2, seed=4)
    result = assert_same_as_cocoeval(gt, dets, max_dets=max_dets)
    assert result["max_dets"] == [1, 10, max_dets]
    assert len(result["matches"]["score"]) == 3 * max_dets


def test_images_without_annotations():
    gt = make_gt([(1, 1, box_mask(0, 0, 10, 10), 0)], num_images=3)
    dets = make_dets([(1, 1, box_mask(0, 0, 10, 10), 0.5), (2, 1, box_mask(0, 0, 10, 10), 0.9),
                      (3, 2, box_mask(5, 5, 9, 9), 0.3)])
    result = assert_same_as_cocoeval(gt, dets)
    # A false positive on image 2 scores above the true positive: precision 1/2 at every recall.
    assert result["AP"] == pytest.approx(0.5, abs=1e-6)


@pytest.mark.parametrize("iou_type", ["segm", "bbox"])
@pytest.mark.parametrize("with_bbox", [True, False])
def test_small_medium_and_large_objects(iou_type, with_bbox):
    # 128-pixel images hold all three COCO sizes (< 32², 32²-96², > 96²). Without a bbox in the
    # first detection, detection areas come from the masks instead of the boxes.
    gt, dets = synthetic_instances(num_images=8, image_size=128, num_categories=2, detections_per_image=15,
                                   max_objects=8, seed=4)
    areas = np.array([a["area"] for a in gt["annotations"]])
    assert (areas < 32**2).any() and ((areas > 32**2) & (areas < 96**2)).any() and (areas > 96**2).any()
    if not with_bbox:
        dets = [{k: v for k, v in d.items() if k != "bbox"} for d in dets]
    result = assert_same_as_cocoeval(gt, dets, iou_type=iou_type)
    assert all(result[key] >= 0 for key in ("APs", "APm", "APl"))


def test_custom_area_ranges(synthetic):
    gt, dets = synthetic
    ranges = {"all": (0, 48**2), "small": (0, 8**2), "medium": (8**2, 24**2), "large": (24**2, 48**2)}
    result = assert_same_as_cocoeval(gt, dets, area_ranges=ranges)
    assert result["area_ranges"] == ranges and result["precision"].shape[3] == 4
    default = average_precision(gt, dets)
    assert result["APs"] != default["APs"]


def test_area_range_boundaries_are_inclusive():
    # A ground-truth object of exactly 32² = 1024 pixels is both small and medium, as in COCOeval.
    gt = make_gt([(1, 1, box_mask(0, 0, 32, 32, size=64), 0)], size=64)
    result = assert_same_as_cocoeval(gt, make_dets([(1, 1, box_mask(0, 0, 32, 32, size=64), 1.0)]))
    assert result["APs"] == pytest.approx(1.0) and result["APm"] == pytest.approx(1.0) and result["APl"] == -1


@pytest.mark.parametrize("iou_type", ["segm", "bbox"])
def test_empty_detections(synthetic, iou_type):
    gt, _ = synthetic
    result = assert_same_as_cocoeval(gt, [], iou_type=iou_type)
    assert result["AP"] == 0 and result["APl"] == -1  # no large object in 48-pixel images
    assert len(result["matches"]["score"]) == 0 and (result["gt_matches"]["detection_index"] == -1).all()


def test_polygons_and_uncompressed_rle():
    # Ground truth as polygons, detections as polygons and uncompressed RLE.
    triangle = [[2.0, 2.0, 20.0, 2.0, 2.0, 20.0]]
    square = [[10.0, 10.0, 25.0, 10.0, 25.0, 25.0, 10.0, 25.0]]
    gt = make_gt([], num_categories=1)
    gt["annotations"] = [
        {"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "segmentation": triangle, "area": 162.0,
         "bbox": [2, 2, 18, 18]},
        {"id": 2, "image_id": 1, "category_id": 1, "iscrowd": 0, "segmentation": square, "area": 225.0,
         "bbox": [10, 10, 15, 15]},
    ]
    uncompressed = uncompressed_rle(box_mask(10, 10, 25, 25))
    dets = [{"image_id": 1, "category_id": 1, "segmentation": [[2.0, 2.0, 19.0, 2.0, 2.0, 19.0]], "score": 0.9},
            {"image_id": 1, "category_id": 1, "segmentation": uncompressed, "score": 0.8}]
    result = assert_same_as_cocoeval(gt, dets)
    assert result["AP50"] == pytest.approx(1.0)


@pytest.mark.parametrize("seed", [11, 12, 13, 14])
@pytest.mark.parametrize("iou_type", ["segm", "bbox"])
def test_random_cases(seed, iou_type):
    rng = np.random.default_rng(seed)
    gt, dets = synthetic_instances(
        num_images=int(rng.integers(2, 10)), image_size=int(rng.choice([32, 64, 128])),
        num_categories=int(rng.integers(1, 5)), detections_per_image=int(rng.integers(1, 40)),
        max_objects=int(rng.integers(1, 10)), crowd_fraction=float(rng.choice([0.0, 0.2])),
        score_decimals=[1, 3, None][seed % 3], seed=seed,
    )
    assert_same_as_cocoeval(gt, dets, iou_type=iou_type)


def test_coco_object_and_json_path_inputs(synthetic, tmp_path):
    gt, dets = synthetic
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    expected = average_precision(gt, dets)
    coco = COCO()
    coco.dataset = copy.deepcopy(gt)
    coco.createIndex()
    for source in (str(path), path, coco):
        assert average_precision(source, dets)["AP"] == expected["AP"]
    assert coco_evaluate(path, dets)["AP"] == pytest.approx(expected["AP"], abs=1e-6)


def test_inputs_are_not_modified(synthetic):
    gt, dets = synthetic
    gt_before, dets_before = copy.deepcopy(gt), copy.deepcopy(dets)
    average_precision(gt, dets)
    coco_evaluate(gt, dets)  # COCOeval itself rewrites annotations; coco_evaluate works on copies
    assert gt == gt_before and dets == dets_before


# ---------------------------------------------------------------- matching


def cocoeval_match(ious, gt_ignore, gt_crowd, thresholds):
    """COCOeval.evaluateImg's loop, transcribed: matched gt index per (threshold, detection), -1 for none."""
    gtind = np.argsort(gt_ignore, kind="mergesort")
    ious, gt_ignore, gt_crowd = ious[:, gtind], gt_ignore[gtind], gt_crowd[gtind]
    matched = -np.ones((len(thresholds), ious.shape[0]), dtype=np.int64)
    gtm = np.zeros((len(thresholds), ious.shape[1]))
    for tind, t in enumerate(thresholds):
        for dind in range(ious.shape[0]):
            iou, m = min([t, 1 - 1e-10]), -1
            for gind in range(ious.shape[1]):
                if gtm[tind, gind] > 0 and not gt_crowd[gind]:
                    continue
                if m > -1 and gt_ignore[m] == 0 and gt_ignore[gind] == 1:
                    break
                if ious[dind, gind] < iou:
                    continue
                iou, m = ious[dind, gind], gind
            if m == -1:
                continue
            matched[tind, dind] = gtind[m]
            gtm[tind, m] = dind + 1
    return matched


@pytest.mark.parametrize("seed", range(6))
def test_greedy_match_equals_cocoeval_loop(seed):
    # IoUs from a few values, so that ties and IoUs equal to a threshold are common.
    rng = np.random.default_rng(seed)
    for _ in range(20):
        num_dets, num_gts, num_areas = rng.integers(1, 9), rng.integers(1, 6), 3
        values = np.array([0.0, 0.3, 0.5, 0.55, 0.7, 0.75, 0.9, 1.0])
        ious = rng.choice(values, size=(num_dets, num_gts))
        if seed % 2:  # at most one IoU >= 0.5 per detection: the unambiguous shortcut
            keep = rng.integers(0, num_gts, size=num_dets)
            ious = np.where(np.arange(num_gts) == keep[:, None], ious, 0.0)
        gt_crowd = rng.random(num_gts) < 0.3
        gt_ignore = gt_crowd | (rng.random((num_areas, num_gts)) < 0.3)
        result = greedy_match(ious, gt_ignore, gt_crowd, IOU_THRESHOLDS)
        for a in range(num_areas):
            expected = cocoeval_match(ious, gt_ignore[a].astype(int), gt_crowd, IOU_THRESHOLDS)
            np.testing.assert_array_equal(result[a], expected)


def test_match_tables():
    gt = make_gt([(1, 1, box_mask(0, 0, 10, 10), 0), (1, 1, box_mask(20, 20, 30, 30), 0)])
    dets = make_dets([(1, 1, box_mask(0, 0, 10, 8), 0.6), (1, 1, box_mask(0, 0, 10, 10), 0.9),
                      (1, 1, box_mask(12, 0, 20, 8), 0.1)])
    result = average_precision(gt, dets)
    matches = result["matches"]
    # Sorted by score: detection 1 (IoU 1) takes object 1; detection 0 (IoU 0.8) finds it taken.
    assert matches["detection_index"].tolist() == [1, 0, 2]
    assert matches["score"].tolist() == [0.9, 0.6, 0.1]
    assert matches["iou"].tolist() == pytest.approx([1.0, 0.8, 0.0])
    assert matches["gt_id"].shape == (3, 10) and matches["ignored"].shape == (3, 10)
    assert (matches["gt_id"][0] == 1).all() and (matches["gt_id"][1:] == 0).all() and not matches["ignored"].any()
    assert matches["image_id"].tolist() == [1, 1, 1] and matches["category_id"].tolist() == [1, 1, 1]
    gt_matches = result["gt_matches"]
    assert gt_matches["gt_id"].tolist() == [1, 2]
    assert (gt_matches["detection_index"][0] == 1).all() and (gt_matches["detection_index"][1] == -1).all()


# ---------------------------------------------------------------- model outputs


@pytest.mark.parametrize("probabilities", [True, False])
def test_detections_from_predictions(probabilities):
    gt = make_gt([(1, 1, box_mask(2, 3, 12, 9), 0), (2, 2, box_mask(0, 0, 32, 32), 0)], num_images=2)
    masks = torch.stack([torch.from_numpy(box_mask(2, 3, 12, 9)), torch.from_numpy(box_mask(0, 0, 32, 32))])
    masks = masks[:, None]  # (N, 1, H, W) as Mask R-CNN returns
    masks = masks.float() * 0.8 + 0.1 if probabilities else masks
    predictions = [
        {"boxes": torch.tensor([[2.0, 3.0, 12.0, 9.0], [0.0, 0.0, 5.0, 5.0]]), "labels": torch.tensor([1, 2]),
         "scores": torch.tensor([0.9, 0.05]), "masks": torch.cat([masks[:1], masks[:1]])},
        {"boxes": torch.tensor([[0.0, 0.0, 32.0, 32.0]]), "labels": torch.tensor([2]),
         "scores": torch.tensor([0.7]), "masks": masks[1:]},
    ]
    dets = detections_from_predictions(predictions, [1, 2], score_threshold=0.1)
    assert len(dets) == 2  # the 0.05 detection is dropped
    assert dets[0]["bbox"] == pytest.approx([2.0, 3.0, 10.0, 6.0]) and dets[0]["category_id"] == 1
    assert isinstance(dets[0]["segmentation"]["counts"], str)
    json.dumps(dets)  # a valid results file
    assert mask_utils.area(dets[0]["segmentation"]) == 60
    for iou_type in ("segm", "bbox"):
        assert assert_same_as_cocoeval(gt, dets, iou_type=iou_type)["AP"] == pytest.approx(1.0)
    boxes_only = detections_from_predictions([{k: v for k, v in p.items() if k != "masks"} for p in predictions],
                                             [1, 2])
    assert len(boxes_only) == 3 and "segmentation" not in boxes_only[0]


def test_detections_from_predictions_errors():
    prediction = {"boxes": torch.zeros(1, 4), "labels": torch.ones(1, dtype=torch.int64), "scores": torch.ones(1)}
    with pytest.raises(ValueError, match="detections_from_predictions: image_ids must be a list with one id per prediction"):
        detections_from_predictions([prediction], [1, 2])
    with pytest.raises(ValueError, match=r"detections_from_predictions: predictions\[0\] is missing the key 'scores'"):
        detections_from_predictions([{"boxes": torch.zeros(1, 4), "labels": torch.ones(1)}], [1])
    with pytest.raises(ValueError, match=r"detections_from_predictions: predictions\[0\] must hold boxes \[N, 4\]"):
        detections_from_predictions([dict(prediction, boxes=torch.zeros(1, 5))], [1])
    with pytest.raises(ValueError, match=r"detections_from_predictions: predictions\[0\]\['masks'\] must be Tensor\[N, 1, H, W\]"):
        detections_from_predictions([dict(prediction, masks=torch.zeros(2, 1, 4, 4))], [1])
    with pytest.raises(TypeError, match=r"detections_from_predictions: predictions\[0\]\['labels'\] must be a torch.Tensor"):
        detections_from_predictions([dict(prediction, labels=[1])], [1])


# ---------------------------------------------------------------- bad input


@pytest.fixture
def tiny():
    gt = make_gt([(1, 1, box_mask(0, 0, 10, 10), 0)])
    return gt, make_dets([(1, 1, box_mask(0, 0, 10, 10), 0.5)])


@pytest.mark.parametrize("function", [average_precision, coco_evaluate])
def test_bad_detections(tiny, function):
    gt, dets = tiny
    name = function.__name__
    with pytest.raises(ValueError, match=rf"{name}: detections\[1\] has image_id 7, which coco_gt does not list"):
        function(gt, dets + [dict(dets[0], image_id=7)])
    with pytest.raises(ValueError, match=rf"{name}: detections\[0\] has category_id 3, which coco_gt does not list"):
        function(gt, [dict(dets[0], category_id=3)])
    with pytest.raises(ValueError, match=rf"{name}: detections\[0\] is missing the key 'score'"):
        function(gt, [{k: v for k, v in dets[0].items() if k != "score"}])
    with pytest.raises(ValueError, match=rf"{name}: detections\[0\] is missing the key 'image_id'"):
        function(gt, [{k: v for k, v in dets[0].items() if k != "image_id"}])
    with pytest.raises(ValueError, match=rf"{name}: detections\[0\] is missing the key 'segmentation' \(iou_type='segm' needs masks\)"):
        function(gt, [{k: v for k, v in dets[0].items() if k != "segmentation"}])
    with pytest.raises(ValueError, match=rf"{name}: detections\[1\] is missing the key 'bbox' \(the first detection has one"):
        function(gt, dets + [{k: v for k, v in dets[0].items() if k != "bbox"}])
    with pytest.raises(TypeError, match=rf"{name}: detections\[0\] must be a dict, got list"):
        function(gt, [[1, 1, 0.5]])
    with pytest.raises(TypeError, match=rf"{name}: detections must be a list of COCO result dicts, got str"):
        function(gt, "results.json")
    with pytest.raises(ValueError, match=rf"{name}: detections\[0\]\['segmentation'\] must be polygons \(list\) or RLE"):
        function(gt, [dict(dets[0], segmentation="mask")])


def test_mask_size_mismatch(tiny):
    gt, dets = tiny
    wrong = make_dets([(1, 1, box_mask(0, 0, 10, 10, size=40), 0.5)])
    with pytest.raises(ValueError, match=r"average_precision: detections\[0\] has a mask of size \[40, 40\], but ground-truth annotation 1 of image 1 has size \[32, 32\]"):
        average_precision(gt, wrong)


@pytest.mark.parametrize("function", [average_precision, coco_evaluate])
def test_bad_options_and_ground_truth(tiny, function, tmp_path):
    gt, dets = tiny
    name = function.__name__
    with pytest.raises(ValueError, match=rf"{name}: iou_type must be one of \['segm', 'bbox'\], got 'keypoints'"):
        function(gt, dets, iou_type="keypoints")
    missing = tmp_path / "missing.json"
    with pytest.raises(ValueError, match=rf"{name}: coco_gt file '.*missing.json' does not exist"):
        function(missing, dets)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ValueError, match=rf"{name}: coco_gt file '.*broken.json' could not be read as COCO JSON"):
        function(broken, dets)
    with pytest.raises(TypeError, match=rf"{name}: coco_gt must be a COCO-format dict, a JSON path or a pycocotools COCO, got int"):
        function(3, dets)
    with pytest.raises(ValueError, match=rf"{name}: coco_gt is missing the key 'categories'"):
        function({"images": [], "annotations": []}, dets)
    bad_ann = copy.deepcopy(gt)
    del bad_ann["annotations"][0]["area"]
    with pytest.raises(ValueError, match=rf"{name}: coco_gt\['annotations'\]\[0\] is missing the key 'area'"):
        function(bad_ann, dets)
    with pytest.raises(ValueError, match=rf"{name}: area_ranges must have the keys \['all', 'small', 'medium', 'large'\], missing \['large'\]"):
        function(gt, dets, area_ranges={"all": (0, 1e10), "small": (0, 1), "medium": (1, 2)})
    with pytest.raises(ValueError, match=rf"{name}: area_ranges\['small'\] must have low <= high, got \(5, 1\)"):
        function(gt, dets, area_ranges={"all": (0, 1e10), "small": (5, 1), "medium": (1, 2), "large": (2, 3)})
    with pytest.raises(ValueError, match=rf"{name}: max_dets must be >= 10, got 5"):
        function(gt, dets, max_dets=5)


def test_decode_segmentation_reads_every_coco_form():
    mask = np.zeros((7, 9), bool)
    mask[2:5, 3:8] = True
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    as_str = dict(rle, counts=rle["counts"].decode("ascii"))
    column_major = mask.flatten(order="F").astype(np.uint8)
    runs, value, count = [], 0, 0
    for pixel in column_major:  # uncompressed RLE: alternating run lengths, zeros first
        if pixel == value:
            count += 1
        else:
            runs.append(count)
            value, count = pixel, 1
    runs.append(count)
    uncompressed = {"size": [7, 9], "counts": runs}
    polygon = [[3.0, 2.0, 8.0, 2.0, 8.0, 5.0, 3.0, 5.0]]  # the rectangle's outline, pixel edges
    for segmentation in (rle, as_str, uncompressed):
        decoded = decode_segmentation(segmentation, 7, 9)
        assert decoded.dtype == bool and np.array_equal(decoded, mask)
    assert np.array_equal(decode_segmentation(polygon, 7, 9), mask)
    with pytest.raises(ValueError, match=r"decode_segmentation: annotation\['segmentation'\] must be polygons"):
        decode_segmentation({"size": [7, 9]}, 7, 9)


def test_encode_masks_is_pycocotools_encoding_with_text_counts_and_inverts_decode():
    rng = np.random.default_rng(0)
    masks = rng.random((3, 7, 9)) < 0.4
    rles = encode_masks(masks)
    assert len(rles) == 3
    for mask, rle in zip(masks, rles):
        reference = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        assert rle == {"size": [7, 9], "counts": reference["counts"].decode("ascii")}
        assert json.loads(json.dumps(rle)) == rle  # JSON-ready: str counts, int sizes
        assert np.array_equal(decode_segmentation(rle, 7, 9), mask)
    # one [H, W] mask, a uint8 0/1 array and a (CUDA or CPU) tensor give the same encoding
    assert encode_masks(masks[1]) == [rles[1]]
    assert encode_masks(masks.astype(np.uint8)) == rles
    assert encode_masks(torch.from_numpy(masks)) == rles
    assert encode_masks(np.zeros((0, 7, 9), bool)) == []


def test_encode_masks_rejects_bad_input():
    with pytest.raises(TypeError, match="encode_masks: masks must be a numpy array or a torch.Tensor, got list"):
        encode_masks([[0, 1]])
    with pytest.raises(ValueError, match=r"encode_masks: masks must be \[N, H, W\] or \[H, W\], got shape \(2, 2, 2, 2\)"):
        encode_masks(np.zeros((2, 2, 2, 2), bool))
    with pytest.raises(TypeError, match="threshold probabilities first"):
        encode_masks(np.full((2, 2), 0.7))
    with pytest.raises(ValueError, match="encode_masks: integer masks must hold only 0 and 1, got values from 0 to 2"):
        encode_masks(np.array([[0, 2]]))


def test_public_steps_check_shapes():
    from segnotes.metrics import greedy_match, interpolated_precision

    with pytest.raises(ValueError, match=r"greedy_match: expected ious \[D, G\]"):
        greedy_match(np.zeros((2, 3)), np.zeros((1, 2), dtype=bool), np.zeros(3, dtype=bool), IOU_THRESHOLDS)
    with pytest.raises(ValueError, match=r"interpolated_precision: tp_sum and fp_sum must have one row per score"):
        interpolated_precision(np.zeros((3, 1)), np.zeros((2, 1)), np.ones(1), np.zeros(3), np.linspace(0, 1, 101))


# ---------------------------------------------------------------- malformed RLE (issue 22, finding 2)

# Run lengths adding up to 452, not 20 * 20 = 400: pycocotools' C code trusts the sum, reads and
# writes past its buffers, and its iou loops forever.
BAD_UNCOMPRESSED = {"size": [20, 20], "counts": [42, 8, 0, 10, 10, 10, 10, 10, 10, 342]}


def _gt_with(segmentation, size=20):
    return {
        "images": [{"id": 1, "height": size, "width": size}],
        "annotations": [{"id": 5, "image_id": 1, "category_id": 1, "area": 50.0, "segmentation": segmentation,
                         "bbox": [2.0, 2.0, 5.0, 10.0]}],
        "categories": [{"id": 1, "name": "a"}],
    }


def _error_in_child(run_isolated, function: str, gt: dict, segmentation) -> str:
    """``function(gt, [one detection with segmentation])`` in a child process with a time limit (the old code
    hung inside pycocotools): the ValueError's message, or "no error"."""
    detection = {"image_id": 1, "category_id": 1, "score": 0.9, "segmentation": segmentation}
    result = run_isolated(f"""
        from segnotes.metrics import {function}
        try:
            {function}({gt!r}, [{detection!r}])
            print("no error")
        except ValueError as error:
            print(error)
    """, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.mark.parametrize("function", ["average_precision", "coco_evaluate"])
def test_uncompressed_rle_that_does_not_cover_the_image_is_refused_not_a_hang(run_isolated, function):
    gt = _gt_with(BAD_UNCOMPRESSED)
    assert _error_in_child(run_isolated, function, gt, gt["annotations"][0]["segmentation"]) == (
        f"{function}: coco_gt['annotations'][0]['segmentation'] run lengths add up to 452, not height * width "
        "= 20 * 20 = 400")


@pytest.mark.parametrize("function", ["average_precision", "coco_evaluate"])
def test_compressed_rle_detection_that_does_not_cover_the_image_is_refused_not_a_hang(run_isolated, function):
    # 20 x 20 ground truth; the detection's compressed runs add up to 20 * 20 + 1.
    mask = np.zeros((20, 20), bool)
    mask[2:12, 2:7] = True
    long_runs = mask_utils.frPyObjects({"size": [20, 21], "counts": [42, 10, 349]}, 20, 21)["counts"].decode("ascii")
    detection = {"size": [20, 20], "counts": long_runs}
    assert _error_in_child(run_isolated, function, _gt_with(rle(mask)), detection) == (
        f"{function}: detections[0]['segmentation'] run lengths add up to 401, not height * width = 20 * 20 = 400")


@pytest.mark.parametrize("segmentation, message", [
    ({"size": [20, 20], "counts": [5, 5]}, r"run lengths add up to 10, not height \* width = 20 \* 20 = 400"),
    ({"size": [20, 20], "counts": [-5, 405]}, r"has a negative run length -5"),
    ({"size": [2, 2], "counts": "1"}, r"run lengths add up to 1, not height \* width = 2 \* 2 = 4"),
    ({"size": [2, 2], "counts": "4a"}, r"\['counts'\] is not a compressed RLE string"),
    ({"size": [2, 2], "counts": "~~"}, r"\['counts'\] is not a compressed RLE string"),
    ({"size": [2, -2], "counts": [4]}, r"\['size'\] must be \[height, width\], two ints >= 0, got \[2, -2\]"),
    ([[1.0, 2.0, 3.0, 4.0]], r"\[0\] must be a polygon of at least 3 points \(an even number of coordinates, 6 or "
                             r"more\), got 4 numbers"),
    ([], r"must hold at least one polygon, got an empty list"),
])
def test_decode_segmentation_refuses_malformed_masks_instead_of_decoding_garbage(segmentation, message):
    size = segmentation["size"] if isinstance(segmentation, dict) else [20, 20]
    with pytest.raises(ValueError, match=r"decode_segmentation: (annotation\['segmentation'\]|the RLE)?.*" + message):
        decode_segmentation(segmentation, abs(size[0]), abs(size[1]))


def test_decode_segmentation_refuses_an_rle_of_another_size():
    with pytest.raises(ValueError, match=r"decode_segmentation: the RLE has size \[4, 5\], not \[height, width\] = \[5, 4\]"):
        decode_segmentation({"size": [4, 5], "counts": [20]}, 5, 4)


@pytest.mark.parametrize("function", [average_precision, coco_evaluate])
def test_bad_boxes_and_scores_name_the_annotation_or_detection(tiny, function):
    gt, dets = tiny
    name = function.__name__
    three_values = copy.deepcopy(gt)
    three_values["annotations"] *= 4
    for ann in three_values["annotations"]:
        ann["bbox"] = [1.0, 2.0, 3.0]  # four such boxes are 12 numbers: reshaped into 3 boxes before
    with pytest.raises(ValueError, match=rf"{name}: coco_gt\['annotations'\]\[0\]\['bbox'\] must be \[x, y, width, "
                                         r"height\], four finite numbers with width and height >= 0, got \[1.0, 2.0, 3.0\]"):
        function(three_values, dets, iou_type="bbox")
    with pytest.raises(ValueError, match=rf"{name}: detections\[0\]\['score'\] must be a finite number, got nan"):
        function(gt, [dict(dets[0], score=float("nan"))])
    with pytest.raises(ValueError, match=rf"{name}: detections\[0\]\['bbox'\] must be \[x, y, width, height\], finite"):
        function(gt, [dict(dets[0], bbox=[0.0, float("nan"), 3.0, 3.0])], iou_type="bbox")


def test_nan_thresholds_and_area_bounds_are_refused_by_name(tiny):
    # A NaN passes "low <= high" and "score >= threshold" tests silently (every comparison is False).
    gt, dets = tiny
    nan_small = {"all": (0, 1e10), "small": (0, float("nan")), "medium": (1, 2), "large": (2, 3)}
    with pytest.raises(ValueError, match=r"average_precision: area_ranges\['small'\] must be numbers, not NaN"):
        average_precision(gt, dets, area_ranges=nan_small)
    prediction = {"boxes": torch.tensor([[0.0, 0.0, 2.0, 2.0]]), "labels": torch.tensor([1]), "scores": torch.tensor([0.5])}
    with pytest.raises(ValueError, match=r"detections_from_predictions: score_threshold must be a finite number, got nan"):
        detections_from_predictions([prediction], [1], score_threshold=float("nan"))
