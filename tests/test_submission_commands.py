"""The submission's commands, exactly as README prints them, from the repo root of a built
pipeline: they must run and rebuild what the DVC stages built."""
import shlex
import shutil
from pathlib import Path

import pytest

from pipeline_repo import REPO, run

README = (REPO / "README.md").read_text()
TRAIN = "bash run_training.sh"
EXPORT = "python export_training_checkpoint.py"
MAKE_BINS = "python make_bin_files.py --bin_file_path=kws_bin_files --feature_type=mfcc"


def tree_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture
def built_copy(tiny_repo, tmp_path):
    """A copy of the built tiny pipeline with what the commands read (code, params, checkpoints,
    features) and none of what they write, so the shared tiny repo stays as the DVC tests expect."""
    files = run(["git", "ls-files", "-z"], tiny_repo).stdout.split("\0")
    for rel in filter(None, files):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(tiny_repo / rel, tmp_path / rel)
    for rel in ("checkpoints", "data/features"):
        shutil.copytree(tiny_repo / rel, tmp_path / rel)
    return tmp_path


@pytest.mark.parametrize("command", [TRAIN, EXPORT, MAKE_BINS])
def test_readme_prints_the_command(command):
    assert f"\n{command}\n" in README, f"README.md no longer prints `{command}` on a line of its own"


def test_submission_commands_rebuild_the_stage_outputs(tiny_repo, built_copy):
    model, metrics = Path("training_checkpoint/QONNX_model.onnx"), Path("metrics/train.json")
    assert not (built_copy / model).exists() and not (built_copy / "kws_bin_files").exists()
    (built_copy / metrics).unlink()
    # the checkpoints are the stage's own: training resumes after its last epoch and only reports
    run(shlex.split(TRAIN), built_copy)
    assert (built_copy / metrics).read_bytes() == (tiny_repo / metrics).read_bytes()
    run(shlex.split(EXPORT), built_copy)
    assert (built_copy / model).read_bytes() == (tiny_repo / model).read_bytes()
    run(shlex.split(MAKE_BINS), built_copy)
    assert tree_bytes(built_copy / "kws_bin_files") == tree_bytes(tiny_repo / "kws_bin_files")
