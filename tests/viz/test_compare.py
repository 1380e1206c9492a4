import matplotlib
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from segnotes.metrics import average_precision, confusion_matrix, detections_from_predictions, segmentation_scores
from segnotes.viz import (
    OUTCOME_COLORS,
    coarsen_labels,
    mask_comparison_figure,
    model_comparison_figure,
    outcome_map,
    perturb_mask,
)

matplotlib.use("Agg")



def square(size=32, top=10, left=10, side=10, device="cpu"):
    mask = torch.zeros(size, size, dtype=torch.bool, device=device)
    mask[top : top + side, left : left + side] = True
    return mask


def random_mask(size, seed, density=0.5):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(size, generator=generator) < density


# ----------------------------------------------------------------------------------------- perturb_mask


def _shift_reference(mask: np.ndarray, dy: int, dx: int) -> np.ndarray:
    out = np.zeros_like(mask)
    height, width = mask.shape
    for y in range(height):
        for x in range(width):
            if 0 <= y - dy < height and 0 <= x - dx < width:
                out[y, x] = mask[y - dy, x - dx]
    return out


def _disk_reference(mask: np.ndarray, radius: int, erode: bool) -> np.ndarray:
    """Brute force: a pixel is in the dilation if any mask pixel lies within the disk; in the erosion if all
    pixels of the disk are mask pixels inside the image."""
    height, width = mask.shape
    out = np.zeros_like(mask)
    offsets = [(dy, dx) for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1)
               if dy * dy + dx * dx <= radius * radius]
    for y in range(height):
        for x in range(width):
            inside = [0 <= y + dy < height and 0 <= x + dx < width and mask[y + dy, x + dx] for dy, dx in offsets]
            out[y, x] = all(inside) if erode else any(inside)
    return out


@pytest.mark.parametrize("shift", [(0, 0), (3, -2), (-5, 7), (0, 40), (-40, 0)])
def test_shift_moves_the_mask(device, shift):
    mask = random_mask((17, 23), seed=1).to(device)
    out = perturb_mask(mask, shift=shift)
    assert out.dtype == torch.bool and out.device == mask.device and out.shape == mask.shape
    np.testing.assert_array_equal(out.cpu().numpy(), _shift_reference(mask.cpu().numpy(), *shift))


def test_shift_of_a_square_moves_its_corner():
    out = perturb_mask(square(), shift=(2, -3))
    ys, xs = torch.nonzero(out, as_tuple=True)
    assert (ys.min().item(), xs.min().item()) == (12, 7)
    assert out.sum() == 100


@pytest.mark.parametrize("radius", [1, 2, 3])
def test_dilate_and_erode_match_a_brute_force_disk(device, radius):
    mask = random_mask((14, 15), seed=radius, density=0.35).to(device)
    mask[0:6, 0:6] = True  # a block touching the border: the border erodes it (outside counts as background)
    grown = perturb_mask(mask, dilate=radius)
    shrunk = perturb_mask(mask, dilate=-radius)
    np.testing.assert_array_equal(grown.cpu().numpy(), _disk_reference(mask.cpu().numpy(), radius, erode=False))
    np.testing.assert_array_equal(shrunk.cpu().numpy(), _disk_reference(mask.cpu().numpy(), radius, erode=True))


def test_dilate_grows_and_erode_shrinks():
    mask = square()
    grown, shrunk = perturb_mask(mask, dilate=2), perturb_mask(mask, dilate=-2)
    assert bool((grown & mask).eq(mask).all()) and grown.sum() > mask.sum()
    assert bool((shrunk & mask).eq(shrunk).all()) and shrunk.sum() < mask.sum()
    assert shrunk.sum() == 36  # a 10x10 square eroded by 2 is 6x6 (a disk of radius 2 spans +-2 on each axis)
    assert not perturb_mask(mask, dilate=-5).any()  # eroded away


@pytest.mark.parametrize("size", [(32, 32), (30, 27)])
def test_coarsen_nearest_is_the_majority_of_each_cell(size):
    mask = random_mask(size, seed=3)
    out = perturb_mask(mask, coarsen=8, upsample="nearest").numpy()
    array = mask.numpy()
    for top in range(0, size[0], 8):
        for left in range(0, size[1], 8):
            cell = array[top : top + 8, left : left + 8]  # cut by the border: the pixels inside only
            expected = cell.mean() > 0.5
            assert (out[top : top + 8, left : left + 8] == expected).all()


@pytest.mark.parametrize("factor", [2, 8, 32])
def test_coarsen_bilinear_is_downsample_then_upsample_as_documented(device, factor):
    mask = random_mask((64, 48), seed=factor, density=0.4).to(device)
    coarse = F.avg_pool2d(mask.float()[None, None], factor, stride=factor, ceil_mode=True)
    fine = F.interpolate(coarse, scale_factor=factor, mode="bilinear", align_corners=False)
    expected = fine[0, 0, :64, :48] > 0.5
    assert torch.equal(perturb_mask(mask, coarsen=factor), expected)


def test_coarsen_loses_thin_parts_and_keeps_block_interiors():
    mask = torch.zeros(64, 64, dtype=torch.bool)
    mask[16:48, 16:48] = True  # aligned to the 16-grid
    mask[2:5, :] = True  # a 3 px bar: thinner than a cell
    out = perturb_mask(mask, coarsen=16)
    assert out[20:44, 20:44].all()
    assert not out[2:5].any()
    assert torch.equal(perturb_mask(mask, coarsen=1), mask)


def test_perturb_mask_bad_input():
    mask = square()
    with pytest.raises(TypeError, match=r"perturb_mask: mask must have dtype torch.bool, got Tensor of shape \(32, 32\) and dtype torch.float32"):
        perturb_mask(mask.float())
    with pytest.raises(ValueError, match=r"perturb_mask: mask must be 2-D"):
        perturb_mask(mask[None])
    with pytest.raises(TypeError, match=r"perturb_mask: shift must be a pair of ints \(dy, dx\), got int 3"):
        perturb_mask(mask, shift=3)
    with pytest.raises(TypeError, match=r"perturb_mask: shift must be an int, got float 1.5"):
        perturb_mask(mask, shift=(1.5, 0))
    with pytest.raises(ValueError, match=r"perturb_mask: coarsen must be >= 1, got 0"):
        perturb_mask(mask, coarsen=0)
    with pytest.raises(TypeError, match=r"perturb_mask: dilate must be an int"):
        perturb_mask(mask, dilate=1.0)
    with pytest.raises(ValueError, match=r"perturb_mask: upsample must be one of \['bilinear', 'nearest'\], got 'cubic'"):
        perturb_mask(mask, coarsen=2, upsample="cubic")


# ---------------------------------------------------------------------------------- mask comparison


def test_outcome_map_colours():
    target = square()
    prediction = perturb_mask(target, shift=(0, 2))
    ignore = torch.zeros_like(target)
    ignore[0, 0] = True
    rgb = outcome_map(prediction, target, ignore=ignore)
    assert rgb.shape == (32, 32, 3) and rgb.dtype == np.float32
    np.testing.assert_allclose(rgb[15, 15], OUTCOME_COLORS["true positive"])
    np.testing.assert_allclose(rgb[15, 20], OUTCOME_COLORS["false positive"])  # columns 20, 21 gained
    np.testing.assert_allclose(rgb[15, 10], OUTCOME_COLORS["false negative"])  # columns 10, 11 lost
    np.testing.assert_allclose(rgb[0, 0], OUTCOME_COLORS["ignored"])


def test_mask_comparison_figure_renders():
    target = square()
    figure = mask_comparison_figure(target, perturb_mask(target, coarsen=8), image=torch.rand(3, 32, 32),
                                    ignore=perturb_mask(target, dilate=1) & ~target, title="stride 8")
    assert isinstance(figure, Figure)
    figure.canvas.draw()
    texts = [t.get_text() for ax in figure.axes for t in ax.texts]
    scores = segmentation_scores(confusion_matrix(perturb_mask(target, coarsen=8).long(), target.long().masked_fill(
        perturb_mask(target, dilate=1) & ~target, 255), 2))
    assert f"{scores['mean_iu']:.3f}" in texts  # the bars show the metrics module's numbers
    assert figure.axes[1].get_title() == "stride 8"


def test_mask_comparison_figure_bad_input():
    target = square()
    with pytest.raises(ValueError, match=r"mask_comparison_figure: prediction and target must have the same shape, "
                                         r"got prediction of shape \(16, 16\) and target of shape \(32, 32\)"):
        mask_comparison_figure(target, target[:16, :16])
    with pytest.raises(TypeError, match=r"mask_comparison_figure: prediction must have dtype torch.bool"):
        mask_comparison_figure(target, target.float())
    with pytest.raises(TypeError, match=r"mask_comparison_figure: target must be a torch.Tensor, got ndarray"):
        mask_comparison_figure(target.numpy(), target)
    with pytest.raises(ValueError, match=r"mask_comparison_figure: ignore must have the target's shape"):
        mask_comparison_figure(target, target, ignore=target[:5])
    with pytest.raises(ValueError, match=r"viz: image must be \(32, 32\) in height and width"):
        mask_comparison_figure(target, target, image=torch.rand(3, 8, 8))


# --------------------------------------------------------------------------------- model comparison


def _semantic_case():
    targets = [torch.zeros(16, 16, dtype=torch.int64) for _ in range(3)]
    for index, target in enumerate(targets):
        target[2:10, 2 + index : 10 + index] = 1 + index % 2
        target[0, :] = 255
    model_a = [t.clone().masked_fill(t == 255, 0) for t in targets]  # perfect
    model_b = [perturb_mask(t == 1, shift=(0, 2)).long() for t in targets]  # class 1 shifted, class 2 lost
    return [torch.rand(3, 16, 16) for _ in targets], targets, model_a, model_b


def test_model_comparison_semantic_scores_are_per_image_mean_iu():
    images, targets, model_a, model_b = _semantic_case()
    figure = model_comparison_figure(images, targets, model_a, model_b, names=("exact", "shifted"), index=1)
    assert isinstance(figure, Figure)
    figure.canvas.draw()
    titles = [ax.get_title() for ax in figure.axes]
    expected = segmentation_scores(confusion_matrix(model_b[1], targets[1], 3))["mean_iu"]
    assert f"shifted: mean IU {expected:.3f}" in titles
    assert "exact: mean IU 1.000" in titles


def test_model_comparison_instance_mode_uses_mask_ap():
    images = [torch.rand(3, 24, 24) for _ in range(2)]
    targets = []
    for offset in (2, 6):
        masks = torch.zeros(2, 24, 24, dtype=torch.bool)
        masks[0, offset : offset + 8, 2:10] = True
        masks[1, 12:20, offset + 8 : offset + 16] = True
        boxes = torch.tensor([[2, offset, 10, offset + 8], [offset + 8, 12, offset + 16, 20]], dtype=torch.float32)
        targets.append({"boxes": boxes, "labels": torch.tensor([1, 2]), "masks": masks})
    perfect = [dict(t, scores=torch.tensor([0.9, 0.8]), masks=t["masks"][:, None].float()) for t in targets]
    half = [dict(p, scores=torch.tensor([0.9, 0.1]), labels=torch.tensor([1, 1])) for p in perfect]
    figure = model_comparison_figure(images, targets, perfect, half, names=("perfect", "wrong class"), index=0)
    figure.canvas.draw()
    titles = [ax.get_title() for ax in figure.axes]
    assert "perfect: mask AP 1.000" in titles
    assert "wrong class: mask AP 0.500" in titles  # category 2 found nowhere: AP (1 + 0) / 2


def test_model_comparison_given_scores_and_errors():
    images, targets, model_a, model_b = _semantic_case()
    figure = model_comparison_figure(images, targets, model_a, model_b, scores=([0.1, 0.2, 0.3], [0.3, 0.2, 0.1]),
                                     score_name="boundary IoU", index=2)
    figure.canvas.draw()
    assert "B: boundary IoU 0.100" in [ax.get_title() for ax in figure.axes]
    with pytest.raises(ValueError, match=r"model_comparison_figure: predictions_b must have one entry per image \(3\), got list of length 2"):
        model_comparison_figure(images, targets, model_a, model_b[:2])
    with pytest.raises(TypeError, match=r"model_comparison_figure: predictions_a\[0\] must be an integer or bool tensor"):
        model_comparison_figure(images, targets, [m.float() for m in model_a], model_b)
    with pytest.raises(ValueError, match=r"model_comparison_figure: predictions_a\[1\] must match its image's height and width"):
        model_comparison_figure(images, targets, [model_a[0], model_a[1][:8], model_a[2]], model_b)
    with pytest.raises(ValueError, match=r"model_comparison_figure: index must be < 3"):
        model_comparison_figure(images, targets, model_a, model_b, index=3)
    with pytest.raises(ValueError, match=r"model_comparison_figure: scores must hold one score per image"):
        model_comparison_figure(images, targets, model_a, model_b, scores=([0.1], [0.2]))
    with pytest.raises(TypeError, match=r"model_comparison_figure: predictions_a\[0\] must be a dict with masks"):
        model_comparison_figure(images, [{"masks": torch.zeros(0, 16, 16)}] * 3, model_a, model_b)


def test_model_comparison_instance_ap_matches_average_precision():
    """The dataset-level AP in the title is average_precision's on the same detections."""
    images = [torch.rand(3, 20, 20)]
    masks = torch.zeros(1, 20, 20, dtype=torch.bool)
    masks[0, 4:12, 4:12] = True
    target = {"boxes": torch.tensor([[4.0, 4.0, 12.0, 12.0]]), "labels": torch.tensor([1]), "masks": masks}
    shifted = perturb_mask(masks[0], shift=(0, 3))[None]
    prediction = {"boxes": torch.tensor([[7.0, 4.0, 15.0, 12.0]]), "labels": torch.tensor([1]),
                  "scores": torch.tensor([0.7]), "masks": shifted}
    figure = model_comparison_figure(images, [target], [prediction], [prediction])
    figure.canvas.draw()
    ground_truth = {"images": [{"id": 1, "height": 20, "width": 20}], "categories": [{"id": 1}],
                    "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "area": 64.0, "iscrowd": 0,
                                     "bbox": [4, 4, 8, 8], "segmentation": detections_from_predictions(
                                         [dict(target, scores=torch.ones(1))], [1])[0]["segmentation"]}]}
    expected = average_precision(ground_truth, detections_from_predictions([prediction], [1]))["AP"]
    assert f"A {expected:.3f}" in figure.axes[-1].get_title()


# ------------------------------------------------------------------------------------- coarsen_labels


def test_coarsen_labels_agrees_with_perturb_mask_for_two_classes():
    mask = random_mask((40, 36), seed=7, density=0.3)
    for factor, upsample in ((4, "bilinear"), (8, "nearest"), (1, "bilinear")):
        labels = coarsen_labels(mask.long(), factor, num_classes=2, upsample=upsample)
        expected = perturb_mask(mask, coarsen=factor, upsample=upsample)
        # Ties (a cell exactly half covered) go to class 0 in both.
        assert torch.equal(labels.bool(), expected)


def test_coarsen_labels_majority_with_void():
    labels = torch.zeros(8, 8, dtype=torch.int64)
    labels[:, :3] = 2  # 24 pixels of class 2
    labels[:, 3:5] = 255  # 16 void pixels vote for nothing
    labels[:, 5:] = 1  # 24 pixels of class 1: tie with class 2 goes to the lower index
    out = coarsen_labels(labels, 8, num_classes=3, upsample="nearest")
    assert out.dtype == torch.int64 and (out == 1).all()
    labels[0, 5] = 2  # now class 2 leads 25 to 23
    assert (coarsen_labels(labels, 8, num_classes=3, upsample="nearest") == 2).all()


def test_coarsen_labels_bad_input():
    labels = torch.zeros(8, 8, dtype=torch.int64)
    with pytest.raises(ValueError, match=r"coarsen_labels: labels must be in \[0, 3\) or 255, got values from 0 to 4"):
        coarsen_labels(labels.index_fill(0, torch.tensor([0]), 4), 2, num_classes=3)
    with pytest.raises(TypeError, match=r"coarsen_labels: labels must be an integer or bool tensor"):
        coarsen_labels(labels.float(), 2, num_classes=3)
    with pytest.raises(ValueError, match=r"coarsen_labels: factor must be >= 1, got 0"):
        coarsen_labels(labels, 0, num_classes=3)


def test_coarsen_labels_batch_equals_one_by_one():
    generator = torch.Generator().manual_seed(5)
    labels = torch.randint(0, 4, (3, 20, 18), generator=generator)
    labels[:, 0] = 255
    batch = coarsen_labels(labels, 4, num_classes=4)
    assert batch.shape == labels.shape
    for one, expected in zip(labels, batch):
        assert torch.equal(coarsen_labels(one, 4, num_classes=4), expected)
