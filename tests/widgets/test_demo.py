import numpy as np
import pytest
from pycocotools import mask as mask_utils

from segnotes.metrics import average_precision, coco_evaluate
from segnotes.widgets import simulated_detections


def ground_truth(num_images=6, size=40, seed=0):
    generator = np.random.default_rng(seed)
    images, annotations = [], []
    for image_id in range(1, num_images + 1):
        images.append({"id": image_id, "height": size, "width": size})
        for index in range(3):
            mask = np.zeros((size, size), dtype=np.uint8)
            top, left = generator.integers(0, size - 12, size=2)
            mask[top : top + 10, left : left + 10] = 1
            encoded = mask_utils.encode(np.asfortranarray(mask))
            encoded["counts"] = encoded["counts"].decode("ascii")
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": 1 + index % 2,
                                "segmentation": encoded, "area": 100.0, "bbox": [float(left), float(top), 10.0, 10.0],
                                "iscrowd": int(index == 2 and image_id == 1)})
    return {"images": images, "annotations": annotations, "categories": [{"id": 1}, {"id": 2}]}


def test_deterministic_and_seeded():
    gt = ground_truth()
    first, again, other = (simulated_detections(gt, seed=s) for s in (0, 0, 1))
    assert first == again
    assert first != other


def test_a_detector_without_damage_is_perfect():
    gt = ground_truth()
    detections = simulated_detections(gt, miss_rate=0, duplicate_rate=0, wrong_class_rate=0,
                                      false_positives_per_image=0, max_shift=0, coarsen=(1,))
    regular = [a for a in gt["annotations"] if not a["iscrowd"]]
    assert len(detections) >= len(regular)  # one per object, plus maybe one on the crowd region
    # Masks are the objects' own, dilated or eroded by at most 1 px: all match at IoU 0.5.
    assert average_precision(gt, detections)["AP50"] == pytest.approx(1.0)


def test_damage_lowers_ap_and_agrees_with_cocoeval():
    gt = ground_truth(num_images=10)
    detections = simulated_detections(gt, seed=3, miss_rate=0.2, duplicate_rate=0.3, false_positives_per_image=2)
    ours, reference = average_precision(gt, detections), coco_evaluate(gt, detections)
    assert 0 < ours["AP"] < 1
    assert ours["AP"] == pytest.approx(reference["AP"], abs=1e-6)
    assert {d["image_id"] for d in detections} <= {i["id"] for i in gt["images"]}
    assert all(0 < d["score"] < 1 for d in detections)


def test_bad_input():
    gt = ground_truth(num_images=1)
    with pytest.raises(ValueError, match=r"simulated_detections: miss_rate must be a probability in \[0, 1\], got 1.5"):
        simulated_detections(gt, miss_rate=1.5)
    with pytest.raises(ValueError, match=r"simulated_detections: coarsen must be a non-empty tuple of ints >= 1, got \(0,\)"):
        simulated_detections(gt, coarsen=(0,))
    with pytest.raises(TypeError, match=r"simulated_detections: coco_gt must be a COCO dict, a pycocotools COCO or a JSON path, got int 3"):
        simulated_detections(3)
    with pytest.raises(ValueError, match=r"simulated_detections: seed must be >= 0, got -1"):
        simulated_detections(gt, seed=-1)
