"""segnotes: the companion package of the segnotes book on image segmentation.

Subpackages:
    data     the procedural shapes data set; loaders for the shapes, VOC and COCO layouts
    metrics  confusion matrix, the FCN paper's four metrics, mask and box IoU, COCO AP
    ops      RoIAlign, RoIPool, the FPN pooler and the bilinear upsampling kernel
    models   FCN-32s/16s/8s and their VGG backbones
    engine   training loops, schedules and crash-safe checkpoints
    viz      matplotlib figures of masks, labels, metrics
    widgets  interactive ipywidgets built on the viz figures
    utils    device choice, seeding, deterministic mode
    hub      the files a chapter loads that a wheel does not carry (checkpoints), fetched and checked
    book     the notebooks' glue, which also shows glued values in Jupyter and Colab
"""
import importlib

from . import book, data, engine, hub, metrics, models, ops, utils, viz
from .utils import deterministic, get_device, manual_seed

__version__ = "0.1.0"

__all__ = [
    "book",
    "data",
    "engine",
    "hub",
    "metrics",
    "models",
    "ops",
    "utils",
    "viz",
    "widgets",
    "get_device",
    "manual_seed",
    "deterministic",
    "__version__",
]


def __getattr__(name: str):
    # widgets (ipywidgets, IPython) is imported on first use: training scripts and the CLI
    # never need it, and it is the slowest part of the import.
    if name == "widgets":
        return importlib.import_module(".widgets", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
