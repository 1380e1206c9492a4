"""Mask^X R-CNN (Hu, Dollár, He, Darrell, Girshick, "Learning to Segment Every Thing", CVPR 2018).

Partially supervised instance segmentation: the classes ``C = A ∪ B`` (background excluded) all
have boxes, but only the classes of ``A`` have masks. The box branch trains on every class; the
mask branch trains on the masks of ``A`` only and must still segment ``B``. Mask R-CNN cannot:
its class ``c`` mask comes from a 1 x 1 conv whose weights ``w_seg^c`` only ``c``'s masks train.
Mask^X R-CNN *predicts* those weights from the class's box-branch weights ``w_det^c`` (which
every class has) with a small learned *weight transfer function* ``T``::

    w_seg^c = T(w_det^c)        T trained on the classes of A, applied to every class

so a box-only class gets a mask head from what the detector learned about it.

* ``w_det^c`` (:func:`detection_weights`) is class ``c``'s row of the box predictor's classifier
  ("cls", ``[rep]``), its four box-regression rows ("box", ``[4 rep]``) or both ("cls+box",
  ``[5 rep]``, the paper's default).
* ``T`` (:class:`WeightTransfer`) is one linear layer or two with a LeakyReLU (the paper's default).
* ``stop_gradient=True`` (the paper's choice for end-to-end training) detaches ``w_det``: the mask
  loss trains ``T`` but does not move the box predictor (it would move A's weights only, since B
  has no mask loss).
* ``fused_mlp=True`` adds a class-agnostic mask from an MLP (:class:`FusedMaskMLP`) to every class's
  logits: a fully connected layer sees the whole RoI at once, which the paper finds complements
  the FCN.
* ``class_agnostic=True`` is the paper's baseline: one mask per RoI from a learned 1 x 1 conv,
  whatever the class (no ``T``).

Training stages (:meth:`MaskXRCNN.set_stage`): ``"joint"`` (end-to-end, default), or stage-wise:
``"detector"`` (Faster R-CNN alone on A ∪ B), then ``"mask"`` (mask head and ``T`` on the frozen
detector).

Everything else is :class:`~segnotes.models.MaskRCNN`: :class:`MaskXRoIHeads` overrides three hooks
of :class:`~segnotes.models.MaskRoIHeads` (which RoIs enter the mask loss, the mask logits, and
whether the mask loss runs at all).

Reference: the authors' Detectron code (``ronghanghu/seg_every_thing``,
``lib/modeling/mask_rcnn_heads.py``: ``bbox2mask_weight_transfer``, ``cls_agnostic_mlp_branch``).
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from numbers import Integral

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import check_choice, check_int, check_tensor, describe
from .mask_rcnn import (
    MASK_RCNN_BACKBONES,
    ROI_OPS,
    MaskRCNN,
    MaskRoIHeads,
    _backbone_and_settings,
    _last_conv_channels,
    _roi_heads_like,
)

__all__ = [
    "MaskXRCNN",
    "MaskXRoIHeads",
    "MaskXPredictor",
    "FusedMaskMLP",
    "WeightTransfer",
    "detection_weights",
    "maskx_rcnn",
    "TRANSFER_INPUTS",
    "STAGES",
]

TRANSFER_INPUTS = ("cls", "box", "cls+box")
STAGES = ("joint", "detector", "mask")
_FIXED_MASK_SETTINGS = ("mask_loss", "class_agnostic_masks", "mask_predictor")


# ----------------------------------------------------------------------------------------------
# The weight transfer function
# ----------------------------------------------------------------------------------------------


def detection_weights(box_predictor: nn.Module, transfer_input: str = "cls+box") -> Tensor:
    """Each class's detection weights ``w_det^c``: the input of the weight transfer function.

    With torchvision's ``FastRCNNPredictor`` (``cls_score`` = Linear(rep, K), ``bbox_pred`` =
    Linear(rep, 4K)), class ``c``'s weights are row ``c`` of ``cls_score.weight`` (``"cls"``) and
    rows ``4c .. 4c+3`` of ``bbox_pred.weight`` side by side (``"box"``), or both (``"cls+box"``).
    The result is a view of the weights: gradients flow back into the predictor unless detached.

    Args:
        box_predictor (nn.Module): has Linear layers ``cls_score`` (K outputs) and ``bbox_pred``
            (4K outputs, class-specific boxes).
        transfer_input (str): ``"cls"``, ``"box"`` or ``"cls+box"``.

    Returns:
        Tensor[K, D] (the weights' dtype): ``D`` = rep, 4 rep or 5 rep; row 0 is the background's.
    """
    fn = "detection_weights"
    check_choice(fn, "transfer_input", transfer_input, TRANSFER_INPUTS)
    cls_score = getattr(box_predictor, "cls_score", None)
    bbox_pred = getattr(box_predictor, "bbox_pred", None)
    if not isinstance(cls_score, nn.Linear) or not isinstance(bbox_pred, nn.Linear):
        raise TypeError(
            f"{fn}: box_predictor must have Linear layers cls_score and bbox_pred (torchvision's "
            f"FastRCNNPredictor), got {type(box_predictor).__name__}"
        )
    k = cls_score.out_features
    if bbox_pred.out_features != 4 * k:
        raise ValueError(
            f"{fn}: box_predictor.bbox_pred must give 4 box values per class (4 x {k} outputs), "
            f"got {bbox_pred.out_features}"
        )
    w_cls = cls_score.weight  # [K, rep]
    w_box = bbox_pred.weight.reshape(k, -1)  # [4K, rep] -> [K, 4 rep]: rows 4c..4c+3 side by side
    if transfer_input == "cls":
        return w_cls
    if transfer_input == "box":
        return w_box
    return torch.cat([w_cls, w_box], dim=1)  # [K, 5 rep]


class WeightTransfer(nn.Module):
    """The weight transfer function ``T``: detection weights to mask weights, one row per class.

    ``layers=1``: ``Linear(in, out)``; ``layers=2`` (the paper's default): ``Linear(in, hidden)``,
    ``LeakyReLU(0.1)``, ``Linear(hidden, out)``. (The paper's Table 1 finds the LeakyReLU better
    than a ReLU, and two layers better than one or three.) Biases start at zero (as the paper's
    code) and the last layer's weights at normal(std 0.001): ``w_seg`` starts near 0, so every
    mask logit does and the masks start uniform (mask loss log 2), like
    :class:`~segnotes.models.MaskRCNN`'s predictor. With PyTorch's default init the last layer's
    bias alone gives logits of +-2 and initial mask losses up to 1.1 on the tiny model.

    Args:
        in_features (int): ``D``, the size of ``w_det^c`` (:func:`detection_weights`).
        out_features (int): the mask features' channels (the 1 x 1 conv's input).
        layers (int): 1 or 2.
        hidden (int): width of the hidden layer (``layers=2``); the paper's code uses the mask
            features' width, 256.
    """

    def __init__(self, in_features: int, out_features: int, layers: int = 2, hidden: int = 256):
        super().__init__()
        fn = "WeightTransfer"
        self.in_features = check_int(fn, "in_features", in_features, minimum=1)
        self.out_features = check_int(fn, "out_features", out_features, minimum=1)
        self.layers = check_choice(fn, "layers", check_int(fn, "layers", layers), (1, 2))
        self.hidden = check_int(fn, "hidden", hidden, minimum=1)
        if layers == 1:
            self.mlp = nn.Sequential(nn.Linear(in_features, out_features))
        else:
            self.mlp = nn.Sequential(
                nn.Linear(in_features, hidden), nn.LeakyReLU(0.1), nn.Linear(hidden, out_features)
            )
        for layer in self.mlp:
            if isinstance(layer, nn.Linear):
                nn.init.zeros_(layer.bias)
        nn.init.normal_(self.mlp[-1].weight, std=0.001)

    def forward(self, w_det: Tensor) -> Tensor:
        """Args: w_det (Tensor[K, in_features], floating). Returns: w_seg Tensor[K, out_features]."""
        check_tensor("WeightTransfer", "w_det", w_det, ndim=2, floating=True, last_dim=self.in_features)
        return self.mlp(w_det)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, layers={self.layers}"


# ----------------------------------------------------------------------------------------------
# The mask predictor: 2x deconv, then class logits from given weights (or a learned conv)
# ----------------------------------------------------------------------------------------------


class FusedMaskMLP(nn.Module):
    """A class-agnostic mask from an MLP on the mask head's features (the paper's fused FCN+MLP).

    The paper's code reads the 28 x 28 deconv features with one fully connected layer
    (28 * 28 * 256 inputs to 28 * 28 outputs: 157M weights), far more than the whole tiny model.
    Ours keeps its point, a layer that sees the whole RoI at once, at a fraction of the size: a
    1 x 1 conv reduces the mask head's ``[R, C, 14, 14]`` output to ``reduced_channels`` (4)
    channels and a ReLU, then one Linear maps the ``4 * 14 * 14 = 784`` values to ``28 * 28``
    logits (0.6M weights). The Linear starts at normal(std 0.001) and zero bias, as the paper's
    code: the branch starts near 0 and the FCN's logits are unchanged at first.

    Args:
        in_channels (int): ``C``, channels of the mask head's output.
        resolution (int): its size (the mask pooler's, 14); the output is twice as large.
        reduced_channels (int): channels after the 1 x 1 conv.
    """

    def __init__(self, in_channels: int, resolution: int = 14, reduced_channels: int = 4):
        super().__init__()
        fn = "FusedMaskMLP"
        self.resolution = check_int(fn, "resolution", resolution, minimum=1)
        check_int(fn, "in_channels", in_channels, minimum=1)
        check_int(fn, "reduced_channels", reduced_channels, minimum=1)
        self.reduce = nn.Conv2d(in_channels, reduced_channels, 1)
        self.fc = nn.Linear(reduced_channels * resolution**2, (2 * resolution) ** 2)
        nn.init.normal_(self.fc.weight, std=0.001)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: Tensor) -> Tensor:
        """Args: x (Tensor[R, C, S, S], floating), S = ``resolution``.
        Returns: Tensor[R, 1, 2S, 2S]: class-agnostic mask logits."""
        s = self.resolution
        check_tensor("FusedMaskMLP", "x", x, ndim=4, floating=True)
        if tuple(x.shape[2:]) != (s, s):
            raise ValueError(f"FusedMaskMLP: x must be [R, C, {s}, {s}], got {describe(x)}")
        h = F.relu(self.reduce(x)).flatten(1)  # [R, 4 * S * S]
        return self.fc(h).view(-1, 1, 2 * s, 2 * s)  # [R, 1, 2S, 2S]

    def extra_repr(self) -> str:
        return f"resolution={self.resolution}"


class MaskXPredictor(nn.Module):
    """The last layers of the mask branch: torchvision's ``MaskRCNNPredictor`` with its 1 x 1 logits
    conv either taking its weights at call time (transfer) or class-agnostic, plus the fused MLP.

    ``features = relu(conv5_mask(x))`` (2x deconv, ``[R, dim, 2S, 2S]``), then

    * transfer: ``logits[r, c] = sum_ch weight[c, ch] * features[r, ch]``, a 1 x 1 conv without
      bias whose weights are ``w_seg`` (one row per class) from :class:`WeightTransfer`;
    * ``class_agnostic=True``: a learned 1 x 1 conv to one channel (with bias, normal(std 0.001)
      init as :class:`~segnotes.models.MaskRCNN`'s predictor);

    and with ``fused_mlp`` the :class:`FusedMaskMLP`'s ``[R, 1, 2S, 2S]`` logits are added to every
    channel (the paper tiles them over the classes) before the sigmoid.

    Args:
        in_channels (int): ``C``, channels of the mask head's output.
        dim (int): channels of the deconv features (``w_seg``'s width).
        class_agnostic (bool): one learned mask channel instead of given weights.
        fused_mlp (bool): add the class-agnostic MLP branch.
        resolution (int): ``S``, the mask head's output size (14).
    """

    def __init__(
        self, in_channels: int, dim: int, *, class_agnostic: bool = False, fused_mlp: bool = True, resolution: int = 14
    ):
        super().__init__()
        fn = "MaskXPredictor"
        self.dim = check_int(fn, "dim", dim, minimum=1)
        self.conv5_mask = nn.ConvTranspose2d(check_int(fn, "in_channels", in_channels, minimum=1), dim, 2, stride=2)
        nn.init.kaiming_normal_(self.conv5_mask.weight, mode="fan_out", nonlinearity="relu")  # as torchvision
        nn.init.zeros_(self.conv5_mask.bias)
        self.mask_fcn_logits = nn.Conv2d(dim, 1, 1) if class_agnostic else None
        if class_agnostic:
            nn.init.normal_(self.mask_fcn_logits.weight, std=0.001)
            nn.init.zeros_(self.mask_fcn_logits.bias)
        self.mlp = FusedMaskMLP(in_channels, resolution) if fused_mlp else None

    @property
    def class_agnostic(self) -> bool:
        return self.mask_fcn_logits is not None

    def forward(self, x: Tensor, weight: Tensor | None = None) -> Tensor:
        """Mask logits of each RoI.

        Args:
            x (Tensor[R, C, S, S], floating): the mask head's output.
            weight (Tensor[K, dim] or None): ``w_seg``, one row per class; None (and only None)
                when class-agnostic.

        Returns:
            Tensor[R, K, 2S, 2S] (or Tensor[R, 1, 2S, 2S] when class-agnostic): logits.
        """
        fn = "MaskXPredictor"
        if self.class_agnostic != (weight is None):
            want = "None (class-agnostic predictor)" if self.class_agnostic else f"Tensor[K, {self.dim}] (w_seg)"
            raise ValueError(f"{fn}: weight must be {want}, got {describe(weight)}")
        features = F.relu(self.conv5_mask(x))  # [R, dim, 2S, 2S]
        if self.class_agnostic:
            logits = self.mask_fcn_logits(features)  # [R, 1, 2S, 2S]
        else:
            check_tensor(fn, "weight", weight, ndim=2, floating=True, last_dim=self.dim)
            logits = torch.einsum("rchw,kc->rkhw", features, weight)  # [R, K, 2S, 2S]: 1x1 conv, no bias
        if self.mlp is not None:
            logits = logits + self.mlp(x)  # [R, 1, 2S, 2S] broadcast over the K channels
        return logits

    def extra_repr(self) -> str:
        return f"class_agnostic={self.class_agnostic}"


# ----------------------------------------------------------------------------------------------
# RoI heads and the model
# ----------------------------------------------------------------------------------------------


def _check_mask_classes(fn: str, mask_classes, num_classes: int) -> tuple[int, ...]:
    """``mask_classes`` as a sorted tuple, after checking it is a non-empty set of foreground ids."""
    if isinstance(mask_classes, (str, bytes)) or not isinstance(mask_classes, Iterable):
        raise TypeError(f"{fn}: mask_classes must be a sequence of class ids, got {describe(mask_classes)}")
    values = list(mask_classes)
    for v in values:
        if isinstance(v, bool) or not isinstance(v, Integral):
            raise TypeError(f"{fn}: mask_classes must hold int class ids, got {describe(v)} in {values}")
    values = [int(v) for v in values]
    if not values:
        raise ValueError(f"{fn}: mask_classes must name at least one class with masks (the set A), got {values}")
    if 0 in values:
        raise ValueError(
            f"{fn}: mask_classes must not contain 0, the background (class ids are 1..{num_classes - 1}), got {values}"
        )
    repeated = sorted({v for v in values if values.count(v) > 1})
    if repeated:
        raise ValueError(f"{fn}: mask_classes must not repeat a class, got {values} ({repeated} repeated)")
    outside = [v for v in values if not 1 <= v < num_classes]
    if outside:
        raise ValueError(
            f"{fn}: mask_classes must be a subset of 1..{num_classes - 1} (num_classes={num_classes} counts the "
            f"background), got {values} ({outside} out of range)"
        )
    return tuple(sorted(values))


class MaskXRoIHeads(MaskRoIHeads):
    """:class:`~segnotes.models.MaskRoIHeads` whose mask branch trains on ``mask_classes`` only and
    whose class logits use transferred weights.

    Three hooks of the parent change; the box branch and inference are the parent's:

    * :meth:`mask_rois`: the RoIs of the mask loss are the positives whose matched ground truth
      has a class in ``mask_classes`` and, where the target has a ``mask_valid`` BoolTensor[N],
      a valid mask. Masks of other classes in the targets are ignored *by design*: one data set
      with every mask can train every split of the classes, and nothing leaks from ``B``.
    * :meth:`_mask_logits`: ``w_seg = T(w_det)`` (:meth:`segmentation_weights`) computed from the
      current box predictor at every call, then :class:`MaskXPredictor`.
    * :meth:`_mask_losses`: none in the ``"detector"`` stage (no ``loss_mask`` key).

    At inference every detection gets a mask, box-only classes included: the channel of its class,
    from the transferred weights (:func:`~segnotes.models.mask_probabilities`).

    Build it like ``MaskRoIHeads`` (``mask_loss`` must be ``"sigmoid"``; the predictor a
    :class:`MaskXPredictor`), plus:

    Args:
        mask_classes (Sequence[int]): the classes whose masks train (set A), in ``[1, K)``.
        transfer (WeightTransfer or None): ``T``; None if and only if ``class_agnostic``.
        transfer_input (str): ``"cls"``, ``"box"`` or ``"cls+box"`` (:func:`detection_weights`).
        stop_gradient (bool): detach ``w_det``, so the mask loss does not reach the box predictor.
    """

    def __init__(
        self,
        *args,
        mask_classes,
        transfer: WeightTransfer | None = None,
        transfer_input: str = "cls+box",
        stop_gradient: bool = True,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        fn = "MaskXRoIHeads"
        num_classes = getattr(getattr(self.box_predictor, "cls_score", None), "out_features", None)
        if not isinstance(num_classes, int):
            raise TypeError(f"{fn}: box_predictor must be a FastRCNNPredictor, got {type(self.box_predictor).__name__}")
        self.mask_classes = _check_mask_classes(fn, mask_classes, num_classes)
        if self.mask_loss != "sigmoid":
            raise ValueError(f"{fn}: mask_loss must be 'sigmoid' (the paper's), got {self.mask_loss!r}")
        predictor = self.mask_predictor
        if not isinstance(predictor, MaskXPredictor) or predictor.class_agnostic != self.class_agnostic:
            raise TypeError(
                f"{fn}: mask_predictor must be a MaskXPredictor with class_agnostic={self.class_agnostic}, "
                f"got {type(self.mask_predictor).__name__}"
            )
        if self.class_agnostic != (transfer is None):
            raise ValueError(
                f"{fn}: transfer must be a WeightTransfer unless class_agnostic, and None if class_agnostic; "
                f"got {type(transfer).__name__} with class_agnostic={self.class_agnostic}"
            )
        self.transfer = transfer
        self.transfer_input = check_choice(fn, "transfer_input", transfer_input, TRANSFER_INPUTS)
        self.stop_gradient = bool(stop_gradient)
        self.stage = "joint"

    def segmentation_weights(self) -> Tensor | None:
        """``w_seg`` Tensor[K, dim]: ``T(w_det)`` for every class (row 0, the background's, unused);
        None when class-agnostic. ``w_det`` is detached when ``stop_gradient``."""
        if self.transfer is None:
            return None
        w_det = detection_weights(self.box_predictor, self.transfer_input)  # [K, D]
        if self.stop_gradient:
            # The paper's stop-gradient: only A has a mask loss, so without it A's detection
            # weights would drift toward the mask task and B's not, and T would train on
            # inputs unlike those it is applied to for B.
            w_det = w_det.detach()
        return self.transfer(w_det)  # [K, dim]

    def _mask_logits(self, features: dict[str, Tensor], boxes: list[Tensor], image_shapes) -> Tensor:
        """Mask logits Tensor[R, K, M, M] (Tensor[R, 1, M, M] class-agnostic) of ``boxes``."""
        x = self.mask_head(self.mask_roi_pool(features, boxes, image_shapes))  # [R, C, 14, 14]
        return self.mask_predictor(x, self.segmentation_weights())

    def mask_rois(self, labels: list[Tensor], matched_idxs: list[Tensor], targets: list[dict[str, Tensor]]):
        """Which sampled RoIs enter the mask loss: positives matched to an object of ``mask_classes`` that has
        a mask (``mask_valid``; partially supervised data withholds group B's).

        Args and returns: as :meth:`segnotes.models.mask_rcnn.MaskRoIHeads.mask_rois`.
        """
        keep = []
        for lab, idx, target in zip(labels, matched_idxs, targets):
            classes = torch.tensor(self.mask_classes, device=lab.device)
            rois = torch.where(torch.isin(lab, classes))[0]  # positives of a mask class (0 is none)
            if "mask_valid" in target:
                rois = rois[target["mask_valid"][idx[rois]]]  # drop RoIs whose ground truth lacks a mask
            keep.append(rois)
        return keep

    def _mask_losses(self, features, proposals, image_shapes, targets, labels, matched_idxs) -> dict[str, Tensor]:
        """The parent's ``{"loss_mask": ...}``, or ``{}`` in the ``"detector"`` stage."""
        if self.stage == "detector":
            return {}
        return super()._mask_losses(features, proposals, image_shapes, targets, labels, matched_idxs)

    def extra_repr(self) -> str:
        transfer = "" if self.class_agnostic else f", transfer_input={self.transfer_input!r}"
        return (
            f"mask_classes={self.mask_classes}, class_agnostic={self.class_agnostic}{transfer}, "
            f"stop_gradient={self.stop_gradient}, stage={self.stage!r}"
        )


def _check_transfer_settings(fn: str, transfer_input, transfer_layers, transfer_hidden, kwargs: dict) -> None:
    check_choice(fn, "transfer_input", transfer_input, TRANSFER_INPUTS)
    check_choice(fn, "transfer_layers", check_int(fn, "transfer_layers", transfer_layers), (1, 2))
    check_int(fn, "transfer_hidden", transfer_hidden, minimum=1)
    for name in _FIXED_MASK_SETTINGS:
        if name in kwargs:
            raise ValueError(
                f"{fn}: {name} cannot be set: Mask^X R-CNN uses sigmoid masks and its own predictor "
                "(use class_agnostic=True for one mask per RoI)"
            )


class MaskXRCNN(MaskRCNN):
    """Mask^X R-CNN: :class:`~segnotes.models.MaskRCNN` with :class:`MaskXRoIHeads` (see the
    module docstring).

    Calls and outputs are ``MaskRCNN``'s. Training targets may carry ``mask_valid``
    (BoolTensor[N], as :class:`segnotes.data.ShapesInstances` with ``partial``): instances marked
    False enter the box losses but not the mask loss. Masks of classes outside ``mask_classes``
    never enter the mask loss, whatever ``mask_valid`` says, so a data set with every mask can
    train every split. In eval mode every detection, of any class, gets a mask.

    Args:
        backbone (nn.Module): as ``MaskRCNN``.
        num_classes (int): classes including the background, ``>= 2``.
        mask_classes (Sequence[int]): the classes with masks (set A), a non-empty subset of
            ``1..num_classes-1``; stored sorted as a tuple.
        transfer_input (str): ``"cls"``, ``"box"`` or ``"cls+box"``: ``w_det`` (:func:`detection_weights`).
        transfer_layers (int): 1 or 2 (:class:`WeightTransfer`).
        transfer_hidden (int): ``T``'s hidden width (2 layers).
        fused_mlp (bool): add the class-agnostic MLP mask (:class:`FusedMaskMLP`).
        class_agnostic (bool): the baseline, one learned mask per RoI; ``T`` and its three settings
            are then unused (no ``WeightTransfer`` is built; the attributes keep the given values).
        stop_gradient (bool): the mask loss does not reach the box predictor through ``T``.
        **kwargs: ``MaskRCNN``'s other arguments (``roi_op``, ``canonical_scale``, ``mask_head``,
            ``min_size``, ...), but not ``mask_loss``, ``class_agnostic_masks`` or ``mask_predictor``.

    Attributes:
        stage (str): ``"joint"``, ``"detector"`` or ``"mask"``; change it with :meth:`set_stage`.
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        mask_classes,
        *,
        transfer_input: str = "cls+box",
        transfer_layers: int = 2,
        transfer_hidden: int = 256,
        fused_mlp: bool = True,
        class_agnostic: bool = False,
        stop_gradient: bool = True,
        **kwargs,
    ):
        fn = "MaskXRCNN"
        check_int(fn, "num_classes", num_classes, minimum=2)
        mask_classes = _check_mask_classes(fn, mask_classes, num_classes)
        _check_transfer_settings(fn, transfer_input, transfer_layers, transfer_hidden, kwargs)
        # The parent builds the detector and the mask head (and a mask predictor we replace).
        super().__init__(backbone, num_classes, mask_loss="sigmoid", class_agnostic_masks=class_agnostic, **kwargs)
        heads = self.roi_heads
        dim = _last_conv_channels(heads.mask_head)  # the parent checked there is one
        size = getattr(heads.mask_roi_pool, "output_size", 14)  # the mask head keeps the pooler's size
        resolution = size if isinstance(size, int) else size[0]
        predictor = MaskXPredictor(dim, dim, class_agnostic=class_agnostic, fused_mlp=fused_mlp, resolution=resolution)
        transfer = None
        if not class_agnostic:
            in_features = detection_weights(heads.box_predictor, transfer_input).shape[1]
            transfer = WeightTransfer(in_features, dim, transfer_layers, transfer_hidden)
        self.roi_heads = _roi_heads_like(
            MaskXRoIHeads,
            heads,
            mask_predictor=predictor,
            mask_loss="sigmoid",
            class_agnostic=class_agnostic,
            mask_classes=mask_classes,
            transfer=transfer,
            transfer_input=transfer_input,
            stop_gradient=stop_gradient,
        )
        self.mask_classes = mask_classes
        self.transfer_input = transfer_input
        self.transfer_layers = transfer_layers
        self.transfer_hidden = transfer_hidden
        self.fused_mlp = bool(fused_mlp)
        self.class_agnostic = bool(class_agnostic)
        self.stop_gradient = bool(stop_gradient)
        # set_stage("joint") must not unfreeze what the backbone froze (e.g. a pretrained ResNet's stem)
        self._fixed = frozenset(name for name, p in self.named_parameters() if not p.requires_grad)

    @property
    def stage(self) -> str:
        return self.roi_heads.stage

    def set_stage(self, stage: str) -> MaskXRCNN:
        """Choose what training updates, for end-to-end or stage-wise training; returns the model.

        * ``"joint"`` (default): everything, all losses (end-to-end).
        * ``"detector"``: Faster R-CNN alone. The mask branch does not run in training and the
          losses have no ``loss_mask`` key: no compute spent, and no gradient, so an optimizer
          over all parameters leaves the mask branch alone (AdamW skips parameters whose grad is
          None, weight decay included; a zero loss would still decay them). Eval mode still
          predicts masks.
        * ``"mask"``: the mask head, predictor and ``T`` (:meth:`mask_parameters`) on a frozen
          detector: every other parameter gets ``requires_grad=False``, and its BatchNorm layers
          stay in eval mode through ``model.train()`` (their running statistics are the
          detector's). All five losses are returned, but only ``loss_mask`` has a graph, so the
          sum's ``backward`` reaches the mask branch alone.

        Parameters frozen when the model was built stay frozen in every stage.
        """
        check_choice("MaskXRCNN.set_stage", "stage", stage, STAGES)
        self.roi_heads.stage = stage
        mask_ids = {id(p) for p in self.mask_parameters()}
        for name, p in self.named_parameters():
            p.requires_grad_(name not in self._fixed and (stage != "mask" or id(p) in mask_ids))
        return self.train(self.training)

    def mask_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of the mask branch: the mask head, :class:`MaskXPredictor` and ``T``."""
        for module in self._mask_modules():
            yield from module.parameters()

    def _mask_modules(self) -> list[nn.Module]:
        heads = self.roi_heads
        return [m for m in (heads.mask_head, heads.mask_predictor, heads.transfer) if m is not None]

    def train(self, mode: bool = True) -> MaskXRCNN:
        """``nn.Module.train``, except that in the ``"mask"`` stage the detector's BatchNorm layers
        stay in eval mode (batch statistics would change the frozen detector's features)."""
        super().train(mode)
        if mode and self.stage == "mask":
            in_mask_branch = {id(m) for module in self._mask_modules() for m in module.modules()}
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm) and id(m) not in in_mask_branch:
                    m.eval()
        return self

    def _check_targets(self, images, targets) -> None:
        """The parent's checks, and ``mask_valid`` (optional): BoolTensor[N], one flag per box."""
        super()._check_targets(images, targets)
        fn = type(self).__name__
        for i, target in enumerate(targets):
            if "mask_valid" not in target:
                continue
            valid = check_tensor(fn, f'targets[{i}]["mask_valid"]', target["mask_valid"], ndim=1, dtype=torch.bool)
            n = target["boxes"].shape[0]
            if valid.shape[0] != n:
                raise ValueError(
                    f'{fn}: targets[{i}]["mask_valid"] must have one flag per box ({n} boxes), got {describe(valid)}'
                )


def maskx_rcnn(
    num_classes: int,
    mask_classes,
    *,
    transfer_input: str = "cls+box",
    transfer_layers: int = 2,
    transfer_hidden: int = 256,
    fused_mlp: bool = True,
    class_agnostic: bool = False,
    stop_gradient: bool = True,
    backbone: str = "tiny_resnet_fpn",
    pretrained_backbone: bool = False,
    load_pretrained: bool = True,
    min_size: int | None = None,
    max_size: int | None = None,
    canonical_scale: float | None = None,
    **kwargs,
) -> MaskXRCNN:
    """Build a Mask^X R-CNN (:class:`MaskXRCNN`) with :func:`~segnotes.models.mask_rcnn`'s settings.

    The defaults are the paper's best model: ``cls+box`` input, a 2-layer LeakyReLU ``T``, the
    fused MLP and stop-gradient. The masks use the sigmoid loss (the paper's; not selectable).

    Args:
        num_classes (int): classes including the background (10 for the shapes data).
        mask_classes (Sequence[int]): the classes whose masks train (set A), e.g.
            ``segnotes.data.GROUPS["A"]``.
        transfer_input, transfer_layers, transfer_hidden, fused_mlp, class_agnostic,
            stop_gradient: see :class:`MaskXRCNN`. With ``class_agnostic=True`` the transfer
            settings are checked but unused.
        backbone, pretrained_backbone, load_pretrained, min_size, max_size, canonical_scale,
            **kwargs: as :func:`~segnotes.models.mask_rcnn` (``roi_op``, ``box_detections_per_img``, ...).

    Returns:
        MaskXRCNN: in train mode, stage ``"joint"``.

    Example:
        >>> model = maskx_rcnn(10, (1, 2, 5, 7, 8)).eval()
        >>> out = model([torch.rand(3, 128, 128)])[0]
        >>> out["masks"].shape[1:]
        torch.Size([1, 128, 128])
    """
    fn = "maskx_rcnn"
    check_int(fn, "num_classes", num_classes, minimum=2)
    mask_classes = _check_mask_classes(fn, mask_classes, num_classes)
    _check_transfer_settings(fn, transfer_input, transfer_layers, transfer_hidden, kwargs)
    check_choice(fn, "backbone", backbone, MASK_RCNN_BACKBONES)
    check_choice(fn, "roi_op", kwargs.get("roi_op", "align"), ROI_OPS)
    given = {"min_size": min_size, "max_size": max_size, "canonical_scale": canonical_scale}
    net, settings = _backbone_and_settings(fn, backbone, pretrained_backbone, given, kwargs, load_pretrained)
    return MaskXRCNN(
        net,
        num_classes,
        mask_classes,
        transfer_input=transfer_input,
        transfer_layers=transfer_layers,
        transfer_hidden=transfer_hidden,
        fused_mlp=fused_mlp,
        class_agnostic=class_agnostic,
        stop_gradient=stop_gradient,
        **settings,
    )
