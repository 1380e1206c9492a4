"""Mask R-CNN speed: inference images/s at 800 px (ResNet-50-FPN) and training throughput of the book's model.

The paper (He et al., ICCV 2017, section 4) reports 195 ms per image (about 5 images/s) for a
ResNet-101-FPN Mask R-CNN on an NVIDIA Tesla M40 (2017). Our reference is torchvision's own
``maskrcnn_resnet50_fpn`` on the same input and device: segnotes' model is built from the same
components but pools with segnotes' pure-PyTorch RoIAlign and pastes masks the same way, so the
ratio (reference time / ours) shows what the readable RoIAlign and the mask-loss switches cost.
Weights are random; with random weights few boxes pass the score threshold, so the detections
are capped at 100 and the score threshold set to 0 for both models: each image then carries the
full load of 100 masks, as a trained model on a busy COCO image would.
"""
from __future__ import annotations

import torch
from timing import bench_devices, median_time

from segnotes.models import mask_rcnn

PAPER_MS = 195  # R-101-FPN, Tesla M40


def _models(device: torch.device):
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        ours = mask_rcnn(91, "resnet50_fpn", box_score_thresh=0.0, box_detections_per_img=100)
        reference = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91,
                                          box_score_thresh=0.0, box_detections_per_img=100)
    return ours.to(device).eval(), reference.to(device).eval()


def _inference_rows(device: torch.device, quick: bool) -> list[dict]:
    size = (400, 533) if quick else (800, 1067)
    repeats = 1 if quick else (10 if device.type == "cuda" else 2)
    image = torch.rand(3, *size, device=device)
    ours, reference = _models(device)
    rows = []
    for amp in ([False, True] if device.type == "cuda" else [False]):
        def forward(model):
            with torch.no_grad(), torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                model([image])

        t_ours = median_time(lambda: forward(ours), device, repeats)
        t_ref = median_time(lambda: forward(reference), device, repeats)
        rows.append({
            "case": f"Mask R-CNN R50-FPN inference, 1 x {size[1]}x{size[0]}, {device.type} {'AMP fp16' if amp else 'fp32'}",
            "ours": 1 / t_ours,
            "reference": 1 / t_ref,
            "reference_name": "torchvision maskrcnn_resnet50_fpn",
            "ratio": t_ref / t_ours,
            "unit": "img/s",
            "note": f"100 detections/image, random weights; paper: ~{1000 / PAPER_MS:.1f} img/s (R-101-FPN, M40)",
        })
    return rows


def _training_rows(device: torch.device, quick: bool) -> list[dict]:
    from segnotes.data import ShapesInstances

    batch = 8
    dataset = ShapesInstances(None, "train")
    samples = [dataset[i] for i in range(batch)]
    images = [image.to(device) for image, _ in samples]
    targets = [{k: v.to(device) for k, v in target.items()} for _, target in samples]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = mask_rcnn(10).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step():
        optimizer.zero_grad(set_to_none=True)
        sum(model(images, targets).values()).backward()
        optimizer.step()

    seconds = median_time(step, device, 2 if quick else 10, warmup=2)
    return [{
        "case": f"Mask R-CNN tiny_resnet_fpn training, batch {batch} x 128x128, {device.type} fp32",
        "ours": batch / seconds,
        "reference": None,
        "reference_name": "none",
        "ratio": None,
        "unit": "img/s",
        "note": f"AdamW step; {torch.get_num_threads()} torch threads" if device.type == "cpu" else "AdamW step",
    }]


def run(quick: bool = False) -> list[dict]:
    devices = bench_devices()
    rows = []
    for device in devices:
        rows += _inference_rows(device, quick)
        rows += _training_rows(device, quick)
    return rows


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
    from run import table

    print(table(run(quick="--quick" in sys.argv)))
