import os
import sys
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))  # tests/pipeline_repo.py
FIXTURE_SUBDIR = Path("shared") / "fixtures" / "finn_kws_w3a3"


def _fixture_candidates(subdir: Path = FIXTURE_SUBDIR, env: str = "KWS_FINN_FIXTURE") -> list[Path]:
    """$env, else ../shared/... next to this checkout or, for a clone of a local checkout (as CI
    makes), next to the checkout it was cloned from."""
    if os.environ.get(env):
        return [Path(os.environ[env])]
    roots = [REPO]
    origin = subprocess.run(["git", "-C", str(REPO), "config", "remote.origin.url"],
                            capture_output=True, text=True).stdout.strip()
    if origin and Path(origin.removeprefix("file://")).is_dir():
        roots.append(Path(origin.removeprefix("file://")).resolve())
    return [parent / subdir for root in roots for parent in root.parents]


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


def find_det_schemas() -> Path | None:
    """Determined 0.38.1's schemas folder (the fixture, or KWS_DET_SCHEMAS), or None."""
    from kws import expconf

    for candidate in _fixture_candidates(expconf.FIXTURE_SUBDIR, expconf.ENV_VAR):
        for folder in (candidate, candidate / "schemas"):
            if (folder / "expconf" / "v0" / "experiment.json").is_file():
                return folder
    return None


@pytest.fixture(scope="session")
def det_schemas() -> Path:
    """Determined 0.38.1's experiment-config schemas and test cases (outside the repo). Missing:
    skip with a reason, except under CI where it is a failure."""
    found = find_det_schemas()
    if found is not None:
        return found
    msg = "Determined schemas (../shared/fixtures/determined_expconf_v0.38.1/schemas) not found; set KWS_DET_SCHEMAS"
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
