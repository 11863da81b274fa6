import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FINN_FIXTURE = Path(os.environ.get("KWS_FINN_FIXTURE", REPO.parent / "shared" / "fixtures" / "finn_kws_w3a3"))


@pytest.fixture(scope="session")
def finn_fixture() -> Path:
    """The FINN submission's QONNX model and 200 BIN files (outside the repo: a user's clone
    has no ../shared). Missing: skip with a reason, except under CI where it is a failure."""
    if not (FINN_FIXTURE / "QONNX_model.onnx").is_file():
        msg = f"FINN fixture not found at {FINN_FIXTURE} (set KWS_FINN_FIXTURE)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg + "; required under CI")
        pytest.skip(msg)
    return FINN_FIXTURE
