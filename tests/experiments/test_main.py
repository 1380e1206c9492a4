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
