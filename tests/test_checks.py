import pytest
import torch

from segnotes._checks import check_choice, check_int, check_positive, check_tensor, describe


def test_describe_names_shape_and_dtype():
    assert describe(torch.zeros(3, 4)) == "Tensor of shape (3, 4) and dtype torch.float32"
    assert describe([1, 2]) == "list of length 2"


def test_check_tensor_accepts_and_returns():
    x = torch.zeros(2, 5, dtype=torch.int64)
    assert check_tensor("f", "x", x, ndim=2, dtype=torch.int64, floating=False, last_dim=5) is x


@pytest.mark.parametrize(
    "kwargs, value, error, message",
    [
        ({}, [1, 2], TypeError, r"f: x must be a torch.Tensor, got list of length 2"),
        ({"ndim": 2}, torch.zeros(3), ValueError, r"f: x must be 2-D, got Tensor of shape \(3,\)"),
        ({"ndim": (3, 4)}, torch.zeros(3), ValueError, r"must be 3-D or 4-D"),
        ({"dtype": torch.bool}, torch.zeros(3), TypeError, r"must have dtype torch.bool"),
        ({"floating": True}, torch.zeros(3, dtype=torch.int64), TypeError, r"floating-point"),
        ({"floating": False}, torch.zeros(3), TypeError, r"integer or bool"),
        ({"last_dim": 4}, torch.zeros(3, 5), ValueError, r"last dimension 4, got Tensor of shape \(3, 5\)"),
    ],
)
def test_check_tensor_errors_name_argument_and_value(kwargs, value, error, message):
    with pytest.raises(error, match=message):
        check_tensor("f", "x", value, **kwargs)


def test_check_int_positive_choice():
    assert check_int("f", "n", 3, minimum=0) == 3
    with pytest.raises(TypeError, match=r"f: n must be an int, got bool True"):
        check_int("f", "n", True)
    with pytest.raises(ValueError, match=r"f: n must be >= 1, got 0"):
        check_int("f", "n", 0, minimum=1)
    assert check_positive("f", "s", 0.5) == 0.5
    with pytest.raises(ValueError, match=r"f: s must be > 0, got 0"):
        check_positive("f", "s", 0)
    assert check_positive("f", "s", 0, allow_zero=True) == 0
    with pytest.raises(ValueError, match=r"f: mode must be one of \['a', 'b'\], got 'c'"):
        check_choice("f", "mode", "c", ["a", "b"])
