"""The pre-built artifacts ship through DVC: a fresh clone pulls them offline from the repo's own remote."""
import hashlib
import subprocess

import pytest
import yaml

from pipeline_repo import REPO, dvc

PREBUILT_STAGES = ["export", "bins"]


def test_fresh_clone_pulls_the_prebuilt_model_and_bins_offline(tmp_path):
    lock_file = REPO / "dvc.lock"
    if not lock_file.is_file():
        pytest.skip("no dvc.lock committed yet: run `make repro` and `dvc push export bins`")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    dvc(clone, "pull", *PREBUILT_STAGES)  # default remote: dvc-storage/ inside the clone
    lock = yaml.safe_load((clone / "dvc.lock").read_text())
    model = next(o for o in lock["stages"]["export"]["outs"] if o["path"] == "training_checkpoint/QONNX_model.onnx")
    assert hashlib.md5((clone / model["path"]).read_bytes()).hexdigest() == model["md5"]
    bins = next(o for o in lock["stages"]["bins"]["outs"] if o["path"] == "kws_bin_files")
    assert len(list((clone / "kws_bin_files").iterdir())) == bins["nfiles"]
    status = dvc(clone, "status", "--json").stdout
    for stage in PREBUILT_STAGES:  # their outs are restored; only their upstream data is missing
        entry = yaml.safe_load(status).get(stage, [])
        assert not any("changed outs" in item for item in entry), status
