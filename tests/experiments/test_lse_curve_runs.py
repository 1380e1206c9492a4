"""The LSE chapter's curve: agnostic, transfer and oracle against the number of mask classes."""
import math

import pytest
import torch

from segnotes.data import ATTRIBUTE_GROUPS, ATTRIBUTE_HANDLE_IN_MASK, ATTRIBUTE_MASK_ORDER, generate
from segnotes.experiments import lse_curve, train_run
from segnotes.experiments.__main__ import main
from segnotes.experiments.lse_curve import (
    LSECurveRecipe,
    LSECurveRunSpec,
    build_model,
    curve_runs,
    handle_separation,
    is_done,
    load_run,
    mask_classes,
)
from segnotes.utils import num_threads

# Two steps of two images, one epoch.
TINY = LSECurveRecipe(mask_counts=(5,), batch_size=2, epochs=1, warmup_steps=1, monitor_images=2, checkpoint_every=1)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("curve") / "shapes_attributes", num_train=4, num_val=2, seed=0,
                    workers=1, progress=False, handles=True, attributes=True)


def test_runs_cover_every_count_and_variant_then_the_oracle():
    runs = curve_runs(LSECurveRecipe(seeds=(0, 2), mask_counts=(5, 40)))
    names = [spec.name for spec in runs]
    assert names == [
        "lsec_agnostic_m5_s0", "lsec_transfer_m5_s0", "lsec_agnostic_m40_s0", "lsec_transfer_m40_s0", "lsec_oracle_s0",
        "lsec_agnostic_m5_s2", "lsec_transfer_m5_s2", "lsec_agnostic_m40_s2", "lsec_transfer_m40_s2", "lsec_oracle_s2",
    ]
    assert all(not spec.keep_weights and spec.parent is None for spec in runs)
    assert [s.mask_count for s in runs[:5]] == [5, 5, 40, 40, None]


def test_the_schedule_is_the_lse_chapters():
    from segnotes.experiments.lse import LSERecipe

    curve, lse = LSECurveRecipe(), LSERecipe()
    for field in ("batch_size", "epochs", "lr", "weight_decay", "warmup_steps", "min_lr_factor", "grad_clip", "flip",
                  "monitor_images", "checkpoint_every"):
        assert getattr(curve, field) == getattr(lse, field), field


def test_the_default_recipe_is_the_pilot():
    assert [spec.name for spec in curve_runs()] == [
        "lsec_agnostic_m5_s0", "lsec_transfer_m5_s0", "lsec_agnostic_m40_s0", "lsec_transfer_m40_s0", "lsec_oracle_s0"]


def test_mask_classes_are_nested_prefixes_of_group_a():
    previous = set()
    for count in (5, 10, 20, 40):
        classes = set(mask_classes(count))
        assert len(classes) == count and previous < classes <= set(ATTRIBUTE_GROUPS["A"])
        assert not classes & set(ATTRIBUTE_GROUPS["B"])
        previous = classes
    assert mask_classes(5) == tuple(sorted(ATTRIBUTE_MASK_ORDER[:5]))


@pytest.mark.parametrize("call, error, match", [
    (lambda: mask_classes(0), ValueError, "mask_classes: count must be >= 1, got 0"),
    (lambda: mask_classes(41), ValueError, r"mask_classes: count must be at most 40 \(group A\), got 41"),
    (lambda: LSECurveRecipe(mask_counts=(5, 41)), ValueError, "mask_counts.i. must be at most 40"),
    (lambda: LSECurveRecipe(mask_counts=()), ValueError, "mask_counts must hold at least one count"),
    (lambda: LSECurveRecipe(seeds=()), ValueError, "LSECurveRecipe: seeds must hold at least one seed"),
    (lambda: curve_runs({"seeds": (0,)}), TypeError, "curve_runs: recipe must be an LSECurveRecipe, got dict"),
    (lambda: build_model("transfer_cls", 5), ValueError, "build_model: variant must be one of"),
])
def test_bad_input_is_named(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_models_learn_masks_of_the_first_classes_only():
    model = build_model("transfer", 10)
    assert tuple(model.roi_heads.mask_classes) == mask_classes(10)
    assert model.roi_heads.box_predictor.cls_score.out_features == 51
    assert build_model("agnostic", 5).roi_heads.class_agnostic
    assert type(build_model("oracle", None)).__name__ == "MaskRCNN"


def test_the_train_set_withholds_all_but_the_mask_classes(root):
    train, _ = lse_curve._load_data(LSECurveRunSpec("r", "transfer", 5, 0), TINY, root)
    masked = torch.tensor(mask_classes(5))
    for i in range(len(train)):
        _, target = train[i]
        expected = torch.isin(target["labels"], masked)
        assert torch.equal(target["mask_valid"], expected)
    oracle_train, _ = lse_curve._load_data(LSECurveRunSpec("o", "oracle", None, 0), TINY, root)
    assert all(oracle_train[i][1]["mask_valid"].all() for i in range(len(oracle_train)))


def test_the_nine_category_data_set_is_refused(tmp_path):
    nine = generate(tmp_path / "h", 2, 1, seed=0, workers=1, progress=False, handles=True)
    for spec in (LSECurveRunSpec("o", "oracle", None, 0), LSECurveRunSpec("t", "transfer", 5, 0)):
        with pytest.raises(ValueError, match="not the attributes variant"):
            lse_curve._load_data(spec, TINY, nine)


def test_train_run_trains_resumes_and_scores_group_b(tmp_path, root):
    spec = LSECurveRunSpec("lsec_transfer_m5_s0", "transfer", 5, 0)
    with num_threads(1):
        assert train_run(spec, TINY, tmp_path, data_root=root, stop_at_step=1) is None
        meta = train_run(spec, TINY, tmp_path, data_root=root)
    assert meta["steps"] == 2 and is_done(tmp_path, spec.name)
    assert set(meta["scores"]) == {"A", "B", "all", "given_box"}
    state = load_run(tmp_path, spec.name)
    assert state["model"] is None and state["meta"]["spec"]["mask_count"] == 5
    assert any("B_mask_AP" in entry for entry in state["history"])
    for entry in meta["scores"]["given_box"].values():
        assert 0 <= entry["iou"] <= 1 and (math.isnan(entry["handle_kept"]) or 0 <= entry["handle_kept"] <= 1)


def test_handle_separation_is_kept_in_minus_kept_out():
    given = {c: {"handle_kept": 0.9 if ATTRIBUTE_HANDLE_IN_MASK[c] else 0.2} for c in range(1, 51)}
    assert handle_separation(given, ATTRIBUTE_GROUPS["B"]) == pytest.approx(70.0)
    given[ATTRIBUTE_GROUPS["B"][0]]["handle_kept"] = float("nan")  # no visible handle: left out of the mean
    assert handle_separation(given, ATTRIBUTE_GROUPS["B"]) == pytest.approx(70.0)
    only_in = [c for c in ATTRIBUTE_GROUPS["B"] if ATTRIBUTE_HANDLE_IN_MASK[c]]
    with pytest.raises(ValueError, match="must hold both rules"):
        handle_separation(given, only_in)


def test_the_command_line_lists_the_curve(tmp_path, capsys):
    assert main(["lse_curve", "--out", str(tmp_path), "--set", "mask_counts=5,10", "--list"]) == 0
    listed = capsys.readouterr().out.split("\n")
    assert "todo  lsec_transfer_m10_s0" in listed and "todo  lsec_oracle_s0" in listed
