"""Fixtures shared by the whole test suite.

* ``device``: a test that takes it runs on the CPU, and on CUDA where there is one (the CUDA case is
  skipped elsewhere, so a CPU-only run still lists it).
* ``roi_case``, ``roi_pool_case``, ``forward_backward``: the RoI op tests' inputs and their
  forward-and-backward driver, shared by tests/ops/test_roi_align.py and test_roi_pool.py.
"""
import pytest
import torch

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    return request.param


def _roi_case(dtype, device, spatial_scale=1.0, seed=0, num_images=3, channels=4, height=9, width=11, num_boxes=24,
              *, pool_cases=False):
    """Random maps and boxes (in image coordinates) that stick out of the map, are degenerate or lie
    entirely outside, with batch indices in no particular order. Box 0 has zero width, box 1 zero
    height, box 3 lies outside; box 2 is a point, or with ``pool_cases`` inverted (RoIPool makes it
    one cell) while box 4's corner sits on pixel halves (C rounds them away from zero).

    Returns:
        (x Tensor[num_images, channels, height, width], rois Tensor[num_boxes, 5]) on ``device``.
    """
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(num_images, channels, height, width, generator=g, dtype=dtype)
    span = torch.tensor([width + 4.0, height + 4.0], dtype=dtype)
    corner = torch.rand(num_boxes, 2, generator=g, dtype=dtype) * span - 3
    size = torch.rand(num_boxes, 2, generator=g, dtype=dtype) * 8
    size[0, 0] = 0.0  # zero width
    size[1, 1] = 0.0  # zero height
    size[2] = -2.0 if pool_cases else 0.0  # inverted, or a point
    corner[3] = torch.tensor([width + 3.0, -5.0], dtype=dtype)  # entirely outside
    if pool_cases:
        corner[4] = torch.tensor([2.5, 3.5], dtype=dtype)  # halves
    boxes = torch.cat([corner, corner + size], dim=1) / spatial_scale  # [K, 4] in image coordinates
    index = torch.randint(0, num_images, (num_boxes, 1), generator=g).to(dtype)
    return x.to(device), torch.cat([index, boxes], dim=1).to(device)


@pytest.fixture
def roi_case():
    """``roi_case(dtype, device, spatial_scale=1.0, seed=0, ...) -> (x, rois)``: see :func:`_roi_case`."""
    return _roi_case


@pytest.fixture
def roi_pool_case():
    """As ``roi_case``, with an inverted box and a box on pixel halves, where RoIPool's rounding matters."""
    return lambda *args, **kwargs: _roi_case(*args, **kwargs, pool_cases=True)


def _forward_backward(op, x, rois, *args):
    """``op(x, rois, *args)`` and the gradient of x for a fixed ramp of output gradients."""
    x = x.detach().clone().requires_grad_()
    out = op(x, rois, *args)
    grad_out = torch.linspace(-1, 1, out.numel(), dtype=out.dtype, device=out.device).view_as(out)
    out.backward(grad_out)
    return out.detach(), x.grad


@pytest.fixture
def forward_backward():
    """``forward_backward(op, x, rois, *args) -> (output, grad of x)``."""
    return _forward_backward


# ------------------------------------------------------------------------------------------------
# Small COCO and VOC folders for the command line's tests (written once per session)

# Two categories with the gapped ids real data has: squares (COCO id 3, VOC class 8 "cat")
# and discs (id 7, VOC class 15 "person"), on a grey noisy background.
FIXTURE_CATEGORIES = [{"id": 3, "name": "square", "supercategory": "shape"},
                      {"id": 7, "name": "disc", "supercategory": "shape"}]
_COLOURS = {3: (220, 40, 40), 7: (40, 200, 60)}


def _scene(rng, height=64, width=80, count=3):
    """An image (uint8 [H, W, 3]) with ``count`` objects: [(category id, bool mask [H, W])]."""
    import numpy as np

    image = (110 + rng.integers(-25, 26, (height, width, 3))).astype(np.uint8)
    yy, xx = np.mgrid[:height, :width]
    objects = []
    for k in range(count):
        category = (3, 7)[k % 2]
        size = int(rng.integers(12, 22))
        top, left = int(rng.integers(0, height - size)), int(rng.integers(0, width - size))
        if category == 3:
            mask = (yy >= top) & (yy < top + size) & (xx >= left) & (xx < left + size)
        else:
            r = size / 2
            mask = (yy - top - r + 0.5) ** 2 + (xx - left - r + 0.5) ** 2 <= r * r
        for earlier in objects:  # later objects occlude earlier ones
            earlier[1][mask] = False
        image[mask] = _COLOURS[category]
        objects.append((category, mask))
    return image, [(c, m) for c, m in objects if m.sum() >= 12]


def _write_coco(root, split, count, seed):
    """``root/<split>/`` images of mixed formats and modes, ``root/annotations/instances_<split>.json``
    with polygon, compressed-RLE, uncompressed-RLE and crowd annotations."""
    import json

    import numpy as np
    from PIL import Image
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(seed)
    (root / split).mkdir(parents=True)
    (root / "annotations").mkdir(exist_ok=True)
    images, annotations = [], []
    for index in range(count):
        image, objects = _scene(rng)
        mode, suffix = (("RGB", "jpg"), ("L", "png"), ("RGBA", "png"), ("CMYK", "jpg"), ("P", "png"), ("RGB", "png"))[index % 6]
        name = f"{split}_{index:03d}.{suffix}"
        picture = Image.fromarray(image)
        if mode == "P":
            picture = picture.convert("P", palette=Image.Palette.ADAPTIVE)
        elif mode != "RGB":
            picture = picture.convert(mode)
        picture.save(root / split / name, quality=95)
        image_id = 100 + index  # ids that are not positions
        images.append({"id": image_id, "file_name": name, "height": image.shape[0], "width": image.shape[1]})
        for k, (category, mask) in enumerate(objects):
            encoded = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            annotation = {"id": len(annotations) + 1, "image_id": image_id, "category_id": category, "iscrowd": 0,
                          "area": float(mask.sum()), "bbox": mask_utils.toBbox(encoded).tolist()}
            ys, xs = np.nonzero(mask)
            x1, y1, x2, y2 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
            if category == 3 and mask.sum() == (x2 - x1) * (y2 - y1):  # whole squares as polygons (pixel edges)
                annotation["segmentation"] = [[float(v) for v in (x1, y1, x2, y1, x2, y2, x1, y2)]]
            elif k % 2:  # uncompressed RLE (column-major run lengths)
                flat = mask.T.reshape(-1).astype(np.uint8)
                changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
                annotation["segmentation"] = {"size": list(mask.shape), "counts": np.diff(np.concatenate([[0], changes])).tolist()}
            else:  # compressed RLE
                annotation["segmentation"] = dict(encoded, counts=encoded["counts"].decode("ascii"))
            annotations.append(annotation)
        if index == 1:  # a crowd region of discs
            crowd = np.zeros(image.shape[:2], np.uint8)
            crowd[2:10, 60:78] = 1
            encoded = mask_utils.encode(np.asfortranarray(crowd))
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": 7, "iscrowd": 1,
                                "area": float(crowd.sum()), "bbox": mask_utils.toBbox(encoded).tolist(),
                                "segmentation": dict(encoded, counts=encoded["counts"].decode("ascii"))})
    data = {"images": images, "annotations": annotations, "categories": FIXTURE_CATEGORIES}
    (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))


@pytest.fixture(scope="session")
def coco_folder(tmp_path_factory):
    """A COCO-layout folder: train (8 images) and val (4), categories 3 (square) and 7 (disc). Do not modify."""
    root = tmp_path_factory.mktemp("coco") / "mycoco"
    _write_coco(root, "train", 8, seed=0)
    _write_coco(root, "val", 4, seed=1)
    return root


@pytest.fixture(scope="session")
def voc_folder(tmp_path_factory):
    """A VOCdevkit/VOC2012-layout folder: JPEG images, palette PNG class and object maps with void
    borders, train (8) and val (4) splits; classes 8 (squares) and 15 (discs). Do not modify."""
    import numpy as np
    from PIL import Image

    from segnotes.data import voc_palette

    root = tmp_path_factory.mktemp("voc") / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "SegmentationObject", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True)
    rng = np.random.default_rng(2)
    palette = voc_palette().ravel().tolist()
    for split, count in (("train", 8), ("val", 4)):
        names = []
        for index in range(count):
            image, objects = _scene(rng)
            name = f"2024_{split}{index:03d}"
            Image.fromarray(image).save(root / "JPEGImages" / f"{name}.jpg", quality=95)
            classes = np.zeros(image.shape[:2], np.uint8)
            instances = np.zeros(image.shape[:2], np.uint8)
            for k, (category, mask) in enumerate(objects):
                classes[mask] = {3: 8, 7: 15}[category]
                instances[mask] = k + 1
            # VOC's void band: the outer ring of each object is 255 in both maps
            edge = np.zeros_like(classes, bool)
            for _, mask in objects:
                grown = mask.copy()
                grown[1:] |= mask[:-1]
                grown[:-1] |= mask[1:]
                grown[:, 1:] |= mask[:, :-1]
                grown[:, :-1] |= mask[:, 1:]
                edge |= grown & ~mask & (classes == 0)
            classes[edge] = instances[edge] = 255
            for folder, array in (("SegmentationClass", classes), ("SegmentationObject", instances)):
                png = Image.fromarray(array, mode="P")
                png.putpalette(palette)
                png.save(root / folder / f"{name}.png")
            names.append(name)
        (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(names) + "\n")
    return root


# ------------------------------------------------------------------------------------------------
# Commands that start process groups (torchrun)


def _run_group(command, *, timeout, env=None):
    """``subprocess.run(command)`` in a session of its own; on timeout the whole group is killed,
    so no worker that torchrun started outlives the test."""
    import os
    import signal
    import subprocess

    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                               start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(f"{' '.join(map(str, command))} ran past {timeout} s:\n{stdout}\n{stderr}")
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


@pytest.fixture
def run_group():
    """``run_group(command, timeout=..., env=...) -> CompletedProcess``: see :func:`_run_group`."""
    return _run_group
