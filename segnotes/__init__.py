"""segnotes: the companion package of the segnotes book on image segmentation.

Subpackages:
    data     the procedural shapes data set and loaders for VOC / COCO layouts
    metrics  confusion matrix, the FCN paper's four metrics, mask IoU and COCO AP
    ops      RoIAlign, RoIPool and the bilinear upsampling kernel
    utils    device choice, seeding, deterministic mode
"""
from . import data, metrics, ops, utils
from .utils import deterministic, get_device, manual_seed

__version__ = "0.1.0"

__all__ = ["data", "metrics", "ops", "utils", "get_device", "manual_seed", "deterministic", "__version__"]
