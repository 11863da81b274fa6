"""The files stages hand each other, read and written in one place: feature .npz splits, MLPerf Tiny
BIN folders (BIN files + y_labels.csv), the model-layout transpose, metrics JSON and CSV tables."""
from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
from pathlib import Path

import numpy as np
from tqdm import tqdm

from kws.common import KwsError, atomic_path
from kws.labels import LABELS, NUM_CLASSES

SPLITS = ("train", "validation", "test")
LABELS_CSV = "y_labels.csv"  # the MLPerf Tiny runner's list of BIN files and true labels
PREDICTIONS_CSV = "predictions.csv"  # same format, the label our QONNX run predicts


# --- features: {split}.npz with x (N, frames, coeffs) float32 and y (N,) labels ---

def load_features(path: str | os.PathLike, feature_type: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(x float32, y int64) of one features split, checked; `feature_type` must match the stored one."""
    path = Path(path)
    if not path.is_file():
        raise KwsError(f"{path}: features file not found (run the features stage)")
    try:
        with np.load(path, allow_pickle=False) as data:
            x, y = data["x"], data["y"]
            stored = str(data["feature_type"]) if "feature_type" in data else None
    except KeyError as e:
        raise KwsError(f"{path}: missing array {e}") from None
    except Exception as e:  # zipfile/pickle errors for non-npz bytes
        raise KwsError(f"{path}: not a features .npz with x and y ({type(e).__name__})") from None
    if feature_type is not None and stored is not None and stored != feature_type:
        raise KwsError(f"{path}: holds {stored} features, the feature type asked is {feature_type}")
    if x.ndim < 2 or y.shape != (len(x),):
        raise KwsError(f"{path}: x {x.shape} and y {y.shape} do not describe the same samples")
    if len(y) and not np.issubdtype(y.dtype, np.integer):
        raise KwsError(f"{path}: y must be integer labels, got {y.dtype}")
    if not np.isfinite(x).all():
        raise KwsError(f"{path}: x holds NaN or infinite values")
    if len(y) and (y.min() < 0 or y.max() >= NUM_CLASSES):
        raise KwsError(f"{path}: labels must be in 0..{NUM_CLASSES - 1}, got {y.min()}..{y.max()}")
    return np.ascontiguousarray(x, dtype=np.float32), y.astype(np.int64, copy=False)


def load_feature_splits(features_dir: str | os.PathLike) -> tuple[dict, dict, str]:
    """(x, y, digest) of train/validation/test: x[split] (N, frames, coeffs), y[split] labels, and a
    digest of all their bytes (a checkpoint made on other features is not resumed)."""
    features_dir = Path(features_dir)
    xs, ys, h = {}, {}, hashlib.sha256()
    for split in SPLITS:
        path = features_dir / f"{split}.npz"
        x, y = load_features(path)
        if x.ndim != 3 or len(x) == 0:
            raise KwsError(f"{path}: x must be (N, frames, coeffs) with N > 0, got shape {x.shape}")
        h.update(split.encode() + str(x.shape).encode() + x.tobytes() + y.tobytes())
        xs[split], ys[split] = x, y
    shapes = {s: xs[s].shape[1:] for s in SPLITS}
    if len(set(shapes.values())) != 1:
        raise KwsError(f"{features_dir}: splits have different feature shapes {shapes}")
    return xs, ys, h.hexdigest()


def to_model_layout(x: np.ndarray, shape: tuple[int, ...], what: str = "features") -> np.ndarray:
    """Features (N, frames, coeffs) in a model's input layout (N, *shape[1:]), e.g. the FINN MLP's
    (N, 1, coeffs, frames). Singleton axes are free; otherwise the non-singleton axes must match as
    they are or reversed (MLPerf (frames, coeffs) vs FINN (coeffs, frames)), trying as-is first."""
    target = tuple(shape[1:])
    if tuple(x.shape[1:]) == target:
        return x
    squeezed = tuple(d for d in x.shape[1:] if d != 1)
    wanted = tuple(d for d in target if d != 1)
    core = x.reshape(len(x), *squeezed)
    if squeezed == wanted:
        return core.reshape(len(x), *target)
    if squeezed[::-1] == wanted:
        axes = (0, *range(core.ndim - 1, 0, -1))
        return np.ascontiguousarray(core.transpose(axes)).reshape(len(x), *target)
    raise KwsError(f"{what}: samples of shape {tuple(x.shape[1:])} do not fit the model input {target}")


# --- BIN folders: one raw integer file per sample + y_labels.csv ---

def bin_name(index: int, label: int) -> str:
    return f"tst_{index:06d}_{LABELS[label]}_{label}.bin"


def bin_dtype(quant_dtype: np.dtype, feature_type: str) -> np.dtype:
    """The input quantizer's integer type; td_samples files are int16 like the reference's raw audio."""
    if feature_type == "td_samples":
        return np.promote_types(quant_dtype, np.int16)
    return np.dtype(quant_dtype)


def read_labels_csv(path: str | os.PathLike) -> tuple[list[str], np.ndarray, int]:
    """(file names, labels, number of classes) from a y_labels.csv-style file."""
    path = Path(path)
    if not path.is_file():
        raise KwsError(f"{path}: labels file not found")
    names, labels, classes = [], [], set()
    with open(path, newline="") as f:
        for lineno, row in enumerate(csv.reader(f, skipinitialspace=True), 1):
            if not row:
                continue
            try:
                name, n, label = row
                n, label = int(n), int(label)
            except ValueError:
                raise KwsError(f"{path}:{lineno}: expected 'file, number_of_classes, label'") from None
            if not 0 <= label < n:
                raise KwsError(f"{path}:{lineno}: label {label} outside 0..{n - 1}")
            names.append(name)
            labels.append(label)
            classes.add(n)
    if not names:
        raise KwsError(f"{path}: no files listed")
    if len(classes) != 1:
        raise KwsError(f"{path}: inconsistent number of classes {sorted(classes)}")
    return names, np.array(labels, dtype=np.int64), classes.pop()


def write_labels_csv(path: str | os.PathLike, names: list[str], labels: np.ndarray, num_classes: int) -> None:
    # byte for byte the MLPerf Tiny runner's format: "name, 12, label\n", no header
    with open(path, "w", newline="") as f:
        f.writelines(f"{n}, {num_classes}, {int(y)}\n" for n, y in zip(names, labels))


def write_bins(folder: str | os.PathLike, q: np.ndarray, labels: np.ndarray) -> list[str]:
    """Quantized samples `q` as BIN files in a new `folder`, listed in its y_labels.csv; their names."""
    folder = Path(folder)
    names = [bin_name(i, int(label)) for i, label in enumerate(labels)]
    folder.mkdir(parents=True)
    for name, sample in zip(tqdm(names, desc="write bins", unit="file", leave=False), q):
        sample.tofile(os.path.join(folder, name))
    write_labels_csv(folder / LABELS_CSV, names, labels, NUM_CLASSES)
    return names


def read_bins(folder: str | os.PathLike, names: list[str], shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """All listed BIN files as one (N, *shape[1:]) integer array; sizes are checked first."""
    dtype = np.dtype(dtype)
    count = int(np.prod(shape[1:]))
    size = count * dtype.itemsize
    paths = [os.path.join(folder, n) for n in names]  # plain strings: pathlib costs more than a read
    out = np.empty((len(names), count), dtype=dtype)
    rows = memoryview(out).cast("B")
    # one open and read per file straight into the array (a read past the end tells the size):
    # a stat plus np.fromfile per file took twice as long
    for i, path in enumerate(tqdm(paths, desc="read bins", unit="file", leave=False, delay=1.0)):
        try:
            with open(path, "rb", buffering=0) as f:
                got, more = f.readinto(rows[i * size:(i + 1) * size]), f.read(1)
        except OSError as e:
            raise KwsError(f"{path}: BIN file listed in {LABELS_CSV} cannot be read ({e.strerror})") from None
        if got != size or more:
            raise KwsError(f"{path}: {os.path.getsize(path)} bytes, the model input {tuple(shape[1:])} of "
                           f"{dtype.name} needs {size}")
    return out.reshape(len(names), *shape[1:])


def read_bin_folder(folder: str | os.PathLike, quant, shape: tuple[int, ...], feature_type: str = "mfcc",
                    num_classes: int | None = None) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(names, labels, dequantized inputs) of a BIN folder written with input quantizer `quant`
    (kws.qonnx_model.InputQuant) for a model input of `shape`; given `num_classes`, its
    y_labels.csv must say that many."""
    folder = Path(folder)
    names, labels, listed = read_labels_csv(folder / LABELS_CSV)
    if num_classes is not None and listed != num_classes:
        raise KwsError(f"{folder / LABELS_CSV}: {listed} classes, MLPerf Tiny KWS has {num_classes}")
    q = read_bins(folder, names, shape, bin_dtype(quant.dtype, feature_type))
    return names, labels, quant.dequantize(q)


# --- results people and DVC read ---

def write_json(path: str | os.PathLike, obj) -> None:
    """Metrics JSON, indented, renamed into place."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2) + "\n")


def write_metrics(metrics_path: str | os.PathLike, report_path: str | os.PathLike | None, figures: dict,
                  headline: tuple[str, ...]) -> None:
    """The `headline` figures to `metrics_path`, a DVC metric: what a user compares across
    experiments, few enough that `dvc metrics show` and `dvc exp show` stay readable. All
    `figures` to `report_path`, a JSON file DVC does not read as metrics. Both files or neither."""
    with contextlib.ExitStack() as stack:
        m = stack.enter_context(atomic_path(metrics_path))
        m.write_text(json.dumps({k: figures[k] for k in headline}, indent=2) + "\n")
        if report_path is not None:
            r = stack.enter_context(atomic_path(report_path))
            r.write_text(json.dumps(figures, indent=2) + "\n")


def write_csv(path: str | os.PathLike, rows: list[dict], fields: list[str] | tuple[str, ...]) -> None:
    """A table with a header row, renamed into place; floats at 6 significant digits (stable bytes,
    readable diffs)."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(fields), lineterminator="\n")
        w.writeheader()
        for row in rows:
            w.writerow({k: ("" if v is None else f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
