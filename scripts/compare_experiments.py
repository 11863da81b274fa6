"""Print a table of DVC experiments: bit widths, model size and FINN's estimates against accuracy on
the BIN files, and draw accuracy against FINN's LUTs with the Pareto front (--plot).

Usage: python scripts/compare_experiments.py [--wait [--timeout SECONDS]] [--real_speech FIXTURE]
(reads `dvc exp show --json`)

--real_speech adds each experiment's accuracy on the FINN fixture's 200 real dev clips: its QONNX
model is read from DVC's cache at the experiment's commit. Those clips are a dev set: +-3 points is
noise, and a variant chosen by them scores higher there than on unseen real speech.

--wait fails with one line instead of waiting forever: when experiments wait but no queue worker
runs (after `dvc queue stop`, say), and after --timeout.
"""
import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

PARAMS = {"W bits": "model.weight_bit_width", "A bits": "model.act_bit_width", "hidden": "model.hidden_layers",
          "arch": "model.arch"}
METRICS = {
    "weights": ("metrics/train.json", "num_weights"),
    "weight KiB": ("metrics/train.json", "weight_kib"),
    "val acc": ("metrics/train.json", "val_accuracy"),
    # the finn stage's estimates (finn.enabled: true, as `make sweep` sets); "-" where it was off
    "FINN LUT": ("metrics/finn.json", "LUT"),
    "FINN BRAM_18K": ("metrics/finn.json", "BRAM_18K"),
    "FINN frames/s": ("metrics/finn.json", "estimated_throughput_fps"),
    "bins acc": ("metrics/bins.json", "accuracy"),
}


def lookup(tree: dict, dotted: str):
    for key in dotted.split("."):
        if not isinstance(tree, dict) or key not in tree:
            return None
        tree = tree[key]
    return tree


def rows(entries: list[dict]):
    """Flatten `dvc exp show --json` into (name, commit, data): the baseline commit(s) and every
    experiment under them."""
    for entry in entries:
        if entry.get("rev") != "workspace":
            yield entry.get("name") or entry["rev"][:7], entry["rev"], entry.get("data") or {}
        for exp in entry.get("experiments") or []:
            for rev in exp.get("revs", []):
                yield exp.get("name") or rev.get("name") or rev["rev"][:7], rev["rev"], rev.get("data") or {}


MODEL = "training_checkpoint/QONNX_model.onnx"


def real_speech_accuracy(rev: str, fixture: Path):
    """The experiment's model at commit `rev` scored on the fixture's real BIN files; None when
    DVC has no model for that commit (a failed experiment, or one whose cache was collected)."""
    import dvc.api
    from dvc.exceptions import DvcException

    from kws.real_speech import score

    try:
        blob = dvc.api.read(MODEL, rev=rev, mode="rb")
    except (DvcException, FileNotFoundError):
        return None
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "model.onnx"
        model.write_bytes(blob)
        return score(model, fixture / "kws_bin_files", fixture / "QONNX_model.onnx").accuracy


def queue_state() -> tuple[Counter, int]:
    """The queue's experiments counted by status (Queued, Running, Success, Failed) and the number
    of live workers, from the DVC API that `dvc queue status` prints."""
    from dvc.repo import Repo

    with Repo() as repo:
        queue = repo.experiments.celery_queue
        return Counter(task["status"] for task in queue.status()), len(queue.worker_status())


def describe(counts: Counter) -> str:
    return ", ".join(f"{counts[s]} {s.lower()}" for s in ("Queued", "Running") if counts[s])


def wait_for_queue(timeout: float, worker_grace: float, poll_seconds: float = 5.0) -> None:
    """Block while queued experiments wait or run; one line and exit 1 if any failed, if no
    worker has run for `worker_grace` s (nothing would ever start), or after `timeout` s."""
    start = time.monotonic()
    workerless_since = None
    while True:
        counts, workers = queue_state()
        if not counts["Queued"] + counts["Running"]:
            break
        now = time.monotonic()
        # `dvc queue start` returns before its worker answers, and a worker exits once the queue is
        # empty: only a lasting absence means a stopped queue. A running experiment has a worker,
        # even when a loaded machine keeps it from answering the status call in time (the timeout
        # still bounds the wait)
        workerless_since = None if workers or counts["Running"] else workerless_since or now
        if workerless_since is not None and now - workerless_since >= worker_grace:
            sys.exit(f"error: experiments {describe(counts)}, but no queue worker for {worker_grace:g} s: "
                     "run `dvc queue start`")
        if now - start >= timeout:
            sys.exit(f"error: experiments still {describe(counts)} after --timeout {timeout:g} s "
                     "(see `dvc queue status`; `dvc queue kill` stops them)")
        time.sleep(poll_seconds)
    if counts["Failed"]:
        sys.exit(f"error: {counts['Failed']} queued experiment(s) failed: see `dvc queue status` "
                 "and `dvc queue logs <name>`")


def fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "-" if value is None else str(value)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="a saved `dvc exp show --json` output instead of running dvc")
    parser.add_argument("--wait", action="store_true", help="first wait until `dvc queue status` is idle")
    parser.add_argument("--timeout", type=float, default=6 * 3600,
                        help="with --wait: fail after this many seconds (default 6 h, for the default "
                             "grid's six full trainings on a busy machine)")
    parser.add_argument("--worker_grace", type=float, default=30,
                        help="with --wait: fail when no queue worker has run for this many seconds "
                             "(default 30: `dvc queue start` takes a few)")
    parser.add_argument("--plot", help="PNG of accuracy against FINN's LUT estimate (experiments that have one)")
    parser.add_argument("--real_speech", type=Path,
                        help="the FINN fixture folder (QONNX_model.onnx, kws_bin_files/): adds a column of "
                             "each experiment's accuracy on its 200 real dev clips")
    args = parser.parse_args()
    if args.wait:
        wait_for_queue(args.timeout, args.worker_grace)
    if args.json:
        with open(args.json) as f:
            entries = json.load(f)
    else:
        out = subprocess.run(["dvc", "exp", "show", "--json"], capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"error: dvc exp show failed: {out.stderr.strip().splitlines()[-1] if out.stderr else ''}")
        entries = json.loads(out.stdout)
    if args.real_speech and not (args.real_speech / "kws_bin_files").is_dir():
        sys.exit(f"error: --real_speech {args.real_speech}: no kws_bin_files folder (the FINN fixture's)")
    header = ["experiment", *PARAMS, *METRICS] + (["real dev acc"] if args.real_speech else [])
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    points = []  # (name, LUTs, bins accuracy) of experiments with FINN's estimates
    for name, rev, data in rows(entries):
        params = (data.get("params") or {}).get("params.yaml", {}).get("data", {})
        metrics = data.get("metrics") or {}
        values = {column: (metrics.get(file) or {}).get("data", {}).get(key) for column, (file, key) in METRICS.items()}
        cells = [name] + [fmt(lookup(params, key)) for key in PARAMS.values()] + [fmt(v) for v in values.values()]
        if args.real_speech:
            cells.append(fmt(real_speech_accuracy(rev, args.real_speech)))
        print("| " + " | ".join(cells) + " |")
        if values["FINN LUT"] is not None and values["bins acc"] is not None:
            points.append((name, values["FINN LUT"], values["bins acc"]))
    if args.plot and points:
        from kws.finn_check import plot_pareto

        names, luts, accuracies = zip(*points)
        plot_pareto(names, luts, accuracies, args.plot)
        print(f"accuracy against FINN's LUT estimate, Pareto front joined: {args.plot}")


if __name__ == "__main__":
    main()
