"""Training checkpoints in Determined's storage layout: one folder per checkpoint holding state.pt,
with metadata.json written last (a folder without it was interrupted while saving). A checkpoint
holds everything needed to continue bit-exactly: weights, optimizer, scheduler, epoch, RNG states
and the metric history."""
from __future__ import annotations

import io
import json
import logging
import os
import sys
from pathlib import Path

import torch

from kws.common import KwsError

STATE_FILE = "state.pt"


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


def save(core_context, state: dict, metadata: dict) -> str:
    """Store `state` through the Core API context's checkpoint storage; its storage id."""
    buf = io.BytesIO()
    torch.save(_canonical(state), buf)
    with core_context.checkpoint.store_path(metadata) as (path, storage_id):
        (Path(path) / STATE_FILE).write_bytes(buf.getvalue())
    return storage_id


def restore(core_context, storage_id: str) -> dict:
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
