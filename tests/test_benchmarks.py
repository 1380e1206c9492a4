"""benchmarks/run.py as `make bench` runs it: a quick smoke run and its argument checks (no timing asserted)."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

RUN = Path(__file__).resolve().parents[1] / "benchmarks" / "run.py"


def run(*args, **kwargs):
    return subprocess.run([sys.executable, str(RUN), *args], capture_output=True, text=True, timeout=300, **kwargs)


def test_quick_run_writes_a_table_of_ratios(tmp_path):
    out = tmp_path / "table.md"
    result = run("--quick", "--only", "ops,metrics", "--devices", "cpu", "--output", str(out))
    assert result.returncode == 0, result.stderr
    text = out.read_text()
    assert text.startswith("# segnotes benchmarks") and "| case | ours | reference | ratio | note |" in text
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith(("| case", "| ---"))]
    assert any("roi_align forward (cpu)" in row for row in rows)
    assert any("coco_ap_segm" in row for row in rows)
    assert not any("(cuda)" in row for row in rows)  # --devices cpu
    assert all(row.count("|") >= 6 for row in rows)


def test_bad_arguments_name_the_option(tmp_path):
    result = run("--only", "nope", "--output", str(tmp_path / "t.md"))
    assert result.returncode == 2 and "--only: no benchmarks/bench_nope.py; choose from data, detector" in result.stderr
    if not torch.cuda.is_available():
        result = run("--devices", "cuda", "--output", str(tmp_path / "t.md"))
        assert result.returncode == 2 and "--devices:" in result.stderr and "is False" in result.stderr
    assert not (tmp_path / "t.md").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")
def test_quick_run_on_the_gpu(tmp_path):
    out = tmp_path / "table.md"
    result = run("--quick", "--only", "ops", "--devices", "cuda", "--output", str(out))
    assert result.returncode == 0, result.stderr
    assert "roi_align forward (cuda)" in out.read_text()
