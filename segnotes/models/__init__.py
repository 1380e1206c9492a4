"""FCN models, their VGG backbones and shift-and-stitch.

    fcn                 build FCN-32s / 16s / 8s on vgg16 or vgg_small
    FCN                 the model (``stride``, ``load_parent``, ``from_parent``)
    convolutionalize    VGG's Linear classifier as convolutions
    shift_and_stitch    dense output from f**2 shifted passes of a stride-f net
    mask_rcnn           build Mask R-CNN (tiny_resnet_fpn or resnet50_fpn; RoIAlign/RoIPool,
                        sigmoid/softmax, class-specific/agnostic masks)
    MaskRCNN            the model (torchvision's MaskRCNN with MaskRoIHeads)
    mask_rcnn_loss      the mask loss; mask_probabilities, its inference counterpart
    maskx_rcnn          build Mask^X R-CNN (Learning to Segment Every Thing): masks for box-only
                        classes through a weight transfer function
    MaskXRCNN           the model (MaskRCNN with MaskXRoIHeads; set_stage for stage-wise training)
    WeightTransfer      T: detection weights to mask weights; detection_weights gives its input
    MaskXPredictor      deconv + transferred (or class-agnostic) logits + FusedMaskMLP
"""
from .backbones import VGGBackbone, convolutionalize, vgg16_backbone, vgg_small_backbone
from .fcn import BACKBONES, FCN, VARIANTS, fcn, minimum_input_size
from .shift_and_stitch import shift_and_stitch
from .mask_rcnn import (
    MASK_RCNN_BACKBONES,
    MaskRCNN,
    MaskRoIHeads,
    mask_probabilities,
    mask_rcnn,
    mask_rcnn_loss,
    tiny_resnet_fpn_backbone,
)
from .maskx_rcnn import (
    FusedMaskMLP,
    MaskXPredictor,
    MaskXRCNN,
    MaskXRoIHeads,
    WeightTransfer,
    detection_weights,
    maskx_rcnn,
)

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
    "MaskRCNN",
    "MaskRoIHeads",
    "mask_rcnn",
    "mask_rcnn_loss",
    "mask_probabilities",
    "tiny_resnet_fpn_backbone",
    "MASK_RCNN_BACKBONES",
    "MaskXRCNN",
    "MaskXRoIHeads",
    "MaskXPredictor",
    "FusedMaskMLP",
    "WeightTransfer",
    "detection_weights",
    "maskx_rcnn",
]
