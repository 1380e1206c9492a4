import json
import shutil

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
