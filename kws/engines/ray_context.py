"""The part of Determined's Core API that kws.train.train() calls, backed by a Ray Tune trial's
session, so that the one training loop runs unchanged as a Ray Tune trial (kws.engines.ray).

One epoch = one `ray.tune.report`: train() reports its training and validation metrics, stores a
checkpoint, then reports progress; the metrics are held until the progress call and go to Ray in
one report together with that epoch's checkpoint (each report is a Tune iteration, and ASHA
compares trials by them). A checkpoint folder has the local engine's layout (state.pt, then
metadata.json written last, as Determined writes it), so the final one is copied back into
`checkpoints/` as it is. A restarted trial resumes from the checkpoint Ray hands it
(`ray.tune.get_checkpoint`), through `info.latest_checkpoint`, as on a Determined cluster."""
from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from pathlib import Path
from types import SimpleNamespace

import ray
from ray import tune

METADATA_FILE = "metadata.json"


class _Checkpoints:
    def __init__(self, owner: "RayCoreContext"):
        self._owner = owner

    @contextlib.contextmanager
    def store_path(self, metadata: dict | None = None):
        """A fresh folder to write into; it goes to Ray's storage with this epoch's report."""
        path = Path(tempfile.mkdtemp(prefix="kws-ckpt-"))
        yield path, path.name
        # Determined's format (json.dump, indent 2): the same bytes as the local engine's metadata.json
        with open(path / METADATA_FILE, "w") as f:
            json.dump(metadata or {}, f, indent=2)
        self._owner._stored(path)

    @contextlib.contextmanager
    def restore_path(self, storage_id: str):
        checkpoint = self._owner._resumed
        if checkpoint is None or storage_id != checkpoint.path:
            raise ValueError(f"Ray trial: no checkpoint {storage_id!r} to restore")
        with checkpoint.as_directory() as path:  # a copy when the storage is remote
            yield Path(path)

    def delete(self, storage_id: str) -> None:
        # Ray's CheckpointConfig(num_to_keep) decides what is kept in its storage; train() asks to
        # delete only checkpoints of a local folder, which a Ray trial does not have
        pass


class _Train:
    def __init__(self, owner: "RayCoreContext"):
        self._owner = owner

    def report_training_metrics(self, steps_completed: int, metrics: dict) -> None:
        self._owner._pending.update(metrics)

    def report_validation_metrics(self, steps_completed: int, metrics: dict) -> None:
        self._owner._pending.update(metrics)

    def report_progress(self, progress: float) -> None:
        self._owner._flush()


class _Preempt:
    @staticmethod
    def should_preempt() -> bool:
        return False  # Ray stops a trial itself (ASHA, a failure): train() is not asked to


class RayCoreContext:
    """checkpoint, train, preempt, distributed and info, as train() uses Determined's."""

    def __init__(self):
        self._pending: dict = {}
        self._checkpoint_dir: Path | None = None
        self._node_id = ray.get_runtime_context().get_node_id()
        self._resumed = tune.get_checkpoint()  # set when Ray restarts this trial after a failure
        self.checkpoint = _Checkpoints(self)
        self.train = _Train(self)
        self.preempt = _Preempt()
        self.distributed = SimpleNamespace(rank=0)  # one process per trial
        self.info = SimpleNamespace(latest_checkpoint=self._resumed.path if self._resumed else None)

    def _stored(self, path: Path) -> None:
        self._checkpoint_dir = path

    def _flush(self) -> None:
        """The epoch's metrics and checkpoint to Ray in one report."""
        path, self._checkpoint_dir = self._checkpoint_dir, None
        metrics, self._pending = self._pending, {}
        metrics["node_id"] = self._node_id  # which node trained it (trials spread over the cluster)
        try:
            # report() copies the folder into the run's storage before it returns
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(path) if path else None)
        finally:
            if path is not None:
                shutil.rmtree(path, ignore_errors=True)
