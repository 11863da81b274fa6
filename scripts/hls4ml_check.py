"""Stage hls4ml (optional): the QONNX model's hls4ml C++ emulation (g++, no Vivado) must predict
what qonnx predicts on every BIN file, exact ties excepted.

  python scripts/hls4ml_check.py --model training_checkpoint/QONNX_model.onnx \\
      --bin_file_path kws_bin_files --metrics metrics/hls4ml.json [--build_dir build/hls4ml]

With params hls4ml.enabled false it only writes {"enabled": false}. A disagreement still
writes the metrics (for diagnosis), then exits with status 1.
"""
from __future__ import annotations

import argparse
import tempfile
import time

from kws.common import KwsError, HelpFormatter, run_cli
from kws.files import write_json
from kws.params import load_params


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--model", default="training_checkpoint/QONNX_model.onnx", help="QONNX model")
    p.add_argument("--bin_file_path", default="kws_bin_files", help="folder with y_labels.csv and tst_*.bin")
    p.add_argument("--metrics", default="metrics/hls4ml.json", help="the comparison's figures (JSON)")
    p.add_argument("--build_dir", help="hls4ml project folder, kept (default: a temporary folder, removed)")
    p.add_argument("--params", default="params.yaml", help="the pipeline's params (sections hls4ml, features)")
    p.add_argument("--enabled", choices=["true", "false"], help="override params hls4ml.enabled")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    params = load_params(args.params)
    cfg = params.get("hls4ml") or {}
    enabled = cfg.get("enabled", False) if args.enabled is None else args.enabled == "true"
    if not enabled:
        write_json(args.metrics, {"enabled": False})
        print("hls4ml check disabled (params hls4ml.enabled)")
        return

    from kws import hls4ml_check  # imports qonnx/hls4ml: only when enabled
    from kws.qonnx_model import load_model

    start = time.time()
    model = load_model(args.model)
    feature_type = params.get("features", {}).get("feature_type", "mfcc")
    kwargs = dict(feature_type=feature_type, mantissa_bits=int(cfg.get("mantissa_bits", 23)),
                  backend=cfg.get("backend", "Vitis"))
    if args.build_dir:
        metrics = hls4ml_check.check(model, args.bin_file_path, args.build_dir, **kwargs)
    else:
        with tempfile.TemporaryDirectory(prefix="hls4ml_") as build_dir:
            metrics = hls4ml_check.check(model, args.bin_file_path, build_dir, **kwargs)
    write_json(args.metrics, metrics)
    print(f"{metrics['files']} BIN files: hls4ml and qonnx agree on {metrics['agree']}, ties {metrics['ties']}, "
          f"accuracy hls4ml {metrics['hls4ml_accuracy']:.4f} qonnx {metrics['qonnx_accuracy']:.4f}, "
          f"max logit diff {metrics['max_abs_logit_diff']:.3g} ({time.time() - start:.0f} s)")
    if not metrics["passed"]:
        raise KwsError(f"hls4ml and qonnx predict differently on {metrics['disagree_without_tie']} BIN files "
                       f"without a tie: {', '.join(metrics['disagreeing_files'][:5])} (see {args.metrics})")


if __name__ == "__main__":
    run_cli(main)
