"""What ships through DVC: on a fresh clone, plain `dvc pull` restores the cached outs (the QONNX
model and the BIN files) offline from the repo's own remote and exits 0; the uncached outs (data
stages, checkpoint) are left to `dvc repro`, and `dvc status` names only the stages they concern."""
import hashlib
import subprocess
from pathlib import Path

import pytest
import yaml

from pipeline_repo import REPO, dir_manifest, dvc, out_hashes, run, stage_outs, stages_run

SHIPPED = {"training_checkpoint/QONNX_model.onnx", "kws_bin_files"}


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def assert_restored_as_locked(clone: Path) -> None:
    """Every cached out has the bytes dvc.lock records: files by md5, folders file by file
    (against the .dir object pulled with them), and nothing more."""
    locked = out_hashes(clone)
    cached = {p for outs in stage_outs(clone).values() for p, is_cached in outs.items() if is_cached}
    assert SHIPPED <= cached, f"dvc.yaml no longer caches (ships) {sorted(SHIPPED - cached)}"
    for path in sorted(cached):
        if locked[path].endswith(".dir"):
            manifest = dir_manifest(clone, locked[path])
            files = {str(f.relative_to(clone / path)): md5(f) for f in (clone / path).rglob("*") if f.is_file()}
            assert files == manifest, f"{path}: other files than dvc.lock's"
        else:
            assert md5(clone / path) == locked[path], f"{path}: other bytes than dvc.lock's"


def not_shipped(repo: Path) -> set[str]:
    """Outs neither in DVC's remote (cache: false) nor committed to git (as the optional stages'
    notes are: the finn stage's reports/finn_layers.json, say)."""
    in_git = set(run(["git", "ls-files"], repo).stdout.split())
    return {p for outs in stage_outs(repo).values() for p, is_cached in outs.items()
            if not is_cached and p not in in_git}


def assert_status_names_only_the_missing(clone: Path) -> dict:
    """`dvc status` after a pull: only 'deleted' outs and deps, each one not shipped, and exactly
    the stages that make or read them (the ones `dvc repro` rebuilds or checks again)."""
    missing = not_shipped(clone)
    status = yaml.safe_load(dvc(clone, "status", "--json").stdout) or {}
    for stage, entries in status.items():
        for entry in entries:
            assert set(entry) <= {"changed deps", "changed outs"}, (stage, entry)
            for kind, changes in entry.items():
                assert all(state == "deleted" for state in changes.values()), (
                    f"{stage}: {entry}; a modified dep or param means the committed dvc.lock is older "
                    "than the code or params: dvc repro, then commit dvc.lock and dvc push")
                assert set(changes) <= missing, (stage, entry)
    stages = yaml.safe_load((clone / "dvc.yaml").read_text())["stages"]
    concerned = {name for name, st in stages.items()
                 if (set(st.get("deps", [])) | set(stage_outs(clone)[name])) & missing}
    assert set(status) == concerned, status
    return status


def test_fresh_clone_of_the_project_pulls_the_model_and_bins_offline(tmp_path):
    """The project's committed state: dvc.lock against the committed dvc-storage/ remote."""
    if not (REPO / "dvc.lock").is_file():
        pytest.skip("no dvc.lock committed yet: run `make repro` and `dvc push`")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    result = dvc(clone, "pull", check=False)  # plain: no targets, the default remote
    assert result.returncode == 0, (f"`dvc pull` on a fresh clone exited {result.returncode} (after a new "
                                    f"dvc.lock, run `dvc push`):\n{result.stdout}{result.stderr}")
    assert_restored_as_locked(clone)
    for path in not_shipped(clone):
        assert not (clone / path).exists(), f"{path} is not shipped, yet exists after the pull"
    status = assert_status_names_only_the_missing(clone)
    assert "hls4ml" not in status


def test_pulled_clone_rebuilds_only_what_status_names(tiny_repo, tmp_path):
    """The tiny profile end to end: push to the in-repo remote, commit, clone, pull, then
    `dvc repro` rebuilds the uncached outs with dvc.lock's bytes and leaves the status clean."""
    dvc(tiny_repo, "repro")
    dvc(tiny_repo, "push")
    run(["git", "add", "-A"], tiny_repo)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@e", "commit", "-qm", "push", "--allow-empty"], tiny_repo)
    locked = out_hashes(tiny_repo)
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(tiny_repo), str(clone)], tmp_path)
    dvc(clone, "pull")
    assert_restored_as_locked(clone)
    named = assert_status_names_only_the_missing(clone)
    assert set(named) == {"synthetic_corpus", "dataset", "features", "train", "export", "bins"}, named

    ran = stages_run(dvc(clone, "repro").stdout)
    # the stages whose outs were not shipped always rerun; export and bins only if training gave
    # other bytes (another machine), and the optional checks (hls4ml, finn) then with bins
    assert ran[:4] == ["synthetic_corpus", "dataset", "features", "train"], ran
    assert set(ran[4:]) <= {"export", "bins", "hls4ml", "finn"}, ran
    for path in ("data/synthetic_corpus", "data/dataset", "data/features"):
        assert out_hashes(clone)[path] == locked[path], f"{path}: rebuilt with other bytes"
    assert "up to date" in dvc(clone, "status").stdout
