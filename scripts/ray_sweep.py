"""`make sweep ENGINE=ray`: the DVC sweep's grid (the same -S options, expanded and applied by
DVC's own code) trained as Ray Tune trials (params train.ray: grid or random search, ASHA), then
the DVC sweep's comparison table (scripts/compare_experiments.py's columns) and one row per trial
in --csv, a DVC plot file (dvc.yaml's top-level plots). Without -S options: params train.sweep."""
import argparse
import sys

from kws.kernels import cap_cpu_kernels

cap_cpu_kernels()  # before anything imports torch

from kws.common import HelpFormatter, run_cli
from kws.files import write_csv
from scripts.compare_experiments import METRICS, PARAMS, fmt, lookup

CSV_FIELDS = ("point", "overrides", "weight_bit_width", "act_bit_width", "hidden_layers", "epochs_trained",
              "num_weights", "weight_kib", "val_accuracy", "test_accuracy", "fingerprint", "status")


def table(rows: list[dict]) -> list[str]:
    """compare_experiments' table: its columns, FINN's and the BIN files' '-' (Ray trains only)."""
    header = ["experiment", *PARAMS, *METRICS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        by_file = {"metrics/train.json": row["metrics"] or {}}
        values = [by_file.get(file, {}).get(key) for file, key in METRICS.values()]
        name = f"ray:{row['point']} {row['label']}".strip()
        cells = [name] + [fmt(lookup(row["params"], key)) for key in PARAMS.values()] + [fmt(v) for v in values]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def csv_rows(rows: list[dict]) -> list[dict]:
    out = []
    for row in rows:
        m, model = row["metrics"] or {}, row["params"]["model"]
        stopped = row["metrics"] and row["epochs_trained"] < m["epochs"]
        out.append({
            "point": row["point"], "overrides": row["label"], "weight_bit_width": model["weight_bit_width"],
            "act_bit_width": model["act_bit_width"], "hidden_layers": "x".join(map(str, model["hidden_layers"])),
            "epochs_trained": row["epochs_trained"], "num_weights": m.get("num_weights"),
            "weight_kib": m.get("weight_kib"), "val_accuracy": m.get("val_accuracy"),
            "test_accuracy": m.get("test_accuracy"), "fingerprint": m.get("fingerprint"),
            "status": "failed" if not row["metrics"] else "stopped early" if stopped else "completed"})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("-S", dest="overrides", action="append", default=[], metavar="KEY=V1,V2",
                    help="a sweep axis, as `dvc exp run -S` takes it (repeatable)")
    ap.add_argument("--params", default="params.yaml", help="the params the overrides apply to")
    ap.add_argument("--features", default="data/features", help="folder with {train,validation,test}.npz")
    ap.add_argument("--csv", default="plots/ray_sweep.csv", help="one row per trial (a DVC plot file)")
    ap.add_argument("--address", help="Ray head (default: params train.ray.address, then RAY_ADDRESS)")
    ap.add_argument("--quiet", action="store_true", help="no Ray Tune progress output")
    args = ap.parse_args()

    from kws.engines import ray

    points = ray.sweep_points(args.params, args.overrides)
    print(f"{len(points)} sweep point(s)", file=sys.stderr)
    rows = ray.run_sweep(points, args.features, address=args.address, progress=not args.quiet)
    print("\n".join(table(rows)))
    write_csv(args.csv, csv_rows(rows), CSV_FIELDS)
    for row in rows:
        where = row["checkpoint"] or row["path"]
        print(f"ray:{row['point']}: {row['error'] or 'ok'}; checkpoint {where}", file=sys.stderr)
    failed = [r for r in rows if not r["metrics"]]
    if failed:
        sys.exit(f"error: {len(failed)} trial(s) failed: {failed[0]['error']}")


if __name__ == "__main__":
    run_cli(main)
