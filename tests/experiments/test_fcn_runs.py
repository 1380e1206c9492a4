import dataclasses

import pytest
import torch
from torch.utils.data import TensorDataset

from segnotes.data import generate
from segnotes.engine import CheckpointError, evaluate_semantic, semantic_loss
from segnotes.experiments import (
    FCNRecipe,
    InMemorySegmentation,
    boundary_band,
    evaluate_fcn,
    fcn_runs,
    is_done,
    load_run,
    load_run_model,
    run_all,
    run_path,
    sampled_semantic_step,
    stride_ceiling,
    train_run,
    training_memory_format,
)
from segnotes.experiments import fcn as fcn_module
from segnotes.models import fcn
from segnotes.ops import bilinear_kernel
from segnotes.utils import num_threads

# A recipe small enough for tests: 2 epochs of 2 steps, one seed.
TINY = FCNRecipe(
    seeds=(0,), base_epochs=2, stage_epochs=1, last_stage_epochs=None, control_seeds=None, batch_size=2, warmup_steps=1,
    stage_warmup_steps=0, monitor_images=2, boundary_widths=(1,), patch_epochs=1, checkpoint_every=1,
)


def blobs(n, size=32, seed=0):
    """Images with one bright square (class 1 or 2 by colour) and a void ring; 10 classes nominally."""
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 3, size, size, generator=g) * 0.2
    labels = torch.zeros(n, size, size, dtype=torch.int64)
    for i in range(n):
        y, x = torch.randint(2, size - 14, (2,), generator=g).tolist()
        cls = 1 + i % 2
        labels[i, y - 1 : y + 13, x - 1 : x + 13] = 255
        labels[i, y : y + 12, x : x + 12] = cls
        images[i, cls - 1, y : y + 12, x : x + 12] = 1.0
    return TensorDataset(images, labels)


@pytest.fixture(scope="module")
def data():
    return InMemorySegmentation(blobs(4), flip=True), InMemorySegmentation(blobs(2, seed=1))


# ---------------------------------------------------------------------------------------------
# Recipe and run list


def test_fcn_runs_staged_chain_controls_and_experiments():
    runs = fcn_runs(dataclasses.replace(TINY, seeds=(0, 1), fixed_upsampling=True))
    names = [r.name for r in runs]
    assert names[:2] == ["fcn32s_s0", "fcn32s_s1"]
    by_name = {r.name: r for r in runs}
    assert by_name["fcn16s_s1"].parent == "fcn32s_s1"
    assert by_name["fcn8s_s1"].parent == "fcn16s_s1"
    assert by_name["fcn32s_ctl8_s0"].parent == "fcn32s_ctl16_s0"
    assert by_name["fcn32s_ctl8_s0"].variant == "fcn32s" and by_name["fcn32s_ctl8_s0"].group == "control"
    # Equal compute: each control trains as long as the stage it controls.
    assert by_name["fcn32s_ctl16_s0"].epochs == by_name["fcn16s_s0"].epochs
    assert by_name["patch_p0.25_s0"].loss_fraction == 0.25
    scratch = by_name["fcn8s_scratch_s0"]  # as long as the staged chain, from random init
    assert scratch.parent is None and scratch.epochs == TINY.base_epochs + 2 * TINY.stage_epochs
    assert names.index("fcn8s_scratch_s0") < names.index("fcn16s_s0")
    assert not by_name["fcn16s_fixedup_s0"].learn_upsampling
    for i, run in enumerate(runs):  # parents come first
        assert run.parent is None or run.parent in names[:i]


def test_fcn_runs_last_stage_and_control_seeds():
    recipe = dataclasses.replace(TINY, seeds=(0, 1, 2), last_stage_epochs=3, control_seeds=(1,))
    by_name = {r.name: r for r in fcn_runs(recipe)}
    assert recipe.last_epochs == 3 and recipe.seeds_with_controls == (1,)
    assert TINY.last_epochs == TINY.stage_epochs and TINY.seeds_with_controls == TINY.seeds  # None: as the stage, all seeds
    assert by_name["fcn8s_s2"].epochs == 3 and by_name["fcn16s_s2"].epochs == TINY.stage_epochs
    # Controls only for the control seeds, each with as many training pixels as the stage it controls:
    # the FCN-8s stage trains on 96 px windows, its FCN-32s control on whole 128 px images.
    assert sorted(n for n in by_name if "ctl" in n) == ["fcn32s_ctl16_s1", "fcn32s_ctl8_s1"]
    assert by_name["fcn32s_ctl8_s1"].epochs == recipe.equal_pixel_epochs(3, "fcn32s", like="fcn8s") == round(3 * 96**2 / 128**2) == 2
    assert recipe.equal_pixel_epochs(3, "fcn32s", like="fcn16s") == 3  # neither augmented: its own epochs
    assert recipe.pixels_per_image("fcn8s") == 96**2 and recipe.pixels_per_image("fcn32s") == 128**2
    with pytest.raises(ValueError, match=r"pixels_per_image: variant must be one of .*fcn8s.*, got 'fcn4s'"):
        recipe.equal_pixel_epochs(3, "fcn4s", like="fcn8s")
    with pytest.raises(ValueError, match=r"equal_pixel_epochs: epochs must be .*1.*got 0"):
        recipe.equal_pixel_epochs(0, "fcn32s", like="fcn8s")
    whole = dataclasses.replace(recipe, crop=None)
    assert {r.name: r for r in fcn_runs(whole)}["fcn32s_ctl8_s1"].epochs == 3
    everything = dataclasses.replace(recipe, augmented_variants=("fcn32s", "fcn16s", "fcn8s"))
    assert {r.name: r for r in fcn_runs(everything)}["fcn32s_ctl8_s1"].epochs == 3  # windows too: as many epochs
    coarse_only = dataclasses.replace(recipe, augmented_variants=("fcn32s",))  # the control on windows, FCN-8s not
    assert {r.name: r for r in fcn_runs(coarse_only)}["fcn32s_ctl8_s1"].epochs == round(3 * 128**2 / 96**2) == 5
    # The from-scratch FCN-8s and the loss-sampling run follow the whole chain's length.
    assert by_name["fcn8s_scratch_s0"].epochs == TINY.base_epochs + TINY.stage_epochs + 3
    assert by_name["patch_p0.25_s0"].epochs == TINY.base_epochs + TINY.stage_epochs + 3


def test_recipe_bad_input():
    with pytest.raises(ValueError, match=r"FCNRecipe: control_seeds must be among seeds \(0, 1\), got \(2,\)"):
        FCNRecipe(seeds=(0, 1), control_seeds=(2,))
    with pytest.raises(ValueError, match="FCNRecipe: last_stage_epochs must be"):
        FCNRecipe(last_stage_epochs=0)
    with pytest.raises(ValueError, match="FCNRecipe: seeds must hold at least one seed"):
        FCNRecipe(seeds=())
    with pytest.raises(ValueError, match=r"FCNRecipe: patch_fraction must be in \(0, 1\) or None, got 1.5"):
        FCNRecipe(patch_fraction=1.5)
    with pytest.raises(ValueError, match="FCNRecipe: base_epochs must be"):
        FCNRecipe(base_epochs=0)
    with pytest.raises(TypeError, match="fcn_runs: recipe must be an FCNRecipe, got dict"):
        fcn_runs({})
    with pytest.raises(ValueError, match=r"FCNRecipe: augmented_variants\[i\] must be one of .*got 'fcn4s'"):
        FCNRecipe(augmented_variants=("fcn8s", "fcn4s"))
    with pytest.raises(ValueError, match="FCNRecipe: crop must be at most image_size 128, got 129"):
        FCNRecipe(crop=129)
    with pytest.raises(ValueError, match="FCNRecipe: image_size must be >= 1, got 0"):
        FCNRecipe(image_size=0, crop=None)


# ---------------------------------------------------------------------------------------------
# Boundary bands, evaluation, loss sampling


def test_boundary_band_hand_computed():
    target = torch.zeros(1, 5, 5, dtype=torch.int64)
    target[0, 2, 2] = 1
    edge = boundary_band(target, 0)[0]
    expected = torch.zeros(5, 5, dtype=torch.bool)
    expected[2, 2] = True
    expected[1, 2] = expected[3, 2] = expected[2, 1] = expected[2, 3] = True  # the 4 neighbours
    assert torch.equal(edge, expected)
    band = boundary_band(target, 1)[0]
    assert band.sum() == 21  # the plus sign dilated by 3x3: a 5x5 square minus its 4 corners
    assert not band[0, 0] and band[0, 1] and band[2, 0]
    assert not boundary_band(torch.zeros(2, 4, 4, dtype=torch.int64), 3).any()


def test_boundary_band_bad_input():
    with pytest.raises(ValueError, match="boundary_band: target must be 3-D"):
        boundary_band(torch.zeros(5, 5, dtype=torch.int64), 1)
    with pytest.raises(TypeError, match="boundary_band: target must be an integer or bool tensor"):
        boundary_band(torch.zeros(1, 5, 5), 1)
    with pytest.raises(ValueError, match="boundary_band: width must be"):
        boundary_band(torch.zeros(1, 5, 5, dtype=torch.int64), -1)


def test_evaluate_fcn_matches_engine_and_restricts_to_band(data):
    _, val = data
    with num_threads(1):
        model = _seeded_model("fcn8s")
    ours = evaluate_fcn(model, val, 10, boundary_widths=(1, 100))
    reference = evaluate_semantic(model, val, 10)
    for key in ("pixel_accuracy", "mean_accuracy", "mean_iu", "frequency_weighted_iu"):
        assert ours[key] == pytest.approx(reference[key])
    # A band wider than the image covers every pixel of an image with a boundary.
    assert ours["boundary"]["100"]["mean_iu"] == pytest.approx(ours["mean_iu"])
    assert set(ours["boundary"]) == {"1", "100"}


def test_sampled_step_keeps_about_fraction_and_equals_loss_at_one(data):
    train, _ = data
    images, labels = torch.stack([train.images[i].float() / 255 for i in range(4)]), train.labels.long()
    model = _seeded_model("fcn32s")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        loss, logs = sampled_semantic_step(model, (images, labels), fraction=1.0)
        assert logs["kept"] == 1
        torch.testing.assert_close(loss, semantic_loss(model(images), labels))
        _, logs = sampled_semantic_step(model, (images, labels), fraction=0.5, cell=4)
    assert 0.3 < float(logs["kept"]) < 0.7


def test_in_memory_dataset_round_trips_and_flips():
    source = blobs(3)
    ds = InMemorySegmentation(source, limit=2)
    assert len(ds) == 2
    image, label = ds[1]
    torch.testing.assert_close(image, (source[1][0] * 255).round() / 255)
    assert torch.equal(label, source[1][1])
    flipping = InMemorySegmentation(source, flip=True)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        pairs = [flipping[0] for _ in range(8)]
    assert any(torch.equal(lab, source[0][1].flip(-1)) for _, lab in pairs)
    assert all(torch.equal(lab, source[0][1]) or torch.equal(lab, source[0][1].flip(-1)) for _, lab in pairs)
    with pytest.raises(ValueError, match="InMemorySegmentation: dataset must not be empty"):
        InMemorySegmentation(blobs(0))


def test_in_memory_dataset_rotates_and_permutes_channels_consistently():
    source = blobs(2)
    image0, label0 = InMemorySegmentation(source)[0]
    symmetries = [label0.rot90(k, (0, 1)) for k in range(4)] + [label0.flip(-1).rot90(k, (0, 1)) for k in range(4)]
    augmenting = InMemorySegmentation(source, flip=True, rotate=True, permute_channels=True)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        pairs = [augmenting[0] for _ in range(48)]
    seen = set()
    for image, label in pairs:
        k = next(i for i, sym in enumerate(symmetries) if torch.equal(label, sym))
        seen.add(k)
        # The image moved with its label: the square is bright in exactly one channel, where the label is 1.
        bright = image.amax(0) == 1.0
        assert torch.equal(bright, label == 1)
        assert image.is_contiguous() and label.is_contiguous()
    assert len(seen) == 8  # all 8 symmetries of the square occur
    channels = {int(image[:, label == 1].mean(1).argmax()) for image, label in pairs}
    assert channels == {0, 1, 2}  # class 1 is bright in channel 0 of the source; permuted, in any


def test_in_memory_dataset_crops_a_random_window():
    source = blobs(2)
    cropping = InMemorySegmentation(source, crop=20)
    full_image, full_label = InMemorySegmentation(source)[1]
    corners = set()
    with torch.random.fork_rng():
        torch.manual_seed(0)
        for _ in range(12):
            image, label = cropping[1]
            assert image.shape == (3, 20, 20) and label.shape == (20, 20)
            found = [(y, x) for y in range(13) for x in range(13)
                     if torch.equal(image, full_image[:, y : y + 20, x : x + 20])]
            assert found, "the crop is a window of the image"
            assert any(torch.equal(label, full_label[y : y + 20, x : x + 20]) for y, x in found)
            corners.add(found[0])
    assert len(corners) > 1  # the window moves
    assert InMemorySegmentation(source, crop=32)[0][0].shape == (3, 32, 32)  # the whole image is allowed
    with pytest.raises(ValueError, match="InMemorySegmentation: crop must be at most the images' size 32, got 33"):
        InMemorySegmentation(source, crop=33)
    with pytest.raises(ValueError, match="InMemorySegmentation: crop must be >= 1, got 0"):
        InMemorySegmentation(source, crop=0)
    with pytest.raises(TypeError, match="InMemorySegmentation: crop must be an int, got"):
        InMemorySegmentation(source, crop=20.0)
    with pytest.raises(ValueError, match="FCNRecipe: crop must be >= 1, got 0"):
        FCNRecipe(crop=0)


def test_in_memory_dataset_flip_only_draws_as_before_and_checks_options():
    flipping = InMemorySegmentation(blobs(1), flip=True)
    with torch.random.fork_rng():
        torch.manual_seed(3)
        flipping[0]
        after_item = torch.rand(())
        torch.manual_seed(3)
        torch.rand(())  # flip alone draws one number per item, as it always did
        assert torch.equal(after_item, torch.rand(()))
    for name in ("flip", "rotate", "permute_channels"):
        with pytest.raises(TypeError, match=f"InMemorySegmentation: {name} must be a bool, got"):
            InMemorySegmentation(blobs(1), **{name: 1})


def _seeded_model(variant):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return fcn(variant, 10).eval()


# ---------------------------------------------------------------------------------------------
# Runs: finish, skip, resume, stage


def _spec(name="fcn32s_s0"):
    return {r.name: r for r in fcn_runs(TINY)}[name]


def test_run_finishes_stores_scores_and_skips_when_done(tmp_path, data, monkeypatch):
    with num_threads(1):
        meta = train_run(_spec(), TINY, tmp_path, data=data)
    assert is_done(tmp_path, "fcn32s_s0")
    assert not (tmp_path / "fcn" / "fcn32s_s0.partial.pt").exists()
    state = load_run(tmp_path, "fcn32s_s0")
    assert state["meta"]["steps"] == 4 and meta["steps"] == 4
    assert [h["kind"] for h in state["history"]].count("eval") == 2
    assert set(meta["scores"]) >= {"mean_iu", "iu", "boundary"}
    # The stored weights are float16 and reproduce the stored scores.
    raw = torch.load(run_path(tmp_path, "fcn32s_s0"), weights_only=True)
    assert raw["model"]["score_fr.weight"].dtype == torch.float16
    model = load_run_model(tmp_path, "fcn32s_s0")
    again = evaluate_fcn(model, data[1], 10, boundary_widths=(1,))
    assert again["mean_iu"] == pytest.approx(meta["scores"]["mean_iu"])
    # Finished: a second call trains nothing.
    monkeypatch.setattr(fcn_module, "Trainer", None)
    assert train_run(_spec(), TINY, tmp_path, data=data)["steps"] == 4


def test_training_layout_is_channels_last_on_cpu_only(tmp_path, data, monkeypatch):
    assert training_memory_format("cpu") == torch.channels_last
    assert training_memory_format(torch.device("cuda", 0)) == torch.contiguous_format
    layouts = []
    real_trainer = fcn_module.Trainer

    def spy(model, *args, **kwargs):
        conv3x3 = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3))
        layouts.append(conv3x3.weight.is_contiguous(memory_format=torch.channels_last))
        return real_trainer(model, *args, **kwargs)

    monkeypatch.setattr(fcn_module, "Trainer", spy)
    with num_threads(1):
        train_run(_spec(), TINY, tmp_path, data=data, device="cpu")
    assert layouts == [True]


def test_interrupted_run_resumes_to_the_same_weights(tmp_path, data):
    with num_threads(1):
        train_run(_spec(), TINY, tmp_path / "straight", data=data)
        assert train_run(_spec(), TINY, tmp_path / "cut", data=data, stop_at_step=3) is None
    assert (tmp_path / "cut" / "fcn" / "fcn32s_s0.partial.pt").exists()
    assert not is_done(tmp_path / "cut", "fcn32s_s0")
    with num_threads(1):
        train_run(_spec(), TINY, tmp_path / "cut", data=data)
    a = load_run(tmp_path / "straight", "fcn32s_s0")
    b = load_run(tmp_path / "cut", "fcn32s_s0")
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=1e-3, atol=1e-3)
    assert a["meta"]["scores"]["mean_iu"] == pytest.approx(b["meta"]["scores"]["mean_iu"])


def test_stage_starts_from_parent_and_control_from_same_net(tmp_path, data):
    runs = {r.name: r for r in fcn_runs(TINY)}
    with pytest.raises(RuntimeError, match="train_run: run 'fcn16s_s0' needs its parent 'fcn32s_s0'"):
        train_run(runs["fcn16s_s0"], TINY, tmp_path, data=data)
    with num_threads(1):
        train_run(runs["fcn32s_s0"], TINY, tmp_path, data=data)
    parent = load_run_model(tmp_path, "fcn32s_s0")
    child = fcn_module._build_model(runs["fcn16s_s0"], TINY, load_run_model(tmp_path, "fcn32s_s0").train())
    assert child.variant == "fcn16s"
    torch.testing.assert_close(child.backbone.stage1[0].weight, parent.backbone.stage1[0].weight)
    assert not child.score_pool4.weight.any()  # the new skip starts at zero
    control = fcn_module._build_model(runs["fcn32s_ctl16_s0"], TINY, load_run_model(tmp_path, "fcn32s_s0").train())
    assert control.variant == "fcn32s"
    for (k, v), w in zip(control.state_dict().items(), parent.state_dict().values()):
        torch.testing.assert_close(v, w, msg=k)


def test_fixed_upsampling_run_keeps_bilinear_kernel(tmp_path, data):
    recipe = dataclasses.replace(TINY, fixed_upsampling=True)
    runs = {r.name: r for r in fcn_runs(recipe)}
    with num_threads(1):
        train_run(runs["fcn32s_s0"], recipe, tmp_path, data=data)
    fixed = runs["fcn16s_fixedup_s0"]
    with num_threads(1):
        train_run(fixed, recipe, tmp_path, data=data)
    assert load_run(tmp_path, fixed.name)["model"] is None  # keep_weights=False: scores and history only
    with pytest.raises(ValueError, match="load_run_model: run 'fcn16s_fixedup_s0' was saved without weights"):
        load_run_model(tmp_path, fixed.name)
    # The same run with its weights kept: the 2x kernel is still bilinear; a learned one moved.
    for spec in (dataclasses.replace(fixed, name="frozen", keep_weights=True), runs["fcn16s_s0"]):
        with num_threads(1):
            train_run(spec, recipe, tmp_path, data=data)
    bilinear = bilinear_kernel(1, 1, 4)  # depthwise: the same filter for each class
    frozen = load_run(tmp_path, "frozen")["model"]["upscore2.weight"]
    learned = load_run(tmp_path, "fcn16s_s0")["model"]["upscore2.weight"]
    torch.testing.assert_close(frozen, bilinear.expand_as(frozen), atol=1e-3, rtol=0)
    assert not torch.allclose(learned, frozen, atol=1e-5)


def test_train_run_bad_input(tmp_path, data):
    with pytest.raises(TypeError, match=r"train_run: spec must be RunSpec \(the run spec of FCNRecipe\), got str"):
        train_run("fcn32s_s0", TINY, tmp_path, data=data)
    with pytest.raises(TypeError, match=r"train_run: recipe must be a chapter's recipe \(FCNRecipe, MaskRCNNRecipe, "
                                        r"LSERecipe.*\), got dict"):
        train_run(_spec(), {}, tmp_path, data=data)


def test_corrupt_checkpoint_is_reported(tmp_path):
    path = run_path(tmp_path, "fcn32s_s0")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read the checkpoint"):
        load_run(tmp_path, "fcn32s_s0")


def test_run_all_on_shapes_trains_then_skips(tmp_path):
    root = generate(tmp_path / "shapes", num_train=4, num_val=2, seed=0, image_size=64, workers=1, progress=False)
    recipe = dataclasses.replace(TINY, stage_epochs=1, patch_fraction=None, image_size=64, crop=48)
    # Only the augmented variants train on windows, turned and with their channels shuffled.
    runs = {r.name: r for r in fcn_runs(recipe)}
    coarse, _ = fcn_module._load_data(runs["fcn16s_s0"], recipe, root)
    fine, val = fcn_module._load_data(runs["fcn8s_s0"], recipe, root)
    assert (coarse.flip, coarse.rotate, coarse.permute_channels, coarse.crop) == (True, False, False, None)
    assert (fine.flip, fine.rotate, fine.permute_channels, fine.crop) == (True, True, True, 48)
    assert coarse[0][0].shape == (3, 64, 64) and fine[0][0].shape == (3, 48, 48) and val[0][0].shape == (3, 64, 64)
    runs = [r for r in fcn_runs(recipe) if r.name in ("fcn32s_s0", "fcn16s_s0")]
    lines = []
    with num_threads(1):
        trained = run_all(runs, recipe, tmp_path / "ck", data_root=root, log=lines.append)
    assert trained == ["fcn32s_s0", "fcn16s_s0"]
    assert lines[0] == "start fcn32s_s0"
    assert run_all(runs, recipe, tmp_path / "ck", data_root=root, log=lines.append) == []
    with pytest.raises(ValueError, match="run_all: run 'fcn8s_s0' needs 'fcn16s_s0'"):
        run_all([r for r in fcn_runs(recipe) if r.name == "fcn8s_s0"], recipe, tmp_path / "other", data_root=root)
    with pytest.raises(ValueError, match="run_all: jobs must be"):
        run_all(runs, recipe, tmp_path / "ck", jobs=0)


# ---------------------------------------------------------------------------------------------
# The output stride's ceiling


def test_stride_ceiling_stride_one_fits_any_labels_and_coarse_strides_lose_thin_parts():
    g = torch.Generator().manual_seed(0)
    noise = torch.randint(0, 3, (2, 20, 24), generator=g)
    noise[0, 0, 0] = 255  # void pixels are left out
    assert stride_ceiling(noise, 1, 3, steps=100)["mean_iu"] == pytest.approx(1.0)
    bars = torch.zeros(1, 64, 64, dtype=torch.long)
    bars[0, :, 30:33] = 1  # a 3 px vertical bar
    coarse, fine = (stride_ceiling(bars, s, 2, steps=150)["iu"][1] for s in (32, 4))
    assert coarse < 0.6 < 0.9 < fine


def test_stride_ceiling_bad_input():
    labels = torch.zeros(1, 8, 8, dtype=torch.long)
    with pytest.raises(ValueError, match="stride_ceiling: lr must be > 0, got 0"):
        stride_ceiling(labels, 8, 2, lr=0)
    with pytest.raises(ValueError, match="stride_ceiling: stride must be"):
        stride_ceiling(labels, 0, 2)
    with pytest.raises(ValueError, match=r"stride_ceiling: labels must be in \[0, 2\) or 255, got values from 0 to 5"):
        stride_ceiling(labels + torch.tensor(5) * (torch.arange(8) == 3), 8, 2)
    with pytest.raises(ValueError, match="stride_ceiling: labels"):
        stride_ceiling(labels[0], 8, 2)
