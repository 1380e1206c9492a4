"""FCN speed: inference of a 500 x 375 image (FCN-8s on VGG16 and on vgg_small) and training throughput.

The paper (Long et al., CVPR 2015, Table 3) reports about 175 ms per image for FCN-8s (VGG16) on a
2015 GPU (an NVIDIA K40c, Caffe); Table 1 gives 210 ms for FCN-32s at 500 x 500. Our CPU rows are not
comparable to it, so their reference is torchvision's plain VGG16 trunk (``features`` plus the
convolutionalized fc6/fc7) on the same input and device: the ratio shows what FCN's score layers,
skips and upsampling add. On CUDA the float32 and AMP rows do the same, and their note gives the
paper's 175 ms beside them. Weights are random (speed does not depend on them).
"""
from __future__ import annotations

import torch
from timing import bench_devices, median_time
from torch import nn

from segnotes.engine import semantic_loss
from segnotes.experiments import FCNRecipe, training_memory_format
from segnotes.models import convolutionalize, fcn

PAPER_FCN8S_MS = 175  # Table 3, K40c, 2015


def _vgg16_trunk() -> nn.Module:
    """torchvision's VGG16 as a dense net: features, then fc6/fc7 as convolutions (the reference)."""
    from torchvision.models import vgg16

    net = vgg16(weights=None)
    for layer in net.features:
        if isinstance(layer, nn.MaxPool2d):
            layer.ceil_mode = True
    return nn.Sequential(net.features, convolutionalize(net.classifier[:6], padding=3))


def _inference_rows(device: torch.device, quick: bool) -> list[dict]:
    rows = []
    h, w = (188, 250) if quick else (375, 500)
    repeats = 1 if quick else (10 if device.type == "cuda" else 3)
    image = torch.rand(1, 3, h, w, device=device)
    amp_modes = [False, True] if device.type == "cuda" else [False]
    for backbone in ("vgg16", "vgg_small"):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = fcn("fcn8s", 21, backbone).to(device).eval()
            trunk = _vgg16_trunk().to(device).eval() if backbone == "vgg16" else model.backbone
        for amp in amp_modes:
            def forward(net):
                with torch.no_grad(), torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                    net(image)

            ours = median_time(lambda: forward(model), device, repeats)
            reference = median_time(lambda: forward(trunk), device, repeats)
            precision = "AMP fp16" if amp else "fp32"
            note = "random weights"
            if backbone == "vgg16":
                note += f"; paper: ~{PAPER_FCN8S_MS} ms on a 2015 K40c GPU (Caffe)"
            rows.append({
                "case": f"FCN-8s {backbone} inference, 1 x {w}x{h}, {device.type} {precision}",
                "ours": ours,
                "reference": reference,
                "reference_name": f"{backbone} trunk alone" if backbone == "vgg_small" else "torchvision VGG16 trunk",
                "ratio": reference / ours,
                "note": note,
            })
    return rows


def _steps_per_second(variant: str, layout, images, labels, device: torch.device, steps: int) -> float:
    """Optimizer steps per second of one AdamW training step (the FCN recipe's) on the given batch."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = fcn(variant, 10, "vgg_small").to(device, memory_format=layout).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)

    def step():
        optimizer.zero_grad(set_to_none=True)
        semantic_loss(model(images), labels).backward()
        optimizer.step()

    return 1 / median_time(step, device, steps, warmup=2)


def _layout_name(layout) -> str:
    return "channels_last" if layout == torch.channels_last else "NCHW"


def _training_rows(device: torch.device, quick: bool) -> list[dict]:
    """Training throughput of the book's recipe (AdamW) in the layout make checkpoints trains in on this
    device (``training_memory_format``) vs the other; and a step on random 96 px windows
    (``FCNRecipe(crop=96)``) vs one on whole 128 px images."""
    rows = []
    batch, size = 8, 128
    crop = FCNRecipe().crop  # the windows the book's FCN-8s runs train on
    steps = 2 if quick else 10
    g = torch.Generator().manual_seed(0)
    images = torch.rand(batch, 3, size, size, generator=g).to(device)
    labels = torch.randint(0, 10, (batch, size, size), generator=g).to(device)
    threads = f"; {torch.get_num_threads()} torch threads" if device.type == "cpu" else ""
    used = training_memory_format(device)
    other = torch.contiguous_format if used == torch.channels_last else torch.channels_last
    steps_per_second = {}  # variant -> layout -> steps/s
    for variant in ("fcn32s", "fcn8s"):
        steps_per_second[variant] = {
            layout: _steps_per_second(variant, layout, images, labels, device, steps) for layout in (used, other)
        }
        rate = {layout: batch * value for layout, value in steps_per_second[variant].items()}
        rows.append({
            "case": f"{variant} vgg_small training, batch {batch} x {size}x{size}, {device.type} fp32, {_layout_name(used)}",
            "ours": rate[used],
            "reference": rate[other],
            "reference_name": f"same model, {_layout_name(other)}",
            "ratio": rate[used] / rate[other],
            "unit": "img/s",
            "note": f"AdamW step (the FCN recipe){threads}; make checkpoints trains {_layout_name(used)} on {device.type}",
        })
    whole = steps_per_second["fcn8s"][used]  # measured above, on whole images
    windows = _steps_per_second("fcn8s", used, images[..., :crop, :crop], labels[..., :crop, :crop], device, steps)
    rows.append({
        "case": f"fcn8s vgg_small training on {crop}x{crop} windows, batch {batch}, {device.type} fp32, {_layout_name(used)}",
        "ours": windows,
        "reference": whole,
        "reference_name": f"whole {size}x{size} images",
        "ratio": windows / whole,
        "unit": "steps/s",
        "note": f"FCNRecipe(crop={crop}): the book's FCN-8s runs train on these windows{threads}",
    })
    return rows


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
