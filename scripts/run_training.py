"""Stage train: the one training loop (kws.train) run by the engine params train.engine names:
local (in this process), ray (a Ray Tune trial on RAY_ADDRESS or train.ray.address; docs/ray.md)
or determined (DET_MASTER or train.det_master set also selects it, as before train.engine)."""
import argparse
import os
import sys
from pathlib import Path

from kws.kernels import cap_cpu_kernels

cap_cpu_kernels()  # before anything imports torch

from kws.common import HelpFormatter, KwsError, run_cli
from kws.params import load_params

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--params", default="params.yaml", help="the pipeline's params (sections seed, model, train)")
    ap.add_argument("--features", default="data/features", help="folder with {train,validation,test}.npz")
    ap.add_argument("--checkpoints", default="checkpoints", help="local checkpoint folder (DVC out)")
    ap.add_argument("--metrics", default="metrics/train.json", help="final accuracies and losses (JSON)")
    ap.add_argument("--plots", default="plots/train.csv", help="per-epoch losses and accuracy (CSV)")
    ap.add_argument("--report", default="reports/train.json", help="all final figures (JSON; --metrics holds the headline ones)")
    ap.add_argument("--template", default=str(REPO / "kws_tf_template_finn.yaml"), help="cluster only: the experiment config template")
    ap.add_argument("--experiment-file", default="experiment_number.txt", help="cluster only: where the experiment id is written")
    ap.add_argument("--no-wait", action="store_true", help="cluster only: return after submitting")
    ap.add_argument("--trial", action="store_true", help="internal: run as a trial inside the cluster")
    args = ap.parse_args()

    if args.trial:
        from kws.engines import determined

        determined.run_trial(args.features)
        return
    params = load_params(args.params)
    engine = params["train"]["engine"]
    master = os.environ.get("DET_MASTER") or params["train"]["det_master"]
    if engine == "determined" and not master:
        raise KwsError("params train.engine: determined needs DET_MASTER or params train.det_master")
    if engine == "ray":
        from kws.engines import ray

        report(ray.run_ray(params, args.features, args.checkpoints, args.metrics, args.plots, report_path=args.report))
    elif master:
        from kws.engines import determined

        determined.submit(params, master, REPO, Path(args.template), Path(args.experiment_file), wait=not args.no_wait)
        if not args.no_wait:
            determined.write_cluster_outputs(args.experiment_file, args.features, args.metrics, args.plots, args.report)
    else:
        from kws.engines import local

        report(local.run_local(params, args.features, args.checkpoints, args.metrics, args.plots,
                               report_path=args.report))


def report(m: dict) -> None:
    print(f"val accuracy {m['val_accuracy']:.4f}, test accuracy {m['test_accuracy']:.4f}, "
          f"input scale {m['input_scale']:.5f}")


def interruptible(main) -> None:
    """Ctrl-C: one line saying what is kept (checkpoints are made every epoch) and exit status
    130, as a shell reports an interrupted command; not a traceback from wherever torch was."""
    try:
        main()
    except KeyboardInterrupt as e:
        print(e if str(e) else "interrupted; rerun to resume", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    interruptible(lambda: run_cli(main))
