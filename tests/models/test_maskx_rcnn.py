"""segnotes.models.maskx_rcnn: the weight transfer function and its input, stop-gradient, which
RoIs train the masks, masks for box-only classes, the switches, training stages, a short
partially supervised run, and bad input."""
import pytest
import torch
from torch import nn

import segnotes.models as models
from segnotes.models import mask_probabilities
from segnotes.models.maskx_rcnn import (
    FusedMaskMLP,
    MaskXPredictor,
    MaskXRCNN,
    MaskXRoIHeads,
    WeightTransfer,
    detection_weights,
    maskx_rcnn,
)

NUM_CLASSES = 10
MASK_CLASSES = (1,)  # labels 1 (masks) and 2 (box only) in the batch below


def square_sample(seed, size=128):
    """Image [3, S, S] with two bright squares, labels 1 and 2, their boxes and masks."""
    g = torch.Generator().manual_seed(seed)
    image = 0.3 * torch.rand(3, size, size, generator=g)
    corners = [(10 + 4 * seed, 20), (64, 60 + 4 * seed)]  # (y, x) of each square's top-left
    boxes, masks = [], torch.zeros(2, size, size, dtype=torch.uint8)
    for k, (y, x) in enumerate(corners):
        side = 40 - 10 * k
        masks[k, y : y + side, x : x + side] = 1
        image[k][masks[k].bool()] = 1.0  # class 1 red, class 2 green
        boxes.append([x, y, x + side, y + side])
    target = {"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.tensor([1, 2]), "masks": masks}
    return image, target


@pytest.fixture(scope="module")
def batch():
    images, targets = zip(*(square_sample(i) for i in range(2)))
    return list(images), list(targets)


@pytest.fixture(scope="module")
def model():
    """A model the tests only read."""
    torch.manual_seed(0)
    return maskx_rcnn(NUM_CLASSES, MASK_CLASSES)


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def losses_of(model, images, targets, seed=1):
    """The model's losses with a fixed RoI-sampling seed (the sampler draws from the global RNG)."""
    torch.manual_seed(seed)
    return model(images, targets)


def with_masks(targets, index, value):
    """Copies of ``targets`` whose instance ``index`` has its masks set to ``value`` in every image."""
    out = [dict(t) for t in targets]
    for t in out:
        t["masks"] = t["masks"].clone()
        t["masks"][index] = value
    return out


# ---------------------------------------------------------------------------------------------
# The weight transfer function and its input
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layers, linears", [(1, 1), (2, 2)])
def test_weight_transfer_shapes_and_init(layers, linears):
    torch.manual_seed(0)
    transfer = WeightTransfer(1280, 64, layers=layers, hidden=32)
    assert transfer(torch.randn(10, 1280)).shape == (10, 64)
    found = [m for m in transfer.modules() if isinstance(m, nn.Linear)]
    assert len(found) == linears and found[-1].out_features == 64
    if layers == 2:
        assert found[0].out_features == 32
        assert [m.negative_slope for m in transfer.modules() if isinstance(m, nn.LeakyReLU)] == [0.1]
    # near-zero w_seg at first, so the masks start uniform
    assert all((m.bias == 0).all() for m in found) and found[-1].weight.std() < 0.002


@pytest.mark.parametrize("transfer_input, width", [("cls", 256), ("box", 1024), ("cls+box", 1280)])
def test_detection_weights_are_the_predictor_rows(model, transfer_input, width):
    predictor = model.roi_heads.box_predictor
    w = detection_weights(predictor, transfer_input)
    assert w.shape == (NUM_CLASSES, width)
    w_cls, w_box = predictor.cls_score.weight, predictor.bbox_pred.weight  # [10, 256], [40, 256]
    for c in (0, 3, 9):
        rows = {"cls": [w_cls[c]], "box": list(w_box[4 * c : 4 * c + 4])}
        rows["cls+box"] = rows["cls"] + rows["box"]
        assert torch.equal(w[c], torch.cat(rows[transfer_input]))


@pytest.mark.parametrize("transfer_input, width", [("cls", 256), ("box", 1024), ("cls+box", 1280)])
def test_transfer_reads_the_chosen_input(transfer_input, width):
    m = maskx_rcnn(NUM_CLASSES, MASK_CLASSES, transfer_input=transfer_input)
    assert m.roi_heads.transfer.in_features == width and m.transfer_input == transfer_input
    assert m.roi_heads.segmentation_weights().shape == (NUM_CLASSES, 64)


@pytest.mark.parametrize("stop_gradient", [True, False])
def test_stop_gradient(batch, stop_gradient):
    torch.manual_seed(0)
    m = maskx_rcnn(NUM_CLASSES, MASK_CLASSES, stop_gradient=stop_gradient)
    losses_of(m, *batch)["loss_mask"].backward()
    predictor = m.roi_heads.box_predictor
    detector_grads = [predictor.cls_score.weight.grad, predictor.bbox_pred.weight.grad]
    reached = [g is not None and g.abs().sum() > 0 for g in detector_grads]
    assert reached == [not stop_gradient] * 2
    assert all(p.grad.abs().sum() > 0 for p in m.roi_heads.transfer.parameters())


# ---------------------------------------------------------------------------------------------
# Which RoIs train the masks
# ---------------------------------------------------------------------------------------------


def test_mask_rois_keep_mask_classes_with_valid_masks(model):
    labels = [torch.tensor([0, 1, 2, 1, 3, 1]), torch.tensor([1, 0])]
    matched = [torch.tensor([0, 0, 1, 2, 3, 0]), torch.tensor([0, 0])]
    targets = [{"mask_valid": torch.tensor([True, True, False, True])}, {}]
    keep = model.roi_heads.mask_rois(labels, matched, targets)
    assert keep[0].tolist() == [1, 5] and keep[1].tolist() == [0]  # RoI 3's ground truth 2 lacks a mask


def test_masks_outside_mask_classes_are_ignored(batch):
    images, targets = batch
    torch.manual_seed(0)
    m = maskx_rcnn(NUM_CLASSES, MASK_CLASSES)
    base = losses_of(m, images, targets)["loss_mask"]
    # instance 1 is class 2 (box only): its masks, right or wrong, never enter the loss
    for value in (0, 1):
        assert torch.equal(losses_of(m, images, with_masks(targets, 1, value))["loss_mask"], base)
    # while instance 0 (class 1) does: the test can fail
    assert not torch.equal(losses_of(m, images, with_masks(targets, 0, 0))["loss_mask"], base)
    # the box losses still see every class
    assert losses_of(m, images, targets)["loss_classifier"] > 0


def test_invalid_masks_are_ignored(batch):
    images, targets = batch
    torch.manual_seed(0)
    m = maskx_rcnn(NUM_CLASSES, MASK_CLASSES)
    base = losses_of(m, images, targets)["loss_mask"]
    flagged = [{**t, "mask_valid": torch.tensor([True, False])} for t in targets]  # class 2 invalid anyway
    assert torch.equal(losses_of(m, images, flagged)["loss_mask"], base)
    # with no valid mask of a mask class the loss is zero but keeps the graph
    none = [{**t, "mask_valid": torch.tensor([False, True])} for t in with_masks(targets, 0, 0)]
    loss = losses_of(m, images, none)["loss_mask"]
    assert loss.item() == 0 and loss.requires_grad
    loss.backward()
    assert all(p.grad is not None and (p.grad == 0).all() for p in m.roi_heads.transfer.parameters())


# ---------------------------------------------------------------------------------------------
# Masks for box-only classes
# ---------------------------------------------------------------------------------------------


def mask_inputs(model, images):
    """FPN features, image sizes and the mask head's input boxes (a few per image)."""
    with torch.no_grad():
        image_list, _ = model.transform(images)
        features = model.backbone(image_list.tensors)
    boxes = [torch.tensor([[10.0, 12, 60, 50], [64, 64, 100, 120]])] * len(images)
    return features, image_list.image_sizes, boxes


def test_box_only_class_mask_comes_from_its_detection_weights(batch):
    torch.manual_seed(0)
    m = maskx_rcnn(NUM_CLASSES, MASK_CLASSES)
    heads = m.roi_heads
    features, sizes, boxes = mask_inputs(m, batch[0][:1])
    with torch.no_grad():
        logits = heads._mask_logits(features, boxes, sizes)  # [2, 10, 28, 28]
        x = heads.mask_head(heads.mask_roi_pool(features, boxes, sizes))
        w_seg = heads.transfer(detection_weights(heads.box_predictor, "cls+box"))
        feat = torch.relu(heads.mask_predictor.conv5_mask(x))
        expected = torch.einsum("rchw,kc->rkhw", feat, w_seg) + heads.mask_predictor.mlp(x)
    assert logits.shape == (2, NUM_CLASSES, 28, 28)
    torch.testing.assert_close(logits, expected)
    probs = mask_probabilities(logits, [torch.tensor([2, 9])])[0]  # box-only classes
    assert probs.shape == (2, 1, 28, 28) and torch.isfinite(probs).all() and probs.std() > 0

    # changing class 2's detection weights changes class 2's masks only
    with torch.no_grad():
        heads.box_predictor.cls_score.weight[2] += 1.0
        after = heads._mask_logits(features, boxes, sizes)
    moved = (after - logits).abs().amax(dim=(0, 2, 3))  # [10]
    assert moved[2] > 0 and (moved[torch.arange(NUM_CLASSES) != 2] == 0).all()


def test_eval_gives_a_mask_to_every_detection(batch):
    torch.manual_seed(0)
    m = maskx_rcnn(NUM_CLASSES, MASK_CLASSES, box_score_thresh=0.0).eval()
    with torch.no_grad():
        out = m([batch[0][0], torch.rand(3, 75, 101)])
    labels = out[0]["labels"]
    d = labels.shape[0]
    assert 0 < d <= 20 and out[0]["masks"].shape == (d, 1, 128, 128)
    assert out[1]["masks"].shape[1:] == (1, 75, 101)
    assert any(lab not in MASK_CLASSES for lab in labels.tolist())  # box-only classes get masks too
    assert 0 <= out[0]["masks"].min() and out[0]["masks"].max() <= 1


# ---------------------------------------------------------------------------------------------
# Switches: class-agnostic baseline, fused MLP
# ---------------------------------------------------------------------------------------------


def count(module):
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("agnostic", [False, True])
@pytest.mark.parametrize("fused", [False, True])
def test_switches_change_the_mask_branch(batch, agnostic, fused):
    torch.manual_seed(0)
    m = maskx_rcnn(NUM_CLASSES, MASK_CLASSES, class_agnostic=agnostic, fused_mlp=fused, transfer_layers=1)
    heads, predictor = m.roi_heads, m.roi_heads.mask_predictor
    assert (m.class_agnostic, m.fused_mlp, heads.class_agnostic) == (agnostic, fused, agnostic)
    assert (heads.transfer is None) == agnostic and (predictor.mlp is None) != fused
    features, sizes, boxes = mask_inputs(m, batch[0][:1])
    with torch.no_grad():
        assert heads._mask_logits(features, boxes, sizes).shape == (2, 1 if agnostic else NUM_CLASSES, 28, 28)
    mlp = (64 * 4 + 4) + (784 * 784 + 784) if fused else 0  # 1x1 conv to 4 channels, fc 784 -> 784
    last = (64 + 1) if agnostic else (1280 * 64 + 64)  # the 1x1 logits conv, or T
    deconv = 64 * 64 * 4 + 64
    assert count(predictor) + (0 if agnostic else count(heads.transfer)) == deconv + last + mlp


def test_class_agnostic_ignores_transfer_settings():
    m = maskx_rcnn(NUM_CLASSES, MASK_CLASSES, class_agnostic=True, transfer_input="box", transfer_layers=1)
    assert m.roi_heads.transfer is None and m.roi_heads.segmentation_weights() is None


def test_fused_mlp_is_added_to_every_class():
    torch.manual_seed(0)
    predictor = MaskXPredictor(8, 6, fused_mlp=True, resolution=14)
    x, w_seg = torch.rand(3, 8, 14, 14), torch.randn(5, 6)
    with torch.no_grad():
        nn.init.normal_(predictor.mlp.fc.weight, std=0.1)  # make the branch's output visible
        fused = predictor(x, w_seg)
        branch = predictor.mlp(x)  # [3, 1, 28, 28]
        nn.init.zeros_(predictor.mlp.fc.weight)
        nn.init.zeros_(predictor.mlp.fc.bias)
        fcn_only = predictor(x, w_seg)
    assert branch.shape == (3, 1, 28, 28) and branch.abs().max() > 0.1
    torch.testing.assert_close(fused - fcn_only, branch.expand(-1, 5, -1, -1))
    torch.testing.assert_close(fcn_only, torch.einsum("rchw,kc->rkhw", torch.relu(predictor.conv5_mask(x)), w_seg))


def test_fused_mlp_starts_near_zero():
    torch.manual_seed(0)
    mlp = FusedMaskMLP(64)
    assert mlp(torch.rand(2, 64, 14, 14)).abs().max() < 0.05


# ---------------------------------------------------------------------------------------------
# Training stages
# ---------------------------------------------------------------------------------------------


def batchnorms(module):
    return [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]


def test_mask_stage_trains_only_the_mask_branch(batch):
    torch.manual_seed(0)
    m = maskx_rcnn(NUM_CLASSES, MASK_CLASSES)
    assert m.set_stage("mask") is m and m.stage == "mask" and m.roi_heads.stage == "mask"
    mask_ids = {id(p) for p in m.mask_parameters()}
    trainable = {id(p) for p in m.parameters() if p.requires_grad}
    assert trainable == mask_ids and len(mask_ids) > 0
    m.eval().train()
    assert not any(bn.training for bn in batchnorms(m.backbone))  # the frozen detector's statistics
    assert m.rpn.training and m.roi_heads.training and m.roi_heads.mask_head.training
    stats = [bn.running_mean.clone() for bn in batchnorms(m.backbone)]
    losses = losses_of(m, *batch)
    assert len(losses) == 5
    assert [name for name, v in losses.items() if v.requires_grad] == ["loss_mask"]
    sum(losses.values()).backward()
    assert all(p.grad is None for p in m.parameters() if id(p) not in mask_ids)
    assert all(p.grad is not None for p in m.mask_parameters())
    assert all(torch.equal(a, bn.running_mean) for a, bn in zip(stats, batchnorms(m.backbone)))

    m.set_stage("joint")
    assert all(p.requires_grad for p in m.parameters()) and all(bn.training for bn in batchnorms(m))


def test_detector_stage_has_no_mask_loss(batch):
    torch.manual_seed(0)
    m = maskx_rcnn(NUM_CLASSES, MASK_CLASSES).set_stage("detector")
    losses = losses_of(m, *batch)
    assert sorted(losses) == ["loss_box_reg", "loss_classifier", "loss_objectness", "loss_rpn_box_reg"]
    sum(losses.values()).backward()
    assert all(p.grad is None for p in m.mask_parameters())
    assert m.roi_heads.box_predictor.cls_score.weight.grad is not None
    m.eval()
    with torch.no_grad():
        assert "masks" in m([batch[0][0]])[0]


def test_stages_keep_parameters_frozen_at_build():
    backbone = models.tiny_resnet_fpn_backbone()
    backbone.body.conv1.weight.requires_grad_(False)  # e.g. a pretrained stem
    m = MaskXRCNN(backbone, NUM_CLASSES, MASK_CLASSES)
    for stage in ("mask", "joint", "detector"):
        m.set_stage(stage)
        assert not m.backbone.body.conv1.weight.requires_grad


# ---------------------------------------------------------------------------------------------
# A short partially supervised run
# ---------------------------------------------------------------------------------------------


def test_short_partial_training_lowers_the_losses(batch):
    images, targets = batch
    torch.manual_seed(0)
    m = maskx_rcnn(NUM_CLASSES, MASK_CLASSES)
    optimizer = torch.optim.AdamW(m.parameters(), lr=1e-3)
    history = []
    for step in range(25):
        losses = losses_of(m, images, targets, seed=100 + step)
        total = sum(losses.values())
        history.append((total.item(), losses["loss_mask"].item()))
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
    (total0, mask0), (total1, mask1) = history[0], history[-1]
    assert abs(mask0 - 0.693) < 0.02  # log 2: the masks start uniform
    assert total1 < 0.3 * total0 and mask1 < 0.6 * mask0, history


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"mask_classes": ()}, ValueError, "maskx_rcnn: mask_classes must name at least one class"),
        ({"mask_classes": (0, 1)}, ValueError, "maskx_rcnn: mask_classes must not contain 0, the background"),
        ({"mask_classes": (1, 2, 1)}, ValueError, r"mask_classes must not repeat a class, got \[1, 2, 1\]"),
        ({"mask_classes": (1, 10)}, ValueError, r"mask_classes must be a subset of 1..9 .*\[10\] out of range"),
        ({"mask_classes": (-1,)}, ValueError, r"mask_classes must be a subset of 1..9"),
        ({"mask_classes": ("1",)}, TypeError, "mask_classes must hold int class ids"),
        ({"mask_classes": 1}, TypeError, "mask_classes must be a sequence of class ids"),
        ({"transfer_input": "glove"}, ValueError, "maskx_rcnn: transfer_input must be one of"),
        ({"transfer_layers": 0}, ValueError, r"maskx_rcnn: transfer_layers must be one of \[1, 2\], got 0"),
        ({"transfer_layers": 3}, ValueError, r"maskx_rcnn: transfer_layers must be one of \[1, 2\], got 3"),
        ({"transfer_layers": 2.0}, TypeError, "maskx_rcnn: transfer_layers must be an int"),
        ({"transfer_hidden": 0}, ValueError, "maskx_rcnn: transfer_hidden must be >= 1"),
        ({"num_classes": 1, "mask_classes": (1,)}, ValueError, "maskx_rcnn: num_classes must be >= 2"),
        ({"mask_loss": "softmax"}, ValueError, "maskx_rcnn: mask_loss cannot be set"),
        ({"roi_op": "warp"}, ValueError, "maskx_rcnn: roi_op must be one of"),
        ({"backbone": "vgg16"}, ValueError, "maskx_rcnn: backbone must be one of"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        maskx_rcnn(**{"num_classes": NUM_CLASSES, "mask_classes": MASK_CLASSES, **kwargs})


def test_bad_stage(model):
    with pytest.raises(ValueError, match=r"MaskXRCNN.set_stage: stage must be one of \['joint', 'detector', 'mask'\]"):
        model.set_stage("finetune")
    assert model.stage == "joint"


@pytest.mark.parametrize(
    "valid, error, match",
    [
        (torch.tensor([1, 0]), TypeError, r'MaskXRCNN: targets\[0\]\["mask_valid"\] must have dtype torch.bool'),
        (torch.tensor([True]), ValueError, r'targets\[0\]\["mask_valid"\] must have one flag per box \(2 boxes\)'),
    ],
)
def test_bad_mask_valid(batch, valid, error, match):
    images, targets = batch
    m = maskx_rcnn(NUM_CLASSES, MASK_CLASSES)
    with pytest.raises(error, match=match):
        m(images, [{**targets[0], "mask_valid": valid}, targets[1]])


def test_bad_predictor_weight():
    predictor = MaskXPredictor(8, 6, fused_mlp=False)
    with pytest.raises(ValueError, match=r"MaskXPredictor: weight must be Tensor\[K, 6\] \(w_seg\), got NoneType"):
        predictor(torch.rand(1, 8, 14, 14))
    with pytest.raises(ValueError, match=r"MaskXPredictor: weight must have last dimension 6"):
        predictor(torch.rand(1, 8, 14, 14), torch.rand(3, 5))
    with pytest.raises(ValueError, match=r"FusedMaskMLP: x must be \[R, C, 14, 14\]"):
        FusedMaskMLP(8)(torch.rand(1, 8, 7, 7))


def test_exported_from_subpackage():
    for name in ("MaskXRCNN", "MaskXRoIHeads", "MaskXPredictor", "FusedMaskMLP", "WeightTransfer",
                 "detection_weights", "maskx_rcnn"):
        assert name in models.__all__ and hasattr(models, name)
    assert issubclass(MaskXRCNN, models.MaskRCNN) and issubclass(MaskXRoIHeads, models.MaskRoIHeads)
