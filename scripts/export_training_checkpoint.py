"""Stage export: the trained checkpoint (local, or the best of a Determined experiment) -> QONNX,
checked against the Brevitas model before it is written."""
import argparse
import os
from pathlib import Path

from kws.common import HelpFormatter, run_cli
from kws.params import load_params


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--params", default="params.yaml", help="the pipeline's params (sections model, export)")
    ap.add_argument("--features", default="data/features", help="features folder: the check runs on its test split")
    ap.add_argument("--checkpoints", default="checkpoints", help="local checkpoint folder")
    ap.add_argument("--experiment-file", default="experiment_number.txt",
                    help="used instead of --checkpoints when DET_MASTER or train.det_master is set")
    ap.add_argument("--out", default="training_checkpoint/QONNX_model.onnx", help="the QONNX model to write")
    ap.add_argument("--metrics", default="metrics/export.json", help="the export check's headline figures (JSON)")
    ap.add_argument("--report", default="reports/export.json", help="all the export check's figures (JSON)")
    args = ap.parse_args()

    from kws.export import run_export

    params = load_params(args.params)
    on_cluster = os.environ.get("DET_MASTER") or (params.get("train") or {}).get("det_master")
    m = run_export(params, args.features, args.out, args.metrics,
                   ckpt_dir=None if on_cluster else args.checkpoints,
                   experiment_file=Path(args.experiment_file) if on_cluster else None, report_path=args.report)
    print(f"wrote {args.out}: max |logit diff| {m['max_abs_logit_diff']:.2g}, "
          f"QONNX test accuracy {m['qonnx_test_accuracy']:.4f}")


if __name__ == "__main__":
    run_cli(main)
