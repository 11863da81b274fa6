"""Stage bins: MLPerf Tiny BIN files from a QONNX model and a features split, validated.

  python scripts/make_bin_files.py --bin_file_path=kws_bin_files --feature_type=mfcc
  python scripts/make_bin_files.py validate --bin_file_path DIR --model M [--onnxruntime]
"""
from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

from kws import bins, files, scoring
from kws.common import KwsError, atomic_path, HelpFormatter, run_cli
from kws.labels import NUM_CLASSES
from kws.params import load_params
from kws.qonnx_model import load_model


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("command", nargs="?", choices=["make", "validate"], default="make",
                   help="make (default): write and validate BIN files; validate: check an existing folder")
    p.add_argument("--model", default="training_checkpoint/QONNX_model.onnx", help="QONNX model")
    p.add_argument("--features", default="data/features", help="folder with {split}.npz")
    p.add_argument("--params", help="default params.yaml (validate: optional)")
    p.add_argument("--split", help="features split (default: params bins.split)")
    p.add_argument("--bin_file_path", default="kws_bin_files", help="BIN folder (replaced as a whole)")
    p.add_argument("--num_bin_files", type=int, help="default: params bins.num_bin_files")
    p.add_argument("--feature_type", help="mfcc | lfbe | td_samples (default: params features.feature_type)")
    p.add_argument("--metrics", help="headline metrics JSON (make default: metrics/bins.json)")
    p.add_argument("--report", help="all figures, JSON (make default: reports/bins.json)")
    p.add_argument("--plot", help="confusion matrix PNG (make default: plots/confusion.png)")
    p.add_argument("--per_class", help="per-label accuracy CSV (make default: plots/per_class.csv)")
    p.add_argument("--predictions", help="validate: also write the predictions CSV here")
    p.add_argument("--onnxruntime", action=argparse.BooleanOptionalAction, default=None,
                   help="also run onnxruntime on the QCDQ form and require the same predictions "
                        "(default: params bins.onnxruntime)")
    return p.parse_args()


def write_outputs(v: scoring.Validation, metrics_path, plot_path, float_accuracy=None, per_class_path=None,
                  report_path=None) -> None:
    m = scoring.metrics(v, float_accuracy)
    if metrics_path:
        files.write_metrics(metrics_path, report_path, m, bins.HEADLINE)
    elif report_path:
        files.write_json(report_path, m)
    if per_class_path:
        scoring.write_per_class_csv(per_class_path, v)
    if plot_path:
        cm = scoring.confusion_matrix(v.labels, v.predictions, NUM_CLASSES)
        scoring.plot_confusion(cm, plot_path, f"{len(v.names)} BIN files, accuracy {v.accuracy:.2%}")


def report(v: scoring.Validation, float_accuracy=None) -> None:
    line = f"{len(v.names)} BIN files: accuracy {v.accuracy:.4f}, ties {v.ties} (last maximum wins)"
    if float_accuracy is not None:
        line += f", float-feature accuracy {float_accuracy:.4f}"
    if v.onnxruntime_max_abs_diff is not None:
        line += f", onnxruntime agrees (max logit diff {v.onnxruntime_max_abs_diff:g})"
    print(line)


def main() -> None:
    args = parse_args()
    if args.params is None and args.command == "validate" and not Path("params.yaml").is_file():
        params = {}  # validating a folder needs no pipeline
    else:
        params = load_params(args.params or "params.yaml")
    feature_type = args.feature_type or (params.get("features") or {}).get("feature_type", "mfcc")
    if feature_type not in ("mfcc", "lfbe", "td_samples"):
        raise KwsError(f"--feature_type: expected mfcc, lfbe or td_samples, got {feature_type!r}")
    cfg = bins.check_params(params.get("bins"))
    onnxruntime = cfg["onnxruntime"] if args.onnxruntime is None else args.onnxruntime
    model = load_model(args.model)

    if args.command == "validate":
        v = bins.validate_bins(args.bin_file_path, model, feature_type, onnxruntime)
        report(v)
        # each given output is renamed into place only after all of them were written
        with contextlib.ExitStack() as stack:
            tmp = {k: stack.enter_context(atomic_path(getattr(args, k)))
                   for k in ("metrics", "plot", "predictions", "report") if getattr(args, k)}
            write_outputs(v, tmp.get("metrics"), tmp.get("plot"), report_path=tmp.get("report"))
            if "predictions" in tmp:
                files.write_labels_csv(tmp["predictions"], v.names, v.predictions, NUM_CLASSES)
        return

    split = args.split or cfg["split"]
    num = args.num_bin_files if args.num_bin_files is not None else cfg["num_bin_files"]
    features = Path(args.features) / f"{split}.npz"
    x, y = files.load_features(features, feature_type)
    order = bins.sample_order(len(x), cfg["shuffle_seed"])
    x, y = x[order], y[order]
    metrics_path = args.metrics or "metrics/bins.json"
    plot_path = args.plot or "plots/confusion.png"
    per_class_path = args.per_class or "plots/per_class.csv"
    report_path = args.report or "reports/bins.json"
    with (atomic_path(args.bin_file_path) as folder, atomic_path(metrics_path) as m, atomic_path(plot_path) as p,
          atomic_path(per_class_path) as c, atomic_path(report_path) as r):
        v, float_accuracy = bins.make_bins(folder, model, x, y, feature_type, num, cfg["max_accuracy_gap"],
                                           onnxruntime, source=str(features))
        write_outputs(v, m, p, float_accuracy, c, r)
    report(v, float_accuracy)


if __name__ == "__main__":
    run_cli(main)
