"""Stage finn (optional): FINN v0.10.1's front end and resource estimates on the QONNX model; every
FINN graph that runs without Vitis HLS must predict what qonnx predicts on every BIN file, exact
ties excepted. Runs in the FINN venv (make finn-venv) with FINN from FINN_ROOT (docs/finn.md).

  python scripts/finn_check.py --model training_checkpoint/QONNX_model.onnx \\
      --bin_file_path kws_bin_files --metrics metrics/finn.json --layers reports/finn_layers.json \\
      [--finn_root PATH] [--build_dir build/finn]

With params finn.enabled false it only writes {"enabled": false} to both files. A disagreement
still writes them (for diagnosis), then exits with status 1; a model FINN cannot build exits
with one line naming the step and the node.
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
    p.add_argument("--metrics", default="metrics/finn.json", help="FINN's estimates and the agreement counts (JSON)")
    p.add_argument("--layers", default="reports/finn_layers.json", help="per-layer and per-graph detail")
    p.add_argument("--finn_root", help="FINN checkout (default: env FINN_ROOT, else ../shared/fixtures/finn_v0.10.1)")
    p.add_argument("--finn_python", help="the FINN venv's python (default: env FINN_PYTHON, else .venv-finn)")
    p.add_argument("--build_dir", help="FINN's outputs and intermediate models, kept (default: a temporary folder)")
    p.add_argument("--params", default="params.yaml", help="the pipeline's params (sections finn, features)")
    p.add_argument("--enabled", choices=["true", "false"], help="override params finn.enabled")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    params = load_params(args.params)

    from kws import finn_check

    cfg = finn_check.check_params(params.get("finn"))
    if args.enabled is not None:
        cfg["enabled"] = args.enabled == "true"
    if not cfg["enabled"]:
        write_json(args.metrics, {"enabled": False})
        write_json(args.layers, {"enabled": False})
        print("FINN check disabled (params finn.enabled)")
        return

    start = time.time()
    finn_root = finn_check.find_finn_root(args.finn_root)
    finn_python = finn_check.find_finn_python(args.finn_python)
    feature_type = params.get("features", {}).get("feature_type", "mfcc")
    with tempfile.TemporaryDirectory(prefix="finn_") as tmp:
        metrics, detail = finn_check.check(args.model, args.bin_file_path, cfg, args.build_dir or tmp,
                                           finn_root, finn_python, feature_type)
    write_json(args.metrics, metrics)
    write_json(args.layers, detail)
    print(f"FINN ({finn_root}) on {args.model}: {metrics['LUT']:.0f} LUT, {metrics['BRAM_18K']:.0f} BRAM_18K, "
          f"{metrics['URAM']:.0f} URAM, {metrics['DSP']:.0f} DSP, slowest layer {metrics['max_cycles']} cycles "
          f"({metrics['estimated_throughput_fps']:.0f} frames/s at {1e3 / cfg['synth_clk_period_ns']:g} MHz, "
          f"latency {metrics['estimated_latency_ns'] / 1e3:g} us); {metrics['graphs_executed']} FINN graphs on "
          f"{metrics['bin_files']} BIN files agree with qonnx on {metrics['finn_agree']}, exact ties deciding "
          f"{metrics['finn_ties_deciding']} ({time.time() - start:.0f} s)")
    if not metrics["passed"]:
        bad = {name: g for name, g in detail["graphs"].items() if g["disagree_without_tie"]}
        name, g = next(iter(bad.items()))
        raise KwsError(f"FINN graph after {name} predicts differently from qonnx on {g['disagree_without_tie']} BIN "
                       f"files without a tie: {', '.join(g['disagreeing'][:5])} (see {args.layers})")


if __name__ == "__main__":
    run_cli(main)
