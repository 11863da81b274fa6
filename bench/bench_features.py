"""Feature-extraction throughput (clips/s) of kws.features.extract, as a markdown table.

Runs on data/dataset/test.npz when it exists, else on 2000 synthetic clips. One untimed warm-up
run per row (tf.function tracing), then the median of --runs timed runs.
    python bench/bench_features.py [--runs 5] [--batch_size 256]
"""
import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np

from kws.params import load_params
from kws.features import NOISE_FILE, FeatureConfig, extract, load_noise, load_split, noise_plan

REPO = Path(__file__).resolve().parents[1]


def synthetic(n=2000, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(16000) / 16000
    f = rng.uniform(100, 3500, (n, 3, 1))
    x = np.sin(2 * np.pi * f * t).sum(1) + 0.1 * rng.standard_normal((n, 16000))
    audio = np.round(x / np.abs(x).max(1, keepdims=True) * 20000).astype(np.int16)
    noise = {"white_noise.wav": rng.integers(-3000, 3000, 60 * 16000, dtype=np.int16)}
    return audio, np.full(n, 16000, np.int32), noise


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default=REPO / "params.yaml")
    ap.add_argument("--dataset", default=REPO / "data" / "dataset")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--batch_size", type=int, default=None, help="override features.batch_size")
    args = ap.parse_args()
    params = load_params(args.params)
    base = FeatureConfig.from_params(params)
    if args.batch_size:
        base = FeatureConfig(**{**base.model_dump(), "batch_size": args.batch_size})
    test = Path(args.dataset) / "test.npz"
    if test.is_file():
        d = load_split(test, base)
        audio, length, noise = d["audio"], d["length"], load_noise(Path(args.dataset) / NOISE_FILE, base)
        source = str(test)
    else:
        audio, length, noise = synthetic()
        source = "synthetic (no data/dataset/test.npz)"
    n = len(audio)
    print(f"clips: {n} from {source}; batch_size {base.batch_size}; {os.cpu_count()} CPUs; "
          f"median of {args.runs} runs after a warm-up\n")
    print("| feature_type | noise mix (train path) | shape | clips/s |")
    print("|---|---|---|---|")
    for feature_type, train in (("mfcc", False), ("mfcc", True), ("lfbe", False), ("td_samples", False)):
        cfg = FeatureConfig(**{**base.model_dump(), "feature_type": feature_type})
        mix = {}
        if train:
            plan = noise_plan(n, [len(r) for r in noise.values()], cfg, np.random.default_rng(0))
            mix = {"noise": noise, "plan": plan}
        times = []
        for _ in range(args.runs + 1):
            t0 = time.perf_counter()
            extract(audio, length, cfg, progress=False, **mix)
            times.append(time.perf_counter() - t0)
        rate = n / statistics.median(times[1:])
        print(f"| {feature_type} | {'yes' if train else 'no'} | {'x'.join(map(str, cfg.shape))} | {rate:,.0f} |")


if __name__ == "__main__":
    main()
