import math

import pytest
import torch
from torch import nn

from segnotes.engine.schedule import LRSchedule, lr_factor, make_optimizer, make_scheduler
from segnotes.ops.bilinear import BilinearUpsample


@pytest.mark.parametrize(
    "schedule, step, kwargs, expected",
    [
        ("constant", 50, {}, 1.0),
        ("poly", 0, {}, 1.0),
        ("poly", 50, {}, 0.5**0.9),
        ("poly", 100, {}, 0.0),
        ("poly", 150, {}, 0.0),  # past the end: stays at the end value
        ("poly", 25, {"power": 1.0}, 0.75),
        ("cosine", 50, {}, 0.5),
        ("cosine", 100, {"min_factor": 0.1}, 0.1),
        ("cosine", 25, {}, (1 + math.cos(math.pi / 4)) / 2),
        ("step", 29, {"milestones": (30, 60)}, 1.0),
        ("step", 30, {"milestones": (30, 60)}, 0.1),
        ("step", 75, {"milestones": (30, 60), "gamma": 0.5}, 0.25),
        # Warmup: linear from warmup_factor to 1, multiplying the main schedule.
        ("constant", 0, {"warmup_steps": 10, "warmup_factor": 0.1}, 0.1),
        ("constant", 5, {"warmup_steps": 10, "warmup_factor": 0.1}, 0.55),
        ("constant", 10, {"warmup_steps": 10, "warmup_factor": 0.1}, 1.0),
        ("poly", 5, {"warmup_steps": 10, "warmup_factor": 0.0, "power": 1.0}, 0.5 * 0.95),
    ],
)
def test_lr_factor_values(schedule, step, kwargs, expected):
    assert lr_factor(step, 100, schedule, **kwargs) == pytest.approx(expected, abs=1e-12)


def test_lambda_lr_follows_the_schedule_and_saves_its_settings():
    param = nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=0.5)
    schedule = LRSchedule(total_steps=20, schedule="cosine", warmup_steps=4)
    scheduler = make_scheduler(optimizer, schedule)
    lrs = []
    for _ in range(20):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs == pytest.approx([0.5 * schedule(s) for s in range(20)])
    assert scheduler.state_dict()["lr_lambdas"][0]["total_steps"] == 20


def test_make_optimizer_groups():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), BilinearUpsample(4, 2))
    opt = make_optimizer(model, "sgd", 0.01, momentum=0.99, weight_decay=5e-4, bias_lr_factor=2.0)
    weights, biases = opt.param_groups
    assert weights["name"] == "weights" and biases["name"] == "biases"
    assert [p.shape for p in weights["params"]] == [(4, 3, 3, 3)]  # the frozen upsampling is left out
    assert len(biases["params"]) == 3  # conv bias, BN weight and bias
    assert weights["lr"] == 0.01 and biases["lr"] == 0.02
    assert weights["weight_decay"] == 5e-4 and biases["weight_decay"] == 0.0
    assert isinstance(opt, torch.optim.SGD) and weights["momentum"] == 0.99
    assert isinstance(make_optimizer(model, "adamw", 1e-3), torch.optim.AdamW)
    no_bias = make_optimizer(nn.Conv2d(1, 1, 1, bias=False), "sgd")
    assert [g["name"] for g in no_bias.param_groups] == ["weights"]


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda: lr_factor(0, 10, "linear"), ValueError, r"lr_factor: schedule must be one of \['constant', 'poly', 'cosine', 'step'\], got 'linear'"),
        (lambda: lr_factor(0, 0), ValueError, r"lr_factor: total_steps must be >= 1, got 0"),
        (lambda: LRSchedule(total_steps=10, warmup_steps=-1), ValueError, r"LRSchedule: warmup_steps must be >= 0, got -1"),
        (lambda: make_optimizer(nn.Linear(2, 2), "adam"), ValueError, r"make_optimizer: name must be one of \['sgd', 'adamw'\], got 'adam'"),
        (lambda: make_optimizer(nn.Linear(2, 2), "sgd", -1.0), ValueError, r"make_optimizer: lr must be > 0, got -1.0"),
        (lambda: make_optimizer(BilinearUpsample(2, 2), "sgd"), ValueError, r"make_optimizer: model has no trainable parameters"),
    ],
)
def test_bad_arguments(call, error, message):
    with pytest.raises(error, match=message):
        call()
