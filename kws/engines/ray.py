"""The Ray engine: kws.train.train() run as Ray Tune trials on a Ray cluster (train.engine: ray),
through a Core-API-shaped context backed by Ray (kws.engines.ray_context). No second training loop.

- One run (the train stage): one trial; its last checkpoint comes back into `checkpoints/` in the
  local engine's layout, and metrics/train.json and plots/train.csv are written from it here.
- A sweep (`make sweep ENGINE=ray`): the grid of DVC's `-S` options (expanded and applied by DVC's
  own code, so each point is the params a `dvc exp run -S ...` of it trains), as a Ray Tune grid
  or random search, optionally with ASHA early stopping, trials in parallel on the cluster.

The features go to the workers through Ray's object store (tune.with_parameters puts them there
once; each node fetches them once): a Ray cluster has no shared filesystem unless one is set up,
and the driver already holds the features it checked. The kws package goes along as a runtime_env
py_module, so the workers run this checkout's code; the CPU kernel settings (kws.kernels) go as
runtime_env variables, set before the worker process imports torch, and each trial checks them
against the driver's before it trains (they decide the trained bytes)."""
from __future__ import annotations

import itertools
import logging
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

from kws import params as params_schema
from kws.common import KwsError, atomic_path
from kws.kernels import KERNEL_CAPS, SPEED, THREAD_PINS, kernel_settings

# kws.train and kws.checkpoints (torch) and ray are imported where used: an unreachable head is
# reported before the seconds their imports take

KWS_DIR = Path(__file__).resolve().parents[1]
DEFAULT_STORAGE = "ray_results"
CONNECT_TIMEOUT = 5.0


def ray_params(params: dict) -> params_schema.Ray:
    return params_schema.section(params_schema.Ray, (params.get("train") or {}).get("ray"), "train.ray")


def head_address(params: dict) -> str | None:
    """train.ray.address, else RAY_ADDRESS; None: start a Ray instance on this machine."""
    return ray_params(params).address or os.environ.get("RAY_ADDRESS") or None


def check_head(address: str, timeout: float = CONNECT_TIMEOUT) -> None:
    """One clear line, at once, when the head does not answer (ray.init would retry for a minute)."""
    if address == "auto":
        return  # ray.init finds the local cluster's address itself, or fails at once
    parts = urlsplit(address if "://" in address else f"ray://{address}")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        host = port = None
    if not host or not port:
        raise KwsError(f"Ray address {address!r} (params train.ray.address or RAY_ADDRESS): expected host:port "
                       "or ray://host:port")
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        raise KwsError(f"Ray head {address} is unreachable ({e.strerror or type(e).__name__}); check RAY_ADDRESS "
                       "or params train.ray.address, or set train.engine: local") from None


def runtime_env() -> dict:
    """This checkout's kws package and the kernel settings, for every worker of the job."""
    keys = [k for k, _ in KERNEL_CAPS + THREAD_PINS + SPEED]
    return {"py_modules": [str(KWS_DIR)], "excludes": ["__pycache__"],
            "env_vars": {k: os.environ[k] for k in keys if k in os.environ}}


def connect(address: str | None) -> None:
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # one checkpoint per epoch is the point here, not a bottleneck worth a warning each time
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if ray.is_initialized():
        ray.shutdown()
    if address is not None:
        check_head(address)
    kwargs = {} if address is not None else {"include_dashboard": False}  # a head started for this run
    try:
        ray.init(address=address, runtime_env=runtime_env(), logging_level=logging.WARNING, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise KwsError(f"Ray at {address or 'a new local instance'}: cannot connect "
                       f"({str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__})") from None


def _trial(config: dict, data=None, hps=None, kernels: str = "") -> None:
    """One Ray Tune trial: the training loop on Ray's session (runs in a Ray worker)."""
    from kws.engines.ray_context import RayCoreContext
    from kws.train import train

    if kernel_settings() != kernels:
        raise KwsError(f"Ray worker kernel settings {kernel_settings()} differ from the driver's {kernels}: "
                       "the trained bytes would differ (kws.kernels)")
    train(RayCoreContext(), hps[config["point"]], _splits(data), progress=False)


def _arrays(data) -> dict:
    """The features as numpy arrays: Ray's object store hands numpy arrays to a worker without
    copying or unpickling them (pickled torch tensors took ~8 s per trial at the real corpus' size)."""
    return {"x": {s: t.numpy() for s, t in data.x.items()}, "y": {s: t.numpy() for s, t in data.y.items()},
            "digest": data.digest}


def _splits(arrays: dict):
    """kws.train.Splits again, in writable memory (the object store's arrays are read-only)."""
    import torch

    from kws.train import Splits

    return Splits(x={s: torch.from_numpy(a.copy()) for s, a in arrays["x"].items()},
                  y={s: torch.from_numpy(a.copy()) for s, a in arrays["y"].items()}, digest=arrays["digest"])


def _storage(rp: params_schema.Ray) -> str:
    path = rp.storage_path or DEFAULT_STORAGE
    return path if "://" in path else str(Path(path).resolve())


def run_trials(hps: list[dict], data, rp: params_schema.Ray, name: str, progress: bool = True):
    """`hps` as Ray Tune trials (grid over all, or random with num_samples); Tune's ResultGrid."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from kws.train import TIME_METRIC

    max_epochs = max(h["train"].get("epochs", params_schema.Train().epochs) for h in hps)
    scheduler = None
    if rp.asha.enabled:
        scheduler = ASHAScheduler(time_attr=TIME_METRIC, metric=rp.metric, mode="max" if rp.metric == "val_accuracy"
                                  else "min", max_t=max_epochs, grace_period=min(rp.asha.grace_period, max_epochs),
                                  reduction_factor=rp.asha.reduction_factor)
    if rp.search == "random":
        space, samples = {"point": tune.choice(list(range(len(hps))))}, rp.num_samples
    else:
        space, samples = {"point": tune.grid_search(list(range(len(hps))))}, 1
    trainable = tune.with_resources(tune.with_parameters(_trial, data=_arrays(data), hps=hps, kernels=kernel_settings()),
                                    {"cpu": rp.cpus_per_trial})
    tuner = tune.Tuner(
        trainable, param_space=space,
        tune_config=tune.TuneConfig(num_samples=samples, scheduler=scheduler,
                                    search_alg=BasicVariantGenerator(random_state=rp.random_seed),
                                    trial_dirname_creator=lambda t: f"trial-{t.trial_id}"),
        run_config=tune.RunConfig(
            name=name, storage_path=_storage(rp), verbose=1 if progress else 0,
            failure_config=tune.FailureConfig(max_failures=rp.max_failures),
            # the newest only: what a restarted trial resumes from, and the trial's result
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1)))
    try:
        return tuner.fit()
    except Exception as e:  # Tune's own failures (storage not reachable from every node, say)
        raise KwsError(f"Ray Tune run {name}: {str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}") from None


def _trial_state(result) -> tuple[dict, Path]:
    """The trial's last checkpoint, copied here: (state, folder holding state.pt and metadata.json)."""
    from kws.checkpoints import STATE_FILE, load_state

    if result.checkpoint is None:
        raise KwsError(f"Ray trial {result.path}: no checkpoint ({result.error or 'it reported none'})")
    folder = Path(tempfile.mkdtemp(prefix="kws-ray-"))
    result.checkpoint.to_directory(str(folder))
    return load_state(folder / STATE_FILE), folder


def _run_name(kind: str) -> str:
    return f"kws-{kind}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"


def run_ray(params: dict, features_dir, ckpt_dir, metrics_path, plots_path, progress: bool = True,
            report_path=None) -> dict:
    """The train stage on Ray: one trial of recipe(params); its last checkpoint becomes
    `ckpt_dir`/epoch-NNNN (the local layout), and the metrics and per-epoch plots are written."""
    rp = ray_params(params)
    connect(head_address(params))  # first: an unreachable head fails before the features load
    from kws.train import load_features, outputs_from_state, recipe, write_outputs

    data = load_features(features_dir)
    try:
        results = run_trials([recipe(params)], data, rp, _run_name("train"), progress)
        result = results[0]
        if result.error is not None:
            raise KwsError(f"Ray trial failed after {rp.max_failures} restart(s): {_one_line(result.error)}")
        state, folder = _trial_state(result)
    finally:
        import ray

        ray.shutdown()
    try:
        _install_checkpoint(folder, state["epoch"], Path(ckpt_dir))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    metrics, history = outputs_from_state(state, data)
    write_outputs(metrics, history, metrics_path, plots_path, report_path)
    return metrics


def _one_line(error) -> str:
    text = str(error).strip().splitlines()
    return text[-1] if text else type(error).__name__


def _first_line(error) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def _install_checkpoint(folder: Path, epoch: int, ckpt_dir: Path) -> None:
    """`folder` as `ckpt_dir`/epoch-NNNN, the only checkpoint kept there (as the local engine keeps)."""
    from kws.checkpoints import list_local_checkpoints

    ckpt_dir.mkdir(parents=True, exist_ok=True)
    target = ckpt_dir / f"epoch-{epoch:04d}"
    with atomic_path(target) as tmp:
        shutil.copytree(folder, tmp)
    for _, sid, _ in list_local_checkpoints(ckpt_dir):
        if sid != target.name:
            shutil.rmtree(ckpt_dir / sid)


# --- sweeps ---

def sweep_points(params_path: str | os.PathLike, overrides: list[str]) -> list[tuple[str, dict]]:
    """(label, params) of every point of the sweep: `-S` overrides as `dvc exp run` takes them,
    expanded into a grid and applied to params.yaml by DVC's own code; without any, train.sweep."""
    from kws.params import load_params

    params_path = Path(params_path)
    if not overrides:
        return _train_sweep_points(load_params(params_path))
    from dvc.exceptions import DvcException
    from dvc.utils.hydra import apply_overrides, get_hydra_sweeps

    try:
        grid = get_hydra_sweeps({"params.yaml": list(overrides)})
    except Exception as e:  # hydra's parser raises its own exception types
        raise KwsError(f"sweep overrides {' '.join(overrides)}: {_first_line(e)}") from None
    points = []
    with tempfile.TemporaryDirectory() as tmp:
        for point in grid:
            path = Path(tmp) / "params.yaml"
            shutil.copyfile(params_path, path)
            try:
                apply_overrides(path, point["params.yaml"])
            except DvcException as e:
                cause = f" ({_first_line(e.__cause__)})" if e.__cause__ else ""
                raise KwsError(f"sweep override {' '.join(point['params.yaml'])}: {_first_line(e)}{cause}") from None
            points.append((" ".join(f"-S {o}" for o in point["params.yaml"]), load_params(path)))
    return points


def _train_sweep_points(params: dict) -> list[tuple[str, dict]]:
    import copy

    sweep = (params.get("train") or {}).get("sweep") or {}
    if not sweep:
        raise KwsError("a Ray sweep needs a grid: -S key=v1,v2 options (make sweep's SWEEP) or params train.sweep")
    points = []
    for values in itertools.product(*sweep.values()):
        p = copy.deepcopy(params)
        for dotted, value in zip(sweep, values):
            *path, leaf = dotted.split(".")
            node = p
            for part in path:
                node = node.get(part) if isinstance(node, dict) else None
            if not isinstance(node, dict) or leaf not in node:
                raise KwsError(f"params train.sweep: '{dotted}' is not a key of params")
            node[leaf] = value
        params_schema.validate(p)
        points.append((" ".join(f"-S {k}={v}" for k, v in zip(sweep, values)), p))
    return points


def run_sweep(points: list[tuple[str, dict]], features_dir, address: str | None = None,
              progress: bool = True) -> list[dict]:
    """Every point as a trial (train.ray of the first point's params says how); one row per
    trial: its label, params, final metrics (from its last checkpoint, evaluated here) and epochs."""
    params = points[0][1]
    rp = ray_params(params)
    connect(address if address is not None else head_address(params))
    from kws.train import load_features, outputs_from_state, recipe

    data = load_features(features_dir)
    try:
        results = run_trials([recipe(p) for _, p in points], data, rp, _run_name("sweep"), progress)
        rows = []
        for result in results:
            label, p = points[result.config["point"]]
            if result.error is not None and result.checkpoint is None:
                rows.append({"label": label, "params": p, "metrics": None, "epochs_trained": 0,
                             "error": _one_line(result.error), "path": result.path, "checkpoint": None,
                             "node_id": None, "point": result.config["point"]})
                continue
            state, folder = _trial_state(result)
            shutil.rmtree(folder, ignore_errors=True)
            metrics, _ = outputs_from_state(state, data)
            rows.append({"label": label, "params": p, "metrics": metrics, "epochs_trained": state["epoch"],
                         "error": _one_line(result.error) if result.error is not None else None,
                         "path": result.path, "checkpoint": result.checkpoint.path,
                         "node_id": result.metrics.get("node_id"), "point": result.config["point"]})
    finally:
        import ray

        ray.shutdown()
    return sorted(rows, key=lambda r: r["point"])  # grid order, whatever order the trials ended in
