"""Training, written once against Determined's Core API.

Without a master, core.init() gives a local in-process context whose checkpoints go to our own
folder; on a cluster the same `train()` runs as a trial. Checkpoints are made every epoch and hold
everything needed to continue bit-exactly: weights, optimizer, scheduler, epoch, RNG states and the
metric history. A checkpoint whose run fingerprint (params, architecture, features, training code and
library versions) differs is never resumed: training starts fresh and says so on stderr (DVC re-runs
the stage after a params or code change, so refusing would force a manual `rm -r checkpoints`)."""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import importlib
import io
import json
import logging
import math
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import brevitas
import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from kws import augment
from kws.common import KwsError, atomic_path, check_fraction
from kws.kernels import kernel_settings
from kws.labels import NUM_CLASSES, UNKNOWN
from kws.model import (MAX_BIT_WIDTH, ModelConfig, build_model, check_bit_width, config_from_params, num_weights,
                       to_model_input, weight_kib)

SPLITS = ("train", "validation", "test")
STATE_FILE = "state.pt"
HISTORY_FIELDS = ("epoch", "train_loss", "val_loss", "val_accuracy", "lr")
# train: keys that only say where/how to run, not what is trained
NON_RECIPE_KEYS = ("det_master", "searcher", "sweep")
# Threads split reductions (matmuls, BatchNorm, the loss) into different partial sums, so the
# trained bytes depend on the thread count (1 vs 2 threads: 66.5% vs 67.0% real speech): pinned, so
# that a machine with any number of cores reproduces dvc.lock's checkpoint. More threads barely
# speed up this small MLP.
TRAIN_THREADS = 2


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during training; `epoch` epochs are checkpointed (the CLI says so on one line)."""

    def __init__(self, epoch: int):
        super().__init__(f"interrupted after epoch {epoch}; rerun to resume")
        self.epoch = epoch


@dataclass
class Splits:
    x: dict[str, torch.Tensor]  # model layout (N, 1, coeffs, frames)
    y: dict[str, torch.Tensor]
    digest: str  # of the feature bytes: a checkpoint made on other features is not resumed


def load_features(features_dir: str | os.PathLike) -> Splits:
    features_dir = Path(features_dir)
    xs, ys, h = {}, {}, hashlib.sha256()
    for split in SPLITS:
        path = features_dir / f"{split}.npz"
        if not path.is_file():
            raise KwsError(f"{path}: features file not found (run the features stage)")
        try:
            with np.load(path, allow_pickle=False) as f:
                x, y = f["x"], f["y"]
        except KeyError as e:
            raise KwsError(f"{path}: missing array {e}") from None
        except Exception as e:  # zipfile/pickle errors for non-npz bytes
            raise KwsError(f"{path}: not a features .npz ({type(e).__name__})") from None
        if x.ndim != 3 or x.shape[0] == 0:
            raise KwsError(f"{path}: x must be (N, frames, coeffs) with N > 0, got shape {x.shape}")
        if y.shape != (x.shape[0],) or not np.issubdtype(y.dtype, np.integer):
            raise KwsError(f"{path}: y must be {x.shape[0]} integer labels, got {y.dtype} {y.shape}")
        if y.min() < 0 or y.max() >= NUM_CLASSES:
            raise KwsError(f"{path}: labels must be in 0..{NUM_CLASSES - 1}, got {y.min()}..{y.max()}")
        if not np.isfinite(x).all():
            raise KwsError(f"{path}: x holds NaN or infinite values")
        x = np.ascontiguousarray(x, dtype=np.float32)
        y = y.astype(np.int64)
        h.update(split.encode() + str(x.shape).encode() + x.tobytes() + y.tobytes())
        xs[split], ys[split] = x, y
    shapes = {s: xs[s].shape[1:] for s in SPLITS}
    if len(set(shapes.values())) != 1:
        raise KwsError(f"{features_dir}: splits have different feature shapes {shapes}")
    return Splits(
        x={s: torch.from_numpy(to_model_input(xs[s])) for s in SPLITS},
        y={s: torch.from_numpy(ys[s]) for s in SPLITS},
        digest=h.hexdigest(),
    )


def input_range(x_train: torch.Tensor, percentiles, bit_width: int) -> tuple[float, float, float]:
    """(lo, hi, scale): lo/hi = the training features' percentiles, scale = max(|lo|, |hi|) / qmax."""
    if not (isinstance(percentiles, (list, tuple)) and len(percentiles) == 2
            and all(isinstance(p, (int, float)) for p in percentiles) and 0 <= percentiles[0] < percentiles[1] <= 100):
        raise KwsError(f"params model.input_clip_percentiles: expected [low, high] with 0 <= low < high <= 100, got {percentiles!r}")
    lo, hi = np.percentile(x_train.numpy().ravel(), percentiles).tolist()
    qmax = 2 ** (bit_width - 1) - 1 if bit_width > 1 else 1
    scale = max(abs(lo), abs(hi)) / qmax
    if not scale > 0:
        raise KwsError("training features are all zero between the clip percentiles: no input scale")
    return float(lo), float(hi), float(scale)


def class_weights(y: torch.Tensor, unknown_divisor: float) -> torch.Tensor:
    """(1 - class frequency), Unknown further divided (it is the largest class), normalised to sum 1."""
    freq = torch.bincount(y, minlength=NUM_CLASSES).double() / len(y)
    w = 1.0 - freq
    w[UNKNOWN] /= unknown_divisor
    return (w / w.sum()).float()


def check_train_params(train_params: dict) -> dict:
    p = dict(train_params or {})
    out = {}
    for key, default, kind in (
        ("epochs", 40, int), ("batch_size", 512, int), ("lr", 5e-4, float),
        ("eta_min", 1e-8, float), ("unknown_weight_divisor", 3.6, float),
    ):
        v = p.get(key, default)
        ok = not isinstance(v, bool) and isinstance(v, (int, float)) and (kind is float or float(v).is_integer())
        if not ok or not (v >= 0 if key == "eta_min" else v > 0) or not math.isfinite(v):
            what = "a non-negative number" if key == "eta_min" else f"a positive {'integer' if kind is int else 'number'}"
            raise KwsError(f"params train.{key}: expected {what}, got {v!r}")
        out[key] = kind(v)
    # older params have none: the submission's recipe
    out["label_smoothing"] = check_fraction("train.label_smoothing", p.get("label_smoothing", 0.0))
    warm = p.get("warmup_epochs", 0)
    if isinstance(warm, bool) or not isinstance(warm, int) or warm < 0:
        raise KwsError(f"params train.warmup_epochs: expected a non-negative integer, got {warm!r}")
    # at most epochs - 1, so the last epoch trains at the model's bit widths and a sweep can shorten
    # train.epochs alone; a warm-up below epochs (the default's 10 of 70) is used as given
    out["warmup_epochs"] = min(warm, out["epochs"] - 1)
    out["warmup_bit_width"] = check_bit_width("train.warmup_bit_width", p.get("warmup_bit_width", MAX_BIT_WIDTH))
    out["unknown_share"] = check_fraction("train.unknown_share", p.get("unknown_share", 1.0), kept=True)
    return out


def warmup_config(cfg: ModelConfig, bit_width: int) -> ModelConfig:
    """The same network with `bit_width`-bit weights and activations (the input quantizer as it is)."""
    return dataclasses.replace(cfg, weight_bit_width=bit_width, act_bit_width=bit_width, output_bit_width=bit_width)


def loss_function(y_train: torch.Tensor, tp: dict, *, epoch_sample: bool = False) -> nn.CrossEntropyLoss:
    """The training objective; validation and test losses are reported in the same terms.

    epoch_sample: the loss over an epoch's sample (train_epoch), where Unknown clips are
    train.unknown_share as many and weigh 1/unknown_share as much: every epoch estimates the
    same objective, it only spends fewer steps on Unknown."""
    weight = class_weights(y_train, tp["unknown_weight_divisor"])
    if epoch_sample:
        weight[UNKNOWN] /= tp["unknown_share"]
    return nn.CrossEntropyLoss(weight=weight, label_smoothing=tp["label_smoothing"])


def recipe(params: dict) -> dict:
    """What defines a run (and its Determined hyperparameters): seed, model and train recipe."""
    train = {k: v for k, v in (params.get("train") or {}).items() if k not in NON_RECIPE_KEYS}
    return {"seed": int(params.get("seed", 0)), "model": dict(params.get("model") or {}), "train": train}


# The modules whose code decides the trained weights. DVC reruns the stage when one changes; the
# checkpoint the old code left must then not be resumed as if it were the new code's result.
TRAINING_CODE = ("kws.train", "kws.augment", "kws.model", "kws.common", "kws.labels", "kws.kernels")


def code_digest() -> str:
    h = hashlib.sha256(f"torch {torch.__version__} brevitas {brevitas.__version__} {kernel_settings()}".encode())
    for name in TRAINING_CODE:
        h.update(Path(importlib.import_module(name).__file__).read_bytes())
    return h.hexdigest()


def fingerprint(hp: dict, cfg: ModelConfig, digest: str) -> str:
    blob = json.dumps({"hp": hp, "model": cfg.to_dict(), "features": digest, "code": code_digest()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# --- checkpoints: Determined's storage, one folder per checkpoint, metadata.json written last ---

def list_local_checkpoints(ckpt_dir: str | os.PathLike) -> list[tuple[int, str, dict]]:
    """(steps_completed, storage_id, metadata) of complete checkpoints, oldest first."""
    found = []
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return found
    for d in sorted(ckpt_dir.iterdir()):
        meta = d / "metadata.json"
        if not (d.is_dir() and meta.is_file() and (d / STATE_FILE).is_file()):
            continue  # interrupted while saving: metadata.json is written after the state
        try:
            m = json.loads(meta.read_text())
            found.append((int(m["steps_completed"]), d.name, m))
        except (ValueError, KeyError, TypeError):
            continue
    return sorted(found, key=lambda t: t[0])


def _canonical(obj):
    """`obj` rebuilt with every string interned. torch.save pickles an object it has written
    before as a back-reference, so its bytes depend on which equal strings are one object: a
    resumed run's history rows have the unpickler's keys, a fresh run's the code's literals, and
    equal states gave other state.pt bytes. Interned, equal strings are always one object."""
    if isinstance(obj, str):
        return sys.intern(obj)
    if isinstance(obj, dict):  # dict, OrderedDict (state_dict's _metadata holds module versions)
        out = type(obj)((_canonical(k), _canonical(v)) for k, v in obj.items())
        if hasattr(obj, "_metadata"):
            out._metadata = _canonical(obj._metadata)
        return out
    if type(obj) in (list, tuple):
        return type(obj)(_canonical(v) for v in obj)
    return obj


def _save(core_context, state: dict, metadata: dict) -> str:
    buf = io.BytesIO()
    torch.save(_canonical(state), buf)
    with core_context.checkpoint.store_path(metadata) as (path, storage_id):
        (Path(path) / STATE_FILE).write_bytes(buf.getvalue())
    return storage_id


def _load(core_context, storage_id: str) -> dict:
    with core_context.checkpoint.restore_path(storage_id) as path:
        return load_state(Path(path) / STATE_FILE)


def load_state(path: str | os.PathLike) -> dict:
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise KwsError(f"{path}: not a training checkpoint ({type(e).__name__})") from None
    if not isinstance(state, dict) or not {"model", "model_config", "epoch"} <= set(state):
        raise KwsError(f"{path}: not a training checkpoint of this project")
    return state


def latest_local_state(ckpt_dir: str | os.PathLike) -> tuple[dict, Path]:
    found = list_local_checkpoints(ckpt_dir)
    if not found:
        raise KwsError(f"{ckpt_dir}: no complete training checkpoint (run the train stage)")
    path = Path(ckpt_dir) / found[-1][1] / STATE_FILE
    return load_state(path), path


def download_experiment_state(experiment_file: str | os.PathLike, dest: str | os.PathLike) -> tuple[dict, Path]:
    """experiment_number.txt -> the experiment's best checkpoint (by its searcher metric) -> state."""
    from determined.experimental import client

    experiment_file = Path(experiment_file)
    try:
        exp_id = int(experiment_file.read_text().strip())
    except (OSError, ValueError):
        raise KwsError(f"{experiment_file}: expected a Determined experiment id") from None
    try:
        ckpt = client.get_experiment(exp_id).top_checkpoint()
        path = Path(ckpt.download(os.fspath(Path(dest) / ckpt.uuid)))
    except Exception as e:  # the SDK raises requests/API errors of many kinds
        raise KwsError(f"experiment {exp_id}: cannot fetch its best checkpoint ({type(e).__name__}: {e})") from None
    return load_state(path / STATE_FILE), path / STATE_FILE


# --- the loop ---

def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, criterion, batch: int = 8192) -> tuple[float, float]:
    model.eval()
    with torch.no_grad():
        logits = torch.cat([model(x[i:i + batch]) for i in range(0, len(x), batch)])
    return float(criterion(logits, y)), float((logits.argmax(1) == y).double().mean())


def epoch_order(y: torch.Tensor, unknown_share: float, gen: torch.Generator) -> torch.Tensor:
    """The training clips of one epoch, shuffled: all of them, or every non-Unknown clip and a fresh
    random `unknown_share` of the Unknown ones (Unknown is most of the synthetic corpus)."""
    if unknown_share >= 1.0:
        return torch.randperm(len(y), generator=gen)
    unknown = torch.nonzero(y == UNKNOWN).squeeze(1)
    others = torch.nonzero(y != UNKNOWN).squeeze(1)
    kept = unknown[torch.randperm(len(unknown), generator=gen)[:math.ceil(unknown_share * len(unknown))]]
    sample = torch.cat([others, kept])
    return sample[torch.randperm(len(sample), generator=gen)]


def train_epoch(model, optimizer, criterion, x, y, batch_size: int, gen: torch.Generator,
                aug: dict | None = None, unknown_share: float = 1.0) -> float:
    model.train()
    perm = epoch_order(y, unknown_share, gen)
    n = len(perm)
    if n % batch_size == 1:  # BatchNorm cannot train on a batch of one sample: drop it this epoch
        perm = perm[:-1]
    total = 0.0
    for i in range(0, len(perm), batch_size):
        idx = perm[i:i + batch_size]
        optimizer.zero_grad(set_to_none=True)
        xb = x[idx] if aug is None else augment.augment(x[idx], aug, gen)  # params train.augment
        loss = criterion(model(xb), y[idx])
        loss.backward()
        optimizer.step()
        total += loss.item() * len(idx)
    return total / len(perm)


def train(
    core_context,
    hp: dict,
    data: Splits,
    *,
    local_dir: str | os.PathLike | None = None,
    epoch_end: Callable[[int], None] | None = None,
    progress: bool = True,
) -> tuple[nn.Module, dict, list[dict]]:
    """Train (or resume) to hp['train']['epochs']; returns (model in eval mode, final metrics, history).

    Off-cluster, `local_dir` is the context's checkpoint storage folder: the latest matching
    checkpoint there is resumed and only the newest one is kept. On a cluster the master says
    which checkpoint to resume and the experiment's GC policy decides what is kept.
    `epoch_end(epoch)` runs after each epoch's checkpoint (tests use it to interrupt)."""
    tp = check_train_params(hp.get("train"))
    mp = hp.get("model") or {}
    aug = augment.check_params((hp.get("train") or {}).get("augment"))
    seed = hp.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise KwsError(f"params seed: expected an integer, got {seed!r}")
    in_bits = mp.get("input_bit_width", 8)
    config_from_params(mp, tuple(data.x["train"].shape[1:]), 1.0)  # validate before the slow percentile
    lo, hi, scale = input_range(data.x["train"], mp.get("input_clip_percentiles", [1.0, 99.0]), in_bits)
    cfg = config_from_params(mp, tuple(data.x["train"].shape[1:]), scale)
    fp = fingerprint(hp, cfg, data.digest)

    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(TRAIN_THREADS)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    warm_cfg = warmup_config(cfg, tp["warmup_bit_width"])

    def epoch_cfg(epoch: int) -> ModelConfig:
        """The first warmup_epochs train the same weights at warmup_bit_width bits, then at the model's."""
        return warm_cfg if epoch < tp["warmup_epochs"] else cfg

    criterion = loss_function(data.y["train"], tp)
    train_criterion = loss_function(data.y["train"], tp, epoch_sample=True)
    history: list[dict] = []

    info = getattr(core_context, "info", None)
    if info is not None:
        latest, stale, local_dir = info.latest_checkpoint, [], None
    else:
        found = list_local_checkpoints(local_dir) if local_dir else []
        good = [c for c in found if c[2].get("fingerprint") == fp]
        stale = [c for c in found if c[2].get("fingerprint") != fp]
        latest = good[-1][1] if good else None
        if stale:
            print(f"note: {local_dir}: {len(stale)} checkpoint(s) from other params, architecture, features "
                  "or training code are not resumed; starting fresh", file=sys.stderr)
    state = _load(core_context, latest) if latest is not None else None
    if state is not None:
        if state.get("fingerprint") != fp:
            raise KwsError(f"checkpoint {latest} was made with other params, features or training code; not resuming it")
    start = state["epoch"] if state is not None else 0
    # nothing above draws from torch's RNG: a fresh run initialises the weights right after the seed
    model = build_model(epoch_cfg(start))
    if state is not None:
        model.load_state_dict(state["model"])
    optimizer, scheduler = _optimizer(model, tp)
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        gen.set_state(state["gen_rng"])
        history = state["history"]
        print(f"note: resuming from checkpoint {latest} after epoch {start}", file=sys.stderr)
    for _, sid, _ in stale:
        core_context.checkpoint.delete(sid)

    x, y = data.x, data.y
    bar = tqdm(range(start, tp["epochs"]), initial=start, total=tp["epochs"], desc="train", unit="epoch",
               disable=not progress, file=sys.stderr)
    saved = start  # epochs with a complete checkpoint: what a rerun resumes from
    try:
        for epoch in bar:
            if tp["warmup_epochs"] and epoch == tp["warmup_epochs"]:  # warm-up over: same weights and optimizer state
                model, optimizer, scheduler = _requantized(model, optimizer, scheduler, cfg, tp)
            lr = optimizer.param_groups[0]["lr"]
            train_loss = train_epoch(model, optimizer, train_criterion, x["train"], y["train"], tp["batch_size"], gen,
                                     aug, tp["unknown_share"])
            scheduler.step()
            val_loss, val_acc = evaluate(model, x["validation"], y["validation"], criterion)
            row = {"epoch": epoch + 1, "train_loss": train_loss, "val_loss": val_loss, "val_accuracy": val_acc,
                   "lr": lr}
            history.append(row)
            bar.set_postfix(loss=f"{train_loss:.3f}", val_acc=f"{val_acc:.3f}")
            core_context.train.report_training_metrics(steps_completed=epoch + 1, metrics={"train_loss": train_loss})
            core_context.train.report_validation_metrics(
                steps_completed=epoch + 1, metrics={"val_loss": val_loss, "val_accuracy": val_acc,
                                                     TIME_METRIC: epoch + 1})
            if core_context.distributed.rank == 0:
                state = {
                    "epoch": epoch + 1, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "torch_rng": torch.get_rng_state(),
                    "gen_rng": gen.get_state(), "history": history, "fingerprint": fp,
                    # during the warm-up, the warm-up's bit widths: export refuses such a checkpoint
                    "model_config": epoch_cfg(epoch).to_dict(), "input_clip": [lo, hi], "hp": hp,
                }
                meta = {"steps_completed": epoch + 1, "fingerprint": fp, "model_config": epoch_cfg(epoch).to_dict()}
                new_id = _save(core_context, state, meta)
                saved = epoch + 1
                if local_dir:
                    # Determined names checkpoints with random uuids; naming them by epoch keeps the
                    # DVC-tracked folder byte-identical across runs
                    stable_id = f"epoch-{epoch + 1:04d}"
                    os.replace(Path(local_dir) / new_id, Path(local_dir) / stable_id)
                    new_id = stable_id
                    for _, sid, _ in list_local_checkpoints(local_dir):
                        if sid != new_id:
                            core_context.checkpoint.delete(sid)
            core_context.train.report_progress((epoch + 1) / tp["epochs"])
            if epoch_end is not None:
                epoch_end(epoch + 1)
            if core_context.preempt.should_preempt():
                return model, {}, history  # the cluster resumes us from the checkpoint just made
    except KeyboardInterrupt:
        bar.close()
        raise Interrupted(saved) from None
    bar.close()

    return model, final_metrics(model, cfg, hp, data, (lo, hi), fp), history


def _rebuilt(cfg: ModelConfig) -> nn.Module:
    """A new model of `cfg` that leaves torch's RNG stream alone (building draws initial weights),
    so a run resumed across the warm-up's end draws what an uninterrupted run draws."""
    with torch.random.fork_rng(devices=[]):
        return build_model(cfg)


def _optimizer(model: nn.Module, tp: dict):
    # made after any load_state_dict: Brevitas replaces its scale Parameters there, an optimizer
    # made earlier would keep updating the discarded ones
    optimizer = torch.optim.Adam(model.parameters(), lr=tp["lr"])
    return optimizer, torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=tp["epochs"], eta_min=tp["eta_min"])


def _requantized(model, optimizer, scheduler, cfg: ModelConfig, tp: dict):
    """The same weights, optimizer and schedule state in a model of `cfg`'s bit widths."""
    new = _rebuilt(cfg)
    new.load_state_dict(model.state_dict())
    new_optimizer, new_scheduler = _optimizer(new, tp)
    new_optimizer.load_state_dict(optimizer.state_dict())
    new_scheduler.load_state_dict(scheduler.state_dict())
    return new, new_optimizer, new_scheduler


def final_metrics(model: nn.Module, cfg: ModelConfig, hp: dict, data: Splits, clip, fp: str) -> dict:
    tp = check_train_params(hp.get("train"))
    criterion = loss_function(data.y["train"], tp)
    val_loss, val_acc = evaluate(model, data.x["validation"], data.y["validation"], criterion)
    test_loss, test_acc = evaluate(model, data.x["test"], data.y["test"], criterion)
    return {
        "epochs": tp["epochs"],
        "val_accuracy": val_acc,
        "val_loss": val_loss,
        "test_accuracy": test_acc,
        "test_loss": test_loss,
        "input_scale": cfg.input_scale,
        "input_clip_min": clip[0],
        "input_clip_max": clip[1],
        "num_weights": num_weights(model),
        "weight_kib": weight_kib(model),
        "num_train": len(data.x["train"]),
        "fingerprint": fp,
    }


def outputs_from_state(state: dict, data: Splits) -> tuple[dict, list[dict]]:
    """metrics/train.json and plots/train.csv content from a checkpoint (a cluster run's best)."""
    cfg = ModelConfig.from_dict(state["model_config"])
    model = build_model(cfg)
    model.load_state_dict(state["model"])
    return final_metrics(model.eval(), cfg, state["hp"], data, state["input_clip"], state["fingerprint"]), state["history"]


# --- running it: local (in process) or as a trial on a cluster ---

def local_context(ckpt_dir: str | os.PathLike):
    """Determined's off-cluster Core API context storing checkpoints in `ckpt_dir` (nothing goes
    to the user's data dir: appdirs is only used when no storage is given)."""
    from determined import core

    ckpt_dir = Path(ckpt_dir).resolve()
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    # restoring a local checkpoint is a plain folder read; Determined's shared_fs storage warns that it
    # ignores a file selector it is handed for that, on every resume
    logging.getLogger("determined.common.storage.shared").addFilter(
        lambda record: "Ignoring partial checkpoint download" not in record.getMessage())
    return core.init(checkpoint_storage=str(ckpt_dir))


def write_outputs(metrics: dict, history: list[dict], metrics_path, plots_path) -> None:
    with atomic_path(metrics_path) as tmp:
        tmp.write_text(json.dumps(metrics, indent=2) + "\n")
    with atomic_path(plots_path) as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=HISTORY_FIELDS, lineterminator="\n")
            w.writeheader()
            for row in history:
                w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


def run_local(params: dict, features_dir, ckpt_dir, metrics_path, plots_path, progress: bool = True) -> dict:
    data = load_features(features_dir)
    with local_context(ckpt_dir) as ctx:
        _, metrics, history = train(ctx, recipe(params), data, local_dir=ckpt_dir, progress=progress)
    write_outputs(metrics, history, metrics_path, plots_path)
    return metrics


def run_trial(features_dir) -> None:
    """Entry point inside a Determined trial container: hyperparameters come from the master."""
    import determined as det
    from determined import core

    info = det.get_cluster_info()
    data = load_features(features_dir)
    with core.init() as ctx:
        train(ctx, dict(info.trial.hparams), data)


# --- a Determined cluster: the same train() submitted as an experiment ---

TEMPLATE_NAME = "kws-finn"
FEATURES_IN_CONTAINER = "/kws/features"  # the template's bind mount of data/features
CONTEXT_FILES = ("kws", "scripts/run_training.py", "pyproject.toml")
DEFAULT_SEARCHER = {"name": "single", "metric": "val_accuracy", "smaller_is_better": False}
VALIDATION_METRICS = ("val_accuracy", "val_loss")  # what train() reports after each epoch
TIME_METRIC = "epochs"  # train()'s progress metric among them: adaptive_asha's time_metric


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
    searcher = dict(DEFAULT_SEARCHER)
    searcher.update({k: v for k, v in (train_p.get("searcher") or {}).items() if v is not None})  # null: the default
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


def write_cluster_outputs(experiment_file, features_dir, metrics_path, plots_path) -> dict:
    """After a cluster run: the experiment's best checkpoint, evaluated here on the local features."""
    with tempfile.TemporaryDirectory() as tmp:
        state, _ = download_experiment_state(experiment_file, tmp)
    metrics, history = outputs_from_state(state, load_features(features_dir))
    write_outputs(metrics, history, metrics_path, plots_path)
    return metrics
