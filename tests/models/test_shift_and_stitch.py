import pytest
import torch
from torch import nn

from segnotes.models import shift_and_stitch


def strided_net(seed=0):
    """Output stride 4, no padding: conv3 -> pool2/2 -> conv3 -> pool2/2 -> conv1 (receptive field 10)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return nn.Sequential(
            nn.Conv2d(2, 4, 3), nn.ReLU(), nn.MaxPool2d(2, 2),
            nn.Conv2d(4, 3, 3), nn.ReLU(), nn.MaxPool2d(2, 2),
            nn.Conv2d(3, 2, 1),
        ).double()


def a_trous(net):
    """The same filters at stride 1: each layer after a pool of stride s is dilated by s (cumulatively)."""
    conv1, relu1, _, conv2, relu2, _, conv3 = net
    dilated2 = nn.Conv2d(4, 3, 3, dilation=2).double()
    dilated2.load_state_dict(conv2.state_dict())
    dense = nn.Sequential(
        conv1, relu1, nn.MaxPool2d(2, stride=1),
        dilated2, relu2, nn.MaxPool2d(2, stride=1, dilation=2),
        conv3,  # 1 x 1: dilation changes nothing
    )
    return dense


@pytest.mark.parametrize("size", [(37, 45), (40, 40), (29, 50)])
def test_stitched_output_equals_the_a_trous_net(size):
    net = strided_net()
    image = torch.randn(2, 2, *size, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        stitched = shift_and_stitch(net, image, stride=4)
        dense = a_trous(net)(image)  # (2, 2, H - 9, W - 9): every position where the receptive field fits
    h, w = dense.shape[-2:]
    assert (h, w) == (size[0] - 9, size[1] - 9)
    assert stitched.shape[-2] >= h and stitched.shape[-1] >= w
    torch.testing.assert_close(stitched[..., :h, :w], dense, rtol=0, atol=1e-12)


def test_interlacing_order():
    # A "net" that keeps every 2nd pixel: stitching its f**2 = 4 shifted outputs gives the image back.
    image = torch.arange(36.0).reshape(1, 1, 6, 6)
    stitched = shift_and_stitch(lambda x: x[..., ::2, ::2], image, stride=2)
    torch.testing.assert_close(stitched, image, rtol=0, atol=0)


def test_stride_one_is_a_single_pass():
    net = strided_net()
    image = torch.randn(1, 2, 20, 20, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(shift_and_stitch(net, image, 1), net(image), rtol=0, atol=0)


def test_net_is_called_stride_squared_times():
    calls = []
    shift_and_stitch(lambda x: calls.append(x.shape) or x[..., ::3, ::3], torch.zeros(1, 1, 9, 9), stride=3)
    assert calls == [(1, 1, 9, 9)] * 9


@pytest.mark.parametrize(
    "args, error, message",
    [
        ((None, torch.zeros(1, 1, 4, 4), 2), TypeError, r"shift_and_stitch: net must be callable"),
        ((nn.Identity(), torch.zeros(4, 4), 2), ValueError, r"shift_and_stitch: image must be 4-D"),
        ((nn.Identity(), torch.zeros(1, 1, 4, 4), 0), ValueError, r"shift_and_stitch: stride must be >= 1, got 0"),
    ],
)
def test_bad_arguments(args, error, message):
    with pytest.raises(error, match=message):
        shift_and_stitch(*args)
