"""segnotes.experiments.runner: where each chapter's runs are stored."""
import pytest

from segnotes.engine import save_checkpoint
from segnotes.experiments import fcn, lse, mask_rcnn
from segnotes.experiments.runner import RunFiles


@pytest.mark.parametrize("module, chapter", [(fcn, "fcn"), (lse, "lse"), (mask_rcnn, "mask_rcnn")])
def test_each_chapter_keeps_its_runs_in_its_own_folder(tmp_path, module, chapter):
    assert module.run_path(tmp_path, "r") == tmp_path / chapter / "r.pt"
    assert module._partial_path(tmp_path, "r") == tmp_path / chapter / "r.partial.pt"
    assert not module.is_done(tmp_path, "r")


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
