"""MLPerf Tiny KWS BIN files from any QONNX model, validated in one batched model run.

A BIN file is one sample, quantized with the model's own input Quant node and stored as raw
integers in the model's input layout, e.g. 490 int8 bytes (10 coefficients x 49 frames) for
mfcc. y_labels.csv lists `file, number_of_classes, true_label` per file, the format the
MLPerf Tiny benchmark runner reads; predictions.csv has the same format with the label our
QONNX run predicts (the FINN submission's tflm_labels.csv)."""
from __future__ import annotations

import csv
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from qonnx.core.modelwrapper import ModelWrapper
from tqdm import tqdm

from kws import params
from kws.common import KwsError
from kws.labels import LABELS, NUM_CLASSES
from kws.qonnx_model import (InputQuant, input_only_feeds_quant, input_quant, input_shape, load_qonnx, run_batch,
                             run_input_quant, with_batch_size)

LABELS_CSV = "y_labels.csv"
PREDICTIONS_CSV = "predictions.csv"


def check_params(p: "params.Bins | dict | None") -> dict:
    """The `bins:` section as a dict, checked by kws.params (defaults from the schema)."""
    return params.section(params.Bins, p, "bins").model_dump()


def sample_order(n: int, shuffle_seed: int | None) -> np.ndarray:
    """Which samples of the split become BIN files, in order: the split's own order, or a seeded
    permutation (the real test split comes shuffled from tfds; a corpus sorted by word would
    otherwise give the first N files to the first few keywords)."""
    if shuffle_seed is None:
        return np.arange(n)
    return np.random.default_rng(shuffle_seed).permutation(n)


def bin_name(index: int, label: int) -> str:
    return f"tst_{index:06d}_{LABELS[label]}_{label}.bin"


def bin_dtype(quant: InputQuant, feature_type: str) -> np.dtype:
    """The quantizer's integer type; td_samples files are int16 like the reference's raw audio."""
    if feature_type == "td_samples":
        return np.promote_types(quant.dtype, np.int16)
    return quant.dtype


def load_model(path) -> ModelWrapper:
    """A cleaned-up QONNX model that has an input Quant node, else an error naming the file."""
    model = load_qonnx(path)
    try:
        input_quant(model)
    except KwsError as e:
        raise KwsError(f"{path}: {e}") from None
    return model


def to_model_layout(x: np.ndarray, shape: tuple[int, ...], what: str = "features") -> np.ndarray:
    """Bring features (N, frames, coeffs) into the model's input layout (N, *shape[1:]).
    Singleton axes are free; otherwise the non-singleton axes must match as they are or reversed
    (MLPerf (frames, coeffs) vs FINN (coeffs, frames)), trying as-is first."""
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


def predict(logits: np.ndarray) -> tuple[np.ndarray, int]:
    """Predicted class per row and the number of rows whose maximum is tied. Low-bit logits tie
    exactly; the LAST maximum wins (the rule the FINN submission's predictions follow), so a tie
    between a keyword and Unknown (index 11) goes to Unknown."""
    last = logits.shape[1] - 1 - np.argmax(logits[:, ::-1], axis=1)
    ties = int(((logits == logits.max(axis=1, keepdims=True)).sum(axis=1) > 1).sum())
    return last, ties


def read_labels_csv(path: Path) -> tuple[list[str], np.ndarray, int]:
    """(file names, labels, number of classes) from a y_labels.csv-style file."""
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


def write_labels_csv(path: Path, names: list[str], labels: np.ndarray, num_classes: int) -> None:
    # byte for byte the MLPerf Tiny runner's format: "name, 12, label\n", no header
    with open(path, "w", newline="") as f:
        f.writelines(f"{n}, {num_classes}, {int(y)}\n" for n, y in zip(names, labels))


def read_bins(folder: Path, names: list[str], shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
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


def onnxruntime_logits(model: ModelWrapper, x: np.ndarray) -> np.ndarray:
    """Logits from onnxruntime on the QCDQ form (QuantizeLinear-Clip-DequantizeLinear), an
    independent runtime. Basic graph optimisation only: higher levels fuse ops and change numbers."""
    import onnxruntime as ort
    from qonnx.transformation.qonnx_to_qcdq import QuantToQCDQ

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the opset bump of old exports is expected
        qcdq = with_batch_size(model, len(x)).transform(QuantToQCDQ())
    left = [n.op_type for n in qcdq.graph.node if n.op_type in ("Quant", "BipolarQuant", "Trunc")]
    if left:
        raise KwsError(f"onnxruntime check: {len(left)} {left[0]} node(s) have no QCDQ form")
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    sess = ort.InferenceSession(qcdq.model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    out = sess.run(None, {sess.get_inputs()[0].name: np.ascontiguousarray(x, dtype=np.float32)})[0]
    return np.asarray(out).reshape(len(x), -1)


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


def validate_bins(folder, model: ModelWrapper, feature_type: str = "mfcc", onnxruntime: bool = False) -> Validation:
    """Dequantize every BIN file listed in folder/y_labels.csv and run the model on all of them
    in one call; optionally check onnxruntime on the QCDQ form predicts the same."""
    folder = Path(folder)
    names, labels, num_classes = read_labels_csv(folder / LABELS_CSV)
    quant, shape = input_quant(model), input_shape(model)
    q = read_bins(folder, names, shape, bin_dtype(quant, feature_type))
    x = quant.dequantize(q)
    # one execute_onnx call for everything: its per-call cost is what makes per-sample runs slow
    logits = run_batch(model, x)
    if num_classes != NUM_CLASSES:
        raise KwsError(f"{folder / LABELS_CSV}: {num_classes} classes, MLPerf Tiny KWS has {NUM_CLASSES}")
    if logits.shape[1] != num_classes:
        raise KwsError(f"{folder / LABELS_CSV}: {num_classes} classes, the model outputs {logits.shape[1]}")
    predictions, ties = predict(logits)
    result = Validation(names, labels, predictions, ties, inputs=x)
    if onnxruntime:
        ort_logits = onnxruntime_logits(model, x)
        result.onnxruntime_max_abs_diff = float(np.abs(ort_logits - logits).max())
        ort_predictions, _ = predict(ort_logits)
        differ = int((ort_predictions != predictions).sum())
        if differ:
            raise KwsError(
                f"onnxruntime (QCDQ) disagrees with qonnx on {differ} of {len(names)} BIN files "
                f"(max logit difference {result.onnxruntime_max_abs_diff:g})"
            )
    return result


def load_features(path, feature_type: str) -> tuple[np.ndarray, np.ndarray]:
    path = Path(path)
    if not path.is_file():
        raise KwsError(f"{path}: features file not found")
    try:
        with np.load(path, allow_pickle=False) as data:
            x, y = data["x"], data["y"]
            stored = str(data["feature_type"]) if "feature_type" in data else None
    except KwsError:
        raise
    except Exception as e:
        raise KwsError(f"{path}: not a features file with x and y ({type(e).__name__}: {e})") from None
    if stored is not None and stored != feature_type:
        raise KwsError(f"{path}: holds {stored} features, --feature_type is {feature_type}")
    if x.ndim < 2 or y.shape != (len(x),):
        raise KwsError(f"{path}: x {x.shape} and y {y.shape} do not describe the same samples")
    if not np.isfinite(x).all():
        raise KwsError(f"{path}: x holds NaN or infinite values")
    if len(y) and (y.min() < 0 or y.max() >= NUM_CLASSES):
        raise KwsError(f"{path}: labels outside 0..{NUM_CLASSES - 1}")
    return x.astype(np.float32, copy=False), y.astype(np.int64, copy=False)


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
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["label", "files", "correct", "accuracy"], lineterminator="\n")
        w.writeheader()
        for row in per_class(v):
            w.writerow({**row, "accuracy": "" if row["accuracy"] is None else f"{row['accuracy']:.6g}"})


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


def float_predictions(model: ModelWrapper, x: np.ndarray, v: Validation) -> np.ndarray:
    """The model's predictions on the float samples `x` (model layout) that became the BIN files
    of `v`. The model sees its input only through its input Quant node, so where qonnx's Quant of
    the float samples equals its Quant of the files' values, the rest of the graph gets the same
    tensor and predicts what it predicted on the files: no second model run. Otherwise (a
    quantizer or layout that differs from the model's) the model runs on `x`."""
    if input_only_feeds_quant(model) and np.array_equal(run_input_quant(model, x), run_input_quant(model, v.inputs)):
        return v.predictions
    return predict(run_batch(model, x))[0]


def make_bins(
    folder,
    model: ModelWrapper,
    x: np.ndarray,
    y: np.ndarray,
    feature_type: str,
    num_bin_files: int,
    max_accuracy_gap: float,
    onnxruntime: bool = False,
    source: str = "features",
) -> tuple[Validation, float]:
    """Quantize the first num_bin_files samples into `folder` (which must not exist yet; callers
    wrap it in atomic_path), then validate the written files. Returns (validation, accuracy of
    the model on the same float samples); a gap above max_accuracy_gap is an error. `source`
    names the features in error messages."""
    folder = Path(folder)
    if num_bin_files < 1:
        raise KwsError(f"num_bin_files must be positive, got {num_bin_files}")
    if num_bin_files > len(x):
        # the reference takes the first N test samples; with fewer we write them all
        print(f"warning: {num_bin_files} BIN files asked, the split has {len(x)}: writing {len(x)}")
    x, y = x[:num_bin_files], y[:num_bin_files]
    quant, shape = input_quant(model), input_shape(model)
    x = to_model_layout(x, shape, source)
    q = quant.quantize(x).astype(bin_dtype(quant, feature_type))
    names = [bin_name(i, int(label)) for i, label in enumerate(y)]
    folder.mkdir(parents=True)
    for name, sample in zip(tqdm(names, desc="write bins", unit="file", leave=False), q):
        sample.tofile(os.path.join(folder, name))
    write_labels_csv(folder / LABELS_CSV, names, y, NUM_CLASSES)

    result = validate_bins(folder, model, feature_type, onnxruntime)
    float_accuracy = float((float_predictions(model, x, result) == y).mean())
    gap = abs(result.accuracy - float_accuracy)
    if gap > max_accuracy_gap:
        raise KwsError(
            f"BIN accuracy {result.accuracy:.4f} vs float-feature accuracy {float_accuracy:.4f}: "
            f"gap {gap:.4f} exceeds bins.max_accuracy_gap {max_accuracy_gap}"
        )
    write_labels_csv(folder / PREDICTIONS_CSV, names, result.predictions, NUM_CLASSES)
    return result, float_accuracy

