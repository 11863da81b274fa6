"""The local engine: kws.train.train() in this process, through Determined's off-cluster Core API
context, checkpoints in a local folder (the train stage's `checkpoints/`)."""
from __future__ import annotations

from kws.checkpoints import local_context
from kws.train import load_features, recipe, train, write_outputs


def run_local(params: dict, features_dir, ckpt_dir, metrics_path, plots_path, progress: bool = True,
              report_path=None) -> dict:
    """Train (or resume) on the features in `features_dir`; write the metrics, the report of all
    final figures and the per-epoch plots."""
    data = load_features(features_dir)
    with local_context(ckpt_dir) as ctx:
        _, metrics, history = train(ctx, recipe(params), data, local_dir=ckpt_dir, progress=progress)
    write_outputs(metrics, history, metrics_path, plots_path, report_path)
    return metrics
