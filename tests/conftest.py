"""Fixtures shared by every test folder.

* ``device``: a test that takes it runs on the CPU, and on CUDA where there is one (the CUDA case is
  skipped elsewhere, so a CPU-only run still lists it).
* ``roi_case``, ``roi_pool_case``, ``forward_backward``: the RoI op tests' inputs and their
  forward-and-backward driver, shared by tests/ops/test_roi_align.py and test_roi_pool.py.
* ``coco_folder``, ``voc_folder``: small COCO and VOC folders for the command line's tests.
* ``child_env``, ``run_isolated``, ``run_group``: child processes (a snippet with a timeout; a
  torchrun process group killed whole on timeout).

Besides, a headless Chromium for the tests marked ``browser`` (the HTML book, the
widgets' page versions): Debian's ``chromium`` (``apt-get install chromium``) driven by the ``playwright``
package, which is told where the browser is (its own browser download is never used). Without either, the
browser tests are skipped with the reason in pytest's summary; under CI (``CI=true``) they fail instead, so CI
never passes without running them.
"""
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import segnotes

# Property tests (tests/*/test_properties.py): the same examples on every run (derandomize, no
# example database), each example bounded in time (deadline) and each test in examples; a test
# that may hang in C runs its examples in a child process with a timeout (run_isolated).
# hypothesis comes with the test extra; `make anywhere` runs tests/widgets without it.
try:
    from hypothesis import HealthCheck, settings
except ImportError:
    settings = None
if settings is not None:
    settings.register_profile(
        "segnotes",
        derandomize=True,
        database=None,
        deadline=2000,  # ms per example: generous for a loaded 2-core CI machine, short of a hang
        max_examples=40,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    settings.load_profile("segnotes")

# The checkout whose segnotes the tests import: a child process must import the same one.
_SOURCE_ROOT = str(Path(segnotes.__file__).resolve().parents[1])


@pytest.fixture
def child_env():
    """The environment for a child Python process: it imports the same segnotes as the tests."""
    path = os.pathsep.join(filter(None, [_SOURCE_ROOT, os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}


@pytest.fixture
def run_isolated(child_env):
    """``run(code, timeout)``: run a Python snippet in a fresh process, failing the test if it hangs.

    For calls that could hang in C (pycocotools' loops ignore signals, so a SIGALRM cannot stop
    them): the child is killed after ``timeout`` seconds and the test fails, instead of CI
    waiting forever. Returns the ``subprocess.CompletedProcess`` (text ``stdout`` and ``stderr``).
    """

    def run(code: str, timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
        try:
            return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                                  timeout=timeout, env=child_env, **kwargs)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the call hung: it did not finish within {timeout} s")

    return run



# ------------------------------------------------------------------------------------- devices and RoI cases

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


# ------------------------------------------------------------------------------------- the browser


def pytest_configure(config):
    config.addinivalue_line("markers", "browser: needs headless Chromium (apt-get install chromium) and playwright")


def on_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def chromium_path() -> str | None:
    """Debian's chromium; Ubuntu's name for it; Google Chrome where that is what there is (GitHub's runners)."""
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def browser_missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if chromium_path() is None:
        return "no Chromium on this machine (install it: apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is missing (pip install -c constraints.txt -e '.[test]')"
    return None


def skip_or_fail(reason: str) -> None:
    if on_ci():
        pytest.fail(f"browser tests cannot run, and CI must run them: {reason}", pytrace=False)
    pytest.skip(f"browser tests skipped: {reason}")


@pytest.fixture(scope="session")
def skip_or_fail_browser():
    """skip_or_fail, for tests that find out late that they cannot run (e.g. no built book)."""
    return skip_or_fail


@pytest.fixture(scope="session")
def browser():
    """A headless Chromium for the session (playwright Browser)."""
    reason = browser_missing()
    if reason:
        skip_or_fail(reason)
    from playwright.sync_api import sync_playwright

    # No sandbox: Chromium's refuses to start as root (CI, containers) and under Ubuntu 24.04's restriction of
    # user namespaces (GitHub's runners); the browser only ever opens the book's own pages on 127.0.0.1.
    args = ["--no-sandbox"]
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=chromium_path(), args=args)
        yield chromium
        chromium.close()
