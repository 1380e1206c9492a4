import matplotlib
import numpy as np
import pytest
import torch

import segnotes
from segnotes.viz import colorize_labels, gallery, overlay_instances, voc_palette

matplotlib.use("Agg")


def test_voc_palette_is_the_data_packages():
    assert voc_palette is segnotes.data.voc_palette  # one definition, re-exported for figures


def test_colorize_and_overlay_shapes():
    labels = torch.tensor([[0, 1], [255, 2]])
    rgb = colorize_labels(labels)
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.float32
    image = torch.zeros(3, 2, 2)
    masks = torch.tensor([[[1, 0], [0, 0]]], dtype=torch.bool)
    out = overlay_instances(image, masks)
    assert out.shape == (2, 2, 3)
    assert out[0, 0].sum() > 0 and out[1, 1].sum() == 0


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match=r"colorize_labels: labels must be 2-D"):
        colorize_labels(torch.zeros(1, 2, 2))
    with pytest.raises(ValueError, match=r"overlay_instances: masks must be \[N, H, W\]"):
        overlay_instances(torch.zeros(3, 4, 4), torch.zeros(1, 3, 3, dtype=torch.bool))


def test_gallery_renders_headless():
    image = torch.rand(3, 16, 16)
    masks = torch.zeros(2, 16, 16, dtype=torch.uint8)
    masks[0, 2:6, 2:6] = 1
    masks[1, 8:12, 8:14] = 1
    target = {
        "boxes": torch.tensor([[2.0, 2, 6, 6], [8, 8, 14, 12]]),
        "labels": torch.tensor([1, 2]),
        "masks": masks,
        "iscrowd": torch.tensor([0, 1]),
        "mask_valid": torch.tensor([True, False]),
    }
    figure = gallery([(image, target)] * 3, {1: "a", 2: "b"}, semantic=[torch.zeros(16, 16, dtype=torch.long)] * 3,
                     columns=2)
    figure.canvas.draw()
    assert len(figure.axes) == 8
