import urllib.error

import pytest
import torch
import torchvision
from torch import nn

from segnotes.models.backbones import VGGBackbone, convolutionalize, vgg16_backbone, vgg_small_backbone


@pytest.fixture(scope="module")
def tv_vgg16():
    with torch.random.fork_rng():  # seed the random init without leaking global state
        torch.manual_seed(0)
        return torchvision.models.vgg16(weights=None).eval()


@pytest.fixture(scope="module")
def tv_conv(tv_vgg16):
    return convolutionalize(tv_vgg16.classifier).eval()


def test_convolutionalize_gives_the_classifier_scores_on_224(tv_vgg16, tv_conv):
    conv = tv_conv
    assert [type(m) for m in conv] == [nn.Conv2d, nn.ReLU, nn.Dropout] * 2 + [nn.Conv2d]
    assert conv[0].kernel_size == (7, 7) and conv[3].kernel_size == (1, 1) and conv[6].out_channels == 1000
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = tv_vgg16(x)  # (1, 1000)
        scores = conv(tv_vgg16.features(x))  # (1, 1000, 1, 1)
    assert scores.shape == (1, 1000, 1, 1)
    torch.testing.assert_close(scores.flatten(1), expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())


def test_convolutionalize_slides_over_larger_inputs(tv_vgg16, tv_conv):
    conv = tv_conv
    # The pool5 map of a 320 x 384 image is 512 x 10 x 12 (stride 32); a random one saves the
    # (slow, on a CPU) VGG16 features.
    features = torch.randn(1, 512, 320 // 32, 384 // 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        scores = conv(features)
    assert scores.shape == (1, 1000, 10 - 6, 12 - 6)
    # Each position of the map is the classifier applied to one 7 x 7 window of pool5.
    with torch.no_grad():
        window = features[:, :, 2:9, 3:10].flatten(1)
        expected = tv_vgg16.classifier(window)
    # fc6 sums 25088 products in an order that depends on the CPU's kernels (1.6e-6 apart on an AMD EPYC)
    torch.testing.assert_close(scores[:, :, 2, 3], expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())


def test_convolutionalize_small_classifier_with_padding():
    classifier = nn.Sequential(nn.Linear(2 * 3 * 3, 5), nn.ReLU(inplace=True), nn.Dropout(0.3), nn.Linear(5, 4, bias=False))
    conv = convolutionalize(classifier, in_channels=2, spatial=3, padding=1).eval()
    assert conv[0].padding == (1, 1) and conv[2].p == 0.3 and conv[1].inplace and conv[3].bias is None
    assert conv[0].weight.data_ptr() != classifier[0].weight.data_ptr()  # copies, not views
    assert isinstance(classifier[0], nn.Linear)  # the classifier is left as it was
    x = torch.randn(4, 2, 3, 3, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = conv(x)  # (4, 4, 3, 3): "same" padding keeps the 3 x 3 map; the centre sees all of x
        torch.testing.assert_close(out[:, :, 1, 1], classifier.eval()(x.flatten(1)), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "classifier, kwargs, error, message",
    [
        ([nn.Linear(10, 2)], {}, TypeError, r"convolutionalize: classifier must be an nn.Sequential, got list"),
        (nn.Sequential(nn.Linear(10, 2)), {"in_channels": 2, "spatial": 3}, ValueError,
         r"must read in_channels \* spatial\*\*2 = 2 \* 3\*\*2 = 18 features, got in_features=10"),
        (nn.Sequential(nn.ReLU()), {}, ValueError, r"classifier has no nn.Linear layer"),
        (nn.Sequential(nn.Linear(4, 2), nn.Sigmoid()), {"in_channels": 1, "spatial": 2}, TypeError,
         r"cannot convert layer Sigmoid"),
        (nn.Sequential(nn.Linear(4, 2)), {"spatial": 0}, ValueError, r"spatial must be >= 1, got 0"),
    ],
)
def test_convolutionalize_errors(classifier, kwargs, error, message):
    with pytest.raises(error, match=message):
        convolutionalize(classifier, **kwargs)


def test_vgg_small_has_vgg16_layout_and_about_a_million_parameters():
    net = vgg_small_backbone()
    assert isinstance(net, VGGBackbone)
    n_params = sum(p.numel() for p in net.parameters())
    assert 0.8e6 < n_params < 1.5e6, n_params
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(convs) == 13 + 1  # VGG16's 13 convolutions, plus fc6 as a 3 x 3 conv
    pools = [m for m in net.modules() if isinstance(m, nn.MaxPool2d)]
    assert len(pools) == 5 and all(p.ceil_mode for p in pools)
    pool3, pool4, fc7 = net.eval()(torch.zeros(1, 3, 97, 131))
    # ceil-mode pools: ceil(97 / 8) = 13, ceil(131 / 8) = 17, and so on.
    assert pool3.shape == (1, 64, 13, 17) and pool4.shape == (1, 96, 7, 9) and fc7.shape == (1, 256, 4, 5)


def test_vgg_small_errors():
    with pytest.raises(ValueError, match=r"vgg_small_backbone: channels and convs_per_stage must have 5 entries"):
        vgg_small_backbone(channels=(8, 16))


def test_pretrained_vgg16_offline_gives_a_clear_error(monkeypatch, tmp_path):
    from torchvision.models._api import WeightsEnum

    def offline(self, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(WeightsEnum, "get_state_dict", offline)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(RuntimeError, match=r"could not load the ImageNet VGG16 weights") as info:
        vgg16_backbone(pretrained=True)
    message = str(info.value)
    assert "https://download.pytorch.org/models/vgg16-397923af.pth" in message
    assert str(tmp_path / "hub" / "checkpoints" / "vgg16-397923af.pth") in message
    assert "TORCH_HOME" in message and "pretrained_backbone=False" in message
    assert isinstance(info.value.__cause__, urllib.error.URLError)
