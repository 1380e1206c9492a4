"""segnotes.models.mask_rcnn: switches, mask losses against hand computations and torchvision,
the model's inputs and outputs, a short training run, and bad input."""
import copy
import importlib
import math
from urllib.error import URLError

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torchvision.models import ResNet50_Weights
from torchvision.models.detection.roi_heads import maskrcnn_loss, project_masks_on_boxes
from torchvision.ops import MultiScaleRoIAlign

import segnotes.models as models
from segnotes.data import render
from segnotes.models.mask_rcnn import (
    MaskRCNN,
    MaskRoIHeads,
    mask_probabilities,
    mask_rcnn,
    mask_rcnn_loss,
    tiny_resnet_fpn_backbone,
)
from segnotes.ops import MultiScaleRoIPool

NUM_CLASSES = 10


def rendered_sample(index, image_size=128):
    """Image [3, S, S] in [0, 1] and its target from the shapes renderer (no files needed)."""
    r = render(0, "train", index, image_size=image_size)
    image = torch.from_numpy(r.image).permute(2, 0, 1).float() / 255  # [3, S, S]
    masks = torch.stack([torch.from_numpy(r.owners == k) for k in range(1, len(r.category_ids) + 1)])  # [N, S, S]
    boxes = []
    for mask in masks:
        ys, xs = torch.where(mask)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    target = {
        "boxes": torch.tensor(boxes, dtype=torch.float32),
        "labels": torch.tensor(r.category_ids, dtype=torch.int64),
        "masks": masks.to(torch.uint8),
    }
    return image, target


@pytest.fixture(scope="module")
def batch():
    images, targets = zip(*(rendered_sample(i) for i in range(2)))
    return list(images), list(targets)


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def empty_target(size=128):
    return {
        "boxes": torch.zeros(0, 4),
        "labels": torch.zeros(0, dtype=torch.int64),
        "masks": torch.zeros(0, size, size, dtype=torch.uint8),
    }


# ---------------------------------------------------------------------------------------------
# Building: backbone, switches, overrides
# ---------------------------------------------------------------------------------------------


def test_tiny_backbone_levels_and_size():
    torch.manual_seed(0)
    backbone = tiny_resnet_fpn_backbone().eval()
    with torch.no_grad():
        features = backbone(torch.rand(1, 3, 128, 96))
    assert list(features) == ["0", "1", "2", "3", "pool"]
    assert [tuple(f.shape[-2:]) for f in features.values()] == [(32, 24), (16, 12), (8, 6), (4, 3), (2, 2)]
    assert all(f.shape[1] == 64 for f in features.values()) and backbone.out_channels == 64
    model = mask_rcnn(NUM_CLASSES)
    assert 2e6 < sum(p.numel() for p in model.parameters()) < 3e6
    assert model.transform.min_size == (128,) and model.transform.max_size == 128
    assert model.roi_heads.detections_per_img == 20
    assert model.roi_heads.fg_bg_sampler.batch_size_per_image == 128
    assert model.rpn.anchor_generator.sizes == ((8,), (16,), (32,), (64,), (128,))
    assert model.roi_heads.box_head.fc7.out_features == 256


@pytest.mark.parametrize("roi_op", ["align", "pool"])
@pytest.mark.parametrize(
    "mask_loss, agnostic, channels",
    [("sigmoid", False, NUM_CLASSES), ("softmax", False, NUM_CLASSES), ("sigmoid", True, 1), ("softmax", True, 2)],
)
def test_switches_change_the_model(roi_op, mask_loss, agnostic, channels):
    model = mask_rcnn(NUM_CLASSES, roi_op=roi_op, mask_loss=mask_loss, class_agnostic_masks=agnostic)
    assert isinstance(model, MaskRCNN) and isinstance(model, torchvision.models.detection.MaskRCNN)
    assert (model.num_classes, model.roi_op, model.mask_loss, model.class_agnostic_masks) == (
        NUM_CLASSES, roi_op, mask_loss, agnostic,
    )
    heads = model.roi_heads
    assert isinstance(heads, MaskRoIHeads) and (heads.mask_loss, heads.class_agnostic) == (mask_loss, agnostic)
    for pooler, size in ((heads.box_roi_pool, (7, 7)), (heads.mask_roi_pool, (14, 14))):
        assert isinstance(pooler, MultiScaleRoIPool)
        assert (pooler.roi_op, pooler.aligned, pooler.output_size) == (roi_op, roi_op == "align", size)
        assert (pooler.canonical_scale, pooler.sampling_ratio) == (112, 2)
    assert heads.mask_predictor.mask_fcn_logits.out_channels == channels
    assert heads.box_predictor.cls_score.out_features == NUM_CLASSES


def test_kwargs_override_defaults():
    model = mask_rcnn(
        3, min_size=96, max_size=160, canonical_scale=56, box_detections_per_img=7, rpn_post_nms_top_n_test=50
    )
    assert model.transform.min_size == (96,) and model.transform.max_size == 160
    assert model.roi_heads.box_roi_pool.canonical_scale == 56 and model.roi_heads.mask_roi_pool.canonical_scale == 56
    assert model.roi_heads.detections_per_img == 7 and model.rpn._post_nms_top_n["testing"] == 50
    # a torchvision pooler is accepted too
    model = mask_rcnn(3, box_roi_pool=MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2))
    assert isinstance(model.roi_heads.box_roi_pool, MultiScaleRoIAlign)


def test_exported_from_subpackage():
    # segnotes.models.mask_rcnn is the function once the package re-exports it (as with fcn)
    mask_rcnn_module = importlib.import_module("segnotes.models.mask_rcnn")
    for name in mask_rcnn_module.__all__:
        assert getattr(models, name) is getattr(mask_rcnn_module, name)
        assert name in models.__all__


def test_resnet50_fpn_builds_with_torchvision_defaults():
    model = mask_rcnn(NUM_CLASSES, "resnet50_fpn")
    assert model.backbone.out_channels == 256
    assert model.transform.min_size == (800,) and model.transform.max_size == 1333
    assert model.roi_heads.box_roi_pool.canonical_scale == 224
    assert model.roi_heads.box_head.fc7.out_features == 1024
    assert model.roi_heads.mask_predictor.conv5_mask.in_channels == 256
    assert model.roi_heads.mask_predictor.mask_fcn_logits.out_channels == NUM_CLASSES
    assert all(p.requires_grad for p in model.backbone.body.parameters())  # from scratch: all trainable


def test_resnet50_pretrained_offline_error(monkeypatch):
    weights = ResNet50_Weights.IMAGENET1K_V1

    def offline(*args, **kwargs):
        raise URLError("no network")

    monkeypatch.setattr(weights, "get_state_dict", offline)
    with pytest.raises(RuntimeError) as info:
        mask_rcnn(NUM_CLASSES, "resnet50_fpn", pretrained_backbone=True)
    message = str(info.value)
    assert weights.url in message  # from where
    assert "checkpoints" in message and weights.url.rsplit("/", 1)[1] in message  # into which file
    assert "TORCH_HOME" in message and "pretrained_backbone=False" in message


# ---------------------------------------------------------------------------------------------
# The mask loss and probabilities
# ---------------------------------------------------------------------------------------------


def random_mask_problem(seed, num_classes=NUM_CLASSES, channels=None, m=8):
    """Two images' positive RoIs, GT masks and labels, and random logits [K, C, m, m]."""
    g = torch.Generator().manual_seed(seed)
    gt_masks = [(torch.rand(n, 40, 48, generator=g) > 0.5).to(torch.uint8) for n in (3, 2)]
    gt_labels = [torch.randint(1, num_classes, (3,), generator=g), torch.randint(1, num_classes, (2,), generator=g)]
    proposals, matched = [], []
    for count, n_gt in ((5, 3), (4, 2)):
        corner = torch.rand(count, 2, generator=g) * 20
        proposals.append(torch.cat([corner, corner + 5 + torch.rand(count, 2, generator=g) * 20], dim=1))
        matched.append(torch.randint(0, n_gt, (count,), generator=g))
    logits = torch.randn(9, channels or num_classes, m, m, generator=g, dtype=torch.float64).requires_grad_()
    return logits, proposals, gt_masks, gt_labels, matched


def test_sigmoid_loss_matches_torchvision():
    logits, proposals, gt_masks, gt_labels, matched = random_mask_problem(0)
    ours = mask_rcnn_loss(logits.float(), proposals, gt_masks, gt_labels, matched)
    expected = maskrcnn_loss(logits.float(), proposals, gt_masks, gt_labels, matched)
    torch.testing.assert_close(ours, expected)


def test_losses_by_hand_on_a_full_mask():
    # The RoI lies inside the object, so every target pixel is exactly 1.
    gt_masks = [torch.zeros(1, 12, 12, dtype=torch.uint8)]
    gt_masks[0][0, :8, :8] = 1
    args = ([torch.tensor([[1.0, 1.0, 5.0, 5.0]])], gt_masks, [torch.tensor([2])], [torch.tensor([0])])
    a = torch.tensor([0.5, -1.0, 2.0])  # logits of channels 0, 1, 2, constant over the 4 x 4 mask
    logits = a[None, :, None, None].expand(1, 3, 4, 4)
    assert torch.equal(project_masks_on_boxes(gt_masks[0], args[0][0], args[3][0], 4), torch.ones(1, 4, 4))
    # sigmoid: -log sigmoid(a_2) = softplus(-a_2)
    torch.testing.assert_close(mask_rcnn_loss(logits, *args), torch.tensor(math.log1p(math.exp(-2.0))))
    # softmax: -log(e^{a_2} / sum_c e^{a_c})
    expected = -math.log(math.exp(2.0) / sum(math.exp(v) for v in a.tolist()))
    torch.testing.assert_close(mask_rcnn_loss(logits, *args, loss="softmax"), torch.tensor(expected))
    # agnostic: channel 0 (sigmoid), channel 1 "object" against channel 0 (softmax)
    torch.testing.assert_close(
        mask_rcnn_loss(logits[:, :1], *args, class_agnostic=True), torch.tensor(math.log1p(math.exp(-0.5)))
    )
    expected = -math.log(math.exp(-1.0) / (math.exp(0.5) + math.exp(-1.0)))
    value = mask_rcnn_loss(logits[:, :2], *args, loss="softmax", class_agnostic=True)
    torch.testing.assert_close(value, torch.tensor(expected))


def test_softmax_loss_with_soft_targets_by_formula():
    logits, proposals, gt_masks, gt_labels, matched = random_mask_problem(1)
    t = torch.cat([project_masks_on_boxes(g, p, i, 8) for g, p, i in zip(gt_masks, proposals, matched)]).double()
    assert ((t > 0) & (t < 1)).any()  # fractional targets at the borders are exercised
    k = torch.cat([lab[i] for lab, i in zip(gt_labels, matched)])
    p = logits.softmax(dim=1)
    expected = -(t * p[torch.arange(9), k].log() + (1 - t) * p[:, 0].log()).mean()
    softmax = mask_rcnn_loss(logits, proposals, gt_masks, gt_labels, matched, loss="softmax")
    torch.testing.assert_close(softmax, expected)
    sigmoid = mask_rcnn_loss(logits, proposals, gt_masks, gt_labels, matched, loss="sigmoid")
    assert not torch.isclose(sigmoid, expected)  # the two losses differ on the same logits
    # softmax gradients reach every channel; sigmoid gradients only the GT class's
    (grad_sigmoid,) = torch.autograd.grad(sigmoid, logits)
    touched = grad_sigmoid.abs().sum(dim=(2, 3)) > 0  # [K, C]
    assert torch.equal(touched, F.one_hot(k, NUM_CLASSES).bool())
    (grad_softmax,) = torch.autograd.grad(expected, logits)
    assert (grad_softmax.abs().sum(dim=(2, 3)) > 0).all()


def test_two_channel_softmax_is_sigmoid_of_the_difference():
    logits, proposals, gt_masks, gt_labels, matched = random_mask_problem(2, channels=2)
    softmax = mask_rcnn_loss(logits, proposals, gt_masks, gt_labels, matched, loss="softmax", class_agnostic=True)
    difference = (logits[:, 1] - logits[:, 0])[:, None]  # [K, 1, M, M]
    sigmoid = mask_rcnn_loss(difference, proposals, gt_masks, gt_labels, matched, loss="sigmoid", class_agnostic=True)
    torch.testing.assert_close(softmax, sigmoid)


@pytest.mark.parametrize("loss, channels", [("sigmoid", NUM_CLASSES), ("softmax", NUM_CLASSES), ("softmax", 2)])
def test_no_positive_roi_gives_zero_loss_with_grad(loss, channels):
    logits = torch.randn(0, channels, 28, 28, requires_grad=True)
    empty = [torch.zeros(0, 4), torch.zeros(0, 4)]
    gt_masks = [torch.zeros(0, 32, 32, dtype=torch.uint8), torch.ones(1, 32, 32, dtype=torch.uint8)]
    gt_labels = [torch.zeros(0, dtype=torch.int64), torch.tensor([3])]
    matched = [torch.zeros(0, dtype=torch.int64)] * 2
    value = mask_rcnn_loss(logits, empty, gt_masks, gt_labels, matched, loss=loss, class_agnostic=channels == 2)
    assert value.item() == 0 and value.grad_fn is not None
    value.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_mask_probabilities():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(5, 4, 6, 6, generator=g)
    labels = [torch.tensor([1, 3]), torch.tensor([2, 2, 1])]
    flat = torch.cat(labels)
    out = mask_probabilities(logits, labels)
    assert [o.shape for o in out] == [(2, 1, 6, 6), (3, 1, 6, 6)]
    torch.testing.assert_close(torch.cat(out)[:, 0], logits[torch.arange(5), flat].sigmoid())
    out = mask_probabilities(logits, labels, loss="softmax")
    torch.testing.assert_close(torch.cat(out)[:, 0], logits.softmax(1)[torch.arange(5), flat])
    out = mask_probabilities(logits[:, :1], labels, class_agnostic=True)
    torch.testing.assert_close(torch.cat(out)[:, 0], logits[:, 0].sigmoid())
    out = mask_probabilities(logits[:, :2], labels, loss="softmax", class_agnostic=True)
    torch.testing.assert_close(torch.cat(out)[:, 0], logits[:, :2].softmax(1)[:, 1])


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda lg, a: mask_rcnn_loss(lg, *a, loss="hinge"), ValueError, "mask_rcnn_loss: loss must be one of"),
        (lambda lg, a: mask_rcnn_loss(lg[:, 0], *a), ValueError, "mask_rcnn_loss: mask_logits must be 4-D"),
        (lambda lg, a: mask_rcnn_loss(lg, *a, class_agnostic=True), ValueError, "need mask_logits with 1 channel"),
        (lambda lg, a: mask_rcnn_loss(lg[:, :4], *a), ValueError, "gt_labels must be < the 4 mask channels"),
        (lambda lg, a: mask_rcnn_loss(lg[:3], *a), ValueError, "one row per proposal"),
        (lambda lg, a: mask_rcnn_loss(lg, a[0], a[1][:1], a[2], a[3]), ValueError, "one entry per image"),
        (lambda lg, a: mask_probabilities(lg, a[2][0]), TypeError, "mask_probabilities: labels must be a list"),
        (lambda lg, a: mask_probabilities(lg, [a[2][0]]), ValueError, "one row per label"),
    ],
)
def test_loss_bad_input(call, error, match):
    logits, proposals, gt_masks, gt_labels, matched = random_mask_problem(4)
    gt_labels = [torch.tensor([4, 5, 9]), torch.tensor([7, 8])]
    with pytest.raises(error, match=match):
        call(logits.detach().float(), (proposals, gt_masks, gt_labels, matched))


# ---------------------------------------------------------------------------------------------
# The model: pooler levels, train and eval outputs, training, empty images, bad input
# ---------------------------------------------------------------------------------------------


def test_box_pooler_levels_match_torchvision():
    torch.manual_seed(0)
    model = mask_rcnn(NUM_CLASSES).eval()
    with torch.no_grad():
        features = model.backbone(torch.rand(1, 3, 128, 128))
    sizes = torch.tensor([8.0, 12, 20, 30, 45, 60, 80, 110, 127])
    boxes = [torch.stack([torch.zeros_like(sizes), 128 - sizes, sizes, 128 * torch.ones_like(sizes)], dim=1)]
    reference = MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2, canonical_scale=112)
    reference(features, boxes, [(128, 128)])  # sets its scales and level mapper on the first call
    levels = reference.map_levels(boxes)
    # With s0 = 112, 8-127 px RoIs use levels '0'-'2'; '3' (stride 32) starts at 224 px.
    assert levels.tolist() == [0, 0, 0, 0, 0, 1, 1, 1, 2]
    ours = model.roi_heads.box_roi_pool(features, boxes, [(128, 128)])
    for j, level in enumerate(levels.tolist()):
        expected = torchvision.ops.roi_align(
            features[str(level)], [boxes[0][j : j + 1]], 7, reference.scales[level], 2, aligned=True
        )
        torch.testing.assert_close(ours[j : j + 1], expected, atol=1e-5, rtol=1e-5)


def test_train_mode_returns_the_losses(batch):
    torch.manual_seed(0)
    model = mask_rcnn(NUM_CLASSES, mask_loss="softmax", class_agnostic_masks=True)
    losses = model(*batch)
    names = ["loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg"]
    assert sorted(losses) == sorted(names)
    assert all(v.ndim == 0 and torch.isfinite(v) for v in losses.values())
    assert abs(losses["loss_mask"].item() - math.log(2)) < 0.05  # small init: a uniform start
    sum(losses.values()).backward()
    assert model.roi_heads.mask_predictor.mask_fcn_logits.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("mask_loss, agnostic", [("sigmoid", False), ("softmax", True)])
def test_eval_output_on_odd_non_square_image(mask_loss, agnostic):
    torch.manual_seed(0)
    model = mask_rcnn(NUM_CLASSES, mask_loss=mask_loss, class_agnostic_masks=agnostic, box_score_thresh=0.0).eval()
    with torch.no_grad():
        out = model([torch.rand(3, 75, 101), torch.rand(3, 64, 64)])
    assert len(out) == 2 and sorted(out[0]) == ["boxes", "labels", "masks", "scores"]
    d = out[0]["boxes"].shape[0]
    assert 0 < d <= 20
    assert out[0]["masks"].shape == (d, 1, 75, 101) and out[0]["masks"].dtype == torch.float32
    assert out[1]["masks"].shape[1:] == (1, 64, 64)
    assert 0 <= out[0]["masks"].min() and out[0]["masks"].max() <= 1
    assert out[0]["labels"].dtype == torch.int64 and out[0]["labels"].min() >= 1
    assert (out[0]["boxes"][:, 2] <= 101).all() and (out[0]["boxes"][:, 3] <= 75).all()


def comparable_losses(model, images, targets, proposals):
    """The five losses of ``model`` on fixed RoI proposals with a fixed sampling seed.

    The losses of the training run itself are not comparable from step to step for the box
    branch: at first the RPN finds almost nothing, so the only positive RoIs are the ground-truth
    boxes added to the proposals, whose regression targets are 0 (``loss_box_reg`` starts near 0
    and rises as the RPN improves). Scoring the initial and the trained model on the same
    proposals removes that effect.
    """
    torch.manual_seed(1)
    image_list, targets = model.transform(images, targets)
    features = model.backbone(image_list.tensors)
    _, losses = model.rpn(image_list, features, targets)
    _, head_losses = model.roi_heads(features, proposals, image_list.image_sizes, targets)
    return {**losses, **head_losses}


def test_short_training_lowers_every_loss(batch):
    images, targets = batch
    torch.manual_seed(0)
    model = mask_rcnn(NUM_CLASSES)
    initial = copy.deepcopy(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(30):
        loss = sum(model(images, targets).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        image_list, resized = model.transform(images, targets)
        proposals, _ = model.rpn(image_list, model.backbone(image_list.tensors), resized)
        before = comparable_losses(initial, images, targets, proposals)
        after = comparable_losses(model, images, targets, proposals)
    for name in before:
        assert after[name] < 0.8 * before[name], (name, before[name].item(), after[name].item())


def test_images_without_objects_train(batch):
    images, targets = batch
    torch.manual_seed(0)
    model = mask_rcnn(NUM_CLASSES)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    for pair in ([images[0], torch.rand(3, 128, 128)], [torch.rand(3, 128, 128), torch.rand(3, 128, 128)]):
        pair_targets = [targets[0], empty_target()] if pair[0] is images[0] else [empty_target(), empty_target()]
        losses = model(pair, pair_targets)
        assert all(torch.isfinite(v) for v in losses.values())
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
    assert losses["loss_mask"].item() == 0 and losses["loss_box_reg"].item() == 0


def bad(i, key, value):
    """The fixture batch's targets with ``targets[i][key]`` replaced (or removed if None)."""
    def make(targets):
        targets = [dict(t) for t in targets]
        if value is None:
            del targets[i][key]
        else:
            targets[i][key] = value(targets[i]) if callable(value) else value
        return targets
    return make


def swap_x(t):
    boxes = t["boxes"].clone()
    boxes[1, [0, 2]] = boxes[1, [2, 0]]
    return boxes


@pytest.mark.parametrize(
    "make_targets, error, match",
    [
        (lambda t: None, ValueError, "MaskRCNN: targets must be given in train mode"),
        (lambda t: t[:1], ValueError, "targets must be a list of 2 dicts"),
        (bad(1, "masks", None), ValueError, r'targets\[1\] must have a "masks" entry'),
        (bad(0, "masks", lambda t: t["masks"][:, :, :100]), ValueError,
         r'targets\[0\]\["masks"\] must be \[N, H, W\] with the image'),
        (bad(0, "boxes", lambda t: t["boxes"][:, :3]), ValueError,
         r'targets\[0\]\["boxes"\] must have last dimension 4'),
        (bad(0, "boxes", lambda t: t["boxes"][0]), ValueError, r'targets\[0\]\["boxes"\] must be 2-D'),
        (bad(1, "boxes", swap_x), ValueError, r'targets\[1\]\["boxes"\] must have x2 > x1 and y2 > y1.*box 1'),
        (bad(0, "labels", lambda t: t["labels"] * 0), ValueError, r'targets\[0\]\["labels"\] must be in \[1, 10\)'),
        (bad(1, "labels", lambda t: t["labels"] + 9), ValueError, r'targets\[1\]\["labels"\] must be in \[1, 10\)'),
        (bad(0, "labels", lambda t: t["labels"].int()), TypeError,
         r'targets\[0\]\["labels"\] must have dtype torch.int64'),
        (bad(0, "labels", lambda t: t["labels"][:2]), ValueError, "one label and one mask per box"),
    ],
)
def test_bad_training_input(batch, make_targets, error, match):
    model = mask_rcnn(NUM_CLASSES)
    with pytest.raises(error, match=match):
        model(batch[0], make_targets(batch[1]))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"backbone": "vgg16"}, "mask_rcnn: backbone must be one of"),
        ({"roi_op": "warp"}, "mask_rcnn: roi_op must be one of"),
        ({"mask_loss": "dice"}, "mask_rcnn: mask_loss must be one of"),
        ({"num_classes": 1}, "mask_rcnn: num_classes must be >= 2"),
        ({"pretrained_backbone": True}, "no pretrained weights for tiny_resnet_fpn"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        mask_rcnn(**{"num_classes": NUM_CLASSES, **kwargs})


def test_trains_and_infers_on_device(batch, device):
    images = [im.to(device) for im in batch[0]]
    targets = [{k: v.to(device) for k, v in t.items()} for t in batch[1]]
    torch.manual_seed(0)
    model = mask_rcnn(NUM_CLASSES, mask_loss="softmax", box_score_thresh=0.0).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(2):
        losses = model(images, targets)
        assert all(v.device.type == device and torch.isfinite(v) for v in losses.values())
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        out = model([images[0][:, :75, :101]])[0]
    assert out["masks"].device.type == device and out["masks"].shape[1:] == (1, 75, 101)
    # the free functions give the same numbers on every device
    logits, proposals, gt_masks, gt_labels, matched = random_mask_problem(5)
    on = [[x.to(device) for x in arg] for arg in (proposals, gt_masks, gt_labels, matched)]
    for loss in ("sigmoid", "softmax"):
        expected = mask_rcnn_loss(logits, proposals, gt_masks, gt_labels, matched, loss=loss)
        torch.testing.assert_close(mask_rcnn_loss(logits.to(device), *on, loss=loss).cpu(), expected)
        labels = [lab[i] for lab, i in zip(gt_labels, matched)]  # one per RoI
        probs = mask_probabilities(logits.to(device), [lab.to(device) for lab in labels], loss=loss)
        torch.testing.assert_close(torch.cat(probs).cpu(), torch.cat(mask_probabilities(logits, labels, loss=loss)))


def test_trains_and_infers_under_autocast(batch, device):
    # Mixed precision (the engine's amp=True on CUDA): half-precision features meet float32
    # proposals in the RoI poolers, which compute in float32 as torchvision's do.
    half = {"cpu": torch.bfloat16, "cuda": torch.float16}[device]
    images = [im.to(device) for im in batch[0]]
    targets = [{k: v.to(device) for k, v in t.items()} for t in batch[1]]
    torch.manual_seed(0)
    model = mask_rcnn(NUM_CLASSES, box_score_thresh=0.0).to(device)
    with torch.autocast(device, dtype=half):
        losses = model(images, targets)
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert model.roi_heads.mask_predictor.mask_fcn_logits.weight.grad.isfinite().all()
    model.eval()
    with torch.no_grad(), torch.autocast(device, dtype=half):
        out = model([images[0]])[0]
    assert out["masks"].shape[1:] == (1, *images[0].shape[1:]) and out["masks"].isfinite().all()


# ------------------------------------------------------------------ issue 22, finding 6


def _box(i, j, value):
    def change(t):
        boxes = t["boxes"].clone()
        boxes[j] = torch.tensor(value)
        return boxes
    return bad(i, "boxes", change)


@pytest.mark.parametrize(
    "make_images, make_targets, match",
    [
        # a 1-channel image was accepted (the transform's 3-channel normalisation broadcasts it)
        (lambda images: [images[0][:1], images[1]], lambda t: t,
         r"MaskRCNN: images\[0\] must be an RGB Tensor\[3, H, W\], got Tensor of shape \(1, 128, 128\)"),
        # 0/255 masks trained towards 255 (loss_mask 3.17 instead of 0.70)
        (lambda images: images, bad(1, "masks", lambda t: t["masks"] * 255),
         r'MaskRCNN: targets\[1\]\["masks"\] must hold 0 and 1 \(or be bool\), got values up to 255'),
        # NaN passed the x2 > x1 check and gave NaN losses
        (lambda images: images, _box(0, 1, [float("nan"), 10.0, 30.0, 30.0]),
         r'targets\[0\]\["boxes"\] must have x2 > x1 and y2 > y1 \(x1, y1, x2, y2 with positive width and height\), '
         r"all finite, got box 1 = \[nan, 10.0, 30.0, 30.0\]"),
        (lambda images: images, _box(0, 0, [10.0, 10.0, float("inf"), 30.0]), r"all finite, got box 0"),
        # a 1e6-pixel box failed with "cannot create std::vector larger than max_size()" (or bad_alloc)
        (lambda images: images, _box(1, 0, [10.0, 10.0, 1e6, 1e6]),
         r'targets\[1\]\["boxes"\] must lie within one image size of the image \(x in \[-128, 256\], '
         r"y in \[-128, 256\] for this 128 x 128 image\), got box 0 = \[10.0, 10.0, 1000000.0, 1000000.0\]"),
    ],
)
def test_targets_that_train_silently_wrong_or_crash_are_refused(batch, make_images, make_targets, match):
    model = mask_rcnn(NUM_CLASSES)
    with pytest.raises(ValueError, match=match):
        model(make_images(batch[0]), make_targets(batch[1]))
