import math

import matplotlib
import pytest
import torch
import torchvision
from matplotlib.figure import Figure
from torch import nn
from torchvision.models.detection import FasterRCNN, MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.roi_heads import paste_masks_in_image
from torchvision.ops import MultiScaleRoIAlign

from segnotes.ops import bilinear_interpolate, roi_align, roi_pool
from segnotes.viz import (
    mask_rcnn_pipeline_figure,
    mask_rcnn_stages,
    misalignment_table,
    roi_align_sample_points,
    roi_misalignment,
    roi_pool_bins,
    roi_sampling_figure,
)
from segnotes.viz.roi import _bilinear_taps

matplotlib.use("Agg")


def random_boxes(count, extent, min_size, max_size, seed, dtype=torch.float64):
    """Boxes whose corners start in [-extent/4, extent) with sides in [min_size, max_size)."""
    generator = torch.Generator().manual_seed(seed)
    xy = torch.rand(count, 2, generator=generator, dtype=torch.float64) * extent * 1.25 - extent / 4
    wh = min_size + torch.rand(count, 2, generator=generator, dtype=torch.float64) * (max_size - min_size)
    return torch.cat([xy, xy + wh], dim=1).to(dtype)  # [K, 4]


# ------------------------------------------------------------------------------------ roi_pool_bins


def test_roi_pool_bins_hand_computed():
    # 1x scale: box (0, 0, 4, 4) rounds to cells 0..4, 5 cells; 2 bins: [0, ceil(2.5)) and [floor(2.5), 5).
    bins = roi_pool_bins((0, 0, 4, 4), 1.0, 2)
    assert [b["bin"] for b in bins] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert bins[0]["rows"] == (0, 3) and bins[0]["cols"] == (0, 3)
    assert bins[3]["rows"] == (2, 5) and bins[3]["cols"] == (2, 5)
    # halves round away from zero (C's round, not torch.round): 0.5 -> 1, 2.5 -> 3; cells 1..3.
    bins = roi_pool_bins(torch.tensor([1.0, 1.0, 5.0, 5.0]), 0.5, (1, 2))
    assert bins[0]["rows"] == (1, 4) and bins[0]["cols"] == (1, 3) and bins[1]["cols"] == (2, 4)
    # clipped to a 2 x 2 map, the second column of bins is empty
    bins = roi_pool_bins((0, 0, 4, 4), 1.0, 2, feature_size=(2, 2))
    assert bins[1]["cols"] == (2, 2) and bins[0]["cols"] == (0, 2)


@pytest.mark.parametrize("scale, output_size", [(1 / 4, 2), (1 / 16, (3, 2)), (0.5, 7)])
def test_roi_pool_bins_reproduce_roi_pool(scale, output_size):
    height, width = 6, 7
    # +arange puts each bin's maximum at its last cell, -arange at its first: both ends are checked.
    ramp = torch.arange(height * width, dtype=torch.float32).view(1, 1, height, width) + 1
    feature = torch.cat([ramp, -ramp], dim=1)  # [1, 2, H, W]
    boxes = random_boxes(40, width / scale, 0.0, 4 / scale, seed=1).float()
    half = torch.tensor([[0.5, 1.5, 2.5, 4.5]]) / scale  # corners on exact halves of a cell
    boxes = torch.cat([boxes, half], dim=0)
    ours = roi_pool(feature, [boxes], output_size, scale)  # [K, 2, oh, ow]
    theirs = torchvision.ops.roi_pool(feature, [boxes], output_size, scale)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    for k, box in enumerate(boxes):
        for item in roi_pool_bins(box, scale, output_size, feature_size=(height, width)):
            (r0, r1), (c0, c1) = item["rows"], item["cols"]
            i, j = item["bin"]
            cells = feature[0, :, r0:r1, c0:c1].flatten(1)  # [2, cells]
            expected = cells.amax(dim=1) if cells.shape[1] else torch.zeros(2)
            assert torch.equal(ours[k, :, i, j], expected), (box.tolist(), item)


# ---------------------------------------------------------------------------- roi_align_sample_points


def test_roi_align_sample_points_hand_computed():
    points = roi_align_sample_points((0, 0, 4, 4), 1.0, 2, 2)  # bins of 2 cells, samples at cell centres
    assert points.shape == (2, 2, 4, 2)
    expected = torch.tensor([[0.5, 0.5], [1.5, 0.5], [0.5, 1.5], [1.5, 1.5]])
    torch.testing.assert_close(points[0, 0], expected)
    torch.testing.assert_close(points[1, 1], expected + 2)
    # legacy: the same box read half a cell right and down
    torch.testing.assert_close(roi_align_sample_points((0, 0, 4, 4), 1.0, 2, 2, aligned=False)[0, 0], expected + 0.5)
    # a sample on a cell centre reads that cell alone; between four centres, a quarter each
    assert _bilinear_taps(1.5, 0.5, 4, 4) == [(0, 1, 1.0)]
    assert sorted(_bilinear_taps(1.0, 1.0, 4, 4)) == [(0, 0, 0.25), (0, 1, 0.25), (1, 0, 0.25), (1, 1, 0.25)]


def _interpolate(feature, x, y):
    """segnotes.ops.bilinear_interpolate at a point of this module's coordinates (value of cell j at j + 0.5)."""
    return bilinear_interpolate(feature[None], y - 0.5, x - 0.5)[0]


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("scale, output_size, sampling_ratio", [(1 / 4, 2, 2), (1 / 16, (2, 3), 1), (0.5, 3, 3)])
def test_roi_align_sample_points_reproduce_roi_align(aligned, scale, output_size, sampling_ratio):
    generator = torch.Generator().manual_seed(2)
    height, width = 5, 6
    feature = torch.randn(1, 1, height, width, generator=generator, dtype=torch.float64)
    boxes = random_boxes(12, width / scale, 0.1 / scale, 4 / scale, seed=3)  # some reach past the border
    ours = roi_align(feature, [boxes], output_size, scale, sampling_ratio, aligned)  # [K, 1, oh, ow]
    theirs = torchvision.ops.roi_align(feature, [boxes], output_size, scale, sampling_ratio, aligned)
    torch.testing.assert_close(ours, theirs)
    for k, box in enumerate(boxes):
        points = roi_align_sample_points(box, scale, output_size, sampling_ratio, aligned, dtype=torch.float64)
        values = torch.tensor([[[float(_interpolate(feature[0, 0], x, y)) for x, y in bin_points.tolist()]
                                for bin_points in row] for row in points], dtype=torch.float64)  # [oh, ow, S]
        torch.testing.assert_close(values.mean(-1), ours[k, 0], rtol=1e-9, atol=1e-9)
        # the figure's taps give the same interpolation
        x, y = points[0, 0, 0].tolist()
        taps = sum(w * feature[0, 0, r, c] for r, c, w in _bilinear_taps(x, y, height, width))
        assert float(taps) == pytest.approx(float(_interpolate(feature[0, 0], x, y)), abs=1e-12)


# ------------------------------------------------------------------------------------ misalignment


def test_roi_misalignment_hand_computed():
    # box 32 px at stride 16: 2 cells, exact bins [0, 1) and [1, 2). RoIPool rounds to cells 0..2
    # (3 cells) and bins [0, 2), [1, 3): each bin's start is right, its end a cell (16 px) late, and its
    # centre half a cell off on each axis.
    result = roi_misalignment(torch.tensor([[0.0, 0.0, 32.0, 32.0]]), 1 / 16, output_size=2)
    assert result["num_boxes"] == 1 and result["stride"] == 16.0
    assert result["roi_pool_edge_mean"] == pytest.approx(8.0)
    assert result["roi_pool_edge_max"] == pytest.approx(16.0)
    assert result["roi_pool_centre_mean"] == pytest.approx(16 * math.sqrt(0.5))
    assert result["roi_align_edge_max"] == pytest.approx(0.0, abs=1e-9)
    assert result["roi_align_legacy_edge_max"] == pytest.approx(8.0)


def test_roi_misalignment_random_boxes():
    boxes = random_boxes(200, 512, 40, 300, seed=4)  # boxes of at least one cell at every stride
    rows = misalignment_table(boxes, scales=(1 / 4, 1 / 16, 1 / 32))
    assert [row["stride"] for row in rows] == [4.0, 16.0, 32.0]
    for row in rows:
        stride = row["stride"]
        assert row["roi_align_centre_max"] < 1e-9 and row["roi_align_edge_max"] < 1e-9
        assert row["roi_align_legacy_edge_mean"] == pytest.approx(0.5 * stride)
        assert row["roi_align_legacy_centre_max"] == pytest.approx(math.sqrt(0.5) * stride)
        # RoIPool reads up to about two cells from the exact edges, over half a cell on average
        assert 0.5 * stride < row["roi_pool_edge_mean"] < row["roi_pool_edge_max"] <= 2.5 * stride
    means = [row["roi_pool_edge_mean"] for row in rows]
    assert means == sorted(means)


# ---------------------------------------------------------------------------------------- figure 1


def test_roi_sampling_figure_draws_the_geometry():
    figure = roi_sampling_figure((20, 13, 75, 60), 1 / 16, output_size=2, sampling_ratio=2)
    assert isinstance(figure, Figure)
    ax_pool, ax_align = figure.axes[:2]
    figure.canvas.draw()
    dots = sum(len(c.get_offsets()) for c in ax_align.collections)
    assert dots == 2 * 2 * 4 + 1  # the samples and the highlight ring
    # 2 x 2 bins each shaded and outlined, the rounded box, the continuous box
    assert len(ax_pool.patches) == 2 * 4 + 2
    # the highlighted sample's weights are written and sum to 1
    weights = [float(t.get_text()) for t in ax_align.texts]
    assert len(weights) == 4 and sum(weights) == pytest.approx(1.0, abs=0.02)
    legacy = roi_sampling_figure((20, 13, 75, 60), 1 / 16, 3, 1, feature_size=(5, 6), aligned=False,
                                 highlight=(2, 2, 0))
    assert legacy.axes[0].get_xlim()[1] == pytest.approx(6.1)


# ---------------------------------------------------------------------------------------- pipeline


class TinyBackbone(nn.Sequential):
    def __init__(self):
        super().__init__(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1))
        self.out_channels = 8


def tiny_kwargs():
    return dict(
        min_size=64,
        max_size=64,
        rpn_anchor_generator=AnchorGenerator(((16,),), ((0.5, 1.0, 2.0),)),
        rpn_pre_nms_top_n_test=100,
        rpn_post_nms_top_n_test=40,
        box_roi_pool=MultiScaleRoIAlign(["0"], 7, 2),
        box_head=TwoMLPHead(8 * 7 * 7, 16),
        box_predictor=FastRCNNPredictor(16, 3),
        box_score_thresh=0.0,
        box_detections_per_img=6,
    )


@pytest.fixture(scope="module")
def tiny_mask_rcnn():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = MaskRCNN(
            TinyBackbone(),
            mask_roi_pool=MultiScaleRoIAlign(["0"], 14, 2),
            mask_head=MaskRCNNHeads(8, (8,), 1),
            mask_predictor=MaskRCNNPredictor(8, 8, 3),
            **tiny_kwargs(),
        )
    return model.eval()


@pytest.fixture(scope="module")
def image():
    return torch.rand(3, 40, 48, generator=torch.Generator().manual_seed(5))


def test_mask_rcnn_stages_match_the_model(tiny_mask_rcnn, image):
    model = tiny_mask_rcnn
    model.train()
    try:
        stages = mask_rcnn_stages(model, image, num_proposals=7)
        assert model.training  # restored
    finally:
        model.eval()
    assert set(stages) == {"proposals", "detections", "roi_masks"}
    proposals = stages["proposals"]
    assert proposals.shape == (7, 4)
    # scaled back from the 64 px transformed image to the 48 x 40 input
    assert float(proposals[:, 2].max()) <= 48 + 1e-3 and float(proposals[:, 3].max()) <= 40 + 1e-3
    with torch.no_grad():
        expected = model([image])[0]
    detections = stages["detections"]
    assert set(detections) == set(expected) == {"boxes", "labels", "scores", "masks"}
    for key in expected:
        assert torch.equal(detections[key], expected[key]), key
    count = len(detections["boxes"])
    assert count > 0 and stages["roi_masks"].shape == (count, 28, 28)
    # the RoI masks are the ones the model pasted into the image
    pasted = paste_masks_in_image(stages["roi_masks"][:, None], detections["boxes"], (40, 48))
    torch.testing.assert_close(pasted, detections["masks"])


def test_mask_rcnn_pipeline_figure(tiny_mask_rcnn, image):
    figure = mask_rcnn_pipeline_figure(tiny_mask_rcnn, image, num_proposals=5, score_threshold=0.0,
                                       category_names=["__background__", "cat", "dog"], max_thumbnails=4)
    assert isinstance(figure, Figure) and len(figure.axes) == 4
    figure.canvas.draw()
    ax_prop, ax_det, ax_roi, _ = figure.axes
    assert len(ax_prop.patches) == 5
    count = len(ax_det.patches)
    assert count > 0 and all(t.get_text().split()[0] in {"cat", "dog"} for t in ax_det.texts)
    # thumbnails: a mosaic of ceil(sqrt(n)) columns of 28 px masks with 3 px frames
    shown = min(count, 4)
    assert ax_roi.images[0].get_array().shape[1] == math.ceil(math.sqrt(shown)) * 34
    empty = mask_rcnn_pipeline_figure(tiny_mask_rcnn, image, num_proposals=0, score_threshold=1.0)
    assert len(empty.axes[1].patches) == 0


# --------------------------------------------------------------------------------------- bad input


def test_bad_geometry_arguments_raise():
    with pytest.raises(ValueError, match=r"roi_pool_bins: box must be 4 finite numbers"):
        roi_pool_bins((0, 0, 1), 1.0, 2)
    with pytest.raises(ValueError, match=r"roi_align_sample_points: box must have x2 >= x1 and y2 >= y1"):
        roi_align_sample_points((4, 0, 1, 1), 1.0, 2, 2)
    with pytest.raises(ValueError, match=r"roi_pool_bins: spatial_scale must be > 0, got 0"):
        roi_pool_bins((0, 0, 1, 1), 0, 2)
    with pytest.raises(ValueError, match=r"roi_sampling_figure: output_size must be an int >= 1"):
        roi_sampling_figure((0, 0, 1, 1), 1.0, output_size=0)
    with pytest.raises(ValueError, match=r"roi_sampling_figure: sampling_ratio must be >= 1, got 0"):
        roi_sampling_figure((0, 0, 1, 1), 1.0, sampling_ratio=0)
    with pytest.raises(ValueError, match=r"roi_sampling_figure: highlight must be \(i, j, k\)"):
        roi_sampling_figure((0, 0, 1, 1), 1.0, highlight=(2, 0, 0))
    with pytest.raises(ValueError, match=r"roi_misalignment: boxes must have last dimension 4"):
        roi_misalignment(torch.zeros(2, 5), 1 / 16)
    with pytest.raises(ValueError, match=r"roi_misalignment: boxes must hold at least one box"):
        roi_misalignment(torch.zeros(0, 4), 1 / 16)
    with pytest.raises(ValueError, match=r"roi_misalignment: boxes must have x2 >= x1"):
        roi_misalignment(torch.tensor([[0.0, 0.0, -1.0, 1.0]]), 1 / 16)
    with pytest.raises(ValueError, match=r"misalignment_table: scales must be > 0, got -0.5"):
        misalignment_table(torch.tensor([[0.0, 0.0, 1.0, 1.0]]), scales=(0.5, -0.5))


def test_bad_model_and_image_raise(tiny_mask_rcnn, image):
    with pytest.raises(ValueError, match=r"mask_rcnn_stages: image must be Tensor\[3, H, W\]"):
        mask_rcnn_stages(tiny_mask_rcnn, torch.rand(1, 8, 8))
    with pytest.raises(ValueError, match=r"mask_rcnn_pipeline_figure: image must be 3-D"):
        mask_rcnn_pipeline_figure(tiny_mask_rcnn, torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match=r"mask_rcnn_pipeline_figure: score_threshold must be in \[0, 1\]"):
        mask_rcnn_pipeline_figure(tiny_mask_rcnn, image, score_threshold=1.5)
    with pytest.raises(TypeError, match=r"mask_rcnn_stages: model must be a torchvision-style MaskRCNN"):
        mask_rcnn_stages("model", image)
    faster = FasterRCNN(TinyBackbone(), **tiny_kwargs())
    with pytest.raises(ValueError, match=r"FasterRCNN has no model.roi_heads.mask_roi_pool"):
        mask_rcnn_stages(faster, image)
