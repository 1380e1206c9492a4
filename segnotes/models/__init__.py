"""FCN models, their VGG backbones and shift-and-stitch.

    fcn                 build FCN-32s / 16s / 8s on vgg16 or vgg_small
    FCN                 the model (``stride``, ``load_parent``, ``from_parent``)
    convolutionalize    VGG's Linear classifier as convolutions
    shift_and_stitch    dense output from f**2 shifted passes of a stride-f net
"""
from .backbones import VGGBackbone, convolutionalize, vgg16_backbone, vgg_small_backbone
from .fcn import BACKBONES, FCN, VARIANTS, fcn, minimum_input_size
from .shift_and_stitch import shift_and_stitch

__all__ = [
    "FCN",
    "fcn",
    "minimum_input_size",
    "VARIANTS",
    "BACKBONES",
    "VGGBackbone",
    "convolutionalize",
    "vgg16_backbone",
    "vgg_small_backbone",
    "shift_and_stitch",
]
