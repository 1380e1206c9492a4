import pytest
import torch
from torch import nn

from segnotes.models import FCN, VARIANTS, fcn, minimum_input_size, vgg_small_backbone
from segnotes.ops.bilinear import bilinear_kernel

SCORE_LAYERS = ("score_fr", "score_pool4", "score_pool3")


def seeded_fcn(variant, num_classes=5, seed=0, **kwargs):
    """Build an FCN with a seeded init and random (non-zero) score layers, leaving global RNG as it was."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = fcn(variant, num_classes, **kwargs)
        randomize_scores(model)
    return model.eval()


def randomize_scores(model):
    # Score layers start at zero, which would make every output 0 and every comparison trivial.
    with torch.no_grad():
        for name in SCORE_LAYERS:
            if hasattr(model, name):
                getattr(model, name).weight.normal_(0, 0.5)
                getattr(model, name).bias.normal_(0, 0.5)


def crop(x, ref):
    return x[..., : ref.shape[-2], : ref.shape[-1]]


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("size", [(97, 131), (128, 128), (200, 150), (32, 33)])
def test_output_shape_for_any_input_size(variant, size):
    model = seeded_fcn(variant)
    with torch.no_grad():
        out = model(torch.randn(2, 3, *size))
    assert out.shape == (2, 5, *size) and out.dtype == torch.float32
    assert model.stride == VARIANTS[variant] == int(variant[3:-1])


@pytest.fixture(scope="module")
def fcn8s_vgg16():
    return seeded_fcn("fcn8s", num_classes=21, backbone="vgg16")


def test_vgg16_fcn8s_shape_and_layers(fcn8s_vgg16):
    fc6 = fcn8s_vgg16.backbone.fc[0]
    assert fc6.kernel_size == (7, 7) and fc6.padding == (3, 3) and fc6.out_channels == 4096
    assert fcn8s_vgg16.score_pool3.in_channels == 256 and fcn8s_vgg16.score_pool4.in_channels == 512
    n_params = sum(p.numel() for p in fcn8s_vgg16.parameters())
    assert 134.0e6 < n_params < 134.5e6  # the paper's Table 1: 134M
    with torch.no_grad():
        assert fcn8s_vgg16(torch.randn(1, 3, 45, 70)).shape == (1, 21, 45, 70)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_fresh_model_layers_follow_the_paper(variant):
    model = fcn(variant, 4)
    stride = VARIANTS[variant]
    skips = {16: ["score_pool4"], 8: ["score_pool4", "score_pool3"]}.get(stride, [])
    for name in ["score_fr", *skips]:
        layer = getattr(model, name)
        assert layer.weight.abs().sum() == 0 and layer.bias.abs().sum() == 0, name
    for name in ("score_pool4", "upscore2"):
        assert hasattr(model, name) == (stride <= 16)
    for name in ("score_pool3", "upscore_pool4"):
        assert hasattr(model, name) == (stride <= 8)
    learned = [m for n, m in model.named_children() if n in ("upscore2", "upscore_pool4")]
    for up in learned:
        assert up.weight.requires_grad and up.factor == 2
        torch.testing.assert_close(up.weight, bilinear_kernel(1, 1, 4).expand(4, 1, 4, 4))
    assert model.upscore.factor == stride and not model.upscore.weight.requires_grad
    # A fresh FCN predicts 0 everywhere: every score layer is zero.
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 64, 64)).abs().max() == 0


def flip_conv_weights(model):
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                module.weight.copy_(module.weight.flip(-1))


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_output_pixel_is_centred_on_input_pixel(variant):
    # With H and W multiples of 32 the pooling grids are symmetric, so mirroring the image and
    # every conv kernel must mirror the output exactly. This holds only if every crop and every
    # transposed-conv padding centres output pixel o on input pixel o; an offset of one pixel
    # anywhere would break it.
    model = seeded_fcn(variant)
    mirrored = seeded_fcn(variant)
    flip_conv_weights(mirrored)
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        out = model(x)
        out_mirrored = mirrored(x.flip(-1))
    torch.testing.assert_close(out_mirrored, out.flip(-1), rtol=1e-4, atol=1e-4)
    assert out.abs().max() > 0.1


def test_skip_layers_receive_gradients_and_fixed_upsampling_does_not():
    model = seeded_fcn("fcn8s").train()
    model(torch.randn(2, 3, 64, 64)).square().mean().backward()
    for name in ("score_fr", "score_pool4", "score_pool3", "upscore2", "upscore_pool4"):
        assert getattr(model, name).weight.grad.abs().sum() > 0, name
    assert model.upscore.weight.grad is None


def test_from_parent_16s_starts_from_the_parents_scores():
    parent = seeded_fcn("fcn32s", seed=1)
    child = FCN.from_parent(parent)
    assert child.variant == "fcn16s" and child.stride == 16 and not child.training
    # Shared weights copied, into new tensors; the new skip starts at zero.
    for (name, p_child), (_, p_parent) in zip(child.backbone.named_parameters(), parent.backbone.named_parameters()):
        torch.testing.assert_close(p_child, p_parent, rtol=0, atol=0)
        assert p_child.data_ptr() != p_parent.data_ptr(), name
    torch.testing.assert_close(child.score_fr.weight, parent.score_fr.weight, rtol=0, atol=0)
    assert child.score_pool4.weight.abs().sum() == 0
    x = torch.randn(2, 3, 192, 224, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        pool3, pool4, fc7 = parent.backbone(x)
        scores = parent.score_fr(fc7)  # (2, 5, 6, 7)
        # The child adds nothing yet: its output is the parent's coarse scores, upsampled 2x then 16x.
        expected = crop(child.upscore(crop(child.upscore2(scores), pool4)), x)
        out_child, out_parent = child(x), parent(x)
    torch.testing.assert_close(out_child, expected, rtol=1e-5, atol=1e-5)
    # Bilinear 2x then 16x is not exactly bilinear 32x: near each coarse cell centre they differ by
    # 1/8 of the second difference along each axis. Away from the border (32 px), that bounds it.
    d2_rows = (scores[..., 2:, :] - 2 * scores[..., 1:-1, :] + scores[..., :-2, :]).abs().max()
    d2_cols = (scores[..., 2:] - 2 * scores[..., 1:-1] + scores[..., :-2]).abs().max()
    inner = (..., slice(32, -32), slice(32, -32))
    gap = (out_child - out_parent)[inner].abs().max()
    assert 0 < gap <= (d2_rows + d2_cols) / 8 + 1e-5


def test_from_parent_8s_keeps_the_16s_fusion():
    parent = seeded_fcn("fcn16s", seed=2)
    with torch.no_grad():
        parent.upscore2.weight.mul_(1.5)  # a "trained" 2x upsampling must be copied too
    child = FCN.from_parent(parent)
    assert child.variant == "fcn8s"
    for name in ("score_fr", "score_pool4", "upscore2"):
        torch.testing.assert_close(getattr(child, name).weight, getattr(parent, name).weight, rtol=0, atol=0)
    assert child.score_pool3.weight.abs().sum() == 0
    x = torch.randn(1, 3, 97, 131, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        pool3, pool4, fc7 = parent.backbone(x)
        fused16 = crop(parent.upscore2(parent.score_fr(fc7)), pool4) + parent.score_pool4(pool4)
        expected = crop(child.upscore(crop(child.upscore_pool4(fused16), pool3)), x)
        torch.testing.assert_close(child(x), expected, rtol=1e-5, atol=1e-5)


def test_load_parent_copies_into_an_existing_model_and_lists_keys():
    parent = seeded_fcn("fcn32s", seed=3)
    child = fcn("fcn8s", 5)
    copied = child.load_parent(parent)
    assert "score_fr.weight" in copied and "backbone.stage1.0.weight" in copied
    assert "backbone.stage1.1.running_mean" in copied  # BatchNorm statistics too
    assert "upscore.weight" not in copied  # the final upsampling has another factor (8 vs 32)
    torch.testing.assert_close(child.score_fr.bias, parent.score_fr.bias, rtol=0, atol=0)


@pytest.mark.parametrize(
    "make_parent, child_variant, error, message",
    [
        (lambda: fcn("fcn8s", 5), "fcn16s", ValueError, r"parent must be coarser than this fcn16s \(stride > 16\), got a fcn8s"),
        (lambda: fcn("fcn32s", 7), "fcn16s", ValueError, r"parent must have num_classes=5, got 7"),
        (lambda: FCN(vgg_small_backbone(channels=(8, 16, 32, 48, 64)), 5, "fcn32s", "tiny"), "fcn16s", ValueError,
         r"parent has a different backbone \(tiny vs vgg_small\)"),
        (lambda: nn.Conv2d(1, 1, 1), "fcn16s", TypeError, r"FCN.load_parent: parent must be an FCN, got Conv2d"),
    ],
)
def test_load_parent_errors(make_parent, child_variant, error, message):
    with pytest.raises(error, match=message):
        fcn(child_variant, 5).load_parent(make_parent())


def test_from_parent_errors():
    with pytest.raises(ValueError, match=r"FCN.from_parent: an fcn8s has no finer variant"):
        FCN.from_parent(fcn("fcn8s", 3))
    with pytest.raises(ValueError, match=r"FCN.from_parent: variant must be one of"):
        FCN.from_parent(fcn("fcn32s", 3), variant="fcn4s")


def test_minimum_input_size():
    assert minimum_input_size("fcn8s", "vgg16") == minimum_input_size("fcn32s", "vgg_small") == 32
    assert fcn("fcn16s", 3).min_size == 32
    with pytest.raises(ValueError, match=r"minimum_input_size: backbone must be one of \['vgg16', 'vgg_small'\], got 'resnet'"):
        minimum_input_size("fcn8s", "resnet")


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"variant": "fcn4s", "num_classes": 3}, ValueError, r"fcn: variant must be one of \['fcn32s', 'fcn16s', 'fcn8s'\], got 'fcn4s'"),
        ({"variant": "fcn8s", "num_classes": 3, "backbone": "resnet50"}, ValueError, r"fcn: backbone must be one of"),
        ({"variant": "fcn8s", "num_classes": 0}, ValueError, r"fcn: num_classes must be >= 1, got 0"),
        ({"variant": "fcn8s", "num_classes": 2.0}, TypeError, r"fcn: num_classes must be an int, got float"),
        ({"variant": "fcn8s", "num_classes": 3, "pretrained_backbone": True}, ValueError,
         r"fcn: pretrained_backbone=True needs backbone='vgg16'"),
        ({"variant": "fcn8s", "num_classes": 3, "dropout": 1.5}, ValueError, r"fcn: dropout must be a probability in \[0, 1\), got float 1.5"),
    ],
)
def test_fcn_bad_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        fcn(**kwargs)


@pytest.mark.parametrize(
    "x, error, message",
    [
        (torch.zeros(3, 64, 64), ValueError, r"FCN.forward: input must be 4-D, got Tensor of shape \(3, 64, 64\)"),
        (torch.zeros(1, 1, 64, 64), ValueError, r"FCN.forward: input must be Tensor\[N, 3, H, W\] \(RGB images\), got Tensor of shape \(1, 1, 64, 64\)"),
        (torch.zeros(1, 3, 31, 64), ValueError, r"FCN.forward: input height and width must be at least 32 pixels .* got 31 x 64"),
        (torch.zeros(1, 3, 64, 64, dtype=torch.uint8), TypeError, r"FCN.forward: input must be a floating-point tensor"),
    ],
)
def test_forward_bad_input(x, error, message):
    with pytest.raises(error, match=message):
        fcn("fcn8s", 3)(x)


def test_runs_on_device(device):
    model = seeded_fcn("fcn8s").to(device).train()
    out = model(torch.randn(2, 3, 67, 45, device=device))
    assert out.shape == (2, 5, 67, 45) and out.device.type == device
    out.mean().backward()
    assert model.score_pool3.weight.grad.device.type == device
    child = FCN.from_parent(seeded_fcn("fcn32s").to(device))
    assert child.score_pool4.weight.device.type == device
