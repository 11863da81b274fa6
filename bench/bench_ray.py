"""The train stage through Ray against the local path, as a user runs it: `python -m
scripts.run_training` with train.engine: ray (connect to a running head, one Ray Tune trial, the
checkpoint copied back, outputs written) and with train.engine: local, on features of the real
corpus' size (random values), side by side: each pair runs one right after the other, so both
see the same machine load. Both processes import torch and load the features; the Ray trial's
worker imports torch again. The cluster's start (`ray start --head`) is not timed. Target: <= 1.2x
the local wall time. Run: python bench/bench_ray.py [--epochs N] [--pairs N]"""
import argparse
import copy
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's kws, not the one the venv's editable install points at

from kws.params import load_params  # noqa: E402

SIZES = {"train": 85_511, "validation": 10_102, "test": 4_890}  # Speech Commands v2, MLPerf Tiny splits


def write_features(folder: Path, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for split, n in SIZES.items():
        np.savez(folder / f"{split}.npz", x=rng.normal(0, 10, (n, 49, 10)).astype(np.float32),
                 y=rng.integers(0, 12, n), feature_type="mfcc")


def start_head(temp_dir: str) -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    subprocess.run([str(Path(sys.executable).parent / "ray"), "start", "--head", "--port", str(port),
                    "--node-ip-address", "127.0.0.1", "--num-cpus", "2", "--include-dashboard", "false",
                    "--disable-usage-stats", "--temp-dir", temp_dir],
                   check=True, capture_output=True, env=os.environ)
    return f"127.0.0.1:{port}"


def stop_head(temp_dir: str) -> None:
    """Only this head's processes (they name its temp dir) and their children, not other Ray
    instances; SIGKILL, as `ray stop --force` (gcs_server can outlive a SIGTERM)."""
    import psutil

    procs = {}
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any(temp_dir in part for part in p.info["cmdline"] or []):
                procs.update({q.pid: q for q in [p, *p.children(recursive=True)]})
        except psutil.Error:
            continue
    for p in procs.values():
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(list(procs.values()), timeout=10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=5, help="train.epochs of each run (default 5)")
    ap.add_argument("--pairs", type=int, default=3, help="side-by-side local/Ray pairs (default 3)")
    args = ap.parse_args()
    # a head on 127.0.0.1 only: no token auth, no usage stats; the CLIs take this checkout's kws
    os.environ.update(RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled", PYTHONPATH=str(REPO))
    params = copy.deepcopy(load_params(REPO / "params.yaml"))
    params["train"]["epochs"] = args.epochs
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        features = tmp / "features"
        write_features(features)
        params["train"]["ray"] = dict(params["train"]["ray"], storage_path=str(tmp / "ray_results"))
        temp_dir = tempfile.mkdtemp(prefix="kwsraybench", dir="/tmp")
        try:
            address = start_head(temp_dir)
            params["train"]["ray"]["address"] = address
            for engine in ("local", "ray"):
                params["train"]["engine"] = engine
                (tmp / f"{engine}.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
            ratios = []
            for i in range(args.pairs):
                times = {}
                for engine in ("local", "ray"):
                    out = tmp / f"{engine}{i}"
                    cmd = [sys.executable, "-m", "scripts.run_training", "--params", str(tmp / f"{engine}.yaml"),
                           "--features", str(features), "--checkpoints", str(out / "checkpoints"),
                           "--metrics", str(out / "train.json"), "--plots", str(out / "train.csv")]
                    start = time.perf_counter()
                    subprocess.run(cmd, cwd=REPO, check=True, capture_output=True, env=os.environ)
                    times[engine] = time.perf_counter() - start
                same = all((tmp / f"local{i}" / f).read_bytes() == (tmp / f"ray{i}" / f).read_bytes()
                           for f in ("train.json", "train.csv", f"checkpoints/epoch-{args.epochs:04d}/state.pt"))
                ratios.append(times["ray"] / times["local"])
                print(f"pair {i + 1}: local {times['local']:.1f} s, ray {times['ray']:.1f} s, "
                      f"ratio {ratios[-1]:.3f}, same bytes: {same}", flush=True)
                shutil.rmtree(tmp / f"local{i}"), shutil.rmtree(tmp / f"ray{i}")
        finally:
            stop_head(temp_dir)
            shutil.rmtree(temp_dir, ignore_errors=True)
    print(f"train stage through Ray vs local, {args.epochs} epochs at the real corpus size: median ratio "
          f"{statistics.median(ratios):.3f} (target <= 1.2)")


if __name__ == "__main__":
    main()
