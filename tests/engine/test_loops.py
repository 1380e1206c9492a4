import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from segnotes.engine import (
    TrainConfig,
    Trainer,
    detection_step,
    evaluate_semantic,
    load_checkpoint,
    semantic_loss,
)
from segnotes.metrics.confusion import confusion_matrix, segmentation_scores
from segnotes.models import fcn



def rectangles(n, size=48, seed=0, ignore_border=False):
    """Images of two coloured rectangles on dark noise; labels 1 (red) and 2 (green), background 0."""
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 3, size, size, generator=g) * 0.3
    targets = torch.zeros(n, size, size, dtype=torch.int64)
    colours = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    for i in range(n):
        for label in (1, 2):
            y, x = torch.randint(0, size - 12, (2,), generator=g).tolist()
            h, w = torch.randint(6, 12, (2,), generator=g).tolist()
            targets[i, y : y + h, x : x + w] = label
            images[i, :, y : y + h, x : x + w] = colours[label - 1, :, None, None]
    if ignore_border:
        targets[:, :2] = 255
    return TensorDataset(images, targets)


def seeded(fn, seed=0):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return fn()


# ---------------------------------------------------------------------------------------------
# semantic_loss


def test_semantic_loss_is_mean_cross_entropy_over_labelled_pixels():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 5, 6, generator=g)
    target = torch.randint(0, 4, (2, 5, 6), generator=g)
    target[0, :2] = 255
    expected = F.cross_entropy(logits, target, ignore_index=255)
    torch.testing.assert_close(semantic_loss(logits, target), expected)
    # By hand: -log softmax at the true class, averaged over the 2 * 30 - 12 labelled pixels.
    log_p = logits.log_softmax(1)
    valid = target != 255
    picked = log_p.gather(1, target.clamp(max=3)[:, None])[:, 0]
    torch.testing.assert_close(semantic_loss(logits, target), -(picked[valid]).sum() / 48)


def test_semantic_loss_with_every_pixel_ignored_is_zero_not_nan():
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    loss = semantic_loss(logits, torch.full((1, 4, 4), 255))
    assert loss.item() == 0.0
    loss.backward()
    assert logits.grad.abs().sum() == 0


@pytest.mark.parametrize(
    "logits, target, error, message",
    [
        (torch.zeros(2, 3, 4), torch.zeros(2, 4, dtype=torch.int64), ValueError, r"semantic_loss: logits must be 4-D"),
        (torch.zeros(2, 3, 4, 4), torch.zeros(2, 4, 4), TypeError, r"semantic_loss: target must be an integer or bool tensor"),
        (torch.zeros(2, 3, 4, 4), torch.zeros(2, 4, 5, dtype=torch.int64), ValueError,
         r"semantic_loss: target must be Tensor\[N, H, W\] matching logits Tensor\[N, K, H, W\] = \(2, 3, 4, 4\), got Tensor of shape \(2, 4, 5\)"),
    ],
)
def test_semantic_loss_bad_input(logits, target, error, message):
    with pytest.raises(error, match=message):
        semantic_loss(logits, target)


# ---------------------------------------------------------------------------------------------
# evaluate_semantic


class OracleOfChannelZero(nn.Module):
    """Predicts the class written in channel 0 of the image (one-hot logits)."""

    def __init__(self, num_classes):
        super().__init__()
        self.num_classes = num_classes

    def forward(self, x):
        return F.one_hot(x[:, 0].long(), self.num_classes).permute(0, 3, 1, 2).float()


def test_evaluate_semantic_matches_one_confusion_matrix_over_the_set():
    g = torch.Generator().manual_seed(0)
    pred = torch.randint(0, 3, (5, 7, 9), generator=g)
    target = torch.where(torch.rand(5, 7, 9, generator=g) < 0.7, pred, torch.randint(0, 3, (5, 7, 9), generator=g))
    target[:, 0] = 255
    images = pred[:, None].float().expand(5, 3, 7, 9)
    data = TensorDataset(images, target)
    model = OracleOfChannelZero(3).train()
    scores = evaluate_semantic(model, data, 3, batch_size=2)
    assert model.training  # mode restored
    expected = segmentation_scores(confusion_matrix(pred, target, 3))
    for key in ("pixel_accuracy", "mean_accuracy", "mean_iu", "frequency_weighted_iu"):
        assert scores[key] == pytest.approx(expected[key])
    valid = target != 255
    assert scores["pixel_accuracy"] == pytest.approx(((pred == target) & valid).sum().item() / valid.sum().item())
    # The same from a DataLoader (e.g. one with a DistributedSampler).
    loader_scores = evaluate_semantic(model, DataLoader(data, batch_size=3), 3)
    assert loader_scores["mean_iu"] == pytest.approx(expected["mean_iu"])


# ---------------------------------------------------------------------------------------------
# Trainer


def test_short_training_lowers_the_loss_and_fills_the_history():
    train, val = rectangles(32, seed=0), rectangles(8, seed=1)
    model = seeded(lambda: fcn("fcn8s", 3))
    config = TrainConfig(epochs=6, batch_size=8, optimizer="adamw", lr=0.01, schedule="poly", warmup_steps=2)
    caller_rng = torch.get_rng_state()
    history = Trainer(model, train, config, val_set=val, progress=False).fit()
    assert torch.equal(torch.get_rng_state(), caller_rng)  # the caller's generator is left alone
    train_log = [h for h in history if h["kind"] == "train"]
    eval_log = [h for h in history if h["kind"] == "eval"]
    assert [h["epoch"] for h in train_log] == list(range(6)) and [h["step"] for h in train_log] == [4, 8, 12, 16, 20, 24]
    assert len(eval_log) == 6 and {"pixel_accuracy", "mean_iu", "iu", "seconds"} <= eval_log[-1].keys()
    assert isinstance(eval_log[-1]["iu"], list) and len(eval_log[-1]["iu"]) == 3
    # A fresh FCN scores 0 for every class (zero-initialised score layers): loss log(3) at step 0.
    assert train_log[-1]["loss"] < 0.3 * math.log(3)
    assert train_log[-1]["lr"] < train_log[0]["lr"]  # poly decay
    assert all(h["images_per_s"] > 0 and h["seconds"] > 0 for h in train_log)


def make_trainer(tmp_path, **overrides):
    """A tiny run: 10 images, batch 4 (3 steps per epoch: 4 + 4 + 2), 2 epochs, dropout 0.5."""
    model = seeded(lambda: fcn("fcn16s", 3, dropout=0.5))
    settings = dict(epochs=2, batch_size=4, lr=0.05, schedule="poly", warmup_steps=2, momentum=0.9, seed=7, log_every=2)
    settings.update(overrides)
    return Trainer(
        model, rectangles(10, size=32, seed=2, ignore_border=True), TrainConfig(**settings),
        val_set=rectangles(4, size=32, seed=3), checkpoint_path=tmp_path / "run.pt", progress=False,
    )


def comparable(history):
    """History without the wall-clock fields, NaN spelled "nan" so that == compares it."""

    def plain(v):
        if isinstance(v, list):
            return [plain(x) for x in v]
        return "nan" if isinstance(v, float) and math.isnan(v) else v

    timing = {"seconds", "images_per_s", "eval_seconds"}
    return [{k: plain(v) for k, v in h.items() if k not in timing} for h in history]


@pytest.mark.parametrize("interrupt_at", [1, 3, 4])  # mid-epoch, at the epoch boundary, mid-epoch 2
def test_interrupted_and_resumed_run_equals_uninterrupted(tmp_path, interrupt_at):
    full = make_trainer(tmp_path / "full")
    full.fit()

    first = make_trainer(tmp_path / "split")
    first.fit(stop_at_step=interrupt_at)  # "crash" after k steps: the checkpoint is on disk
    assert first.step == interrupt_at and load_checkpoint(tmp_path / "split" / "run.pt")["step"] == interrupt_at
    del first
    resumed = make_trainer(tmp_path / "split")  # everything rebuilt from scratch
    resumed.fit(resume=True)

    assert resumed.step == full.step == 6
    for (name, a), (_, b) in zip(full.model.state_dict().items(), resumed.model.state_dict().items()):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-7, msg=name)
    momentum = [s["momentum_buffer"] for s in full.optimizer.state.values()]
    momentum_resumed = [s["momentum_buffer"] for s in resumed.optimizer.state.values()]
    for a, b in zip(momentum, momentum_resumed):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-7)
    assert comparable(resumed.history) == comparable(full.history)  # same losses, lrs and metrics


def test_dropout_makes_the_resume_test_meaningful(tmp_path):
    # Two runs with different seeds must differ (data order and dropout masks), or the resume
    # test above could pass without restoring anything.
    a, b = make_trainer(tmp_path / "a", seed=1), make_trainer(tmp_path / "b", seed=2)
    a.fit(stop_at_step=2)
    b.fit(stop_at_step=2)
    assert not torch.equal(a.model.score_fr.weight, b.model.score_fr.weight)


def test_checkpoint_every_and_meta_check(tmp_path):
    trainer = make_trainer(tmp_path, checkpoint_every=2, epochs=1)
    saved_steps = []
    original_save = trainer.save
    trainer.save = lambda *a, **k: saved_steps.append(trainer.step) or original_save(*a, **k)
    trainer.fit()
    assert saved_steps == [2, 3]  # every 2 steps, and when fit returns
    state = load_checkpoint(tmp_path / "run.pt")
    assert state["meta"] == {"model": "FCN", "variant": "fcn16s", "num_classes": 3, "backbone_name": "vgg_small"}
    assert state["config"]["batch_size"] == 4 and state["history"] == trainer.history
    other = Trainer(seeded(lambda: fcn("fcn8s", 3)), rectangles(4, size=32), TrainConfig(epochs=1),
                    checkpoint_path=tmp_path / "run.pt", progress=False)
    with pytest.raises(ValueError, match=r"has meta\['variant'\] = 'fcn16s', expected 'fcn8s'"):
        other.fit(resume=True)


def test_resume_without_a_checkpoint_starts_fresh(tmp_path):
    trainer = make_trainer(tmp_path, epochs=1)
    trainer.fit(resume=True)
    assert trainer.step == 3 and (tmp_path / "run.pt").exists()


# Resuming with other settings (issue 22, finding 1)


def test_resume_with_another_batch_size_is_refused_not_an_endless_loop(run_isolated, tmp_path):
    # Stopped at step 3 of 2-image batches, the epoch being resumed has no 4-image batch left:
    # before the settings were compared, fit(resume=True) looped forever on that empty epoch.
    result = run_isolated(f"""
        import torch
        from torch import nn
        from torch.utils.data import TensorDataset
        from segnotes.engine import TrainConfig, Trainer

        data = TensorDataset(torch.rand(4, 3, 16, 16), torch.randint(0, 3, (4, 16, 16)))

        def trainer(batch_size):
            torch.manual_seed(0)
            return Trainer(nn.Conv2d(3, 3, 1), data, TrainConfig(epochs=2, batch_size=batch_size),
                           checkpoint_path={str(tmp_path / "run.pt")!r}, progress=False)

        trainer(2).fit(stop_at_step=3)
        try:
            trainer(4).fit(resume=True)
            print("resumed")
        except ValueError as error:
            print("ValueError:", error)
    """, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"ValueError: Trainer.load: checkpoint {tmp_path / 'run.pt'} was saved by a run "
                                    "with other settings (batch_size=2 there, 4 now)"), result.stdout


def test_resume_with_another_optimizer_names_the_field_instead_of_a_key_error(tmp_path):
    make_trainer(tmp_path).fit(stop_at_step=1)
    with pytest.raises(ValueError, match=r"\(optimizer='sgd' there, 'adamw' now; optimizer class SGD there, AdamW "
                                         r"now\); a run resumes only with the settings it started with"):
        make_trainer(tmp_path, optimizer="adamw").fit(resume=True)
    with pytest.raises(ValueError, match=r"epochs=2 there, 3 now; lr=0.05 there, 0.1 now"):
        make_trainer(tmp_path, epochs=3, lr=0.1).fit(resume=True)


def test_resume_with_a_ready_optimizer_of_another_class_is_refused(tmp_path):
    make_trainer(tmp_path).fit(stop_at_step=1)
    trainer = make_trainer(tmp_path)
    adam = torch.optim.Adam(trainer.model.parameters(), lr=0.05)
    other = Trainer(trainer.model, trainer.train_set, trainer.config, checkpoint_path=tmp_path / "run.pt",
                    optimizer=adam, progress=False)
    with pytest.raises(ValueError, match=r"optimizer class SGD there, Adam now"):
        other.fit(resume=True)


def test_resume_may_change_how_often_it_logs_evaluates_and_saves(tmp_path):
    full = make_trainer(tmp_path / "full")
    full.fit()
    make_trainer(tmp_path / "split").fit(stop_at_step=2)
    resumed = make_trainer(tmp_path / "split", log_every=0, eval_every=2, checkpoint_every=1)
    resumed.fit(resume=True)
    for a, b in zip(full.model.parameters(), resumed.model.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-7)


def test_an_epoch_that_trains_nothing_raises_instead_of_repeating(run_isolated, tmp_path):
    # A sampler_fn that gives fewer samples than the steps already taken in the epoch: before,
    # fit repeated the empty epoch forever (so this runs in a child process with a timeout).
    result = run_isolated(f"""
        import torch
        from torch import nn
        from torch.utils.data import TensorDataset
        from segnotes.engine import TrainConfig, Trainer

        data = TensorDataset(torch.rand(10, 3, 16, 16), torch.randint(0, 3, (10, 16, 16)))
        trainer = Trainer(nn.Conv2d(3, 3, 1), data, TrainConfig(epochs=2, batch_size=4),
                          checkpoint_path={str(tmp_path / "run.pt")!r}, progress=False)
        trainer.fit(stop_at_step=2)
        trainer.sampler_fn = lambda epoch: [0, 1, 2]
        try:
            trainer.fit()
            print("returned")
        except RuntimeError as error:
            print("RuntimeError:", error)
    """, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ("RuntimeError: Trainer.fit: epoch 0 has no batch left after step 2 of it: its "
                                     "order holds 3 samples at batch_size=4"), result.stdout


@pytest.mark.parametrize("field, value, message", [
    ("lr", float("nan"), r"TrainConfig: lr must be a finite number, got nan"),
    ("lr", float("inf"), r"TrainConfig: lr must be a finite number, got inf"),
    ("grad_clip", float("nan"), r"TrainConfig: grad_clip must be a finite number, got nan"),
    ("momentum", float("nan"), r"TrainConfig: momentum must be a finite number, got nan"),
    ("momentum", 1.5, r"TrainConfig: momentum must be in \[0, 1\), got 1.5"),
    ("weight_decay", -1e-4, r"TrainConfig: weight_decay must be >= 0, got -0.0001"),
    ("power", float("nan"), r"TrainConfig: power must be a finite number, got nan"),
    ("warmup_factor", 2.0, r"TrainConfig: warmup_factor must be in \[0, 1\], got 2.0"),
    ("gamma", float("-inf"), r"TrainConfig: gamma must be a finite number, got -inf"),
    ("min_factor", float("nan"), r"TrainConfig: min_factor must be a finite number, got nan"),
])
def test_train_config_refuses_nan_and_out_of_range_numbers(field, value, message):
    # Issue 22, finding 5: NaN passed every "> 0" check (NaN compares False with everything).
    with pytest.raises(ValueError, match=message):
        TrainConfig(**{field: value})


def test_gradient_clipping_bounds_the_update():
    model = seeded(lambda: nn.Conv2d(3, 3, 1))
    model.num_classes = 3
    config = TrainConfig(epochs=1, batch_size=4, lr=1.0, momentum=0.0, weight_decay=0.0, schedule="constant", grad_clip=1e-3)
    before = [p.detach().clone() for p in model.parameters()]
    Trainer(model, rectangles(4, size=16), config, progress=False).fit()
    change = torch.cat([(p.detach() - b).flatten() for p, b in zip(model.parameters(), before)])
    assert 0 < change.norm() <= 1e-3 * (1 + 1e-5)


def test_non_finite_loss_stops_with_a_clear_error():
    class Exploding(nn.Conv2d):
        def forward(self, x):
            return super().forward(x) * float("inf")

    model = seeded(lambda: Exploding(3, 3, 1))
    with pytest.raises(FloatingPointError, match=r"Trainer: the loss is (nan|inf) at step 0 \(epoch 0\)"):
        Trainer(model, rectangles(4, size=16), TrainConfig(epochs=1), progress=False).fit()


class FakeDetector(nn.Module):
    """Stands in for torchvision's Mask R-CNN: in train mode, a dict of losses."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([1.0, 2.0]))

    def forward(self, images, targets):
        assert isinstance(images, list) and isinstance(targets[0], dict)
        scale = sum(t["boxes"].sum() for t in targets) / len(images)
        return {"loss_classifier": self.w[0] ** 2 * scale, "loss_mask": self.w[1] ** 2}


def test_detection_step_sums_and_logs_each_loss():
    model = FakeDetector()
    batch = ([torch.zeros(3, 8, 8)] * 2, [{"boxes": torch.ones(1, 4)}] * 2)
    loss, logs = detection_step(model, batch)
    assert loss.item() == pytest.approx(4.0 + 4.0)
    assert set(logs) == {"loss_classifier", "loss_mask"} and not logs["loss_mask"].requires_grad
    data = [(torch.zeros(3, 8, 8), {"boxes": torch.ones(1, 4)}) for _ in range(4)]
    trainer = Trainer(model, data, TrainConfig(epochs=2, batch_size=2, lr=0.1, schedule="constant"),
                      step_fn=detection_step, collate_fn=lambda b: tuple(zip(*b)), progress=False)
    history = trainer.fit()
    assert [h["kind"] for h in history] == ["train", "train"]  # no val_set: no evaluation
    assert history[1]["loss"] == pytest.approx(history[1]["loss_classifier"] + history[1]["loss_mask"])
    assert history[1]["loss"] < history[0]["loss"]


def test_trainer_runs_on_device(device, tmp_path):
    trainer = make_trainer(tmp_path, epochs=1)
    trainer = Trainer(trainer.model, trainer.train_set, trainer.config, val_set=trainer.val_set, device=device,
                      checkpoint_path=tmp_path / "dev.pt", progress=False)
    history = trainer.fit()
    assert next(trainer.model.parameters()).device.type == device
    assert history[-1]["kind"] == "eval" and 0 <= history[-1]["pixel_accuracy"] <= 1
    assert load_checkpoint(tmp_path / "dev.pt")["step"] == 3


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda: TrainConfig(optimizer="adam"), ValueError, r"TrainConfig: optimizer must be one of \['sgd', 'adamw'\], got 'adam'"),
        (lambda: TrainConfig(epochs=0), ValueError, r"TrainConfig: epochs must be >= 1, got 0"),
        (lambda: TrainConfig(grad_clip=-1.0), ValueError, r"TrainConfig: grad_clip must be > 0, got -1.0"),
        (lambda: Trainer("model", []), TypeError, r"Trainer: model must be an nn.Module, got str 'model'"),
        (lambda: Trainer(nn.Conv2d(3, 3, 1), rectangles(4, 16), {"epochs": 1}), TypeError, r"Trainer: config must be a TrainConfig, got dict"),
        (lambda: Trainer(nn.Conv2d(3, 3, 1), rectangles(3, 16), TrainConfig(batch_size=4, drop_last=True)), ValueError,
         r"Trainer: an epoch has no batch: 3 samples, batch_size=4, drop_last=True"),
        (lambda: Trainer(nn.Conv2d(3, 3, 1), rectangles(4, 16), progress=False).fit(resume=True), ValueError,
         r"Trainer.fit: resume=True needs the Trainer's checkpoint_path, got None"),
        (lambda: Trainer(nn.Conv2d(3, 3, 1), rectangles(4, 16)).save(), ValueError,
         r"Trainer.save: no path given and the Trainer has no checkpoint_path"),
    ],
)
def test_bad_arguments(call, error, message):
    with pytest.raises(error, match=message):
        call()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")
@pytest.mark.parametrize("amp_dtype", ["float16", "bfloat16"])
def test_mixed_precision_trains_on_cuda_and_saves_the_scaler(tmp_path, amp_dtype):
    trainer = make_trainer(tmp_path, epochs=2, amp=True, amp_dtype=amp_dtype, optimizer="adamw", lr=3e-3)
    trainer = Trainer(trainer.model, trainer.train_set, trainer.config, val_set=trainer.val_set, device="cuda",
                      checkpoint_path=tmp_path / "amp.pt", progress=False)
    history = trainer.fit()
    losses = [h["loss"] for h in history if h["kind"] == "train"]
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
    state = load_checkpoint(tmp_path / "amp.pt")
    scaler = state.get("scaler") or {}  # float16 needs loss scaling; bfloat16 does not (the scaler is off)
    assert ("scale" in scaler) == (amp_dtype == "float16")
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())  # autocast keeps float32 weights


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")
def test_mixed_precision_detection_step_on_cuda():
    # Mask R-CNN under the engine's AMP: half-precision features meet float32 proposals in RoIAlign.
    from segnotes.models import mask_rcnn

    torch.manual_seed(0)
    images = [torch.rand(3, 128, 128) for _ in range(2)]
    boxes = torch.tensor([[10.0, 12.0, 60.0, 70.0]])
    masks = torch.zeros(1, 128, 128, dtype=torch.uint8)
    masks[0, 12:70, 10:60] = 1
    data = [(im, {"boxes": boxes, "labels": torch.tensor([1]), "masks": masks}) for im in images]
    model = mask_rcnn(3)
    trainer = Trainer(model, data, TrainConfig(epochs=2, batch_size=2, optimizer="adamw", lr=1e-3, schedule="constant",
                                               amp=True), step_fn=detection_step, collate_fn=lambda b: tuple(zip(*b)),
                      device="cuda", progress=False)
    history = trainer.fit()
    assert all(math.isfinite(h["loss"]) for h in history) and "loss_mask" in history[-1]
