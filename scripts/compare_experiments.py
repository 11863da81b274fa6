"""Print a table of DVC experiments: bit widths and model size against accuracy on the BIN files.

Usage: python scripts/compare_experiments.py [--wait]   (reads `dvc exp show --json`)
"""
import argparse
import json
import subprocess
import sys
import time

PARAMS = {"W bits": "model.weight_bit_width", "A bits": "model.act_bit_width", "hidden": "model.hidden_layers"}
METRICS = {
    "weights": ("metrics/train.json", "num_weights"),
    "weight KiB": ("metrics/train.json", "weight_kib"),
    "val acc": ("metrics/train.json", "val_accuracy"),
    "bins acc": ("metrics/bins.json", "accuracy"),
}


def lookup(tree: dict, dotted: str):
    for key in dotted.split("."):
        if not isinstance(tree, dict) or key not in tree:
            return None
        tree = tree[key]
    return tree


def rows(entries: list[dict]):
    """Flatten `dvc exp show --json`: the baseline commit(s) and every experiment under them."""
    for entry in entries:
        if entry.get("rev") != "workspace":
            yield entry.get("name") or entry["rev"][:7], entry.get("data") or {}
        for exp in entry.get("experiments") or []:
            for rev in exp.get("revs", []):
                yield exp.get("name") or rev.get("name") or rev["rev"][:7], rev.get("data") or {}


def wait_for_queue(poll_seconds: float = 5.0) -> None:
    """Block while queued experiments wait or run; fail if any of them failed."""
    while True:
        status = subprocess.run(["dvc", "queue", "status"], capture_output=True, text=True).stdout
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(poll_seconds)
    if "Failed" in status:
        sys.exit(f"error: some queued experiments failed (see `dvc queue logs <name>`):\n{status}")


def fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "-" if value is None else str(value)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="a saved `dvc exp show --json` output instead of running dvc")
    parser.add_argument("--wait", action="store_true", help="first wait until `dvc queue status` is idle")
    args = parser.parse_args()
    if args.wait:
        wait_for_queue()
    if args.json:
        with open(args.json) as f:
            entries = json.load(f)
    else:
        out = subprocess.run(["dvc", "exp", "show", "--json"], capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"error: dvc exp show failed: {out.stderr.strip().splitlines()[-1] if out.stderr else ''}")
        entries = json.loads(out.stdout)
    header = ["experiment", *PARAMS, *METRICS]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name, data in rows(entries):
        params = (data.get("params") or {}).get("params.yaml", {}).get("data", {})
        metrics = data.get("metrics") or {}
        cells = [name] + [fmt(lookup(params, key)) for key in PARAMS.values()]
        cells += [fmt((metrics.get(file) or {}).get("data", {}).get(key)) for file, key in METRICS.values()]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
