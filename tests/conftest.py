import os
import sys
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))  # tests/pipeline_repo.py
FIXTURE_SUBDIR = Path("shared") / "fixtures" / "finn_kws_w3a3"


def _fixture_candidates() -> list[Path]:
    """KWS_FINN_FIXTURE, else ../shared/... next to this checkout or, for a clone of a local
    checkout (as CI makes), next to the checkout it was cloned from."""
    if os.environ.get("KWS_FINN_FIXTURE"):
        return [Path(os.environ["KWS_FINN_FIXTURE"])]
    roots = [REPO]
    origin = subprocess.run(["git", "-C", str(REPO), "config", "remote.origin.url"],
                            capture_output=True, text=True).stdout.strip()
    if origin and Path(origin.removeprefix("file://")).is_dir():
        roots.append(Path(origin.removeprefix("file://")).resolve())
    return [parent / FIXTURE_SUBDIR for root in roots for parent in root.parents]


@pytest.fixture(scope="session")
def finn_fixture() -> Path:
    """The FINN submission's QONNX model and 200 BIN files (outside the repo: a user's clone
    has no ../shared). Missing: skip with a reason, except under CI where it is a failure."""
    for candidate in _fixture_candidates():
        if (candidate / "QONNX_model.onnx").is_file():
            return candidate
    msg = "FINN fixture (../shared/fixtures/finn_kws_w3a3) not found; set KWS_FINN_FIXTURE"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(msg + " (required under CI)")
    pytest.skip(msg)


@pytest.fixture(scope="session")
def tiny_repo(tmp_path_factory):
    """One full `dvc repro` of the tiny profile in a temporary git repo, shared by the DVC tests
    (tests that change params re-reproduce before they return)."""
    from pipeline_repo import ALL_STAGES, FIRST_RUN, dvc, make_tiny_repo, out_hashes, stages_run

    repo = make_tiny_repo(tmp_path_factory.mktemp("tiny_repo"))
    result = dvc(repo, "repro")
    assert stages_run(result.stdout) == ALL_STAGES, result.stdout
    FIRST_RUN.update(out_hashes(repo))
    return repo
