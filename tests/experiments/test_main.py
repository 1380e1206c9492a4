import dataclasses
import subprocess
import sys

import pytest

from segnotes.experiments.__main__ import build_parser, main


def test_help_lists_the_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--out", "--jobs", "--threads", "--device", "--list", "--handles-root", "fcn", "mask_rcnn", "lse"):
        assert option in text


def test_module_runs_as_script():
    result = subprocess.run([sys.executable, "-m", "segnotes.experiments", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "resumable" in result.stdout


def test_list_shows_todo_runs(tmp_path, capsys):
    assert main(["fcn", "--out", str(tmp_path), "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "todo  fcn32s_s0" in lines and "todo  fcn8s_s2" in lines
    assert main(["lse", "--out", str(tmp_path), "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "todo  lse_oracle_s0" in lines and "todo  lse_transfer_stagewise_a2b_s0" in lines


def test_bad_arguments(capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["maskrcnn"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'maskrcnn'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        build_parser().parse_args(["fcn", "--jobs", "0"])
    assert "expected a positive integer, got 0" in capsys.readouterr().err


# --set: recipe overrides


def test_override_recipe_reads_each_field_by_its_type():
    from segnotes.experiments import FCNRecipe, LSERecipe
    from segnotes.experiments.__main__ import override_recipe

    recipe = override_recipe(FCNRecipe(), ["base_epochs=3", "stage_lr=0.02", "flip=false", "seeds=0, 2",
                                           "crop=none", "control_seeds=none", "augmented_variants=fcn8s,fcn16s"])
    assert recipe.base_epochs == 3 and recipe.stage_lr == 0.02 and recipe.flip is False
    assert recipe.seeds == (0, 2) and recipe.crop is None and recipe.control_seeds is None
    assert recipe.augmented_variants == ("fcn8s", "fcn16s")
    assert override_recipe(FCNRecipe(), ["last_stage_epochs=7"]).last_stage_epochs == 7
    assert override_recipe(LSERecipe(), ["epochs=12"]) == dataclasses.replace(LSERecipe(), epochs=12)
    assert override_recipe(LSERecipe(), []) == LSERecipe()


@pytest.mark.parametrize("assignment, message", [
    ("epochs", "--set expects FIELD=VALUE, got 'epochs'"),
    ("epoch=12", "LSERecipe has no field 'epoch'; its fields: num_classes, seeds"),
    ("epochs=twelve", "LSERecipe.epochs: expected an integer, got 'twelve'"),
    ("lr=fast", "LSERecipe.lr: expected a number, got 'fast'"),
    ("flip=maybe", "LSERecipe.flip: expected true or false, got 'maybe'"),
    ("seeds=0,x", "LSERecipe.seeds: expected an integer, got 'x'"),
    ("epochs=none", "LSERecipe.epochs: expected an integer, got 'none'"),
])
def test_override_recipe_names_the_field_and_the_value(assignment, message):
    from segnotes.experiments import LSERecipe
    from segnotes.experiments.__main__ import override_recipe

    with pytest.raises(ValueError) as error:
        override_recipe(LSERecipe(), [assignment])
    assert message in str(error.value)


def test_set_changes_the_runs_and_refuses_the_books_folder(tmp_path, capsys):
    assert main(["fcn", "--out", str(tmp_path), "--set", "seeds=1", "--set", "control_seeds=1", "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "todo  fcn32s_s1" in lines and "todo  fcn32s_ctl8_s1" in lines
    assert not any(line.endswith("_s0") for line in lines)
    assert not (tmp_path / "fcn" / "recipe.json").exists()  # --list writes nothing
    with pytest.raises(SystemExit) as exit_info:
        main(["lse", "--set", "epochs=12", "--list"])  # default --out: the book's checkpoints
    assert exit_info.value.code == 2
    assert "give another --out than data/checkpoints" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # the recipe's own checks, before anything trains
        main(["all", "--out", str(tmp_path), "--set", "seeds=", "--list"])
    assert "fcn: FCNRecipe: seeds must hold at least one seed" in capsys.readouterr().err


def test_set_refuses_a_folder_trained_with_other_values(tmp_path, capsys):
    from segnotes.engine import save_checkpoint
    from segnotes.experiments import LSERecipe
    from segnotes.experiments.__main__ import _recipe_record

    # A finished run trained with the default epochs: --set epochs=12 would keep it as it is.
    meta = {"run": "lse_oracle_s0", "done": True, "recipe": dataclasses.asdict(LSERecipe())}
    save_checkpoint(tmp_path / "done" / "lse" / "lse_oracle_s0.pt", meta=meta, history=[])
    with pytest.raises(SystemExit):
        main(["lse", "--out", str(tmp_path / "done"), "--set", "epochs=12", "--list"])
    assert "the finished run lse_oracle_s0" in capsys.readouterr().err
    assert main(["lse", "--out", str(tmp_path / "done"), "--set", "epochs=4", "--list"]) == 0  # the same value

    # A folder whose runs started with epochs=12 (recorded when they started): resuming needs the same recipe.
    _recipe_record("lse", dataclasses.replace(LSERecipe(), epochs=12), tmp_path / "long", write=True)
    assert main(["lse", "--out", str(tmp_path / "long"), "--set", "epochs=12", "--list"]) == 0
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["lse", "--out", str(tmp_path / "long"), "--list"])
    assert "were started with another recipe (epochs=12 there, 4 now)" in capsys.readouterr().err


def test_set_may_train_into_a_folder_the_book_is_pointed_at(tmp_path, monkeypatch, capsys):
    # $SEGNOTES_CHECKPOINTS names a folder of variants for the chapters to read; only the committed one is refused.
    monkeypatch.setenv("SEGNOTES_CHECKPOINTS", str(tmp_path))
    assert main(["lse", "--out", str(tmp_path), "--set", "epochs=12", "--list"]) == 0
    assert "todo  lse_oracle_s0" in capsys.readouterr().out


@pytest.mark.parametrize("chapter, assignment, message", [
    ("fcn", "base_lr=nan", "fcn: FCNRecipe: base_lr must be a finite number, got nan"),
    ("fcn", "base_lr=-1", "fcn: FCNRecipe: base_lr must be > 0, got -1.0"),
    ("fcn", "momentum=inf", "fcn: FCNRecipe: momentum must be a finite number, got inf"),
    ("mask_rcnn", "lr=nan", "mask_rcnn: MaskRCNNRecipe: lr must be a finite number, got nan"),
    ("mask_rcnn", "grad_clip=-3", "mask_rcnn: MaskRCNNRecipe: grad_clip must be > 0, got -3.0"),
    ("lse", "min_lr_factor=2", "lse: LSERecipe: min_lr_factor must be in [0, 1], got 2.0"),
])
def test_set_refuses_nan_and_out_of_range_rates_before_training(tmp_path, capsys, chapter, assignment, message):
    # Issue 22, finding 5: --set base_lr=nan (or -1) was accepted and trained.
    with pytest.raises(SystemExit) as exit_info:
        main([chapter, "--out", str(tmp_path / "runs"), "--set", assignment, "--list"])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
