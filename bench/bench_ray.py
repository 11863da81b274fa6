"""One training run through Ray (kws.engines.ray.run_ray: connect to a running head, one Ray Tune
trial, the checkpoint copied back, outputs written) against the local path (kws.engines.local.run_local),
on features of the real corpus' size (random values), side by side: each pair runs one right after
the other so both see the same machine load. The cluster's start (`ray start --head`) is not
timed; connecting to it is. Target: <= 1.2x the local wall time. Run: python bench/bench_ray.py"""
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

from kws.kernels import cap_cpu_kernels

cap_cpu_kernels()  # before torch loads, as scripts/run_training.py does

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from kws.engines import local, ray as ray_engine  # noqa: E402
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
    """Only this head's processes (they name its temp dir) and their children, not other Ray instances."""
    import psutil

    procs = []
    for p in psutil.process_iter(["cmdline"]):
        if any(temp_dir in part for part in p.info["cmdline"] or []):
            procs += [p, *p.children(recursive=True)]
    for p in procs:
        try:
            p.terminate()
        except psutil.Error:
            pass
    psutil.wait_procs(procs, timeout=10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=5, help="train.epochs of each run (default 5)")
    ap.add_argument("--pairs", type=int, default=3, help="side-by-side local/Ray pairs (default 3)")
    args = ap.parse_args()
    os.environ.update(RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled")  # a head on 127.0.0.1 only
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
            ratios = []
            for i in range(args.pairs):
                times = {}
                for engine, run in (("local", local.run_local), ("ray", ray_engine.run_ray)):
                    out = tmp / f"{engine}{i}"
                    start = time.perf_counter()
                    run(params, features, out / "checkpoints", out / "train.json", out / "train.csv", progress=False)
                    times[engine] = time.perf_counter() - start
                same = ((tmp / f"local{i}" / "train.json").read_bytes() == (tmp / f"ray{i}" / "train.json").read_bytes())
                ratios.append(times["ray"] / times["local"])
                print(f"pair {i + 1}: local {times['local']:.1f} s, ray {times['ray']:.1f} s, "
                      f"ratio {ratios[-1]:.3f}, same metrics bytes: {same}", flush=True)
                shutil.rmtree(tmp / f"local{i}"), shutil.rmtree(tmp / f"ray{i}")
        finally:
            stop_head(temp_dir)
            shutil.rmtree(temp_dir, ignore_errors=True)
    print(f"one trial through Ray vs local, {args.epochs} epochs at the real corpus size: median ratio "
          f"{statistics.median(ratios):.3f} (target <= 1.2)")


if __name__ == "__main__":
    main()
