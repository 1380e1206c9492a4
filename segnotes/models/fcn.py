"""Fully convolutional networks: FCN-32s, FCN-16s and FCN-8s.

Long, Shelhamer and Darrell, "Fully Convolutional Networks for Semantic Segmentation", CVPR 2015
(arXiv:1411.4038), section 4. A VGG backbone with its classifier convolutionalized gives class
scores on a grid of stride 32 (``score_fr``); upsampling them back to the image gives FCN-32s.
FCN-16s first upsamples the scores 2x (a learned transposed convolution initialised to bilinear),
adds scores computed from pool4 by a 1 x 1 convolution, then upsamples 16x; FCN-8s adds pool3
scores the same way and upsamples 8x. Skips fuse by sum.

Alignment. The reference Caffe net pads conv1_1 by 100 pixels, runs fc6 (7 x 7) without padding,
and crops each upsampled map at hand-derived offsets (19 for FCN-32s; 5 and 27 for FCN-16s; 9 and
31 for FCN-8s), so that output pixel ``o`` lines up with input pixel ``o`` at any input size. We
get the same guarantee without the 100-pixel margin (which, for a 128 px image, more than triples
the area every layer of stage 1 computes on):

* every 3 x 3 conv has padding 1 and fc6 has "same" padding (3 for 7 x 7, 1 for 3 x 3), so convs
  keep sizes and centres;
* pools are 2 x 2 / 2 in ceil mode, so cell j of the stride-s map (pool3: s = 8, pool4: 16,
  pool5 and the scores: 32) has ``ceil(H / s)`` rows and is centred on input pixel
  ``s * j + (s - 1) / 2`` whatever H is;
* upsampling by f is a transposed conv with kernel 2f, stride f and padding f / 2
  (:class:`~segnotes.ops.bilinear.BilinearUpsample`), which maps a cell centred at
  ``s * j + (s - 1) / 2`` to the finer grid with the same convention (``F.interpolate``'s
  ``align_corners=False``).

So all maps are aligned at their top-left corner and every crop offset is 0: a crop only drops the
extra rows and columns at the bottom and right that rounding up produced (2 * ceil(H / 32) may
exceed ceil(H / 16), and 32 * ceil(H / 32) exceeds H unless 32 divides H). In Caffe's net the
stride-32 cells are centred on ``32 j + 12.5`` rather than ``32 j + 15.5`` (a different sampling
phase of the coarse grid), but in both the output pixel o sits on input pixel o. The one
difference is at the border, where the padding is now 1 pixel per layer instead of 100 once.
"""
from __future__ import annotations

import copy

from torch import Tensor, nn

from .._checks import check_choice, check_int, check_tensor, describe
from ..ops.bilinear import BilinearUpsample
from .backbones import VGGBackbone, vgg16_backbone, vgg_small_backbone

__all__ = ["FCN", "fcn", "minimum_input_size", "VARIANTS", "BACKBONES"]

VARIANTS = {"fcn32s": 32, "fcn16s": 16, "fcn8s": 8}  # variant -> output stride of the scores before the last upsampling
BACKBONES = ("vgg16", "vgg_small")
_NEXT_FINER = {"fcn32s": "fcn16s", "fcn16s": "fcn8s"}


def minimum_input_size(variant: str = "fcn8s", backbone: str = "vgg_small") -> int:
    """Smallest input height and width an FCN accepts: 32 pixels for every variant and backbone.

    With ceil-mode pooling and "same" padding any size would run, but an input smaller than the
    backbone's stride of 32 makes pool5 a single partial window, so the coarsest scores no longer
    describe a 32 x 32 cell. (The paper's pad-100 net has no such limit but computes on a margin
    of 100 pixels instead.)
    """
    fn = "minimum_input_size"
    check_choice(fn, "variant", variant, list(VARIANTS))
    check_choice(fn, "backbone", backbone, BACKBONES)
    return 32


def _zero_conv1x1(in_channels: int, out_channels: int) -> nn.Conv2d:
    """A 1 x 1 score layer, zero-initialised as in the paper: a new skip adds nothing at first."""
    conv = nn.Conv2d(in_channels, out_channels, 1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


def _crop_like(x: Tensor, ref: Tensor) -> Tensor:
    """Keep the top-left ``ref``-sized window of ``x`` (offset 0: maps are aligned at the corner)."""
    return x[..., : ref.shape[-2], : ref.shape[-1]]


class FCN(nn.Module):
    """FCN-32s/16s/8s on a VGG backbone (see the module docstring for the alignment).

    Args:
        backbone (VGGBackbone): stages giving pool3, pool4 and fc7.
        num_classes (int): K, including the background class.
        variant (str): ``"fcn32s"``, ``"fcn16s"`` or ``"fcn8s"``.
        backbone_name (str): name recorded for :meth:`from_parent` and checkpoints.

    Attributes:
        stride (int): 32, 16 or 8: the stride of the finest scores, before the last upsampling.
        min_size (int): smallest accepted input height and width (:func:`minimum_input_size`).

    Layers (names as in the paper's Caffe nets): ``score_fr`` (1 x 1 conv on fc7), ``upscore2``
    and ``score_pool4`` (FCN-16s and 8s), ``upscore_pool4`` and ``score_pool3`` (FCN-8s), and
    ``upscore``, the final fixed bilinear upsampling by ``stride``. All score layers start at zero;
    the 2x upsamplings start bilinear and are learned.

    Shape:
        input Tensor[N, 3, H, W] (float) -> logits Tensor[N, num_classes, H, W], for any H, W >=
        ``min_size`` (odd sizes included).
    """

    def __init__(self, backbone: VGGBackbone, num_classes: int, variant: str = "fcn32s", backbone_name: str = "") -> None:
        super().__init__()
        fn = "FCN"
        if not isinstance(backbone, VGGBackbone):
            raise TypeError(f"{fn}: backbone must be a VGGBackbone, got {describe(backbone)}")
        check_int(fn, "num_classes", num_classes, minimum=1)
        check_choice(fn, "variant", variant, list(VARIANTS))
        self.variant = variant
        self.stride = VARIANTS[variant]
        self.num_classes = num_classes
        self.backbone_name = backbone_name
        self.min_size = 32
        self.backbone = backbone
        self.score_fr = _zero_conv1x1(backbone.out_channels, num_classes)
        if self.stride <= 16:
            self.upscore2 = BilinearUpsample(num_classes, 2, learnable=True)
            self.score_pool4 = _zero_conv1x1(backbone.pool4_channels, num_classes)
        if self.stride <= 8:
            self.upscore_pool4 = BilinearUpsample(num_classes, 2, learnable=True)
            self.score_pool3 = _zero_conv1x1(backbone.pool3_channels, num_classes)
        # Fixed, as in the CVPR paper; depthwise, so it costs K filters instead of K x K.
        self.upscore = BilinearUpsample(num_classes, self.stride, learnable=False)

    def forward(self, x: Tensor) -> Tensor:
        """Class scores for every pixel: the stride-32 scores, fused with pool4's (FCN-16s) and pool3's (FCN-8s).

        Args:
            x (Tensor[N, 3, H, W], floating): images, any size.

        Returns:
            Tensor[N, K, H, W]: the scores, upsampled to the input and cropped to it.
        """
        self._check_input(x)
        pool3, pool4, fc7 = self.backbone(x)
        score = self.score_fr(fc7)  # (N, K, H/32, W/32)
        if self.stride <= 16:
            # Fuse by sum at stride 16: the upsampled scores may have one extra row/column.
            score = _crop_like(self.upscore2(score), pool4) + self.score_pool4(pool4)  # (N, K, H/16, W/16)
        if self.stride <= 8:
            score = _crop_like(self.upscore_pool4(score), pool3) + self.score_pool3(pool3)  # (N, K, H/8, W/8)
        return _crop_like(self.upscore(score), x)  # (N, K, H, W)

    def _check_input(self, x: Tensor) -> None:
        fn = f"{type(self).__name__}.forward"
        check_tensor(fn, "input", x, ndim=4, floating=True)
        if x.shape[1] != 3:
            raise ValueError(f"{fn}: input must be Tensor[N, 3, H, W] (RGB images), got {describe(x)}")
        if min(x.shape[-2:]) < self.min_size:
            raise ValueError(
                f"{fn}: input height and width must be at least {self.min_size} pixels (the backbone's "
                f"stride), got {x.shape[-2]} x {x.shape[-1]}"
            )

    def extra_repr(self) -> str:
        return f"variant={self.variant!r}, num_classes={self.num_classes}, stride={self.stride}"

    def load_parent(self, parent: FCN) -> list[str]:
        """Initialise from a trained coarser FCN (staged training: 16s from 32s, 8s from 16s).

        Copies every parameter and buffer the two nets share by name (backbone, ``score_fr`` and,
        from an FCN-16s, ``upscore2`` and ``score_pool4``). This net's new skip layers stay as they
        are (zero when freshly built), so it starts from the parent's scores: its output is the
        parent's coarse scores passed through this net's upsampling path. (Not bit-identical to
        the parent's output: bilinear 2x then 16x equals bilinear 32x only where the scores vary
        linearly; near each coarse cell centre they differ by 1/8 of the local second difference.)

        Args:
            parent (FCN): a coarser FCN (larger ``stride``) with the same backbone and classes.

        Returns:
            list of str: the state-dict keys copied.
        """
        fn = f"{type(self).__name__}.load_parent"
        if not isinstance(parent, FCN):
            raise TypeError(f"{fn}: parent must be an FCN, got {describe(parent)}")
        if parent.stride <= self.stride:
            raise ValueError(
                f"{fn}: parent must be coarser than this {self.variant} (stride > {self.stride}), "
                f"got a {parent.variant} (stride {parent.stride})"
            )
        if parent.num_classes != self.num_classes:
            raise ValueError(f"{fn}: parent must have num_classes={self.num_classes}, got {parent.num_classes}")
        own = self.state_dict()
        theirs = parent.state_dict()
        mismatched = [k for k in theirs if k in own and own[k].shape != theirs[k].shape and k != "upscore.weight"]
        if mismatched:
            raise ValueError(
                f"{fn}: parent has a different backbone ({parent.backbone_name or 'unnamed'} vs "
                f"{self.backbone_name or 'unnamed'}): shapes differ for {mismatched[:3]}"
            )
        # The final upsampling differs in factor (32x vs 16x): a fixed bilinear layer, not copied.
        shared = [k for k in theirs if k in own and own[k].shape == theirs[k].shape]
        self.load_state_dict({k: theirs[k] for k in shared}, strict=False)
        return shared

    @classmethod
    def from_parent(cls, parent: FCN, variant: str | None = None) -> FCN:
        """A finer FCN initialised from ``parent`` (default: the next finer variant).

        The backbone is copied (not shared), the new skip score layers are zero, and the result is
        on the parent's device. See :meth:`load_parent`.

        Args:
            parent (FCN): a trained FCN-32s or FCN-16s.
            variant (str): the child's variant; default ``fcn16s`` for a 32s parent, ``fcn8s``
                for a 16s parent.

        Returns:
            FCN: the child, in the parent's train/eval mode.
        """
        fn = "FCN.from_parent"
        if not isinstance(parent, FCN):
            raise TypeError(f"{fn}: parent must be an FCN, got {describe(parent)}")
        if variant is None:
            if parent.variant not in _NEXT_FINER:
                raise ValueError(f"{fn}: an {parent.variant} has no finer variant; got parent {parent.variant}")
            variant = _NEXT_FINER[parent.variant]
        check_choice(fn, "variant", variant, list(VARIANTS))
        child = cls(copy.deepcopy(parent.backbone), parent.num_classes, variant, parent.backbone_name)
        reference = parent.score_fr.weight
        child.to(device=reference.device, dtype=reference.dtype)
        child.load_parent(parent)
        child.train(parent.training)
        return child


def fcn(
    variant: str,
    num_classes: int,
    backbone: str = "vgg_small",
    pretrained_backbone: bool = False,
    *,
    dropout: float | None = None,
) -> FCN:
    """Build FCN-32s, FCN-16s or FCN-8s.

    Args:
        variant (str): ``"fcn32s"``, ``"fcn16s"`` or ``"fcn8s"``.
        num_classes (int): number of classes K, background included.
        backbone (str): ``"vgg_small"`` (book default, ~1M parameters, trains from scratch) or
            ``"vgg16"`` (the paper's, 134M parameters).
        pretrained_backbone (bool): load ImageNet weights (``vgg16`` only); they are downloaded
            once by torchvision, and a ``RuntimeError`` explains what to do offline.
        dropout (float): dropout after fc6 and fc7; None means the backbone's default (0.5 for
            vgg16 as in the paper, 0.1 for vgg_small).

    Returns:
        FCN: logits ``Tensor[N, K, H, W]`` for inputs ``Tensor[N, 3, H, W]``.

    Example:
        >>> model = fcn("fcn8s", num_classes=10)
        >>> model(torch.zeros(1, 3, 97, 131)).shape
        torch.Size([1, 10, 97, 131])
    """
    fn = "fcn"
    check_choice(fn, "variant", variant, list(VARIANTS))
    check_int(fn, "num_classes", num_classes, minimum=1)
    check_choice(fn, "backbone", backbone, BACKBONES)
    if dropout is not None and not (isinstance(dropout, (int, float)) and 0 <= dropout < 1):
        raise ValueError(f"{fn}: dropout must be a probability in [0, 1), got {describe(dropout)}")
    if backbone == "vgg16":
        net = vgg16_backbone(pretrained=pretrained_backbone, dropout=0.5 if dropout is None else dropout)
    else:
        if pretrained_backbone:
            raise ValueError(f"{fn}: pretrained_backbone=True needs backbone='vgg16' (vgg_small trains from scratch), got backbone={backbone!r}")
        net = vgg_small_backbone(dropout=0.1 if dropout is None else dropout)
    return FCN(net, num_classes, variant, backbone_name=backbone)
