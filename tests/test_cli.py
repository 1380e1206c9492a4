import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools.coco import COCO

from segnotes.cli import main
from segnotes.engine import Trainer, load_checkpoint


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "shapes", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--root", "--num-train", "--num-val", "--seed", "--image-size"):
        assert flag in out


def test_generate_checksums_verify_and_stats(tmp_path, capsys):
    root, sums = tmp_path / "shapes", tmp_path / "shapes.sha256"
    args = ["data", "shapes", "--root", str(root), "--num-train", "2", "--num-val", "1", "--image-size", "64"]
    assert main(args + ["--workers", "1", "--no-progress"]) == 0
    assert main(["data", "checksums", "--root", str(root), "--output", str(sums)]) == 0
    assert main(["data", "verify", "--root", str(root), "--checksums", str(sums)]) == 0
    capsys.readouterr()
    assert main(["data", "stats", "--root", str(root)]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["train"]["images"] == 2 and stats["val"]["images"] == 1
    # a changed byte is reported as one clear line, exit status 2
    image = root / "val" / "images" / "000000.png"
    image.write_bytes(image.read_bytes() + b"\0")
    assert main(["data", "verify", "--root", str(root), "--checksums", str(sums)]) == 2
    assert capsys.readouterr().err.startswith("segnotes: error: ")


def test_bad_arguments_are_reported_by_name(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "shapes", "--root", str(tmp_path), "--num-train", "-1"])
    assert exit_info.value.code == 2
    assert "argument --num-train: expected a non-negative integer, got -1" in capsys.readouterr().err
    # an image size below the generator's minimum is refused by generate(), as one line
    assert main(["data", "shapes", "--root", str(tmp_path / "s"), "--image-size", "8", "--no-progress"]) == 2
    assert "image_size" in capsys.readouterr().err


def test_handles_flag_makes_the_lse_variant(tmp_path):
    root = tmp_path / "h"
    args = ["data", "shapes", "--root", str(root), "--num-train", "1", "--num-val", "1", "--image-size", "64"]
    assert main(args + ["--workers", "1", "--no-progress", "--handles"]) == 0
    assert json.loads((root / "meta.json").read_text())["arguments"]["handles"] is True
    # the same folder without the flag is a different data set: refused as one line
    assert main(args + ["--workers", "1", "--no-progress"]) == 2


# ------------------------------------------------------------------------------------------------
# segnotes train / evaluate / predict on the COCO and VOC folders of tests/conftest.py

FAST = ["--epochs", "2", "--batch-size", "4", "--device", "cpu", "--checkpoint-every", "1"]
REPO = Path(__file__).resolve().parents[1]


def snapshot(folder: Path) -> dict:
    """Every file under ``folder`` with its bytes: what "nothing is damaged" compares."""
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _data(fmt, coco_folder, voc_folder) -> str:
    return f"coco:{coco_folder}" if fmt == "coco" else f"voc:{voc_folder}"


def _train(model, data, out, *extra):
    return main(["train", model, "--data", data, "--out", str(out), *FAST, *extra])


def interrupt_after_one_step(monkeypatch):
    """Make every Trainer.fit stop after its first step, as a killed run would (its checkpoint stays)."""
    fit = Trainer.fit
    monkeypatch.setattr(Trainer, "fit", lambda self, resume=False, stop_at_step=None: fit(self, resume=resume, stop_at_step=1))


@pytest.mark.parametrize("model", ["fcn8s", "mask-rcnn"])
def test_coco_train_resume_evaluate_predict(tmp_path, coco_folder, model, monkeypatch, capsys):
    data = f"coco:{coco_folder}"
    assert _train(model, data, tmp_path / "straight") == 0
    interrupt_after_one_step(monkeypatch)
    assert _train(model, data, tmp_path / "cut") == 0  # stops after one step
    monkeypatch.undo()
    cut = tmp_path / "cut"
    assert (cut / "model.partial.pt").exists() and not (cut / "model.pt").exists()
    before = snapshot(cut)
    assert _train(model, data, cut) == 2  # a run is there: --resume needed, nothing touched
    assert "holds an unfinished run (config.json, model.partial.pt); add --resume" in capsys.readouterr().err
    assert snapshot(cut) == before
    assert _train(model, data, cut, "--resume") == 0
    assert not (cut / "model.partial.pt").exists()
    straight, resumed = load_checkpoint(tmp_path / "straight" / "model.pt"), load_checkpoint(cut / "model.pt")
    for key, value in straight["model"].items():
        torch.testing.assert_close(resumed["model"][key], value, rtol=1e-4, atol=1e-5, msg=key)
    assert resumed["model"][key].dtype == torch.float32  # not the book's float16
    meta = straight["meta"]
    assert json.loads(json.dumps(meta["recipe"]["categories"])) == [[3, "square"], [7, "disc"]]
    assert meta["recipe"]["model"] == model
    # config.json, metrics.json (one entry per epoch) and the log
    config = json.loads((cut / "config.json").read_text())
    assert config["data"] == data and config["epochs"] == 2
    epochs = json.loads((tmp_path / "straight" / "metrics.json").read_text())["epochs"]
    assert [e["epoch"] for e in epochs] == [1, 2]
    log = (tmp_path / "straight" / "train.log").read_text()
    assert "epoch 2 val:" in log and "done in" in log
    assert _train(model, data, cut, "--resume") == 0  # finished: nothing to do
    assert "holds a finished run" in capsys.readouterr().out
    # evaluate: the same scores as stored, written to --json
    scores_file = tmp_path / "scores.json"
    assert main(["evaluate", str(cut), "--data", data, "--json", str(scores_file), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    written = json.loads(scores_file.read_text())["scores"]
    if model == "fcn8s":
        assert "mean_iu" in printed and written["mean_iu"] == pytest.approx(resumed["meta"]["scores"]["mean_iu"])
    else:
        assert "AP50" in printed and written["segm"]["AP"] == pytest.approx(resumed["meta"]["scores"]["segm"]["AP"])
    # predict: overlays, and label PNGs (FCN) or COCO results that pycocotools loads (Mask R-CNN)
    out = tmp_path / "predictions"
    ann = coco_folder / "annotations" / "instances_val.json"
    assert main(["predict", str(cut), str(coco_folder / "val"), "--out", str(out), "--device", "cpu",
                 "--coco", str(ann), "--score-threshold", "0"]) == 0
    names = sorted(p.name for p in (coco_folder / "val").iterdir())
    for name in names:
        stem = Path(name).stem
        with Image.open(out / f"{stem}_overlay.png") as overlay, Image.open(coco_folder / "val" / name) as image:
            assert overlay.size == image.size and overlay.mode == "RGB"
        if model == "fcn8s":
            with Image.open(out / f"{stem}.png") as label:
                assert label.mode == "P" and label.size == image.size
                assert set(np.unique(np.asarray(label)).tolist()) <= {0, 3, 7}  # category ids, not labels
    if model == "mask-rcnn":
        results = json.loads((out / "predictions.json").read_text())
        assert results and {r["category_id"] for r in results} <= {3, 7}
        with contextlib.redirect_stdout(io.StringIO()):
            loaded = COCO(str(ann)).loadRes(str(out / "predictions.json"))
            own = COCO(str(out / "images.json")).loadRes(str(out / "predictions.json"))
        assert len(loaded.anns) == len(results) == len(own.anns)
        assert {r["image_id"] for r in results} <= {i["id"] for i in json.loads(ann.read_text())["images"]}


@pytest.mark.parametrize("model", ["fcn16s", "mask-rcnn"])
def test_voc_train_evaluate_predict(tmp_path, voc_folder, model, capsys):
    data = f"voc:{voc_folder}"
    extra = ["--image-size", "48", "--crop", "40", "--scale-jitter", "0.75,1.25"] if model == "fcn16s" else []
    assert _train(model, data, tmp_path / "run", *extra) == 0
    meta = load_checkpoint(tmp_path / "run" / "model.pt")["meta"]
    assert json.loads(json.dumps(meta["recipe"]["categories"])) == [[8, "cat"], [15, "person"]]
    assert main(["evaluate", str(tmp_path / "run"), "--data", data, "--split", "train", "--device", "cpu"]) == 0
    assert ("mean_iu" if model == "fcn16s" else "mask") in capsys.readouterr().out
    image = sorted((voc_folder / "JPEGImages").iterdir())[0]
    assert main(["predict", str(tmp_path / "run"), str(image), "--out", str(tmp_path / "p"), "--device", "cpu"]) == 0
    assert (tmp_path / "p" / f"{image.stem}_overlay.png").is_file()
    if model == "mask-rcnn":
        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO(str(tmp_path / "p" / "images.json"))
            if json.loads((tmp_path / "p" / "predictions.json").read_text()):
                coco.loadRes(str(tmp_path / "p" / "predictions.json"))
        assert coco.getImgIds() == [1]


def test_maskx_rcnn_learns_masks_of_the_named_classes_only(tmp_path, coco_folder, capsys):
    assert _train("maskx-rcnn", f"coco:{coco_folder}", tmp_path / "x", "--mask-classes", "square", "--epochs", "1") == 0
    meta = load_checkpoint(tmp_path / "x" / "model.pt")["meta"]
    assert tuple(meta["recipe"]["mask_classes"]) == (3,)


def test_python_dash_m_segnotes_is_the_same_program():
    result = subprocess.run([sys.executable, "-m", "segnotes", "train", "--help"], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert result.returncode == 0 and "FORMAT:ROOT" in result.stdout and "--mask-classes" in result.stdout


@pytest.mark.parametrize("model", ["fcn32s", "mask-rcnn"])
def test_torchrun_two_processes_train_and_only_rank_0_writes(tmp_path, coco_folder, model, run_group):
    out = tmp_path / "ddp"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    result = run_group(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "segnotes", "train",
         model, "--data", f"coco:{coco_folder}", "--out", str(out), "--epochs", "1", "--batch-size", "2",
         "--device", "cpu"],
        timeout=300, env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    meta = load_checkpoint(out / "model.pt")["meta"]
    assert meta["processes"] == 2 and meta["steps"] == 2  # 8 images, 2 processes of batch 2
    assert meta["scores"]  # the confusion matrix summed, or the detections gathered for AP, on rank 0
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "metrics.json", "model.pt", "train.log"]
    log = (out / "train.log").read_text()
    assert log.count("epoch 1 val:") == 1 and "2 process(es)" in log


# ------------------------------------------------------------------------------------------------
# Bad input: a clear error naming the file or the argument, and nothing in DIR damaged


@pytest.fixture
def finished_run(tmp_path_factory, coco_folder):
    """A finished FCN run (a session's copy per test would cost a training each: one, read-only)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    assert main(["train", "fcn32s", "--data", f"coco:{coco_folder}", "--out", str(out), "--epochs", "1",
                 "--batch-size", "4", "--device", "cpu"]) == 0
    return out


def _fails(capsys, argv, *messages):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("segnotes: error: "), err
    for message in messages:
        assert message in err, err
    return err


def test_bad_data_is_named_and_leaves_dir_untouched(tmp_path, coco_folder, voc_folder, finished_run, capsys):
    before = snapshot(finished_run)
    out = ["--out", str(finished_run), "--resume", "--device", "cpu"]
    coco = f"coco:{coco_folder}"
    # a missing split / annotation file
    _fails(capsys, ["train", "fcn8s", "--data", coco, "--train-split", "nope", *out],
           f"annotation file {coco_folder / 'annotations' / 'instances_nope.json'} not found")
    _fails(capsys, ["train", "fcn8s", "--data", f"voc:{voc_folder}", "--val-split", "test", *out],
           f"no split file {voc_folder / 'ImageSets' / 'Segmentation' / 'test.txt'}")
    _fails(capsys, ["train", "fcn8s", "--data", f"coco:{tmp_path / 'nowhere'}", *out], "coco folder")
    _fails(capsys, ["train", "fcn8s", "--data", "kitti:x", *out], "--data must be FORMAT:ROOT")
    # an annotation whose image is missing: not listed, or its file gone
    bad = tmp_path / "badcoco"
    shutil.copytree(coco_folder, bad)
    ann = bad / "annotations" / "instances_val.json"
    dataset = json.loads(ann.read_text())
    dataset["annotations"].append(dict(dataset["annotations"][0], id=999, image_id=12345))
    ann.write_text(json.dumps(dataset))
    _fails(capsys, ["train", "fcn8s", "--data", f"coco:{bad}", *out], f"{ann}, annotation id 999 has image_id 12345, which the file's images do not list")
    shutil.copy(coco_folder / "annotations" / "instances_val.json", ann)
    gone = bad / "val" / json.loads(ann.read_text())["images"][0]["file_name"]
    gone.unlink()
    _fails(capsys, ["train", "mask-rcnn", "--data", f"coco:{bad}", *out], f"image file {gone} not found")
    # an image that cannot be converted (16-bit), and one whose size is not the JSON's
    Image.fromarray(np.zeros((64, 80), np.uint16)).save(gone.with_suffix(".png"))
    dataset = json.loads(ann.read_text())
    dataset["images"][0]["file_name"] = gone.with_suffix(".png").name
    ann.write_text(json.dumps(dataset))
    _fails(capsys, ["train", "fcn8s", "--data", f"coco:{bad}", *out], f"image {gone.with_suffix('.png')} has mode 'I;16'")
    Image.new("RGB", (40, 30)).save(gone.with_suffix(".png"))
    _fails(capsys, ["train", "fcn8s", "--data", f"coco:{bad}", *out], "is 30 x 40 pixels (H x W), but", str(ann))
    # categories absent from a split: listed in train but never annotated; known to val only
    shutil.copy(coco_folder / "annotations" / "instances_val.json", ann)
    shutil.copy(coco_folder / "val" / gone.name, gone)
    train_ann = bad / "annotations" / "instances_train.json"
    dataset = json.loads(train_ann.read_text())
    dataset["categories"].append({"id": 9, "name": "star"})
    train_ann.write_text(json.dumps(dataset))
    _fails(capsys, ["train", "fcn8s", "--data", f"coco:{bad}", *out], "categories absent from split 'train'",
           "'star' (id 9)", str(train_ann))
    shutil.copy(coco_folder / "annotations" / "instances_train.json", train_ann)
    dataset = json.loads(ann.read_text())
    dataset["categories"].append({"id": 9, "name": "star"})
    dataset["annotations"].append(dict(dataset["annotations"][0], id=998, category_id=9))
    ann.write_text(json.dumps(dataset))
    _fails(capsys, ["train", "fcn8s", "--data", f"coco:{bad}", *out], "categories absent from the training split",
           str(ann), "(9, 'star')")
    # --mask-classes naming unknown classes
    _fails(capsys, ["train", "maskx-rcnn", "--data", coco, "--mask-classes", "square,star", *out],
           "--mask-classes: unknown class(es) 'star'", "square (3), disc (7)")
    _fails(capsys, ["train", "fcn8s", "--data", coco, "--mask-classes", "square", *out], "--mask-classes is for maskx-rcnn")
    assert snapshot(finished_run) == before


def test_mixed_image_modes_are_converted(coco_folder):
    from segnotes.data import load_rgb

    modes = set()
    for path in sorted((coco_folder / "train").iterdir()):
        with Image.open(path) as image:
            modes.add(image.mode)
        assert load_rgb(path).shape[0] == 3
    assert {"L", "RGBA", "CMYK", "P", "RGB"} <= modes  # the fixture trains in every other test


def test_voc_mask_of_another_size_is_named(tmp_path, voc_folder, finished_run, capsys):
    before = snapshot(finished_run)
    voc = tmp_path / "voc"
    shutil.copytree(voc_folder, voc)
    name = (voc / "ImageSets" / "Segmentation" / "val.txt").read_text().split()[0]
    objects = voc / "SegmentationObject" / f"{name}.png"
    Image.new("P", (40, 30)).save(objects)
    _fails(capsys, ["train", "mask-rcnn", "--data", f"voc:{voc}", "--out", str(finished_run), "--resume"],
           f"label {objects} is 30 x 40 pixels (H x W), but {voc / 'SegmentationClass' / name}.png is 64 x 80")
    classes = voc / "SegmentationClass" / f"{name}.png"
    Image.new("P", (40, 30)).save(classes)
    _fails(capsys, ["train", "fcn8s", "--data", f"voc:{voc}", "--out", str(finished_run), "--resume"],
           f"label {classes} is 30 x 40 pixels (H x W), but its image is 64 x 80 ({voc / 'JPEGImages' / name}.jpg)")
    assert snapshot(finished_run) == before


def test_resume_with_other_options_is_refused(coco_folder, finished_run, capsys):
    before = snapshot(finished_run)
    _fails(capsys, ["train", "fcn32s", "--data", f"coco:{coco_folder}", "--out", str(finished_run), "--epochs", "3",
                    "--batch-size", "4", "--device", "cpu", "--resume"],
           "--resume: the run in", "epochs: 1 there, 3 now")
    _fails(capsys, ["train", "fcn32s", "--data", f"coco:{coco_folder}", "--out", str(finished_run)],
           "holds a finished run (config.json, model.pt); add --resume")
    assert snapshot(finished_run) == before


def test_evaluate_refuses_a_checkpoint_of_another_model(tmp_path, coco_folder, finished_run, capsys):
    from segnotes.experiments import checkpoint_root

    data = f"coco:{coco_folder}"
    book = tmp_path / "book"
    book.mkdir()
    shutil.copy(checkpoint_root() / "fcn" / "fcn32s_s0.pt", book / "model.pt")  # one of the book's runs
    _fails(capsys, ["evaluate", str(book), "--data", data], f"{book / 'model.pt'} is not a checkpoint written by "
           "`segnotes train` (it holds run 'fcn32s_s0'")
    other = tmp_path / "other"
    shutil.copytree(finished_run, other)
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps(dict(config, model="fcn8s")))
    before = snapshot(other)
    _fails(capsys, ["evaluate", str(other), "--data", data, "--json", str(other / "scores.json")],
           f"{other / 'model.pt'} holds another model than {other / 'config.json'} describes (model: 'fcn32s'")
    _fails(capsys, ["evaluate", str(tmp_path / "empty"), "--data", data], "holds no trained model")
    _fails(capsys, ["predict", str(finished_run), str(tmp_path / "missing.jpg"), "--out", str(tmp_path / "p")],
           f"IMAGE_OR_FOLDER {tmp_path / 'missing.jpg'} not found")
    assert snapshot(other) == before and not (tmp_path / "p").exists()


# Issue 22, finding 14: each of these printed a raw traceback (an exception escaping main), or
# (--root "") wrote into the current folder. Now: one line on stderr, exit status 2.


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli") / "shapes"
    assert main(["data", "shapes", "--root", str(root), "--num-train", "2", "--num-val", "1", "--image-size", "64",
                 "--workers", "1", "--no-progress"]) == 0
    return root


def _assert_one_line_error(status, capsys, *fragments):
    err = capsys.readouterr().err
    assert status == 2, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("segnotes: error: "), err
    for fragment in fragments:
        assert fragment in err, err


def test_checksums_into_a_folder_is_one_clear_line(small_set, tmp_path, capsys):
    status = main(["data", "checksums", "--root", str(small_set), "--output", str(tmp_path)])
    _assert_one_line_error(status, capsys, f"write_checksums: path '{tmp_path}' is a directory")


def test_verify_against_a_folder_is_one_clear_line(small_set, tmp_path, capsys):
    status = main(["data", "verify", "--root", str(small_set), "--checksums", str(tmp_path)])
    _assert_one_line_error(status, capsys, f"verify: the checksum file '{tmp_path}' is a directory")


def test_stats_on_a_truncated_png_names_the_file(small_set, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(small_set, copy)
    label = copy / "train" / "labels" / "000001.png"
    label.write_bytes(label.read_bytes()[:200])
    status = main(["data", "stats", "--root", str(copy)])
    _assert_one_line_error(status, capsys, f"statistics: cannot read the label image {label}")


@pytest.mark.parametrize("command", [
    ["data", "shapes", "--root", "", "--num-train", "1", "--num-val", "1", "--image-size", "64", "--no-progress"],
    ["data", "stats", "--root", ""],
    ["data", "checksums", "--root", "", "--output", "sums"],
])
def test_an_empty_root_is_refused_not_the_current_folder(tmp_path, monkeypatch, capsys, command):
    monkeypatch.chdir(tmp_path)
    _assert_one_line_error(main(command), capsys, "root must name a folder or file, got an empty path")
    assert list(tmp_path.iterdir()) == []  # nothing written where the command ran
