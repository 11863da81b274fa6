"""A throwaway copy of this repo, in its own git repo, with the tiny profile: real `dvc` runs."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent

# Small enough for the whole pipeline to run in well under a minute on 2 cores.
TINY_PARAMS = {
    "synthetic": {"num_speakers": 12, "noise_seconds": 5, "test_silence_clips": 8, "test_unknown_clips": 8},
    "train": {"epochs": 3, "warmup_epochs": 1},  # the default's warm-up, shortened
    "export": {"check_samples": 64},
    "bins": {"num_bin_files": 20},
}


def merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        out[key] = merge(base.get(key, {}), value) if isinstance(value, dict) else value
    return out


def run(cmd: list[str], cwd: Path, check: bool = True, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, **kw.pop("env", {})}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env['PATH']}"
    env.pop("DET_MASTER", None)
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, **kw)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def dvc(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run(["dvc", *args], repo, check=check)


def make(repo: Path, *args: str, **kw) -> subprocess.CompletedProcess:
    """A Makefile target as users run it, with the test's venvs (-o: already built; the FINN venv is
    found through FINN_PYTHON, as the finn stage finds it)."""
    return run(["make", "--no-print-directory", "-o", "setup", "-o", "finn-venv", "DVC=dvc", "PY=python", *args],
               repo, **kw)


def stages_run(output: str) -> list[str]:
    return re.findall(r"Running stage '([^']+)'", output)


def make_tiny_repo(dest: Path, params_override: dict | None = None, tiny: bool = True) -> Path:
    """Copy the working tree's tracked and unignored files (not outputs, not .venv) to `dest`,
    apply the tiny profile (unless tiny=False) and `params_override`, and commit it."""
    files = run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], REPO).stdout.split("\0")
    for rel in filter(None, files):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    params = merge(yaml.safe_load((REPO / "params.yaml").read_text()),
                   merge(TINY_PARAMS if tiny else {}, params_override or {}))
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (dest / "dvc.lock").unlink(missing_ok=True)  # the committed lock belongs to the default profile
    run(["git", "init", "-q", "-b", "main"], dest)
    run(["git", "add", "-A"], dest)
    run(["git", "-c", "user.name=test", "-c", "user.email=test@example.com", "commit", "-qm", "tiny"], dest)
    return dest


def out_hashes(repo: Path) -> dict[str, str]:
    """Every stage out and its md5 as recorded in dvc.lock."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return {out["path"]: out["md5"] for stage in lock["stages"].values() for out in stage.get("outs", [])}




ALL_STAGES = ["synthetic_corpus", "dataset", "features", "train", "export", "bins", "hls4ml", "finn"]
FIRST_RUN: dict[str, str] = {}  # out -> md5 after the shared tiny repo's first `dvc repro`


def stage_outs(repo: Path) -> dict[str, dict[str, bool]]:
    """stage -> {out path: cached?} for the `outs` of dvc.yaml (metrics and plots left out: git's)."""
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    found = {}
    for name, stage in stages.items():
        found[name] = {}
        for out in stage.get("outs", []):
            path, opts = next(iter(out.items())) if isinstance(out, dict) else (out, {})
            found[name][path] = (opts or {}).get("cache", True)
    return found


def dir_manifest(repo: Path, md5: str) -> dict[str, str]:
    """relpath -> md5 of a directory out (md5: dvc.lock's, "<hex>.dir"), from DVC's object in `repo`'s cache."""
    import json

    entries = json.loads((repo / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]).read_text())
    return {e["relpath"]: e["md5"] for e in entries}
