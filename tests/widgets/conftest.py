import matplotlib
import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from segnotes.metrics import average_precision

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


@pytest.fixture(scope="session")
def ap_case():
    """The hand-worked case of tests/viz/test_pr.py (see its docstring there): image 1 holds A (category 1),
    B (category 2, found only up to IoU 0.65) and a crowd region; image 2 holds D, never found.
    Category 1 has AP 51/101 at every threshold, category 2 AP 1 up to 0.65 and 0 above."""
    masks = {"A": box_mask(2, 2, 8, 8), "B": box_mask(20, 4, 6, 10), "C": box_mask(2, 20, 10, 10),
             "D": box_mask(10, 10, 8, 8)}
    rows = [(1, 1, 1, "A", 0), (2, 1, 2, "B", 0), (3, 1, 1, "C", 1), (4, 2, 1, "D", 0)]
    annotations = [
        {"id": i, "image_id": image, "category_id": category, "segmentation": rle(masks[name]),
         "area": float(masks[name].sum()), "bbox": mask_utils.toBbox(rle(masks[name])).tolist(), "iscrowd": crowd}
        for i, image, category, name, crowd in rows
    ]
    ground_truth = {"images": [{"id": 1, "height": SIZE, "width": SIZE}, {"id": 2, "height": SIZE, "width": SIZE}],
                    "annotations": annotations, "categories": [{"id": 1, "name": "one"}, {"id": 2, "name": "two"}]}
    raw = [(1, 1, masks["A"], 0.9), (1, 2, np.roll(masks["B"], 2, 1), 0.8), (1, 2, box_mask(12, 22, 5, 5), 0.7),
           (1, 1, np.roll(np.roll(masks["A"], 1, 0), 1, 1), 0.5), (1, 1, box_mask(4, 22, 4, 4), 0.6),
           (2, 2, box_mask(0, 0, 5, 5), 0.3)]
    detections = [{"image_id": image, "category_id": category, "score": score, "segmentation": rle(mask),
                   "bbox": mask_utils.toBbox(rle(mask)).tolist()} for image, category, mask, score in raw]
    images = [torch.rand(3, SIZE, SIZE, generator=torch.Generator().manual_seed(i)) for i in (1, 2)]
    targets = [[a for a in annotations if a["image_id"] == i] for i in (1, 2)]
    return {"ground_truth": ground_truth, "detections": detections, "images": images, "targets": targets,
            "result": average_precision(ground_truth, detections)}
