"""A Determined cluster: the same kws.train.train() submitted as an experiment (hyperparameters =
the run's recipe, train.sweep as grid axes, train.searcher as its searcher), run as a trial inside
the cluster, and its best checkpoint brought back for export. Determined 0.38.1 is the last release
(docs/determined.md); configs are checked against its own schemas (kws.expconf) before submitting."""
from __future__ import annotations

import math
import sys
import tempfile
from pathlib import Path

from kws import params as params_schema
from kws.checkpoints import download_experiment_state
from kws.common import KwsError, atomic_path
from kws.train import (TIME_METRIC, VALIDATION_METRICS, load_features, outputs_from_state, recipe, train,
                       write_outputs)

TEMPLATE_NAME = "kws-finn"
FEATURES_IN_CONTAINER = "/kws/features"  # the template's bind mount of data/features
CONTEXT_FILES = ("kws", "scripts/run_training.py", "pyproject.toml")


def _const_tree(tree: dict) -> dict:
    """Every leaf as an explicit const hyperparameter (lists such as hidden_layers stay one value)."""
    return {k: _const_tree(v) if isinstance(v, dict) else {"type": "const", "val": v} for k, v in tree.items()}


def _complete_searcher(searcher: dict, sweep: dict, epochs) -> None:
    """What each searcher needs beyond name and metric (Determined 0.38.1's schemas and master):
    random and adaptive_asha: max_trials (default: the size of the train.sweep grid);
    adaptive_asha also max_time and time_metric (default: train.epochs of the `epochs` metric)."""
    name = searcher.get("name")
    if sweep and name == "single":
        raise KwsError("params train.sweep needs train.searcher.name: grid (or random or adaptive_asha, "
                       "which sample it train.searcher.max_trials times)")
    if searcher.get("metric") not in VALIDATION_METRICS:
        raise KwsError(f"params train.searcher.metric: the trial reports {' or '.join(VALIDATION_METRICS)}, "
                       f"got {searcher.get('metric')!r}")
    if name in ("random", "adaptive_asha") and searcher.get("max_trials") is None:
        if not sweep:
            raise KwsError(f"params train.searcher.max_trials: the {name} searcher needs a number of trials "
                           "(or a train.sweep, whose grid size is the default)")
        searcher["max_trials"] = math.prod(len(vals) for vals in sweep.values())
    if name == "adaptive_asha":
        searcher.setdefault("time_metric", TIME_METRIC)
        searcher.setdefault("max_time", epochs)
        if searcher["time_metric"] != TIME_METRIC:
            raise KwsError(f"params train.searcher.time_metric: the trial reports its progress as "
                           f"{TIME_METRIC!r}, got {searcher['time_metric']!r}")


def experiment_config(params: dict, name: str = "kws-finn-mlp") -> dict:
    """The experiment config, generated from params.yaml: hyperparameters = recipe(params) with
    `train.sweep` entries ("section.key": [values]) turned into categorical grid axes."""
    train_p = params.get("train") or {}
    hp = _const_tree(recipe(params))
    sweep = train_p.get("sweep") or {}
    if not isinstance(sweep, dict):
        raise KwsError(f"params train.sweep: expected a mapping 'section.key: [values]', got {sweep!r}")
    for dotted, vals in sweep.items():
        node, *rest = str(dotted).split(".")
        target = hp
        for part in [node, *rest][:-1]:
            if part not in target or not isinstance(target[part], dict) or "type" in target[part]:
                raise KwsError(f"params train.sweep: '{dotted}' is not a key of params seed/model/train")
            target = target[part]
        leaf = [node, *rest][-1]
        if leaf not in target or not isinstance(vals, list) or not vals:
            raise KwsError(f"params train.sweep: '{dotted}' must name an existing key and give a non-empty list")
        target[leaf] = {"type": "categorical", "vals": vals}
    given = params_schema.section(params_schema.Searcher, train_p.get("searcher"), "train.searcher").model_dump()
    searcher = {k: v for k, v in given.items() if v is not None}  # null: Determined's default or _complete_searcher's
    _complete_searcher(searcher, sweep, train_p.get("epochs"))
    return {
        "name": name,
        "hyperparameters": hp,
        "searcher": searcher,
        # -m: the context dir (not scripts/) goes on sys.path, so `kws` imports without installing
        "entrypoint": f"python3 -m scripts.run_training --trial --features {FEATURES_IN_CONTAINER}",
    }


def check_master(master: str, timeout: float = 5.0) -> str:
    """One clear line, fast, when DET_MASTER does not answer."""
    import requests
    from determined.common.api import canonicalize_master_url

    url = canonicalize_master_url(master)
    try:
        requests.get(f"{url}/info", timeout=timeout).raise_for_status()
    except requests.RequestException as e:
        raise KwsError(f"Determined master {url} is unreachable ({type(e).__name__}); "
                       "unset DET_MASTER and train.det_master to train locally") from None
    return url


def submit(params: dict, master: str, repo: Path, template: Path, experiment_file: Path, wait: bool = True) -> int:
    import shutil
    import subprocess

    from determined.experimental import client

    from kws import expconf

    config = experiment_config(params)
    if not template.is_file():
        raise KwsError(f"{template}: config template not found")
    expconf.check_submission(config, template)  # Determined's own schemas, before contacting the master
    url = check_master(master)
    r = subprocess.run([sys.executable, "-m", "determined.cli", "-m", url, "template", "set", TEMPLATE_NAME,
                        str(template)], capture_output=True, text=True)
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["no output"])[-1]
        raise KwsError(f"det template set {TEMPLATE_NAME} {template} failed: {last}")
    client.login(master=url)
    with tempfile.TemporaryDirectory() as ctx:  # upload only the code, never data or the venv
        for rel in CONTEXT_FILES:
            src, dst = repo / rel, Path(ctx) / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir():
                shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(src, dst)
        exp = client.create_experiment(config, model_dir=ctx, template=TEMPLATE_NAME)
    with atomic_path(experiment_file) as tmp:
        tmp.write_text(f"{exp.id}\n")
    print(f"submitted experiment {exp.id} to {url}", file=sys.stderr)
    if wait:
        state = exp.wait()
        if "COMPLETED" not in str(state):
            raise KwsError(f"experiment {exp.id} ended in state {state}")
    return exp.id


def write_cluster_outputs(experiment_file, features_dir, metrics_path, plots_path, report_path=None) -> dict:
    """After a cluster run: the experiment's best checkpoint, evaluated here on the local features."""
    with tempfile.TemporaryDirectory() as tmp:
        state, _ = download_experiment_state(experiment_file, tmp)
    metrics, history = outputs_from_state(state, load_features(features_dir))
    write_outputs(metrics, history, metrics_path, plots_path, report_path)
    return metrics


def run_trial(features_dir) -> None:
    """Entry point inside a Determined trial container: hyperparameters come from the master."""
    import determined as det
    from determined import core

    info = det.get_cluster_info()
    data = load_features(features_dir)
    with core.init() as ctx:
        train(ctx, dict(info.trial.hparams), data)
