"""The training loop, written once against Determined's Core API; kws.engines run it (locally,
or as a trial on a Determined cluster).

A run is defined by its recipe (seed, model and train params). Checkpoints (kws.checkpoints) are
made every epoch. A checkpoint whose run fingerprint (recipe, architecture, features, training code
and library versions) differs is never resumed: training starts fresh and says so on stderr (DVC
re-runs the stage after a params or code change, so refusing would force a manual `rm -r
checkpoints`)."""
from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import brevitas
import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from kws import augment, params
from kws.checkpoints import list_local_checkpoints, restore, save
from kws.common import KwsError
from kws.files import SPLITS, load_feature_splits, to_model_layout, write_csv, write_metrics
from kws.kernels import keep_freed_memory, kernel_settings
from kws.labels import NUM_CLASSES, UNKNOWN
from kws.model import ModelConfig, build_model, config_from_params, num_weights, weight_kib

HISTORY_FIELDS = ("epoch", "train_loss", "val_loss", "val_accuracy", "lr")
# metrics/train.json: what a user compares across experiments (all figures: reports/train.json)
HEADLINE = ("val_accuracy", "test_accuracy", "weight_kib")
# train: keys that only say where/how to run, not what is trained
NON_RECIPE_KEYS = ("engine", "det_master", "ray", "searcher", "sweep")
VALIDATION_METRICS = ("val_accuracy", "val_loss")  # what train() reports after each epoch
TIME_METRIC = "epochs"  # train()'s progress metric among them (a searcher's time_metric)
# Threads split reductions (matmuls, BatchNorm, the loss) into different partial sums, so the
# trained bytes depend on the thread count: pinned, so that a machine with any number of cores
# reproduces dvc.lock's checkpoint. One thread, because this small MLP's steps are hundreds of
# small ops: two threads meet at an OpenMP barrier after each, and waiting there either sleeps
# (slower than one thread on an idle machine) or spins (far slower beside a busy core). One
# thread has no barrier, so it is the faster choice idle and the safe one on a busy machine
# (docs/reproducibility.md, "One training thread").
TRAIN_THREADS = 1


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
    """The three feature splits (kws.files) as tensors in the MLP's input layout."""
    xs, ys, digest = load_feature_splits(features_dir)
    x = {}
    for s in SPLITS:
        n, frames, coeffs = xs[s].shape
        x[s] = torch.from_numpy(to_model_layout(xs[s], (n, 1, coeffs, frames)).copy())
    return Splits(x=x, y={s: torch.from_numpy(ys[s]) for s in SPLITS}, digest=digest)


def train_params(train: "params.Train | dict | None") -> params.Train:
    """The `train:` section, checked by kws.params; the warm-up is capped at epochs - 1, so the last
    epoch trains at the model's bit widths and a sweep can shorten train.epochs alone."""
    tp = params.section(params.Train, train, "train")
    return tp.model_copy(update={"warmup_epochs": min(tp.warmup_epochs, tp.epochs - 1)})


def input_range(x_train: torch.Tensor, percentiles, bit_width: int) -> tuple[float, float, float]:
    """(lo, hi, scale): lo/hi = the training features' percentiles, scale = max(|lo|, |hi|) / qmax."""
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


def warmup_config(cfg: ModelConfig, bit_width: int) -> ModelConfig:
    """The same network with `bit_width`-bit weights and activations (the input quantizer as it is)."""
    return dataclasses.replace(cfg, weight_bit_width=bit_width, act_bit_width=bit_width, output_bit_width=bit_width)


def loss_function(y_train: torch.Tensor, tp: params.Train, *, epoch_sample: bool = False) -> nn.CrossEntropyLoss:
    """The training objective; validation and test losses are reported in the same terms.

    epoch_sample: the loss over an epoch's sample (train_epoch), where Unknown clips are
    train.unknown_share as many and weigh 1/unknown_share as much: every epoch estimates the
    same objective, it only spends fewer steps on Unknown."""
    weight = class_weights(y_train, tp.unknown_weight_divisor)
    if epoch_sample:
        weight[UNKNOWN] /= tp.unknown_share
    return nn.CrossEntropyLoss(weight=weight, label_smoothing=tp.label_smoothing)


def recipe(params: dict) -> dict:
    """What defines a run (and its Determined hyperparameters): seed, model and train recipe."""
    train = {k: v for k, v in (params.get("train") or {}).items() if k not in NON_RECIPE_KEYS}
    return {"seed": int(params.get("seed", 0)), "model": dict(params.get("model") or {}), "train": train}


# The modules whose code decides the trained weights. DVC reruns the stage when one changes; the
# checkpoint the old code left must then not be resumed as if it were the new code's result.
TRAINING_CODE = ("kws.train", "kws.augment", "kws.model", "kws.common", "kws.labels", "kws.kernels", "kws.files",
                 "kws.checkpoints")


def code_digest() -> str:
    h = hashlib.sha256(f"torch {torch.__version__} brevitas {brevitas.__version__} {kernel_settings()}".encode())
    for name in TRAINING_CODE:
        h.update(Path(importlib.import_module(name).__file__).read_bytes())
    return h.hexdigest()


def fingerprint(hp: dict, cfg: ModelConfig, digest: str) -> str:
    blob = json.dumps({"hp": hp, "model": cfg.to_dict(), "features": digest, "code": code_digest()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


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
    tp = train_params(hp.get("train"))
    mp = params.section(params.Model, hp.get("model"), "model")
    aug = augment.check_params(tp.augment)
    seed = hp.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise KwsError(f"params seed: expected an integer, got {seed!r}")
    lo, hi, scale = input_range(data.x["train"], mp.input_clip_percentiles, mp.input_bit_width)
    cfg = config_from_params(mp, tuple(data.x["train"].shape[1:]), scale)
    fp = fingerprint(hp, cfg, data.digest)

    torch.use_deterministic_algorithms(True)
    # ...which also fills every new tensor with NaN before its op writes it, so that an op reading
    # memory it never wrote would show. Training ends with finite weights, so none does here: the
    # fill only cost time (a few percent of a step) and the bytes are the same without it.
    torch.utils.deterministic.fill_uninitialized_memory = False
    torch.set_num_threads(TRAIN_THREADS)
    keep_freed_memory()
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    warm_cfg = warmup_config(cfg, tp.warmup_bit_width)

    def epoch_cfg(epoch: int) -> ModelConfig:
        """The first warmup_epochs train the same weights at warmup_bit_width bits, then at the model's."""
        return warm_cfg if epoch < tp.warmup_epochs else cfg

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
    state = restore(core_context, latest) if latest is not None else None
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
    bar = tqdm(range(start, tp.epochs), initial=start, total=tp.epochs, desc="train", unit="epoch",
               disable=not progress, file=sys.stderr)
    saved = start  # epochs with a complete checkpoint: what a rerun resumes from
    try:
        for epoch in bar:
            if tp.warmup_epochs and epoch == tp.warmup_epochs:  # warm-up over: same weights and optimizer state
                model, optimizer, scheduler = _requantized(model, optimizer, scheduler, cfg, tp)
            lr = optimizer.param_groups[0]["lr"]
            train_loss = train_epoch(model, optimizer, train_criterion, x["train"], y["train"], tp.batch_size, gen,
                                     aug, tp.unknown_share)
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
                new_id = save(core_context, state, meta)
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
            core_context.train.report_progress((epoch + 1) / tp.epochs)
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


def _optimizer(model: nn.Module, tp: params.Train):
    # made after any load_state_dict: Brevitas replaces its scale Parameters there, an optimizer
    # made earlier would keep updating the discarded ones
    optimizer = torch.optim.Adam(model.parameters(), lr=tp.lr)
    return optimizer, torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=tp.epochs, eta_min=tp.eta_min)


def _requantized(model, optimizer, scheduler, cfg: ModelConfig, tp: params.Train):
    """The same weights, optimizer and schedule state in a model of `cfg`'s bit widths."""
    new = _rebuilt(cfg)
    new.load_state_dict(model.state_dict())
    new_optimizer, new_scheduler = _optimizer(new, tp)
    new_optimizer.load_state_dict(optimizer.state_dict())
    new_scheduler.load_state_dict(scheduler.state_dict())
    return new, new_optimizer, new_scheduler


def final_metrics(model: nn.Module, cfg: ModelConfig, hp: dict, data: Splits, clip, fp: str) -> dict:
    tp = train_params(hp.get("train"))
    criterion = loss_function(data.y["train"], tp)
    val_loss, val_acc = evaluate(model, data.x["validation"], data.y["validation"], criterion)
    test_loss, test_acc = evaluate(model, data.x["test"], data.y["test"], criterion)
    return {
        "epochs": tp.epochs,
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


def write_outputs(metrics: dict, history: list[dict], metrics_path, plots_path, report_path=None) -> None:
    """metrics/train.json (the headline figures), reports/train.json (all final figures) and
    plots/train.csv (one row per epoch)."""
    write_metrics(metrics_path, report_path, metrics, HEADLINE)
    write_csv(plots_path, history, HISTORY_FIELDS)
