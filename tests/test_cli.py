import json

import pytest

from segnotes.cli import main


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
