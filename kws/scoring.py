"""Scoring a model's logits against labels, the same way in every check: the prediction rule
(exact ties go to the last maximum), headline metrics, per-label accuracy and the confusion plot."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kws.files import write_csv
from kws.labels import LABELS


def is_tie(logits: np.ndarray) -> np.ndarray:
    """Rows whose maximum is held by more than one class."""
    return (logits == logits.max(axis=1, keepdims=True)).sum(axis=1) > 1


def predict(logits: np.ndarray) -> tuple[np.ndarray, int]:
    """Predicted class per row and the number of rows whose maximum is tied. Low-bit logits tie
    exactly; the LAST maximum wins (the rule the FINN submission's predictions follow), so a tie
    between a keyword and Unknown (index 11) goes to Unknown."""
    last = logits.shape[1] - 1 - np.argmax(logits[:, ::-1], axis=1)
    return last, int(is_tie(logits).sum())


@dataclass
class Validation:
    names: list[str]
    labels: np.ndarray
    predictions: np.ndarray
    ties: int
    onnxruntime_max_abs_diff: float | None = None
    inputs: np.ndarray | None = field(default=None, repr=False)  # the dequantized BIN files the model ran on

    @property
    def accuracy(self) -> float:
        return float((self.predictions == self.labels).mean())


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, n: int) -> np.ndarray:
    m = np.zeros((n, n), dtype=np.int64)
    np.add.at(m, (labels, predictions), 1)
    return m


def metrics(v: Validation, float_accuracy: float | None = None) -> dict:
    """The headline figures, compared across experiments (`dvc metrics show`, `dvc exp show`)."""
    out = {"accuracy": v.accuracy, "num_files": len(v.names), "ties": v.ties}
    if float_accuracy is not None:
        out["float_accuracy"] = float_accuracy
        out["accuracy_gap"] = abs(v.accuracy - float_accuracy)
    if v.onnxruntime_max_abs_diff is not None:
        out["onnxruntime_max_abs_diff"] = v.onnxruntime_max_abs_diff
    return out


def per_class(v: Validation) -> list[dict]:
    """One row per label: files, correct predictions, accuracy (None without files)."""
    cm = confusion_matrix(v.labels, v.predictions, len(LABELS))
    return [{"label": LABELS[i], "files": int(cm[i].sum()), "correct": int(cm[i, i]),
             "accuracy": float(cm[i, i] / cm[i].sum()) if cm[i].sum() else None} for i in range(len(LABELS))]


def write_per_class_csv(path, v: Validation) -> None:
    write_csv(path, per_class(v), ("label", "files", "correct", "accuracy"))


def plot_confusion(cm: np.ndarray, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 6))
    im = ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(LABELS)), LABELS, rotation=45, ha="right")
    ax.set_yticks(range(len(LABELS)), LABELS)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for i, j in zip(*np.nonzero(cm)):
        ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                color="white" if cm[i, j] > cm.max() / 2 else "black")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})  # no version stamp: same bytes per run
    plt.close(fig)
