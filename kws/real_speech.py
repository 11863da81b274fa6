"""Real-speech check: a QONNX model scored on BIN files quantized by ANOTHER model's input Quant.

The FINN fixture's 200 BIN files are MLPerf MFCC features of real Speech Commands test clips,
quantized with the fixture model's input quantizer. They are dequantized with that quantizer,
then run through the model under test (which re-quantizes with its own). Reading, prediction
(ties -> last maximum), metrics and the plot are kws.bins' own."""
from __future__ import annotations

import contextlib
import json
from pathlib import Path

from kws import bins
from kws.common import atomic_path
from kws.labels import LABELS, NUM_CLASSES
from kws.qonnx_model import input_quant, input_shape, run_batch


def score(model_path, bin_dir, fixture_model_path) -> bins.Validation:
    bin_dir = Path(bin_dir)
    model = bins.load_model(model_path)
    fixture = bins.load_model(fixture_model_path)
    names, labels, _ = bins.read_labels_csv(bin_dir / bins.LABELS_CSV)
    quant, shape = input_quant(fixture), input_shape(fixture)
    x = quant.dequantize(bins.read_bins(bin_dir, names, shape, quant.dtype))
    x = bins.to_model_layout(x, input_shape(model), f"{bin_dir} BIN files")
    predictions, ties = bins.predict(run_batch(model, x))
    return bins.Validation(names, labels, predictions, ties)


def check_real_speech(model_path, bin_dir, fixture_model_path, metrics_path, plot_path) -> dict:
    """Score, then write metrics JSON and the confusion-matrix PNG (both or neither)."""
    v = score(model_path, bin_dir, fixture_model_path)
    out = bins.metrics(v)
    # not a DVC metric (no stage writes it), so the per-label detail can stay in the file
    out["per_class_accuracy"] = {row["label"]: row["accuracy"] for row in bins.per_class(v)}
    out["confusion_matrix"] = {"labels": list(LABELS),
                               "rows_true_cols_predicted": bins.confusion_matrix(v.labels, v.predictions, NUM_CLASSES).tolist()}
    out["correct"] = int((v.predictions == v.labels).sum())
    out["model"] = str(model_path)
    out["note"] = f"{len(v.names)} real clips: a difference of +-3 points is noise"
    with contextlib.ExitStack() as stack:
        m = stack.enter_context(atomic_path(metrics_path))
        p = stack.enter_context(atomic_path(plot_path))
        m.write_text(json.dumps(out, indent=2) + "\n")
        cm = bins.confusion_matrix(v.labels, v.predictions, NUM_CLASSES)
        bins.plot_confusion(cm, p, f"real speech: {out['correct']}/{len(v.names)} = {v.accuracy:.1%}")
    return out
