import math

import pytest
import torch

from segnotes.data import GROUPS, ShapesInstances, generate
from segnotes.experiments import lse, train_run
from segnotes.experiments.lse import (
    ABLATIONS,
    DIRECTIONS,
    HOLDOUT,
    VARIANTS,
    LSERecipe,
    LSERunSpec,
    build_model,
    evaluate_lse,
    is_done,
    load_run,
    load_run_model,
    lse_runs,
    mask_split,
    masks_given_boxes,
)
from segnotes.utils import num_threads

# Two steps of two images, one epoch.
TINY = LSERecipe(seeds=(0,), ablations=(), batch_size=2, epochs=1, warmup_steps=1, monitor_images=2,
                 checkpoint_every=1)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("lse") / "shapes_handles", num_train=4, num_val=2, seed=0,
                    image_size=128, workers=1, progress=False, handles=True)


@pytest.fixture(scope="module")
def val(root):
    return ShapesInstances(root, "val")


def test_runs_cover_both_directions_and_the_ablations():
    runs = lse_runs()
    names = [r.name for r in runs]
    assert names[:5] == ["lse_agnostic_a2b_s0", "lse_transfer_a2b_s0", "lse_oracle_s0", "lse_agnostic_b2a_s0",
                         "lse_transfer_b2a_s0"]
    assert len(runs) == 2 * 5 + len(ABLATIONS) - 1 + 2
    assert {r.variant for r in runs} == set(VARIANTS) - {"agnostic_fcn"}
    every = lse_runs(LSERecipe(seeds=(3,), ablations=ABLATIONS))
    assert {r.variant for r in every} == set(VARIANTS) and {r.seed for r in every} == {3}
    assert all(r.direction == "a2b" and r.seed == 0 for r in runs if r.variant in ABLATIONS)
    holdout = [r for r in runs if r.direction == "holdout"]
    assert [r.name for r in holdout] == ["lse_agnostic_holdout_s0", "lse_transfer_holdout_s0"]
    assert not any(r.keep_weights for r in holdout)
    assert not any(r.direction == "holdout" for r in lse_runs(LSERecipe(holdout_variants=())))
    kept = {r.name for r in runs if r.keep_weights}
    assert kept == {"lse_oracle_s0", "lse_agnostic_a2b_s0", "lse_transfer_a2b_s0"}


def test_recipe_and_builder_bad_input():
    with pytest.raises(ValueError, match="LSERecipe: ablations\\[i\\] must be one of"):
        LSERecipe(ablations=("transfer_glove",))
    with pytest.raises(ValueError, match="LSERecipe: seeds must hold at least one seed"):
        LSERecipe(seeds=())
    with pytest.raises(ValueError, match="LSERecipe: keep_weights_directions\\[i\\] must be one of"):
        LSERecipe(keep_weights_directions=("a2c",))
    with pytest.raises(TypeError, match="lse_runs: recipe must be an LSERecipe"):
        lse_runs({})
    with pytest.raises(ValueError, match="build_model: direction must be one of"):
        build_model("transfer", None)
    with pytest.raises(ValueError, match="LSERecipe: holdout_variants\\[i\\] must be one of"):
        LSERecipe(holdout_variants=("oracle",))
    with pytest.raises(ValueError, match="mask_split: direction must be one of"):
        mask_split("c2d")


def test_mask_split_gives_the_mask_classes_and_what_is_withheld():
    assert mask_split("a2b") == (GROUPS["A"], "B") and mask_split("b2a") == (GROUPS["B"], "A")
    with_masks, withheld = mask_split("holdout")
    assert withheld == HOLDOUT and set(with_masks) | set(HOLDOUT) == set(range(1, 10))
    assert not set(with_masks) & set(HOLDOUT)
    assert build_model("transfer", "holdout").roi_heads.mask_classes == with_masks


def test_models_learn_masks_from_the_direction_mask_group():
    for direction, (with_masks, _) in DIRECTIONS.items():
        model = build_model("transfer", direction)
        assert model.mask_classes == tuple(sorted(GROUPS[with_masks]))
    assert build_model("agnostic", "a2b").class_agnostic
    assert not hasattr(build_model("oracle", None), "mask_classes")


def test_masks_given_boxes_paste_one_mask_per_box(val):
    torch.manual_seed(0)
    model = build_model("transfer", "a2b").eval()
    image, target = val[0]
    probs = masks_given_boxes(model, [image], [target["boxes"]], [target["labels"]])
    assert probs[0].shape == (len(target["labels"]), 128, 128)
    assert ((probs[0] >= 0) & (probs[0] <= 1)).all()
    assert model.training is False


def test_evaluate_scores_each_group_and_the_handles(val):
    torch.manual_seed(0)
    with num_threads(1):
        scores = evaluate_lse(build_model("agnostic", "a2b"), val)
    assert set(scores) == {"A", "B", "all", "given_box"}
    assert set(scores["B"]["segm"]) >= {"AP", "AP50", "AP75"}
    present = {int(c) for t in (val[i][1] for i in range(len(val))) for c in t["labels"]}
    assert set(scores["given_box"]) == present
    for entry in scores["given_box"].values():
        assert 0 <= entry["iou"] <= 1 and entry["instances"] >= 1
        assert math.isnan(entry["handle_kept"]) or 0 <= entry["handle_kept"] <= 1


@pytest.mark.parametrize("variant", ["transfer", "transfer_stagewise"])
def test_train_run_trains_resumes_and_reloads(tmp_path, root, variant):
    spec = LSERunSpec(f"lse_{variant}_a2b_s0", variant, "a2b", 0)
    with num_threads(1):
        assert train_run(spec, TINY, tmp_path, data_root=root, stop_at_step=1) is None
        meta = train_run(spec, TINY, tmp_path, data_root=root)
    assert meta["steps"] == 2 and is_done(tmp_path, spec.name)
    assert set(meta["scores"]) == {"A", "B", "all", "given_box"}
    history = load_run(tmp_path, spec.name)["history"]
    assert any("B_mask_AP" in entry for entry in history)
    model = load_run_model(tmp_path, spec.name)
    assert not model.training and model.stage == "joint"


def test_train_run_bad_input(tmp_path):
    with pytest.raises(TypeError, match=r"train_run: spec must be LSERunSpec \(the run spec of LSERecipe\), got str"):
        train_run("lse_oracle_s0", TINY, tmp_path)
    with pytest.raises(TypeError, match="train_run: recipe must be a chapter's recipe .*LSERecipe.*got dict"):
        train_run(LSERunSpec("x", "oracle", None, 0), {}, tmp_path)


def test_the_partial_train_set_withholds_the_evaluated_group(root):
    train, _ = lse._load_data(LSERunSpec("lse_transfer_a2b_s0", "transfer", "a2b", 0), TINY, root)
    for i in range(len(train)):
        _, target = train.dataset[i] if isinstance(train, torch.utils.data.Subset) else train[i]
        withheld = torch.isin(target["labels"], torch.tensor(GROUPS["B"]))
        assert not target["mask_valid"][withheld].any() and target["mask_valid"][~withheld].all()
