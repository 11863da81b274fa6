"""Stage train: local in-process training through Determined's Core API, or, with DET_MASTER
(or params train.det_master) set, the same code submitted to a Determined cluster."""
import argparse
import os
from pathlib import Path

# MKL, oneDNN and PyTorch pick their kernels by CPU (AVX2, AVX-512, ...), and the kernels round
# differently: the same params trained on an AVX-512 machine gave another model (67.0% vs 65.5% on
# the real clips). Capped at AVX2 before torch loads, the trained bytes should not depend on the
# CPU model (any x86-64 CPU since 2013); a variable already set by the user wins.
for key, value in (("MKL_CBWR", "AVX2"), ("ATEN_CPU_CAPABILITY", "avx2"), ("ONEDNN_MAX_CPU_ISA", "AVX2")):
    os.environ.setdefault(key, value)

from kws.common import load_params, run_cli

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--features", default="data/features", help="folder with {train,validation,test}.npz")
    ap.add_argument("--checkpoints", default="checkpoints", help="local checkpoint folder (DVC out)")
    ap.add_argument("--metrics", default="metrics/train.json")
    ap.add_argument("--plots", default="plots/train.csv")
    ap.add_argument("--template", default=str(REPO / "kws_tf_template_finn.yaml"), help="cluster only")
    ap.add_argument("--experiment-file", default="experiment_number.txt", help="cluster only")
    ap.add_argument("--no-wait", action="store_true", help="cluster only: return after submitting")
    ap.add_argument("--trial", action="store_true", help="internal: run as a trial inside the cluster")
    args = ap.parse_args()

    from kws import train

    if args.trial:
        train.run_trial(args.features)
        return
    params = load_params(args.params)
    master = os.environ.get("DET_MASTER") or (params.get("train") or {}).get("det_master")
    if master:
        train.submit(params, master, REPO, Path(args.template), Path(args.experiment_file), wait=not args.no_wait)
        if not args.no_wait:
            train.write_cluster_outputs(args.experiment_file, args.features, args.metrics, args.plots)
    else:
        m = train.run_local(params, args.features, args.checkpoints, args.metrics, args.plots)
        print(f"val accuracy {m['val_accuracy']:.4f}, test accuracy {m['test_accuracy']:.4f}, "
              f"input scale {m['input_scale']:.5f}")


if __name__ == "__main__":
    run_cli(main)
