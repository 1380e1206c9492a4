"""VGG backbones for FCN: five pooling stages plus the convolutionalized classifier.

FCN (Long, Shelhamer, Darrell, CVPR 2015, section 3.1) turns a classification net into a dense
predictor by reading its fully connected layers as convolutions: fc6 of VGG16, a Linear layer on
the flattened 512 x 7 x 7 pool5 map, *is* a 7 x 7 convolution with 4096 filters that happens to
be applied at a single position. Applied to a larger image it slides, and the 1000 class scores
become a coarse map of scores (:func:`convolutionalize`).

Two backbones share one layout (:class:`VGGBackbone`):

* ``vgg16``: torchvision's VGG16, optionally with its ImageNet weights, as in the paper.
* ``vgg_small``: the same five stages and strides with few channels (about 1M parameters), the
  book's default, which trains from scratch on a CPU in minutes on 128 px images.
"""
from __future__ import annotations

import os

import torch
from torch import Tensor, nn

from .._checks import check_int, describe

__all__ = ["VGGBackbone", "convolutionalize", "vgg16_backbone", "vgg_small_backbone"]


def convolutionalize(
    classifier: nn.Sequential, in_channels: int = 512, spatial: int = 7, padding: int = 0
) -> nn.Sequential:
    """Rewrite a VGG classifier's Linear layers as the equivalent convolutions.

    The first Linear layer reads a flattened ``[in_channels, spatial, spatial]`` map (PyTorch's
    ``flatten`` order: channel, row, column), so its weight ``[out, in_channels * spatial**2]``
    reshapes exactly into a conv weight ``[out, in_channels, spatial, spatial]``. Later Linear
    layers read a vector, so they become 1 x 1 convolutions. Other layers (ReLU, Dropout) are kept.

    On a ``spatial x spatial`` input map with ``padding=0`` the result gives the classifier's scores
    as a ``[N, out, 1, 1]`` map; on a larger map, a map of scores, one per ``spatial x spatial``
    window (stride 1 in map cells, i.e. 32 image pixels for VGG).

    Args:
        classifier (nn.Sequential): e.g. ``torchvision.models.vgg16().classifier``
            (Linear 25088->4096, ReLU, Dropout, Linear 4096->4096, ReLU, Dropout, Linear 4096->1000).
        in_channels (int): channels of the feature map the first Linear layer flattens (512).
        spatial (int): its height and width (7).
        padding (int): zero padding of the first convolution; FCN uses ``spatial // 2`` so the
            score map keeps the size of pool5 (see :mod:`segnotes.models.fcn`).

    Returns:
        nn.Sequential: the same layers with ``nn.Conv2d`` in place of ``nn.Linear``, weights copied
        (new tensors: the classifier is left untouched).
    """
    fn = "convolutionalize"
    if not isinstance(classifier, nn.Sequential):
        raise TypeError(f"{fn}: classifier must be an nn.Sequential, got {describe(classifier)}")
    check_int(fn, "in_channels", in_channels, minimum=1)
    check_int(fn, "spatial", spatial, minimum=1)
    check_int(fn, "padding", padding, minimum=0)
    layers: list[nn.Module] = []
    first = True
    for layer in classifier:
        if not isinstance(layer, nn.Linear):
            layers.append(type(layer)(**_init_kwargs(layer)))
            continue
        if first:
            if layer.in_features != in_channels * spatial * spatial:
                raise ValueError(
                    f"{fn}: the first Linear layer must read in_channels * spatial**2 = "
                    f"{in_channels} * {spatial}**2 = {in_channels * spatial * spatial} features, "
                    f"got in_features={layer.in_features}"
                )
            conv = nn.Conv2d(in_channels, layer.out_features, spatial, padding=padding, bias=layer.bias is not None)
            kernel_shape = (layer.out_features, in_channels, spatial, spatial)
        else:
            conv = nn.Conv2d(layer.in_features, layer.out_features, 1, bias=layer.bias is not None)
            kernel_shape = (layer.out_features, layer.in_features, 1, 1)
        conv = conv.to(device=layer.weight.device, dtype=layer.weight.dtype)
        with torch.no_grad():
            conv.weight.copy_(layer.weight.reshape(kernel_shape))  # (out, C, k, k)
            if layer.bias is not None:
                conv.bias.copy_(layer.bias)
        layers.append(conv)
        first = False
    if first:
        raise ValueError(f"{fn}: classifier has no nn.Linear layer, got {classifier}")
    return nn.Sequential(*layers)


def _init_kwargs(layer: nn.Module) -> dict:
    """Constructor arguments to rebuild the non-Linear layers of a VGG classifier."""
    if isinstance(layer, nn.ReLU):
        return {"inplace": layer.inplace}
    if isinstance(layer, nn.Dropout):
        return {"p": layer.p}
    raise TypeError(f"convolutionalize: cannot convert layer {layer!r} (expected Linear, ReLU or Dropout)")


class VGGBackbone(nn.Module):
    """Five VGG stages (each ending in 2 x 2 / 2 max pooling) and the fc6/fc7 convolutions.

    Pooling uses ``ceil_mode=True``, like the Caffe nets FCN was built on, so a stage maps an
    ``h``-pixel map to ``ceil(h / 2)`` cells and a cell always covers the pixels 2j and 2j + 1:
    cell j of the stride-s map is centred on input pixel ``s * j + (s - 1) / 2`` for any input size.

    Args:
        stages (list of nn.Sequential): the five stages; the outputs of stages 3, 4 and 5 are
            pool3 (stride 8), pool4 (stride 16) and pool5 (stride 32).
        fc (nn.Sequential): fc6 and fc7 as convolutions (with their ReLU and Dropout), applied to
            pool5 with "same" padding so the score map has pool5's size.
        pool3_channels, pool4_channels, out_channels (int): channels of pool3, pool4 and fc7.

    Returns (forward):
        tuple (pool3 Tensor[N, C3, H/8, W/8], pool4 Tensor[N, C4, H/16, W/16],
        fc7 Tensor[N, C7, H/32, W/32]), sizes rounded up.
    """

    def __init__(
        self, stages: list[nn.Sequential], fc: nn.Sequential, pool3_channels: int, pool4_channels: int, out_channels: int
    ) -> None:
        super().__init__()
        if len(stages) != 5:
            raise ValueError(f"VGGBackbone: stages must hold 5 stages, got {len(stages)}")
        self.stage1, self.stage2, self.stage3, self.stage4, self.stage5 = stages
        self.fc = fc
        self.pool3_channels = pool3_channels
        self.pool4_channels = pool4_channels
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x = self.stage2(self.stage1(x))
        pool3 = self.stage3(x)  # (N, C3, H/8, W/8)
        pool4 = self.stage4(pool3)  # (N, C4, H/16, W/16)
        fc7 = self.fc(self.stage5(pool4))  # (N, C7, H/32, W/32)
        return pool3, pool4, fc7


def _split_stages(features: nn.Sequential) -> list[nn.Sequential]:
    """Cut VGG's ``features`` after each max pool; switch the pools to ceil mode."""
    stages, current = [], []
    for layer in features:
        current.append(layer)
        if isinstance(layer, nn.MaxPool2d):
            layer.ceil_mode = True
            stages.append(nn.Sequential(*current))
            current = []
    return stages


def load_weights(weights, fn: str, what: str, progress: bool = False) -> dict:
    """A state dict through torchvision's weights API, with an error that says what to do offline.

    Args:
        weights: a torchvision ``WeightsEnum`` member, e.g. ``VGG16_Weights.IMAGENET1K_V1``.
        fn (str): the public function asking, for the message.
        what (str): what the weights are, for the message (e.g. "ImageNet VGG16 weights").
        progress (bool): show the download progress bar.

    Raises:
        RuntimeError: the download or the cached file failed; names the URL and the cache file.
    """
    try:
        return weights.get_state_dict(progress=progress, check_hash=True)
    except Exception as err:  # URLError, HTTPError, a truncated or corrupt cached file, ...
        cache = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(weights.url))
        raise RuntimeError(
            f"{fn}: could not load the {what} ({weights}): "
            f"{type(err).__name__}: {err}. torchvision downloads them once from {weights.url} to {cache} "
            "(the folder follows $TORCH_HOME). Without internet access, download that file on another "
            "machine and copy it there, or build the model with pretrained_backbone=False."
        ) from err


def _load_vgg16_weights(progress: bool):
    """ImageNet VGG16 weights through torchvision's weights API, with a clear error offline."""
    from torchvision.models import VGG16_Weights

    return load_weights(VGG16_Weights.IMAGENET1K_V1, "vgg16_backbone", "ImageNet VGG16 weights", progress)


def vgg16_backbone(pretrained: bool = False, dropout: float = 0.5, progress: bool = False) -> VGGBackbone:
    """VGG16 (torchvision) as an FCN backbone: ceil-mode pools, fc6 a 7 x 7 conv (pad 3), fc7 1 x 1.

    Args:
        pretrained (bool): load ``VGG16_Weights.IMAGENET1K_V1`` (downloaded once into the torch
            hub cache; a ``RuntimeError`` explains what to do when that fails). Inputs are then
            expected normalised with the ImageNet mean and std, as those weights were trained.
        dropout (float): dropout probability after fc6 and fc7 (0.5 in VGG and FCN).
        progress (bool): show the download progress bar.

    Returns:
        VGGBackbone with a 256-channel pool3, a 512-channel pool4 and a 4096-channel fc7
        (134M parameters with fc6/fc7; fc8 is dropped).
    """
    from torchvision.models import vgg16

    state = _load_vgg16_weights(progress) if pretrained else None  # fail before the slow build
    net = vgg16(weights=None, dropout=dropout)
    if state is not None:
        net.load_state_dict(state)
    stages = _split_stages(net.features)
    # fc6, ReLU, Dropout, fc7, ReLU, Dropout; fc8 (the 1000 ImageNet classes) is replaced by FCN's
    # score layer. padding=3 keeps pool5's size: see segnotes.models.fcn on alignment.
    fc = convolutionalize(net.classifier[:6], in_channels=512, spatial=7, padding=3)
    return VGGBackbone(stages, fc, pool3_channels=256, pool4_channels=512, out_channels=4096)


def _conv_bn_relu(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),  # BN supplies the bias
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]


def vgg_small_backbone(
    channels: tuple[int, ...] = (16, 32, 64, 96, 128),
    convs_per_stage: tuple[int, ...] = (2, 2, 3, 3, 3),
    fc_channels: int = 256,
    dropout: float = 0.1,
) -> VGGBackbone:
    """A small VGG: VGG16's five stages, 13 convolutions and strides, with fewer channels.

    Differences from VGG16, and why:

    * 16-32-64-96-128 channels (VGG16: 64-128-256-512-512), same 2-2-3-3-3 convolutions per
      stage: about 1.1M parameters, so it trains from scratch on a CPU in minutes (one
      forward+backward pass of 8 images of 128 x 128 takes about 0.2 s on one CPU thread).
    * BatchNorm after each 3 x 3 convolution: it trains from scratch, with no ImageNet
      initialisation, and BatchNorm makes that fast and insensitive to the learning rate.
      (fc6/fc7 have none: at the minimum input size their map is 1 x 1, where BatchNorm's
      batch statistics would be degenerate with batch size 1.)
    * fc6 is a 3 x 3 convolution (VGG16: 7 x 7), since the pool5 map of a 128 px image is only
      4 x 4 cells, and has ``fc_channels`` filters (VGG16: 4096).
    * Dropout 0.1 (VGG16: 0.5): a small net fitted on synthetic data needs little.

    Returns:
        VGGBackbone with ``channels[2]``-channel pool3, ``channels[3]``-channel pool4 and a
        ``fc_channels``-channel fc7.
    """
    fn = "vgg_small_backbone"
    if len(channels) != 5 or len(convs_per_stage) != 5:
        raise ValueError(
            f"{fn}: channels and convs_per_stage must have 5 entries (one per stage), "
            f"got {len(channels)} and {len(convs_per_stage)}"
        )
    stages, in_ch = [], 3
    for out_ch, n_convs in zip(channels, convs_per_stage):
        layers: list[nn.Module] = []
        for _ in range(n_convs):
            layers += _conv_bn_relu(in_ch, out_ch)
            in_ch = out_ch
        layers.append(nn.MaxPool2d(2, 2, ceil_mode=True))
        stages.append(nn.Sequential(*layers))
    fc = nn.Sequential(
        nn.Conv2d(in_ch, fc_channels, 3, padding=1),  # fc6
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Conv2d(fc_channels, fc_channels, 1),  # fc7
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
    )
    return VGGBackbone(stages, fc, pool3_channels=channels[2], pool4_channels=channels[3], out_channels=fc_channels)
