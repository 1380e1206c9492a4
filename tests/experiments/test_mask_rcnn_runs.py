import dataclasses

import pytest
import torch

from segnotes.data import ShapesInstances, generate
from segnotes.engine import CheckpointError
from segnotes.experiments import run_all, train_run
from segnotes.experiments.mask_rcnn import (
    VARIANTS,
    MaskRCNNRecipe,
    MaskRCNNRunSpec,
    collate_instances,
    evaluate_mask_rcnn,
    hflip_instances,
    is_done,
    load_run,
    load_run_model,
    mask_rcnn_runs,
    run_path,
)
from segnotes.utils import num_threads

# Two steps of two images per epoch, one epoch, one seed.
TINY = MaskRCNNRecipe(seeds=(0,), ablation_seeds=None, batch_size=2, epochs=1, warmup_steps=1, monitor_images=2,
                      checkpoint_every=1)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("mr") / "shapes", num_train=4, num_val=2, seed=0, image_size=64,
                    workers=1, progress=False)


@pytest.fixture(scope="module")
def data(root):
    return ShapesInstances(root, "train"), ShapesInstances(root, "val")


def test_runs_cover_every_variant_and_seed():
    runs = mask_rcnn_runs()
    assert {r.variant for r in runs} == set(VARIANTS)
    assert [r.name for r in runs[:4]] == [f"maskrcnn_{v}_s0" for v in ("align", "pool", "softmax", "agnostic")]
    assert len(runs) == 8 and sorted(r.seed for r in runs if r.variant == "softmax") == [0, 1]
    assert [r.keep_weights for r in runs] == [r.seed == 0 for r in runs]
    assert all(r.parent is None for r in runs)
    fewer = mask_rcnn_runs(MaskRCNNRecipe(seeds=(0, 1, 2), ablation_seeds=(0,)))
    assert sorted(r.seed for r in fewer if r.variant == "pool") == [0, 1, 2]
    assert sorted(r.seed for r in fewer if r.variant == "agnostic") == [0]
    extra = mask_rcnn_runs(MaskRCNNRecipe(seeds=(0,), ablation_seeds=(0, 5)))
    assert [r.name for r in extra] == ["maskrcnn_align_s0", "maskrcnn_pool_s0", "maskrcnn_softmax_s0",
                                       "maskrcnn_agnostic_s0", "maskrcnn_softmax_s5", "maskrcnn_agnostic_s5"]


def test_variants_switch_one_thing_each():
    base = VARIANTS["align"]
    for name, switches in VARIANTS.items():
        changed = {k for k in base if switches[k] != base[k]}
        assert len(changed) == (0 if name == "align" else 1), name


def test_recipe_bad_input():
    with pytest.raises(ValueError, match="MaskRCNNRecipe: variants\\[i\\] must be one of"):
        MaskRCNNRecipe(variants=("align", "roipool"))
    with pytest.raises(ValueError, match="MaskRCNNRecipe: seeds must hold at least one seed"):
        MaskRCNNRecipe(seeds=())
    with pytest.raises(ValueError, match="MaskRCNNRecipe: epochs must be"):
        MaskRCNNRecipe(epochs=0)
    with pytest.raises(TypeError, match="mask_rcnn_runs: recipe must be a MaskRCNNRecipe, got dict"):
        mask_rcnn_runs({})


def test_hflip_mirrors_boxes_and_masks():
    image = torch.zeros(3, 8, 10)
    masks = torch.zeros(1, 8, 10, dtype=torch.uint8)
    masks[0, 2:5, 1:4] = 1  # x in [1, 4)
    target = {"boxes": torch.tensor([[1.0, 2.0, 4.0, 5.0]]), "masks": masks, "labels": torch.tensor([3])}
    flipped = []
    torch.manual_seed(0)
    for _ in range(20):
        out_image, out = hflip_instances(image, target)
        flipped.append(not torch.equal(out["masks"], masks))
        if flipped[-1]:
            torch.testing.assert_close(out["boxes"], torch.tensor([[6.0, 2.0, 9.0, 5.0]]))
            assert out["masks"][0, 2:5, 6:9].all() and out["masks"].sum() == 9
            assert torch.equal(out["labels"], target["labels"])
    assert any(flipped) and not all(flipped)
    assert torch.equal(target["boxes"], torch.tensor([[1.0, 2.0, 4.0, 5.0]]))  # input untouched


def test_collate_keeps_lists(data):
    images, targets = collate_instances([data[0][0], data[0][1]])
    assert isinstance(images, list) and len(images) == 2 and isinstance(targets[0], dict)


def test_train_run_writes_scores_and_resumes(tmp_path, data):
    spec = MaskRCNNRunSpec("maskrcnn_align_s0", "align", 0)
    with num_threads(1):
        assert train_run(spec, TINY, tmp_path / "a", data=data, stop_at_step=1) is None
    assert not is_done(tmp_path / "a", spec.name)
    with num_threads(1):
        meta = train_run(spec, TINY, tmp_path / "a", data=data)
    assert meta["steps"] == 2 and is_done(tmp_path / "a", spec.name)
    assert set(meta["scores"]) == {"bbox", "segm"} and set(meta["scores"]["segm"]) >= {"AP", "AP50", "AP75"}
    assert not run_path(tmp_path / "a", spec.name).with_suffix(".partial.pt").exists()
    with num_threads(1):
        uninterrupted = train_run(spec, TINY, tmp_path / "b", data=data)
    a, b = load_run(tmp_path / "a", spec.name), load_run(tmp_path / "b", spec.name)
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key])
    model = load_run_model(tmp_path / "a", spec.name)
    assert not model.training and model.roi_op == "align"
    # the stored scores are those of the stored (float16) weights
    again = evaluate_mask_rcnn(model, data[1])
    assert again["segm"]["AP"] == pytest.approx(meta["scores"]["segm"]["AP"], abs=1e-6)
    assert uninterrupted["scores"] == meta["scores"]


def test_runs_without_weights(tmp_path, data):
    spec = MaskRCNNRunSpec("maskrcnn_pool_s1", "pool", 1, keep_weights=False)
    with num_threads(1):
        train_run(spec, TINY, tmp_path, data=data)
    assert load_run(tmp_path, spec.name)["model"] is None
    with pytest.raises(ValueError, match="saved without weights"):
        load_run_model(tmp_path, spec.name)


def test_run_all_dispatches_to_the_chapter(tmp_path, root):
    recipe = dataclasses.replace(TINY, variants=("agnostic",))
    lines = []
    with num_threads(1):
        trained = run_all(mask_rcnn_runs(recipe), recipe, tmp_path, data_root=root, log=lines.append)
    assert trained == ["maskrcnn_agnostic_s0"] and lines[0] == "start maskrcnn_agnostic_s0"
    assert load_run_model(tmp_path, "maskrcnn_agnostic_s0").class_agnostic_masks
    with pytest.raises(TypeError, match=r"run_all: recipe must be a chapter's recipe \(FCNRecipe, .*\), got dict"):
        run_all([], {}, tmp_path)


def test_bad_input(tmp_path, data):
    with pytest.raises(TypeError, match=r"train_run: spec must be MaskRCNNRunSpec \(the run spec of MaskRCNNRecipe\), got str"):
        train_run("maskrcnn_align_s0", TINY, tmp_path, data=data)
    with pytest.raises(TypeError, match="train_run: recipe must be a chapter's recipe .*got dict"):
        train_run(MaskRCNNRunSpec("x", "align", 0), {}, tmp_path, data=data)
    with pytest.raises(TypeError, match="evaluate_mask_rcnn: dataset must be a CocoInstances"):
        evaluate_mask_rcnn(torch.nn.Linear(1, 1), [(torch.zeros(3, 4, 4), {})])
    path = run_path(tmp_path, "maskrcnn_align_s0")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read the checkpoint"):
        load_run(tmp_path, "maskrcnn_align_s0")
