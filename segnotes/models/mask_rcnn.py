"""Mask R-CNN (He, Gkioxari, Dollár, Girshick, ICCV 2017), built from torchvision's detection parts.

Mask R-CNN is Faster R-CNN plus a third output per RoI: a small ``M x M`` mask (M = 28) predicted
by a fully convolutional head on RoIAlign features. torchvision already has the whole pipeline
(``GeneralizedRCNN``: transform, backbone, RPN, ``RoIHeads``); this module keeps all of it and
changes only what the paper's ablations vary:

* ``roi_op``: the RoI feature extractor, RoIAlign (``aligned=True``, the paper's pixel model)
  or Fast R-CNN's quantised RoIPool (Table 2c), both through :class:`segnotes.ops.MultiScaleRoIPool`.
* ``mask_loss``: a per-class sigmoid with binary cross-entropy on the ground-truth class's channel
  only (the paper's choice: masks and classes decouple), or a per-pixel softmax across classes,
  where classes compete for every pixel (Table 2b). See :func:`mask_rcnn_loss`.
* ``class_agnostic_masks``: one mask per RoI instead of one per class (Table 2b also).

``backbone="tiny_resnet_fpn"`` is the book's: a ~1.3M-parameter ResNet with a 64-channel FPN on
which the whole model (about 2.6M parameters) trains from scratch on 128 px images on a CPU.
``backbone="resnet50_fpn"`` is the paper's ResNet-50-FPN with torchvision's settings.

References: torchvision's ``models/detection/roi_heads.py`` (``maskrcnn_loss``, ``RoIHeads``) and
detectron2's ``modeling/roi_heads/mask_head.py`` (``mask_rcnn_loss``, class-agnostic masks).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
import torchvision.models.detection as tv_detection
from torch import Tensor, nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.roi_heads import RoIHeads, fastrcnn_loss, project_masks_on_boxes
from torchvision.models.resnet import BasicBlock
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from .._checks import check_choice, check_int, check_positive, check_tensor, describe
from ..ops.poolers import MultiScaleRoIPool
from .backbones import load_weights

__all__ = [
    "MaskRCNN",
    "MaskRoIHeads",
    "mask_rcnn",
    "mask_rcnn_loss",
    "mask_probabilities",
    "tiny_resnet_fpn_backbone",
    "MASK_RCNN_BACKBONES",
]

MASK_RCNN_BACKBONES = ("tiny_resnet_fpn", "resnet50_fpn")
ROI_OPS = ("align", "pool")
MASK_LOSSES = ("sigmoid", "softmax")
_FEATMAP_NAMES = ["0", "1", "2", "3"]  # FPN levels 2-5 (strides 4-32); 'pool' (stride 64) feeds the RPN only


# ----------------------------------------------------------------------------------------------
# The mask loss and the mask probabilities: the part of Mask R-CNN that the paper ablates.
# ----------------------------------------------------------------------------------------------


def _mask_channels(num_classes: int, loss: str, class_agnostic: bool) -> int:
    """Channels of the mask predictor: 1 (sigmoid) or 2 (softmax: background, object) when
    class-agnostic, else one per class (``num_classes``, channel 0 the unused or background one)."""
    if class_agnostic:
        return 1 if loss == "sigmoid" else 2
    return num_classes


def _check_mask_logits(fn: str, mask_logits, loss: str, class_agnostic: bool) -> None:
    check_tensor(fn, "mask_logits", mask_logits, ndim=4, floating=True)
    check_choice(fn, "loss", loss, MASK_LOSSES)
    channels = mask_logits.shape[1]
    want = _mask_channels(0, loss, True)  # channels of a class-agnostic head
    if class_agnostic and channels != want:
        raise ValueError(
            f"{fn}: class-agnostic {loss} masks need mask_logits with {want} channel(s), got {describe(mask_logits)}"
        )
    if not class_agnostic and channels < 2:
        raise ValueError(
            f"{fn}: class-specific masks need mask_logits with one channel per class (>= 2), "
            f"got {describe(mask_logits)}"
        )


def mask_rcnn_loss(
    mask_logits: Tensor,
    proposals: list[Tensor],
    gt_masks: list[Tensor],
    gt_labels: list[Tensor],
    matched_idxs: list[Tensor],
    loss: str = "sigmoid",
    class_agnostic: bool = False,
) -> Tensor:
    """The mask loss ``L_mask`` of Mask R-CNN, over the positive RoIs of a batch.

    Each positive RoI's target is its matched ground-truth mask cropped to the RoI and resampled
    to ``M x M`` (torchvision's ``project_masks_on_boxes``: RoIAlign on the 0/1 mask, so border
    cells get fractions). With ``t`` that target and ``k`` the ground-truth class:

    * ``"sigmoid"`` (the paper): binary cross-entropy of ``sigmoid(logits[k])`` against ``t``,
      averaged over pixels and RoIs. Only channel ``k`` gets a gradient, so the classes do not
      compete; the box branch decides the class. Class-specific, this is exactly
      torchvision's ``maskrcnn_loss``.
    * ``"softmax"``: a softmax across the channels at each pixel, with target class ``k``
      (weight ``t``) and background, channel 0 (weight ``1 - t``): the loss
      ``-(t log p_k + (1 - t) log p_0)`` averaged over pixels and RoIs. Every channel gets a
      gradient, so the classes compete for each pixel. (Fractional targets as for the sigmoid;
      where ``t`` is 0 or 1 this is ordinary cross-entropy.)

    ``class_agnostic=True`` predicts one mask whatever the class: ``k`` is replaced by channel 0
    (sigmoid, one channel) or channel 1, "object" (softmax, two channels). With two channels the
    softmax loss equals the sigmoid loss on the logit difference ``logits[1] - logits[0]``.

    Args:
        mask_logits (Tensor[K, C, M, M], floating): mask logits of the ``K`` positive RoIs of all
            images, in image order. ``C`` is ``num_classes`` (class-specific), 1 (agnostic
            sigmoid) or 2 (agnostic softmax).
        proposals (List[Tensor[K_i, 4]]): each image's positive RoIs ``(x1, y1, x2, y2)`` in
            (transformed) image pixels; ``sum(K_i) == K``.
        gt_masks (List[Tensor[G_i, H_i, W_i]], uint8 or bool): each image's ground-truth masks.
        gt_labels (List[Tensor[G_i]], int64): their classes, in ``[1, C)`` when class-specific.
        matched_idxs (List[Tensor[K_i]], int64): for each RoI, the index of its ground truth.
        loss (str): ``"sigmoid"`` or ``"softmax"``.
        class_agnostic (bool): one mask channel (sigmoid) or two (softmax) instead of one per class.

    Returns:
        Tensor[] (float): the loss. With no positive RoI it is ``mask_logits.sum() * 0``: zero,
        yet connected to the graph, so ``backward`` still reaches (and zeroes) the mask head's
        gradients, as torchvision does.
    """
    fn = "mask_rcnn_loss"
    _check_mask_logits(fn, mask_logits, loss, class_agnostic)
    lists = {"proposals": proposals, "gt_masks": gt_masks, "gt_labels": gt_labels, "matched_idxs": matched_idxs}
    for name, value in lists.items():
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"{fn}: {name} must be a list with one tensor per image, got {describe(value)}")
    if len({len(value) for value in lists.values()}) != 1:
        lengths = {name: len(value) for name, value in lists.items()}
        raise ValueError(
            f"{fn}: proposals, gt_masks, gt_labels and matched_idxs must have one entry per image, got {lengths}"
        )
    num_rois = sum(p.shape[0] for p in proposals)
    if num_rois != mask_logits.shape[0]:
        raise ValueError(f"{fn}: mask_logits must have one row per proposal ({num_rois}), got {describe(mask_logits)}")

    m = mask_logits.shape[-1]
    labels = torch.cat([lab[idx] for lab, idx in zip(gt_labels, matched_idxs)])  # [K]
    targets = torch.cat(
        [project_masks_on_boxes(g, p, idx, m) for g, p, idx in zip(gt_masks, proposals, matched_idxs)]
    )  # [K, M, M], values in [0, 1]
    if targets.numel() == 0:
        # No positive RoI (e.g. images without objects): the mean below would be NaN.
        return mask_logits.sum() * 0
    if not class_agnostic and int(labels.max()) >= mask_logits.shape[1]:
        raise ValueError(
            f"{fn}: gt_labels must be < the {mask_logits.shape[1]} mask channels, got a label {int(labels.max())}"
        )
    targets = targets.to(mask_logits.dtype)
    rows = torch.arange(labels.shape[0], device=labels.device)  # [K]

    if loss == "sigmoid":
        channel = torch.zeros_like(labels) if class_agnostic else labels  # [K]
        return F.binary_cross_entropy_with_logits(mask_logits[rows, channel], targets)  # logits [K, M, M]

    # softmax: each pixel is background (channel 0) with weight 1 - t, class k with weight t
    obj = torch.ones_like(labels) if class_agnostic else labels  # [K]
    log_p = F.log_softmax(mask_logits, dim=1)  # [K, C, M, M]
    return -(targets * log_p[rows, obj] + (1 - targets) * log_p[:, 0]).mean()


def mask_probabilities(
    mask_logits: Tensor, labels: list[Tensor], loss: str = "sigmoid", class_agnostic: bool = False
) -> list[Tensor]:
    """Per-pixel mask probabilities of each detection, from the channel of its predicted class.

    * ``"sigmoid"``: ``sigmoid(logits[k])`` for the predicted class ``k`` (channel 0 when
      class-agnostic), as torchvision's ``maskrcnn_inference``.
    * ``"softmax"``: the softmax probability of class ``k`` (of "object", channel 1, when
      class-agnostic) across the channels.

    Args:
        mask_logits (Tensor[D, C, M, M], floating): mask logits of all images' detections.
        labels (List[Tensor[D_i]], int64): each image's predicted classes; ``sum(D_i) == D``.
        loss (str): the loss the head was trained with, ``"sigmoid"`` or ``"softmax"``.
        class_agnostic (bool): whether the head predicts one mask for every class.

    Returns:
        List[Tensor[D_i, 1, M, M]]: probabilities in [0, 1], one tensor per image.
    """
    fn = "mask_probabilities"
    _check_mask_logits(fn, mask_logits, loss, class_agnostic)
    if not isinstance(labels, (list, tuple)):
        raise TypeError(f"{fn}: labels must be a list with one Tensor[D_i] per image, got {describe(labels)}")
    per_image = [lab.shape[0] for lab in labels]
    if sum(per_image) != mask_logits.shape[0]:
        raise ValueError(
            f"{fn}: mask_logits must have one row per label ({sum(per_image)}), got {describe(mask_logits)}"
        )
    flat = torch.cat(labels) if labels else mask_logits.new_zeros(0, dtype=torch.int64)  # [D]
    rows = torch.arange(flat.shape[0], device=mask_logits.device)  # [D]
    if loss == "sigmoid":
        channel = torch.zeros_like(flat) if class_agnostic else flat
        prob = mask_logits[rows, channel].sigmoid()  # [D, M, M]
    else:
        channel = torch.ones_like(flat) if class_agnostic else flat
        prob = mask_logits.softmax(dim=1)[rows, channel]  # [D, M, M]
    return list(prob[:, None].split(per_image))  # [D_i, 1, M, M] each


# ----------------------------------------------------------------------------------------------
# RoI heads and the model
# ----------------------------------------------------------------------------------------------


class MaskRoIHeads(RoIHeads):
    """torchvision's ``RoIHeads`` with a choice of mask loss and class-agnostic masks.

    The box branch is the parent's, piece by piece (``select_training_samples``, the box pooler,
    head and predictor, ``fastrcnn_loss``, ``postprocess_detections``); the mask branch calls
    :func:`mask_rcnn_loss` in training and :func:`mask_probabilities` at inference. Keypoints are
    not supported. Build it like ``RoIHeads``, with the mask modules, plus:

    Args:
        mask_loss (str): ``"sigmoid"`` or ``"softmax"``.
        class_agnostic (bool): the mask predictor has 1 (sigmoid) or 2 (softmax) channels.
    """

    def __init__(self, *args, mask_loss: str = "sigmoid", class_agnostic: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.mask_loss = check_choice("MaskRoIHeads", "mask_loss", mask_loss, MASK_LOSSES)
        self.class_agnostic = bool(class_agnostic)
        if not self.has_mask():
            raise ValueError("MaskRoIHeads: mask_roi_pool, mask_head and mask_predictor are required")

    def forward(
        self,
        features: dict[str, Tensor],
        proposals: list[Tensor],
        image_shapes: list[tuple[int, int]],
        targets: list[dict[str, Tensor]] | None = None,
    ) -> tuple[list[dict[str, Tensor]], dict[str, Tensor]]:
        """Box and mask outputs for the RPN's proposals.

        Args:
            features (Dict[str, Tensor[N, C, h_k, w_k]]): the FPN maps.
            proposals (List[Tensor[P_i, 4]]): the RPN's boxes per image.
            image_shapes (List[Tuple[int, int]]): ``(height, width)`` of each transformed image.
            targets (List[Dict[str, Tensor]] or None): ``boxes``, ``labels``, ``masks`` per image
                (train mode).

        Returns:
            (detections, losses): in train mode ``([], {"loss_classifier", "loss_box_reg",
            "loss_mask"})``; in eval mode a dict per image with ``boxes`` Tensor[D_i, 4],
            ``labels`` Tensor[D_i], ``scores`` Tensor[D_i] and ``masks`` Tensor[D_i, 1, M, M]
            (probabilities in the box's frame; the model's transform pastes them into the image).
        """
        if self.training:
            # sample RoIs (positives at IoU >= 0.5 with a ground truth, 25% of the batch at most)
            proposals, matched_idxs, labels, regression_targets = self.select_training_samples(proposals, targets)
        box_features = self.box_head(self.box_roi_pool(features, proposals, image_shapes))  # [R, representation]
        class_logits, box_regression = self.box_predictor(box_features)  # [R, classes], [R, 4 * classes]

        if self.training:
            loss_classifier, loss_box_reg = fastrcnn_loss(class_logits, box_regression, labels, regression_targets)
            losses = {"loss_classifier": loss_classifier, "loss_box_reg": loss_box_reg}
            losses.update(self._mask_losses(features, proposals, image_shapes, targets, labels, matched_idxs))
            return [], losses

        boxes, scores, labels = self.postprocess_detections(class_logits, box_regression, proposals, image_shapes)
        # At test time the mask branch runs on the final detections (the paper, section 3.1).
        mask_logits = self._mask_logits(features, boxes, image_shapes)  # [D, C, M, M]
        masks = mask_probabilities(mask_logits, labels, loss=self.mask_loss, class_agnostic=self.class_agnostic)
        result = [
            {"boxes": b, "labels": lab, "scores": s, "masks": m} for b, lab, s, m in zip(boxes, labels, scores, masks)
        ]
        return result, {}

    def _mask_losses(
        self,
        features: dict[str, Tensor],
        proposals: list[Tensor],
        image_shapes: list[tuple[int, int]],
        targets: list[dict[str, Tensor]],
        labels: list[Tensor],
        matched_idxs: list[Tensor],
    ) -> dict[str, Tensor]:
        """``{"loss_mask": L_mask}`` over the sampled RoIs that :meth:`mask_rois` keeps.

        Args:
            proposals (List[Tensor[R_i, 4]]): each image's sampled RoIs.
            labels (List[Tensor[R_i]], int64): their classes (0: background).
            matched_idxs (List[Tensor[R_i]], int64): their ground truths' indices in ``targets``.
            features, image_shapes, targets: as in :meth:`forward`.
        """
        keep = self.mask_rois(labels, matched_idxs, targets)
        mask_boxes = [p[i] for p, i in zip(proposals, keep)]
        mask_matched = [m[i] for m, i in zip(matched_idxs, keep)]
        mask_logits = self._mask_logits(features, mask_boxes, image_shapes)  # [K, C, M, M]
        loss_mask = mask_rcnn_loss(
            mask_logits,
            mask_boxes,
            [t["masks"] for t in targets],
            [t["labels"] for t in targets],
            mask_matched,
            loss=self.mask_loss,
            class_agnostic=self.class_agnostic,
        )
        return {"loss_mask": loss_mask}

    def mask_rois(self, labels: list[Tensor], matched_idxs: list[Tensor], targets: list[dict[str, Tensor]]):
        """Which sampled RoIs enter the mask loss: the positives (the paper, section 3).

        Args:
            labels (List[Tensor[R_i]], int64): each image's sampled RoIs' classes (0: background).
            matched_idxs (List[Tensor[R_i]], int64): their ground truths' indices in ``targets``.
            targets (List[dict]): the images' targets.

        Returns:
            List[Tensor[K_i]] (int64): indices into each image's sampled RoIs.
        """
        return [torch.where(lab > 0)[0] for lab in labels]

    def _mask_logits(self, features: dict[str, Tensor], boxes: list[Tensor], image_shapes) -> Tensor:
        """Mask logits Tensor[K, C, M, M] of ``boxes`` (14 x 14 RoI features, head, 2x deconv)."""
        return self.mask_predictor(self.mask_head(self.mask_roi_pool(features, boxes, image_shapes)))

    def extra_repr(self) -> str:
        return f"mask_loss={self.mask_loss!r}, class_agnostic={self.class_agnostic}"


def _roi_heads_like(cls: type, heads: RoIHeads, **changes) -> RoIHeads:
    """A ``cls`` (``MaskRoIHeads`` or a subclass) with the settings and modules of ``heads``, except
    ``changes`` (keyword arguments of ``cls``). Modules are shared, not copied."""
    settings = {
        "box_roi_pool": heads.box_roi_pool,
        "box_head": heads.box_head,
        "box_predictor": heads.box_predictor,
        "fg_iou_thresh": heads.proposal_matcher.high_threshold,
        "bg_iou_thresh": heads.proposal_matcher.low_threshold,
        "batch_size_per_image": heads.fg_bg_sampler.batch_size_per_image,
        "positive_fraction": heads.fg_bg_sampler.positive_fraction,
        "bbox_reg_weights": heads.box_coder.weights,
        "score_thresh": heads.score_thresh,
        "nms_thresh": heads.nms_thresh,
        "detections_per_img": heads.detections_per_img,
        "mask_roi_pool": heads.mask_roi_pool,
        "mask_head": heads.mask_head,
        "mask_predictor": heads.mask_predictor,
    }
    return cls(**{**settings, **changes})


def _last_conv_channels(module: nn.Module) -> int | None:
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1].out_channels if convs else None


class MaskRCNN(tv_detection.MaskRCNN):
    """torchvision's ``MaskRCNN`` with the paper's switches (see the module docstring).

    Calls and outputs are torchvision's: in train mode ``model(images, targets)`` returns the dict
    of losses ``loss_classifier, loss_box_reg, loss_mask, loss_objectness, loss_rpn_box_reg``
    (the total loss is their sum); in eval mode ``model(images)`` returns per image ``boxes``
    Tensor[D, 4], ``labels`` Tensor[D] (int64), ``scores`` Tensor[D] and ``masks``
    Tensor[D, 1, H, W] (float probabilities at the input image's size). Unlike torchvision, the
    targets are checked up front with errors that say which one is wrong.

    Args:
        backbone (nn.Module): returns an ordered dict of FPN maps ``'0'..'3'`` (strides 4-32) and
            ``'pool'``, and has an ``out_channels`` attribute.
        num_classes (int): classes including the background, ``>= 2``.
        roi_op (str): ``"align"`` (RoIAlign, ``aligned=True``) or ``"pool"`` (RoIPool) for the
            default box and mask poolers.
        mask_loss (str): ``"sigmoid"`` or ``"softmax"``: see :func:`mask_rcnn_loss`.
        class_agnostic_masks (bool): one mask per RoI instead of one per class.
        canonical_scale (float): the RoI size that the default poolers send to level 4 (stride
            16); see :func:`segnotes.ops.fpn_levels`.
        representation_size (int): width of the default box head ``TwoMLPHead`` (torchvision:
            1024), read by the default box predictor.
        box_roi_pool, mask_roi_pool: ``MultiScaleRoIPool`` or torchvision ``MultiScaleRoIAlign``;
            default ``MultiScaleRoIPool(['0', '1', '2', '3'], 7 or 14, 2, roi_op,
            canonical_scale=canonical_scale, aligned=roi_op == "align")``. A pooler given here is
            used as is (``roi_op`` then describes only the defaults).
        box_head, box_predictor: default ``TwoMLPHead(out_channels * 7 * 7, representation_size)``
            and ``FastRCNNPredictor(representation_size, num_classes)``.
        mask_head, mask_predictor: default ``MaskRCNNHeads(out_channels, (out_channels,) * 4, 1)``
            (torchvision's with its 256 for a 256-channel FPN) and ``MaskRCNNPredictor(c, c,
            channels)`` with ``c`` the head's output channels and ``channels`` 1, 2 or
            ``num_classes`` according to ``mask_loss`` and ``class_agnostic_masks``.
        **kwargs: any other argument of torchvision's ``MaskRCNN`` (``min_size``,
            ``rpn_anchor_generator``, ``box_detections_per_img``, ...).
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        *,
        roi_op: str = "align",
        mask_loss: str = "sigmoid",
        class_agnostic_masks: bool = False,
        canonical_scale: float = 224,
        representation_size: int = 1024,
        box_roi_pool: nn.Module | None = None,
        box_head: nn.Module | None = None,
        box_predictor: nn.Module | None = None,
        mask_roi_pool: nn.Module | None = None,
        mask_head: nn.Module | None = None,
        mask_predictor: nn.Module | None = None,
        **kwargs,
    ):
        fn = "MaskRCNN"
        check_int(fn, "num_classes", num_classes, minimum=2)
        check_choice(fn, "roi_op", roi_op, ROI_OPS)
        check_choice(fn, "mask_loss", mask_loss, MASK_LOSSES)
        check_positive(fn, "canonical_scale", canonical_scale)
        check_int(fn, "representation_size", representation_size, minimum=1)
        out_channels = getattr(backbone, "out_channels", None)
        if not isinstance(out_channels, int):
            raise TypeError(f"{fn}: backbone must have an int attribute out_channels, got {describe(out_channels)}")

        def pooler(size: int) -> MultiScaleRoIPool:
            return MultiScaleRoIPool(
                _FEATMAP_NAMES, size, 2, roi_op, canonical_scale=canonical_scale, aligned=roi_op == "align"
            )

        box_roi_pool = pooler(7) if box_roi_pool is None else box_roi_pool
        mask_roi_pool = pooler(14) if mask_roi_pool is None else mask_roi_pool
        if box_head is None:
            box_head = TwoMLPHead(out_channels * 7 * 7, representation_size)
        if box_predictor is None:
            box_predictor = FastRCNNPredictor(representation_size, num_classes)
        if mask_head is None:
            mask_head = MaskRCNNHeads(out_channels, (out_channels,) * 4, 1)
        if mask_predictor is None:
            head_channels = _last_conv_channels(mask_head)
            if head_channels is None:
                raise ValueError(f"{fn}: cannot tell the output channels of mask_head; pass mask_predictor too")
            channels = _mask_channels(num_classes, mask_loss, class_agnostic_masks)
            mask_predictor = MaskRCNNPredictor(head_channels, head_channels, channels)
            # torchvision initialises the logits layer with kaiming fan_out, whose std sqrt(2 / channels)
            # is 1.4 for one channel: initial logits of +-10s and mask losses ~10. detectron2's small
            # normal init starts every variant near a uniform prediction (sigmoid: loss log 2).
            nn.init.normal_(mask_predictor.mask_fcn_logits.weight, std=0.001)
            nn.init.zeros_(mask_predictor.mask_fcn_logits.bias)

        # torchvision accepts only MultiScaleRoIAlign poolers (and num_classes only without
        # predictors): build with its default poolers, then swap in our RoI heads below.
        super().__init__(
            backbone,
            None,
            box_head=box_head,
            box_predictor=box_predictor,
            mask_head=mask_head,
            mask_predictor=mask_predictor,
            **kwargs,
        )
        self.roi_heads = _roi_heads_like(
            MaskRoIHeads,
            self.roi_heads,
            box_roi_pool=box_roi_pool,
            mask_roi_pool=mask_roi_pool,
            mask_loss=mask_loss,
            class_agnostic=class_agnostic_masks,
        )
        self.num_classes = num_classes
        self.roi_op = roi_op
        self.mask_loss = mask_loss
        self.class_agnostic_masks = bool(class_agnostic_masks)

    def forward(self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None):
        """See the class docstring.

        Args:
            images (List[Tensor[3, H_i, W_i]], floating): RGB images in [0, 1], any sizes.
            targets (List[Dict[str, Tensor]] or None): required in train mode, per image
                ``boxes`` Tensor[N, 4] (float, ``x1 y1 x2 y2`` pixels), ``labels`` Tensor[N]
                (int64 in ``[1, num_classes)``), ``masks`` Tensor[N, H_i, W_i] (uint8 or bool).
                ``N`` may be 0.

        Returns:
            Dict[str, Tensor[]] of losses (train mode) or a list of dicts of detections (eval).
        """
        if self.training:
            self._check_targets(images, targets)
        return super().forward(images, targets)

    def _check_targets(self, images, targets) -> None:
        """Check the training inputs; errors name the class (``MaskRCNN`` or a subclass)."""
        _check_training_inputs(type(self).__name__, images, targets, self.num_classes)


def _check_training_inputs(fn: str, images, targets, num_classes: int) -> None:
    """Targets are present and consistent with their images (torchvision only asserts some of it)."""
    if not isinstance(images, (list, tuple)):
        raise TypeError(f"{fn}: images must be a list of Tensor[3, H, W], got {describe(images)}")
    if targets is None:
        raise ValueError(f"{fn}: targets must be given in train mode (call model.eval() for inference)")
    if not isinstance(targets, (list, tuple)) or len(targets) != len(images):
        raise ValueError(
            f"{fn}: targets must be a list of {len(images)} dicts (one per image), got {describe(targets)}"
        )
    for i, (image, target) in enumerate(zip(images, targets)):
        check_tensor(fn, f"images[{i}]", image, ndim=3, floating=True)
        if image.shape[0] != 3:  # the transform's normalisation has 3 means: 1 channel broadcasts silently
            raise ValueError(f"{fn}: images[{i}] must be an RGB Tensor[3, H, W], got {describe(image)}")
        if not isinstance(target, dict):
            raise TypeError(f"{fn}: targets[{i}] must be a dict, got {describe(target)}")
        for key in ("boxes", "labels", "masks"):
            if key not in target:
                raise ValueError(f'{fn}: targets[{i}] must have a "{key}" entry, got keys {sorted(target)}')
        boxes = check_tensor(fn, f'targets[{i}]["boxes"]', target["boxes"], ndim=2, floating=True, last_dim=4)
        n = boxes.shape[0]
        labels = check_tensor(fn, f'targets[{i}]["labels"]', target["labels"], ndim=1, dtype=torch.int64)
        masks = check_tensor(fn, f'targets[{i}]["masks"]', target["masks"], ndim=3, dtype=(torch.uint8, torch.bool))
        if labels.shape[0] != n or masks.shape[0] != n:
            raise ValueError(
                f'{fn}: targets[{i}] must have one label and one mask per box ({n} boxes), '
                f"got labels {describe(labels)} and masks {describe(masks)}"
            )
        if tuple(masks.shape[1:]) != tuple(image.shape[1:]):
            raise ValueError(
                f'{fn}: targets[{i}]["masks"] must be [N, H, W] with the image\'s H, W = {tuple(image.shape[1:])}, '
                f"got {describe(masks)}"
            )
        _check_target_boxes(fn, i, boxes, image.shape[1:])
        if masks.dtype == torch.uint8 and n and int(masks.max()) > 1:
            # A 0/255 mask would train towards 255 (the mask loss reads the values as targets).
            raise ValueError(
                f'{fn}: targets[{i}]["masks"] must hold 0 and 1 (or be bool), got values up to {int(masks.max())}'
            )
        if n and (int(labels.min()) < 1 or int(labels.max()) >= num_classes):
            raise ValueError(
                f'{fn}: targets[{i}]["labels"] must be in [1, {num_classes}) (0 is the background), '
                f"got values from {int(labels.min())} to {int(labels.max())}"
            )


def _check_target_boxes(fn: str, i: int, boxes: Tensor, size: tuple[int, int]) -> None:
    """Finite boxes with positive width and height, within one image size of the image.

    NaN compares False with everything, so ``x2 > x1`` alone lets it through (and the losses
    become NaN). A box far outside the image has no mask to match (masks are image-sized), and
    resampling a mask onto it (RoIAlign with adaptive sampling, ``side / 28`` samples per bin
    and axis) runs out of memory for sides of about 1e5 pixels or more.
    """
    if boxes.numel() == 0:
        return
    height, width = size
    x1, y1, x2, y2 = boxes.detach().unbind(1)  # each [N]
    positive = (x2 > x1) & (y2 > y1)  # False for NaN
    finite = torch.isfinite(boxes.detach()).all(dim=1)
    near = (x1 >= -width) & (x2 <= 2 * width) & (y1 >= -height) & (y2 <= 2 * height)
    bad = ~(positive & finite & near)  # [N]
    if not bool(bad.any()):
        return
    j = int(torch.nonzero(bad)[0])
    if not bool(positive[j] & finite[j]):
        rule = "must have x2 > x1 and y2 > y1 (x1, y1, x2, y2 with positive width and height), all finite"
    else:
        rule = (f"must lie within one image size of the image (x in [{-width}, {2 * width}], y in [{-height}, "
                f"{2 * height}] for this {height} x {width} image)")
    raise ValueError(f'{fn}: targets[{i}]["boxes"] {rule}, got box {j} = {boxes[j].tolist()}')


# ----------------------------------------------------------------------------------------------
# Backbones
# ----------------------------------------------------------------------------------------------


class _TinyResNet(nn.Module):
    """The tiny ResNet's body; its children run in order (``IntermediateLayerGetter`` needs that)."""

    def __init__(self, channels: tuple[int, ...], blocks: tuple[int, ...]):
        super().__init__()
        # A 3 x 3 stride-2 conv and ResNet's 3 x 3 stride-2 max pool: layer1 at stride 4, as in
        # ResNet (whose 7 x 7 stem conv is larger than 8 px objects need).
        self.conv1 = nn.Conv2d(3, channels[0], 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_ch = channels[0]
        for k, (out_ch, count) in enumerate(zip(channels, blocks), start=1):
            stride = 1 if k == 1 else 2
            layers = []
            for b in range(count):
                downsample = None
                if b == 0 and (stride != 1 or in_ch != out_ch):
                    # the identity path must match the block's stride and width (ResNet's option B)
                    downsample = nn.Sequential(
                        nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch)
                    )
                layers.append(BasicBlock(in_ch, out_ch, stride if b == 0 else 1, downsample))
                in_ch = out_ch
            self.add_module(f"layer{k}", nn.Sequential(*layers))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # [N, C1, H/4, W/4]
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))  # [N, C4, H/32, W/32]


def tiny_resnet_fpn_backbone(
    out_channels: int = 64, channels: tuple[int, ...] = (32, 64, 128, 256), blocks: tuple[int, ...] = (2, 2, 1, 1)
) -> BackboneWithFPN:
    """A small ResNet of ``BasicBlock`` s with an FPN: the book's Mask R-CNN backbone.

    Four stages at strides 4, 8, 16 and 32 (the ResNet layout, layer1 after a stride-2 conv and
    a stride-2 max pool) with ``channels`` channels and ``blocks`` blocks each, BatchNorm
    throughout; two blocks where maps are large and convolutions cheap, one where they are wide
    (a second 256-channel block alone would add 1.2M parameters). torchvision's
    ``BackboneWithFPN`` adds a ``out_channels``-wide FPN with ``LastLevelMaxPool``.

    Args:
        out_channels (int): FPN channels.
        channels (Tuple[int, int, int, int]): channels of layer1-layer4.
        blocks (Tuple[int, int, int, int]): ``BasicBlock`` s per stage.

    Returns:
        BackboneWithFPN: ``forward(Tensor[N, 3, H, W])`` gives an ordered dict ``'0'``, ``'1'``,
        ``'2'``, ``'3'``, ``'pool'`` of Tensor[N, out_channels, H / s, W / s] for s = 4, 8, 16, 32,
        64 (rounded up). About 1.3M parameters with the defaults.
    """
    fn = "tiny_resnet_fpn_backbone"
    check_int(fn, "out_channels", out_channels, minimum=1)
    for name, value in (("channels", channels), ("blocks", blocks)):
        if not isinstance(value, (tuple, list)) or len(value) != 4:
            raise ValueError(f"{fn}: {name} must have 4 entries (one per stage), got {value!r}")
        for v in value:
            check_int(fn, name, v, minimum=1)
    body = _TinyResNet(tuple(channels), tuple(blocks))
    return BackboneWithFPN(
        body,
        return_layers={f"layer{k}": str(k - 1) for k in range(1, 5)},
        in_channels_list=list(channels),
        out_channels=out_channels,
        extra_blocks=LastLevelMaxPool(),
    )


def _load_resnet50_weights(progress: bool):
    """ImageNet ResNet-50 weights through torchvision's weights API, with a clear error offline."""
    from torchvision.models import ResNet50_Weights

    return load_weights(ResNet50_Weights.IMAGENET1K_V1, "mask_rcnn", "ImageNet ResNet-50 weights", progress)


def _resnet50_fpn_backbone(pretrained: bool, progress: bool = False, load: bool = True) -> BackboneWithFPN:
    """torchvision's ResNet-50-FPN as in ``maskrcnn_resnet50_fpn``: with ImageNet weights,
    frozen BatchNorm and the first stages frozen (3 trainable layers); from scratch, all trainable.
    ``load=False`` builds the pretrained layout without fetching the weights."""
    from torchvision.models import resnet50
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.ops.misc import FrozenBatchNorm2d

    state = _load_resnet50_weights(progress) if pretrained and load else None  # fail before the slow build
    net = resnet50(weights=None, norm_layer=FrozenBatchNorm2d if pretrained else nn.BatchNorm2d)
    if state is not None:
        net.load_state_dict(state)
    return _resnet_fpn_extractor(net, trainable_layers=3 if pretrained else 5)


def _tiny_defaults() -> dict:
    """Settings for 128 px images with 8-110 px objects (see :func:`mask_rcnn`)."""
    return {
        "rpn_anchor_generator": AnchorGenerator(((8,), (16,), (32,), (64,), (128,)), ((0.5, 1.0, 2.0),) * 5),
        "rpn_pre_nms_top_n_train": 600,
        "rpn_pre_nms_top_n_test": 300,
        "rpn_post_nms_top_n_train": 300,
        "rpn_post_nms_top_n_test": 100,
        "box_batch_size_per_image": 128,
        "box_detections_per_img": 20,
        "representation_size": 256,
    }


def mask_rcnn(
    num_classes: int,
    backbone: str = "tiny_resnet_fpn",
    *,
    pretrained_backbone: bool = False,
    load_pretrained: bool = True,
    roi_op: str = "align",
    mask_loss: str = "sigmoid",
    class_agnostic_masks: bool = False,
    min_size: int | None = None,
    max_size: int | None = None,
    canonical_scale: float | None = None,
    **kwargs,
) -> MaskRCNN:
    """Build a Mask R-CNN (:class:`MaskRCNN`) on one of :data:`MASK_RCNN_BACKBONES`.

    ``"tiny_resnet_fpn"`` (default) is sized for the shapes data (128 px images, 8-110 px
    objects): no resizing (``min_size = max_size = 128``; torchvision would upscale to 800),
    anchors of 8-128 px on levels '0'-'pool' with aspect ratios 0.5, 1, 2, RPN top-n 600/300
    before NMS and 300/100 after (train/test), 128 RoIs per image, 20 detections per image, a
    ``TwoMLPHead`` of width 256 and 64-channel mask head. Poolers use ``canonical_scale=112``:
    a 112 px RoI goes to stride 16, so every RoI of 28 px or more covers 7-14 cells of its level
    ('0' from 28 px, '1' from 56 px, '2' from 112 px; '3' would take 224 px), and smaller ones
    fall to '0'. torchvision's 224 would send every RoI under 112 px, nearly all of them, to '0'.

    ``"resnet50_fpn"`` is torchvision's ResNet-50-FPN with torchvision's defaults (800 / 1333 px,
    canonical scale 224, 256-channel heads).

    Args:
        num_classes (int): classes including the background (10 for the shapes data).
        backbone (str): ``"tiny_resnet_fpn"`` or ``"resnet50_fpn"``.
        pretrained_backbone (bool): load ImageNet weights (``resnet50_fpn`` only), from the
            torch hub cache or downloaded once; a RuntimeError says what to do offline.
        load_pretrained (bool): with ``pretrained_backbone``, False builds the layout those
            weights need (frozen BatchNorm, the first stages frozen) without fetching them: the
            model to load a checkpoint trained from them into.
        roi_op (str): ``"align"`` or ``"pool"``, for both poolers.
        mask_loss (str): ``"sigmoid"`` or ``"softmax"`` (:func:`mask_rcnn_loss`).
        class_agnostic_masks (bool): one mask per RoI instead of one per class.
        min_size, max_size (int or None): the transform's resize; None: the backbone's default.
        canonical_scale (float or None): the poolers' ``s0``; None: the backbone's default.
        **kwargs: overrides for :class:`MaskRCNN` (and torchvision's ``MaskRCNN``), e.g.
            ``box_detections_per_img=50`` or ``rpn_anchor_generator=...``.

    Returns:
        MaskRCNN: in train mode; ``num_classes``, ``roi_op``, ``mask_loss`` and
        ``class_agnostic_masks`` are attributes.

    Example:
        >>> model = mask_rcnn(10).eval()
        >>> out = model([torch.rand(3, 128, 128)])[0]
        >>> sorted(out), out["masks"].shape[1:]
        (['boxes', 'labels', 'masks', 'scores'], torch.Size([1, 128, 128]))
    """
    fn = "mask_rcnn"
    check_int(fn, "num_classes", num_classes, minimum=2)
    check_choice(fn, "backbone", backbone, MASK_RCNN_BACKBONES)
    check_choice(fn, "roi_op", roi_op, ROI_OPS)
    check_choice(fn, "mask_loss", mask_loss, MASK_LOSSES)
    given = {"min_size": min_size, "max_size": max_size, "canonical_scale": canonical_scale}
    net, settings = _backbone_and_settings(fn, backbone, pretrained_backbone, given, kwargs, load_pretrained)
    return MaskRCNN(
        net, num_classes, roi_op=roi_op, mask_loss=mask_loss, class_agnostic_masks=class_agnostic_masks, **settings
    )


def _backbone_and_settings(fn: str, backbone: str, pretrained_backbone: bool, given: dict, kwargs: dict,
                           load_pretrained: bool = True):
    """The backbone network and the model settings of a factory: the backbone's defaults (see
    :func:`mask_rcnn`), then the ``given`` ones that are not None, then ``kwargs``."""
    if backbone == "tiny_resnet_fpn":
        if pretrained_backbone:
            raise ValueError(
                f"{fn}: there are no pretrained weights for tiny_resnet_fpn; use pretrained_backbone=False"
            )
        net = tiny_resnet_fpn_backbone()
        defaults = {"min_size": 128, "max_size": 128, "canonical_scale": 112, **_tiny_defaults()}
    else:
        net = _resnet50_fpn_backbone(bool(pretrained_backbone), load=load_pretrained)
        defaults = {"min_size": 800, "max_size": 1333, "canonical_scale": 224}
    return net, {**defaults, **{k: v for k, v in given.items() if v is not None}, **kwargs}
