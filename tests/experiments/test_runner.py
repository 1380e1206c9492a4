"""segnotes.experiments.runner: the chapter protocol, where runs are stored, the committed checkpoints."""
import dataclasses
import json

import pytest
import torch

from segnotes.engine import save_checkpoint
from segnotes.experiments import CHAPTERS, checkpoint_root, fcn, lse, lse_curve, mask_rcnn
from segnotes.experiments.chapters import chapter_named
from segnotes.experiments.runner import Chapter, RunFiles, chapter_of


@pytest.mark.parametrize("module, chapter", [(fcn, "fcn"), (lse, "lse"), (lse_curve, "lse_curve"), (mask_rcnn, "mask_rcnn")])
def test_each_chapter_keeps_its_runs_in_its_own_folder(tmp_path, module, chapter):
    assert module.CHAPTER in CHAPTERS and chapter_named(chapter) is module.CHAPTER
    assert module.run_path(tmp_path, "r") == tmp_path / chapter / "r.pt"
    assert module._partial_path(tmp_path, "r") == tmp_path / chapter / "r.partial.pt"
    assert not module.is_done(tmp_path, "r")
    assert chapter_of("f", module.CHAPTER.recipe()) is module.CHAPTER
    assert repr(module.CHAPTER).startswith(f"Chapter({chapter!r}, recipe=")


def test_a_folderless_run_lives_in_out_itself(tmp_path):
    assert RunFiles("").run_path(tmp_path, "model") == tmp_path / "model.pt"


def test_a_finished_run_is_done_and_loads(tmp_path):
    files = RunFiles("demo")
    save_checkpoint(files.partial_path(tmp_path, "r"), meta={"run": "r"}, history=[])
    assert not files.is_done(tmp_path, "r")  # still training
    save_checkpoint(files.run_path(tmp_path, "r"), meta={"run": "r", "done": True}, history=[])
    assert files.is_done(tmp_path, "r")
    state = files.load_run(tmp_path, "r")
    assert state["meta"]["run"] == "r" and state["model"] is None
    # a file under another run's name is refused, not silently loaded
    save_checkpoint(files.run_path(tmp_path, "copy"), meta={"run": "r", "done": True}, history=[])
    with pytest.raises(ValueError, match="copy"):
        files.load_run(tmp_path, "copy")


def test_unknown_recipes_and_chapters_are_refused():
    with pytest.raises(TypeError, match=r"f: recipe must be a chapter's recipe \(FCNRecipe, MaskRCNNRecipe, LSERecipe"):
        chapter_of("f", {"epochs": 1})
    with pytest.raises(ValueError, match=r"chapter_named: name must be one of \['fcn', 'mask_rcnn', 'lse', 'lse_curve'\], got 'x'"):
        chapter_named("x")
    assert all(isinstance(c, Chapter) for c in CHAPTERS)


def _plain(value):
    return json.loads(json.dumps(value))


# Recipe fields that choose which runs exist, not how one run trains (its own settings are its
# spec, compared exactly). The book added seeds and runs after some checkpoints were trained.
SELECTION_FIELDS = {"seeds", "ablation_seeds", "control_seeds", "variants", "ablations", "holdout_variants",
                    "keep_weights_seeds", "keep_weights_directions"}


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda c: c.name)
def test_every_committed_checkpoint_loads_with_the_recipe_that_trained_it(chapter):
    """make checkpoints' runs: each finished file holds its own spec, the chapter's default recipe
    and its scores, and its weights load into the model the chapter rebuilds (strictly)."""
    root = checkpoint_root()
    recipe = chapter.recipe()
    runs = chapter.runs(recipe)
    assert runs
    for spec in runs:
        state = chapter.load_run(root, spec.name)
        meta = state["meta"]
        assert meta["run"] == spec.name and meta["done"] is True
        assert meta["spec"] == _plain(dataclasses.asdict(spec)), spec.name
        stored, current = _plain(meta["recipe"]), _plain(dataclasses.asdict(recipe))
        differ = {k for k in set(stored) | set(current) if stored.get(k, "absent") != current.get(k, "absent")}
        assert differ <= SELECTION_FIELDS, (spec.name, differ)
        assert meta["scores"] and meta["scores_float32"] and meta["steps"] > 0
        assert state["history"] and state["history"][-1]["kind"] == "eval"
        assert (state["model"] is not None) == spec.keep_weights, spec.name
        if spec.keep_weights:
            model = chapter.load_run_model(root, spec.name)
            assert not model.training
            loaded = model.state_dict()
            assert set(loaded) == set(state["model"])
            for key, value in state["model"].items():
                assert torch.equal(loaded[key], value), (spec.name, key)
