"""segnotes.ops.poolers against torchvision's MultiScaleRoIAlign and LevelMapper."""
from collections import OrderedDict

import pytest
import torch
import torchvision
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.ops.poolers import LevelMapper

from segnotes.ops.poolers import MultiScaleRoIPool, fpn_levels, infer_scale

NAMES = ["p2", "p3", "p4", "p5"]


def pyramid(image_size, channels=4, levels=(2, 3, 4, 5), batch=2, seed=0, device="cpu"):
    """Random FPN features for images padded to ``image_size``, finest first."""
    g = torch.Generator().manual_seed(seed)
    height, width = image_size
    return OrderedDict(
        (f"p{k}", torch.randn(batch, channels, height // 2**k, width // 2**k, generator=g).to(device)) for k in levels
    )


def random_boxes(image_size, count, seed, device="cpu", min_size=2.0, max_size=None):
    """Boxes whose side lengths spread log-uniformly over [min_size, max_size] pixels."""
    g = torch.Generator().manual_seed(seed)
    height, width = image_size
    max_size = max_size or max(image_size)
    log_range = torch.log(torch.tensor(max_size / min_size))
    size = min_size * torch.exp(torch.rand(count, 2, generator=g) * log_range)
    corner = torch.rand(count, 2, generator=g) * (torch.tensor([width, height]) - size).clamp(min=0)
    return torch.cat([corner, corner + size], dim=1).to(device)


@pytest.mark.parametrize("canonical_scale, canonical_level", [(224, 4), (56, 4), (36, 3), (100, 5)])
@pytest.mark.parametrize("level_min, level_max", [(2, 5), (3, 4), (2, 2)])
def test_levels_match_torchvision(canonical_scale, canonical_level, level_min, level_max):
    boxes = [random_boxes((800, 800), 300, seed=1, min_size=1.0), random_boxes((800, 800), 200, seed=2)]
    # exact powers of two times s0, where eps decides
    boxes.append(torch.tensor([[0.0, 0.0, canonical_scale * 2.0**k, canonical_scale] for k in range(-6, 4)]))
    mapper = LevelMapper(level_min, level_max, canonical_scale, canonical_level)
    ours = fpn_levels(boxes, level_min, level_max, canonical_scale, canonical_level)
    assert ours.dtype == torch.int64
    assert torch.equal(ours, mapper(boxes))
    assert len(ours.unique()) > 1 or level_min == level_max  # the case exercises several levels


def test_infer_scale():
    assert infer_scale(torch.zeros(1, 1, 200, 272), (800, 1088)) == 0.25
    assert infer_scale(torch.zeros(1, 1, 25, 34), (797, 1080)) == 1 / 32  # padding makes it inexact
    assert infer_scale(torch.zeros(1, 1, 64, 64), (64, 64)) == 1.0


@pytest.mark.parametrize("canonical_scale, canonical_level", [(224, 4), (56, 4), (36, 3)])
def test_matches_multiscale_roi_align(device, canonical_scale, canonical_level):
    features = pyramid((256, 320), device=device)
    boxes = [random_boxes((256, 320), 60, seed=3, device=device), random_boxes((240, 300), 40, seed=4, device=device)]
    image_shapes = [(256, 320), (240, 300)]
    ours = MultiScaleRoIPool(NAMES, (7, 5), 2, canonical_scale=canonical_scale, canonical_level=canonical_level)
    ref = torchvision.ops.MultiScaleRoIAlign(
        NAMES, (7, 5), 2, canonical_scale=canonical_scale, canonical_level=canonical_level
    )
    out = ours(features, boxes, image_shapes)
    assert out.shape == (100, 4, 7, 5)
    # float32 sums in another order than torchvision's kernel (on a GPU, by a matrix product)
    torch.testing.assert_close(out, ref(features, boxes, image_shapes), atol=5e-5, rtol=1e-5)


def test_scales_are_inferred_on_every_call():
    pooler = MultiScaleRoIPool(NAMES, 7, 2, canonical_scale=56)
    state_before = dict(vars(pooler))
    for image_size in [(128, 128), (256, 192)]:  # torchvision's module would keep the first scales
        features = pyramid(image_size, seed=image_size[0])
        boxes = [random_boxes(image_size, 30, seed=5), random_boxes(image_size, 20, seed=6)]
        fresh = torchvision.ops.MultiScaleRoIAlign(NAMES, 7, 2, canonical_scale=56)
        expected = fresh(features, boxes, [image_size] * 2)
        torch.testing.assert_close(pooler(features, boxes, [image_size] * 2), expected)
    assert vars(pooler) == state_before


@pytest.mark.parametrize("roi_op, aligned", [("pool", False), ("align", True)])
def test_pool_and_aligned_use_the_same_levels(roi_op, aligned):
    features = pyramid((256, 256), levels=(3, 4, 5))
    boxes = [random_boxes((256, 256), 50, seed=7), random_boxes((256, 256), 30, seed=8)]
    levels = LevelMapper(3, 5, canonical_scale=64, canonical_level=4)(boxes)
    rois = torch.cat([torch.cat([torch.full((len(b), 1), float(i)), b], dim=1) for i, b in enumerate(boxes)])
    expected = torch.zeros(len(rois), 4, 3, 3)
    for level, feature in enumerate(features.values()):
        scale = 2.0 ** -(level + 3)
        picked = levels == level
        if roi_op == "pool":
            expected[picked] = torchvision.ops.roi_pool(feature, rois[picked], 3, scale)
        else:
            expected[picked] = torchvision.ops.roi_align(feature, rois[picked], 3, scale, 0, aligned=True)
    pooler = MultiScaleRoIPool(["p3", "p4", "p5"], 3, 0, roi_op=roi_op, canonical_scale=64, aligned=aligned)
    assert len(levels.unique()) == 3
    torch.testing.assert_close(pooler(features, boxes, [(256, 256)] * 2), expected)


def test_single_level_and_unused_maps():
    features = pyramid((128, 128))
    boxes = [random_boxes((128, 128), 10, seed=9), random_boxes((128, 128), 5, seed=10)]
    pooler = MultiScaleRoIPool(["p3"], 4, 2)  # p2, p4 and p5 are ignored
    expected = torchvision.ops.roi_align(features["p3"], boxes, 4, 1 / 8, 2)
    torch.testing.assert_close(pooler(features, boxes, [(128, 128)] * 2), expected)


def test_small_images_need_a_smaller_canonical_scale():
    # On 128 px images, s0 = 224 sends every RoI under 112 px (sqrt of area) to the finest level.
    boxes = [random_boxes((128, 128), 200, seed=11, min_size=4.0, max_size=110.0)]
    assert torch.equal(fpn_levels(boxes, 2, 5, canonical_scale=224), torch.zeros(200, dtype=torch.int64))
    # Scaled with the image (224 * 128 / 800 ~ 36), the same RoIs spread over the pyramid.
    assert fpn_levels(boxes, 2, 5, canonical_scale=36).unique().tolist() == [0, 1, 2, 3]


def test_gradients_reach_every_level_used():
    features = {k: v.requires_grad_() for k, v in pyramid((256, 256)).items()}
    boxes = [random_boxes((256, 256), 80, seed=12, min_size=8.0)]
    MultiScaleRoIPool(NAMES, 5, 2, canonical_scale=56)(features, boxes, [(256, 256)]).square().sum().backward()
    assert all(f.grad is not None and f.grad.abs().sum() > 0 for f in features.values())


def test_empty_boxes():
    features = pyramid((128, 128))
    out = MultiScaleRoIPool(NAMES, 7, 2)(features, [torch.zeros(0, 4), torch.zeros(0, 4)], [(128, 128)] * 2)
    assert out.shape == (0, 4, 7, 7)


def test_drop_in_for_torchvision_roi_heads():
    def heads(pooler):
        torch.manual_seed(0)  # same weights for both heads
        return RoIHeads(
            pooler, TwoMLPHead(4 * 7 * 7, 32), FastRCNNPredictor(32, 3),
            fg_iou_thresh=0.5, bg_iou_thresh=0.5, batch_size_per_image=64, positive_fraction=0.25,
            bbox_reg_weights=None, score_thresh=0.0, nms_thresh=0.5, detections_per_img=20,
        ).eval()

    features = pyramid((128, 160))
    proposals = [random_boxes((128, 160), n, seed=13 + n, min_size=8.0) for n in (40, 30)]
    image_shapes = [(128, 160), (120, 150)]
    ours = heads(MultiScaleRoIPool(NAMES, 7, 2, canonical_scale=36))
    ref = heads(torchvision.ops.MultiScaleRoIAlign(NAMES, 7, 2, canonical_scale=36))
    with torch.no_grad():
        got, _ = ours(features, proposals, image_shapes)
        expected, _ = ref(features, proposals, image_shapes)
    assert len(got) == 2 and len(got[0]["boxes"]) > 0
    for a, b in zip(got, expected):
        for key in ("boxes", "scores", "labels"):
            torch.testing.assert_close(a[key], b[key])


def test_repr():
    pooler = MultiScaleRoIPool(["p2", "p3"], 14, 2, "pool", canonical_scale=36, canonical_level=3)
    assert repr(pooler) == (
        "MultiScaleRoIPool(featmap_names=['p2', 'p3'], output_size=(14, 14), sampling_ratio=2, roi_op='pool', "
        "canonical_scale=36, canonical_level=3, aligned=False)"
    )


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (
            dict(featmap_names=[]),
            ValueError,
            r"MultiScaleRoIPool: featmap_names must be a non-empty list of str, got \[\]",
        ),
        (
            dict(featmap_names="p2"),
            ValueError,
            r"MultiScaleRoIPool: featmap_names must be a non-empty list of str, got 'p2'",
        ),
        (dict(roi_op="warp"), ValueError, r"MultiScaleRoIPool: roi_op must be one of \['align', 'pool'\], got 'warp'"),
        (dict(output_size=(7, 0)), ValueError, r"MultiScaleRoIPool: output_size must be a positive int or a pair"),
        (dict(canonical_scale=-224), ValueError, r"MultiScaleRoIPool: canonical_scale must be > 0, got -224"),
        (dict(sampling_ratio=None), TypeError, r"MultiScaleRoIPool: sampling_ratio must be an int, got NoneType"),
    ],
)
def test_bad_constructor_arguments(kwargs, error, message):
    args = dict(featmap_names=NAMES, output_size=7, sampling_ratio=2)
    args.update(kwargs)
    with pytest.raises(error, match=message):
        MultiScaleRoIPool(**args)


def test_bad_forward_arguments():
    pooler = MultiScaleRoIPool(NAMES, 7, 2)
    features = pyramid((128, 128))
    boxes = [random_boxes((128, 128), 5, seed=15)]
    missing = r"MultiScaleRoIPool: feature maps \['p5'\] not found in x \(keys \['p2', 'p3', 'p4'\]\)"
    with pytest.raises(ValueError, match=missing):
        pooler({k: v for k, v in features.items() if k != "p5"}, boxes, [(128, 128)])
    with pytest.raises(TypeError, match=r"MultiScaleRoIPool: x must be a dict of feature maps, got list"):
        pooler(list(features.values()), boxes, [(128, 128)])
    skipping = dict(features, p4=torch.zeros(2, 4, 4, 4))  # p4 at the scale of p5
    not_consecutive = (
        r"MultiScaleRoIPool: feature maps must be consecutive pyramid levels, finest first; "
        r"got scales \[0.25, 0.125, 0.03125, 0.03125\]"
    )
    with pytest.raises(ValueError, match=not_consecutive):
        pooler(skipping, boxes, [(128, 128)])
    no_shapes = r"MultiScaleRoIPool: image_shapes must be a non-empty list of \(height, width\), got \[\]"
    with pytest.raises(ValueError, match=no_shapes):
        pooler(features, boxes, [])
    not_list = r"MultiScaleRoIPool: boxes must be a non-empty list of Tensor\[L, 4\] \(one per image\), got Tensor"
    with pytest.raises(TypeError, match=not_list):
        pooler(features, boxes[0], [(128, 128)])
    bad_shape = r"MultiScaleRoIPool: boxes must be a list of Tensor\[L, 4\], got boxes\[0\] = Tensor of shape \(5, 5\)"
    with pytest.raises(ValueError, match=bad_shape):
        pooler(features, [torch.zeros(5, 5)], [(128, 128)])
    with pytest.raises(TypeError, match=r"roi_align: boxes must have the dtype of input \(torch.float32\)"):
        pooler(features, [boxes[0].double()], [(128, 128)])


@pytest.mark.parametrize("box", [
    [float("nan"), 0.0, 10.0, 10.0],
    [0.0, 0.0, float("inf"), 10.0],
    [10.0, 0.0, 0.0, 10.0],  # x2 < x1: a negative area
])
def test_fpn_levels_refuses_boxes_without_a_size(box):
    # Issue 22, finding 5: NaN and negative-area boxes got level 9223372036854775806.
    boxes = [torch.tensor([[0.0, 0.0, 50.0, 50.0]]), torch.tensor([box])]
    with pytest.raises(ValueError, match=r"fpn_levels: boxes must be \(x1, y1, x2, y2\) with finite coordinates, "
                                         r"x1 <= x2 and y1 <= y2, got box 1 of torch.cat\(boxes\)"):
        fpn_levels(boxes, 2, 5)


def test_fpn_levels_refuses_non_finite_settings():
    boxes = [torch.tensor([[0.0, 0.0, 50.0, 50.0]])]
    with pytest.raises(ValueError, match=r"fpn_levels: canonical_scale must be a finite number, got nan"):
        fpn_levels(boxes, 2, 5, canonical_scale=float("nan"))
    with pytest.raises(ValueError, match=r"fpn_levels: level_max must be >= 5, got 2"):
        fpn_levels(boxes, 5, 2)
