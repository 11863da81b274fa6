"""Stage bins: MLPerf Tiny KWS BIN files from any QONNX model, validated in one batched model run.

A BIN file is one sample, quantized with the model's own input Quant node and stored as raw
integers in the model's input layout, e.g. 490 int8 bytes (10 coefficients x 49 frames) for
mfcc. y_labels.csv lists `file, number_of_classes, true_label` per file, the format the
MLPerf Tiny benchmark runner reads; predictions.csv has the same format with the label our
QONNX run predicts (the FINN submission's tflm_labels.csv). The file formats are kws.files'."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from qonnx.core.modelwrapper import ModelWrapper

from kws import params
from kws.common import KwsError
from kws.files import PREDICTIONS_CSV, bin_dtype, read_bin_folder, to_model_layout, write_bins, write_labels_csv
from kws.labels import NUM_CLASSES
from kws.qonnx_model import input_only_feeds_quant, input_quant, input_shape, onnxruntime_logits, run_batch, run_input_quant
from kws.scoring import Validation, predict


# metrics/bins.json: what a user compares across experiments (all figures: reports/bins.json)
HEADLINE = ("accuracy", "ties")


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


def validate_bins(folder, model: ModelWrapper, feature_type: str = "mfcc", onnxruntime: bool = False) -> Validation:
    """Dequantize every BIN file listed in folder/y_labels.csv and run the model on all of them
    in one call; optionally check onnxruntime on the QCDQ form predicts the same."""
    names, labels, x = read_bin_folder(folder, input_quant(model), input_shape(model), feature_type, NUM_CLASSES)
    # one execute_onnx call for everything: its per-call cost is what makes per-sample runs slow
    logits = run_batch(model, x)
    if logits.shape[1] != NUM_CLASSES:
        raise KwsError(f"the model outputs {logits.shape[1]} classes, MLPerf Tiny KWS has {NUM_CLASSES}")
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
    names = write_bins(folder, quant.quantize(x).astype(bin_dtype(quant.dtype, feature_type)), y)

    result = validate_bins(folder, model, feature_type, onnxruntime)
    float_accuracy = float((float_predictions(model, x, result) == y).mean())
    gap = abs(result.accuracy - float_accuracy)
    if gap > max_accuracy_gap:
        raise KwsError(
            f"BIN accuracy {result.accuracy:.4f} vs float-feature accuracy {float_accuracy:.4f}: "
            f"gap {gap:.4f} exceeds bins.max_accuracy_gap {max_accuracy_gap}"
        )
    write_labels_csv(Path(folder) / PREDICTIONS_CSV, names, result.predictions, NUM_CLASSES)
    return result, float_accuracy

