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
"""
from . import data, engine, metrics, models, ops, utils, viz, widgets
from .utils import deterministic, get_device, manual_seed

__version__ = "0.1.0"

__all__ = [
    "data",
    "engine",
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
