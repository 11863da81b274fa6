"""Real-speech check: a QONNX model scored on BIN files quantized by ANOTHER model's input Quant.

The FINN fixture's 200 BIN files are MLPerf MFCC features of real Speech Commands test clips,
quantized with the fixture model's input quantizer. They are dequantized with that quantizer,
then run through the model under test (which re-quantizes with its own). Reading (kws.files),
prediction (ties -> last maximum), metrics and the plot (kws.scoring) are the bins stage's own."""
from __future__ import annotations

import contextlib
import json
from pathlib import Path

from kws import scoring
from kws.common import atomic_path
from kws.files import read_bin_folder, to_model_layout
from kws.labels import LABELS, NUM_CLASSES
from kws.qonnx_model import input_quant, input_shape, load_model, run_batch


def score(model_path, bin_dir, fixture_model_path) -> scoring.Validation:
    bin_dir = Path(bin_dir)
    model = load_model(model_path)
    fixture = load_model(fixture_model_path)
    names, labels, x = read_bin_folder(bin_dir, input_quant(fixture), input_shape(fixture))
    x = to_model_layout(x, input_shape(model), f"{bin_dir} BIN files")
    predictions, ties = scoring.predict(run_batch(model, x))
    return scoring.Validation(names, labels, predictions, ties)


def check_real_speech(model_path, bin_dir, fixture_model_path, metrics_path, plot_path) -> dict:
    """Score, then write metrics JSON and the confusion-matrix PNG (both or neither)."""
    v = score(model_path, bin_dir, fixture_model_path)
    out = scoring.metrics(v)
    # not a DVC metric (no stage writes it), so the per-label detail can stay in the file
    out["per_class_accuracy"] = {row["label"]: row["accuracy"] for row in scoring.per_class(v)}
    out["confusion_matrix"] = {"labels": list(LABELS),
                               "rows_true_cols_predicted": scoring.confusion_matrix(v.labels, v.predictions, NUM_CLASSES).tolist()}
    out["correct"] = int((v.predictions == v.labels).sum())
    out["model"] = str(model_path)
    out["note"] = f"{len(v.names)} real clips: a difference of +-3 points is noise"
    with contextlib.ExitStack() as stack:
        m = stack.enter_context(atomic_path(metrics_path))
        p = stack.enter_context(atomic_path(plot_path))
        m.write_text(json.dumps(out, indent=2) + "\n")
        cm = scoring.confusion_matrix(v.labels, v.predictions, NUM_CLASSES)
        scoring.plot_confusion(cm, p, f"real speech: {out['correct']}/{len(v.names)} = {v.accuracy:.1%}")
    return out
