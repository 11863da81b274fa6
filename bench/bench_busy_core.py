"""Training seconds per epoch on an idle machine and beside one busy core (a process spinning in
a loop), with the trained bytes compared. Each training runs in a fresh process, as the train
stage does (the OpenMP settings are read when torch loads); idle and busy alternate, so both see
the same background load. Run: python bench/bench_busy_core.py

Under `--wait-policy default` the children drop kws.kernels' OMP_WAIT_POLICY: that is how the
training ran before it was set (libgomp's default: spin, then sleep)."""
import argparse
import hashlib
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def spin() -> None:
    while True:
        pass


def child(args) -> None:
    """One training of random features; prints {"epochs": [s, ...], "sha256": of the checkpoint}."""
    sys.path.insert(0, str(REPO))
    from kws.kernels import cap_cpu_kernels

    cap_cpu_kernels()
    if args.wait_policy == "default":
        os.environ.pop("OMP_WAIT_POLICY", None)  # torch (and libgomp) not loaded yet
    elif args.wait_policy != "kws":
        os.environ["OMP_WAIT_POLICY"] = args.wait_policy
    import numpy as np
    import torch

    from kws import checkpoints as C

    from kws import train as T
    from kws.params import load_params
    from kws.files import to_model_layout

    rng = np.random.default_rng(0)
    x, y = {}, {}
    for split, n in (("train", args.samples), ("validation", args.samples // 8), ("test", 64)):
        x[split] = torch.from_numpy(to_model_layout(rng.normal(0, 10, (n, 49, 10)).astype(np.float32), (n, 1, 10, 49)))
        y[split] = torch.from_numpy(rng.integers(0, 12, n))
    params = load_params(REPO / "params.yaml")
    params["train"].update(epochs=args.epochs, warmup_epochs=1)
    if args.threads:
        T.TRAIN_THREADS = args.threads  # other bytes: only to compare speed
    times, last = [], [time.perf_counter()]

    def epoch_end(epoch):
        now = time.perf_counter()
        times.append(now - last[0])
        last[0] = now

    with tempfile.TemporaryDirectory() as ckpt:
        with C.local_context(ckpt) as ctx:
            T.train(ctx, T.recipe(params), T.Splits(x=x, y=y, digest="bench"), local_dir=ckpt,
                    epoch_end=epoch_end, progress=False)
        state = next(Path(ckpt).glob(f"*/{C.STATE_FILE}")).read_bytes()
    print(json.dumps({"epochs": times, "sha256": hashlib.sha256(state).hexdigest()}))


def train_once(args, busy: bool) -> dict:
    spinner = None
    if busy:
        spinner = multiprocessing.Process(target=spin, daemon=True)
        spinner.start()
    try:
        cmd = [sys.executable, __file__, "--child", "--samples", str(args.samples), "--epochs", str(args.epochs),
               "--wait-policy", args.wait_policy, "--threads", str(args.threads)]
        r = subprocess.run(cmd, capture_output=True, text=True, check=True)
    finally:
        if spinner is not None:
            spinner.terminate()
            spinner.join()
    return json.loads(r.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--samples", type=int, default=20_000, help="training samples (batch 512)")
    ap.add_argument("--epochs", type=int, default=4, help="per training; the first (setup) is not timed")
    ap.add_argument("--repeats", type=int, default=2, help="idle/busy pairs")
    ap.add_argument("--wait-policy", default="kws", help="kws (kws.kernels' setting), default (unset), PASSIVE, ACTIVE")
    ap.add_argument("--threads", type=int, default=0, help="0: the pinned training thread count")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    load_before = os.getloadavg()[0]  # what else runs: the idle figure is only as idle as the machine
    runs = {"idle": [], "busy": []}
    for _ in range(args.repeats):
        for cond in ("idle", "busy"):
            runs[cond].append(train_once(args, cond == "busy"))
    per_epoch = {cond: [t for r in rs for t in r["epochs"][1:]] for cond, rs in runs.items()}
    hashes = {r["sha256"] for rs in runs.values() for r in rs}
    print(f"{args.samples} training samples, {args.epochs} epochs per training ({args.epochs - 1} timed), "
          f"{args.repeats} idle/busy pairs, OMP_WAIT_POLICY {args.wait_policy}, "
          f"threads {args.threads or 'pinned'}, 1-minute load average before {load_before:.1f}")
    for cond, ts in per_epoch.items():
        print(f"{cond:4s} s/epoch: {' '.join(f'{t:.2f}' for t in ts)}  median {statistics.median(ts):.2f}")
    ratio = statistics.median(per_epoch["busy"]) / statistics.median(per_epoch["idle"])
    print(f"busy/idle: {ratio:.2f}x (target <= 2); checkpoint bytes equal in all {sum(map(len, runs.values()))} "
          f"trainings: {len(hashes) == 1} (sha256 {', '.join(sorted(h[:12] for h in hashes))})")


if __name__ == "__main__":
    main()
