"""The confusion matrix and the four metrics of the FCN paper.

Long, Shelhamer and Darrell, "Fully Convolutional Networks for Semantic Segmentation" (CVPR 2015),
Section 5: with n_ij the number of pixels of class i predicted as class j and t_i = sum_j n_ij the
number of pixels of class i, they report pixel accuracy, mean accuracy, mean IU and frequency
weighted IU. Everything follows from one confusion matrix summed over the whole data set (as in the
paper's code), never from per-image averages.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .._checks import check_int, describe

__all__ = ["confusion_matrix", "ConfusionMatrix", "segmentation_scores", "pair_counts"]

_INTEGER_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def _check_labels(fn: str, pred, target, num_classes: int, ignore_index: int | None) -> None:
    """Type, shape and device checks (the value checks run inside :func:`confusion_matrix`)."""
    check_int(fn, "num_classes", num_classes, minimum=1)
    if ignore_index is not None:
        check_int(fn, "ignore_index", ignore_index)
    for name, x in (("pred", pred), ("target", target)):
        if not isinstance(x, Tensor):
            raise TypeError(f"{fn}: {name} must be a torch.Tensor, got {describe(x)}")
        if x.dtype not in _INTEGER_DTYPES:
            raise TypeError(f"{fn}: {name} must have an integer dtype (class labels), got {describe(x)}")
    if pred.shape != target.shape:
        raise ValueError(
            f"{fn}: pred and target must have the same shape, got pred of shape {tuple(pred.shape)} "
            f"and target of shape {tuple(target.shape)}"
        )
    if pred.device != target.device:
        raise ValueError(f"{fn}: pred and target must be on the same device, got {pred.device} and {target.device}")


def confusion_matrix(
    pred: Tensor, target: Tensor, num_classes: int, ignore_index: int | None = 255, *, validate: bool = True
) -> Tensor:
    """Count pixels by (true class, predicted class).

    Each valid pixel adds one to ``n[target, pred]``; all pixels are counted at once with
    ``torch.bincount(num_classes * target + pred)``, the trick of torchvision's segmentation
    references. Pixels whose target equals ``ignore_index`` (VOC's 255 marks object borders) are
    not counted.

    Args:
        pred (Tensor[*], integer): predicted class of each pixel, e.g. ``logits.argmax(1)`` of
            shape [N, H, W]; values in [0, num_classes).
        target (Tensor[*], integer): true class of each pixel, same shape and device as ``pred``;
            values in [0, num_classes) or ``ignore_index``.
        num_classes (int): C, the number of classes.
        ignore_index (int or None): target label to skip; None counts every pixel.
        validate (bool): check the label values (default). The checks cost two min/max reductions;
            turn them off only for inputs known to be valid.

    Returns:
        Tensor[C, C] (int64): rows are true classes, columns predicted classes, on the inputs'
        device. ``n.sum(1)`` gives t_i, the pixels of class i; ``n.diag()`` the correct ones.

    Example:
        >>> pred = torch.tensor([[0, 1], [1, 1]])
        >>> target = torch.tensor([[0, 1], [0, 255]])
        >>> confusion_matrix(pred, target, num_classes=2)
        tensor([[1, 1],
                [0, 1]])
    """
    fn = "confusion_matrix"
    _check_labels(fn, pred, target, num_classes, ignore_index)
    C = num_classes
    pred, target = pred.reshape(-1), target.reshape(-1)
    if validate:
        _check_range(fn, "pred", pred, 0, C - 1, f"[0, {C})")
    expected = f"[0, {C}) or ignore_index={ignore_index}"
    # An ignore label at or above C needs no mask: C * 255 + pred lands past the C * C bins we
    # keep, so bincount counts ignored pixels in bins we then drop. That saves the two full-size
    # copies that boolean indexing (pred[keep], target[keep]) would make.
    if ignore_index is None or C <= ignore_index < _MAX_BINS // C:
        if validate:
            _check_range(fn, "target", target, 0, C - 1 if ignore_index is None else ignore_index, expected)
        counts = _pair_counts(pred, target, C)
        if validate and counts.numel() > C * C:
            # Bins from C * C up to C * ignore_index hold target labels in [C, ignore_index).
            stray = counts[C * C : C * ignore_index].nonzero()
            if stray.numel() > 0:
                raise ValueError(f"{fn}: target values must be in {expected}, got {C + stray[0].item() // C}")
    else:
        keep = target != ignore_index
        pred, target = pred[keep], target[keep]
        if validate:
            _check_range(fn, "target", target, 0, C - 1, expected)
        counts = _pair_counts(pred, target, C)
    return counts[: C * C].reshape(C, C)


# Above this many bins the ignore label is removed by masking instead (see confusion_matrix).
_MAX_BINS = 1 << 20


def _check_range(fn: str, name: str, x: Tensor, low: int, high: int, expected: str) -> None:
    """Raise unless low <= x <= high everywhere; one min/max pass over x."""
    if x.numel() == 0:
        return
    x_min, x_max = (v.item() for v in x.aminmax())
    if x_min < low or x_max > high:
        raise ValueError(f"{fn}: {name} values must be in {expected}, got {x_min if x_min < low else x_max}")


def pair_counts(pred: Tensor, target: Tensor, num_classes: int) -> Tensor:
    """How many pixels have each (target, prediction) pair, counted in one pass: the core of
    :func:`confusion_matrix`.

    The pair ``(t, p)`` becomes the single index ``C * t + p``, and ``torch.bincount`` counts the indices, so
    ``counts.reshape(C, C)[t, p]`` is the number of pixels of class ``t`` predicted as ``p``. Labels are not
    checked: a target at or above C lands in a bin past ``C * C`` (:func:`confusion_matrix` relies on that to
    drop the ignore label without masking).

    Args:
        pred (Tensor[*], integer): predicted classes, values in [0, C).
        target (Tensor[*], integer): true classes, same shape.
        num_classes (int): C.

    Returns:
        Tensor[max(C * C, C * max(target) + max(pred) + 1)] (int64): the counts.

    Example:
        >>> pair_counts(torch.tensor([0, 1, 1]), torch.tensor([0, 0, 1]), 2)  # (0,0), (0,1), (1,1)
        tensor([1, 1, 0, 1])
    """
    _check_labels("pair_counts", pred, target, num_classes, None)
    return _pair_counts(pred.reshape(-1), target.reshape(-1), num_classes)


def _pair_counts(pred: Tensor, target: Tensor, num_classes: int) -> Tensor:
    # One int64 temporary: pred + C * target (torch.add's alpha scales its second argument).
    index = torch.add(pred.to(torch.int64), target.to(torch.int64), alpha=num_classes)
    return torch.bincount(index, minlength=num_classes * num_classes)


class ConfusionMatrix:
    """Accumulate a confusion matrix over batches; see :func:`confusion_matrix`.

    Example:
        >>> metric = ConfusionMatrix(num_classes=21)
        >>> for images, targets in loader:                    # doctest: +SKIP
        ...     metric.update(model(images)["out"].argmax(1), targets)
        >>> metric.all_reduce().compute()["mean_iu"]          # doctest: +SKIP

    Attributes:
        matrix (Tensor[C, C], int64): the counts so far (rows true class, columns prediction),
            created on the CPU; move it with :meth:`to`.
    """

    def __init__(self, num_classes: int, ignore_index: int | None = 255):
        check_int("ConfusionMatrix", "num_classes", num_classes, minimum=1)
        if ignore_index is not None:
            check_int("ConfusionMatrix", "ignore_index", ignore_index)
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, pred: Tensor, target: Tensor) -> "ConfusionMatrix":
        """Add the counts of one batch (same arguments as :func:`confusion_matrix`); returns self."""
        counts = confusion_matrix(pred, target, self.num_classes, self.ignore_index)
        # A C x C copy per batch is cheap, and lets a CPU matrix collect CUDA batches.
        self.matrix += counts.to(self.matrix.device)
        return self

    def reset(self) -> "ConfusionMatrix":
        """Set all counts to zero; returns self."""
        self.matrix.zero_()
        return self

    def to(self, device: torch.device | str) -> "ConfusionMatrix":
        """Move the counts to ``device`` (e.g. CUDA for an NCCL all-reduce); returns self."""
        self.matrix = self.matrix.to(device)
        return self

    def all_reduce(self) -> "ConfusionMatrix":
        """Sum the counts over all torch.distributed processes; a no-op when not distributed. Returns self."""
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(self.matrix)
        return self

    def compute(self) -> dict:
        """The four FCN metrics and per-class scores; see :func:`segmentation_scores`."""
        return segmentation_scores(self.matrix)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_classes={self.num_classes}, ignore_index={self.ignore_index}, "
            f"pixels={int(self.matrix.sum())})"
        )


def segmentation_scores(confmat: Tensor) -> dict:
    """The FCN paper's four metrics from a confusion matrix.

    With n_ij the pixels of class i predicted as j, t_i = sum_j n_ij and n_cl the number of classes::

        pixel accuracy   = sum_i n_ii / sum_i t_i
        mean accuracy    = (1 / n_cl) sum_i n_ii / t_i
        mean IU          = (1 / n_cl) sum_i n_ii / (t_i + sum_j n_ji - n_ii)
        frequency weighted IU = (sum_k t_k)^-1 sum_i t_i n_ii / (t_i + sum_j n_ji - n_ii)

    As in the paper's code, the class means skip classes whose score is undefined (NaN): a class
    absent from the ground truth has no accuracy, one absent from both ground truth and
    prediction has no IU. A class that is predicted but absent from the ground truth has IU 0.

    Args:
        confmat (Tensor[C, C], integer): rows true classes, columns predictions.

    Returns:
        dict: ``pixel_accuracy``, ``mean_accuracy``, ``mean_iu``, ``frequency_weighted_iu``
        (python floats, NaN for an empty matrix) and ``iu``, ``accuracy`` (Tensor[C], float64).
    """
    fn = "segmentation_scores"
    if not isinstance(confmat, Tensor):
        raise TypeError(f"{fn}: confmat must be a torch.Tensor, got {describe(confmat)}")
    if confmat.ndim != 2 or confmat.shape[0] != confmat.shape[1]:
        raise ValueError(f"{fn}: confmat must be a square Tensor[C, C], got {describe(confmat)}")
    if confmat.is_floating_point() or confmat.is_complex():
        raise TypeError(f"{fn}: confmat must hold integer counts, got {describe(confmat)}")
    if confmat.numel() and int(confmat.min()) < 0:
        raise ValueError(f"{fn}: confmat must hold counts >= 0, got {int(confmat.min())}")
    n = confmat.to(torch.float64)
    correct = n.diagonal()                      # n_ii
    true_total = n.sum(dim=1)                   # t_i
    pred_total = n.sum(dim=0)                   # sum_j n_ji
    accuracy = correct / true_total             # NaN where t_i = 0
    iu = correct / (true_total + pred_total - correct)  # NaN where the union is empty
    pixels = true_total.sum()
    present = true_total > 0
    return {
        "pixel_accuracy": (correct.sum() / pixels).item(),
        "mean_accuracy": accuracy.nanmean().item(),
        "mean_iu": iu.nanmean().item(),
        # Absent classes (t_i = 0) have weight 0; dropping them avoids 0 * NaN.
        "frequency_weighted_iu": ((true_total[present] * iu[present]).sum() / pixels).item(),
        "iu": iu,
        "accuracy": accuracy,
    }
