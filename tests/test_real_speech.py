"""Real-speech check on the FINN fixture: its own model must score what the README says."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kws import real_speech
from kws.common import KwsError

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "check_real_speech.py"


def _run(*args, env=None):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, env={**os.environ, **(env or {})})


def test_fixture_model_scores_162_of_200(finn_fixture, tmp_path):
    model = finn_fixture / "QONNX_model.onnx"
    r = _run("--model", model, "--bin_dir", finn_fixture / "kws_bin_files", "--fixture_model", model,
             "--metrics", tmp_path / "m" / "real.json", "--plot", tmp_path / "p" / "cm.png")
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "m" / "real.json").read_text())
    assert (m["correct"], m["num_files"]) == (162, 200) and m["accuracy"] == pytest.approx(0.81)
    cm = np.array(m["confusion_matrix"]["rows_true_cols_predicted"])
    assert cm.shape == (12, 12) and cm.sum() == 200 and np.trace(cm) == 162
    assert set(m["per_class_accuracy"]) == set(m["confusion_matrix"]["labels"])
    assert (tmp_path / "p" / "cm.png").read_bytes()[:4] == b"\x89PNG"
    # the README's tflm_labels.csv: the submission's own predictions, file by file
    v = real_speech.score(model, finn_fixture / "kws_bin_files", model)
    theirs = dict(line.replace(" ", "").split(",")[::2] for line in
                  (finn_fixture / "kws_bin_files" / "tflm_labels.csv").read_text().splitlines() if line)
    assert [int(theirs[n]) for n in v.names] == v.predictions.tolist()


def test_uses_the_fixture_quantizer_not_the_model_s(finn_fixture, tmp_path):
    """A model whose input scale differs must still see the fixture's real values."""
    import onnx
    from kws.qonnx_model import input_quant, load_qonnx

    src = load_qonnx(finn_fixture / "QONNX_model.onnx")
    q = input_quant(src)
    node = next(n for n in src.graph.node if n.op_type == "Quant" and n.input[0] == src.graph.input[0].name)
    src.set_initializer(node.input[1], np.array(q.scale * 2, dtype=np.float32))  # coarser input grid
    onnx.save(src.model, tmp_path / "coarse.onnx")
    v = real_speech.score(tmp_path / "coarse.onnx", finn_fixture / "kws_bin_files", finn_fixture / "QONNX_model.onnx")
    same = real_speech.score(tmp_path / "coarse.onnx", finn_fixture / "kws_bin_files", tmp_path / "coarse.onnx")
    # dequantized with the fixture's scale the values are right (a slightly degraded model);
    # with the model's own doubled scale every feature doubles, which hurts far more
    assert (v.predictions == v.labels).mean() > 0.6
    assert (v.predictions != same.predictions).any()


def test_missing_fixture_is_a_note_unless_ci(tmp_path):
    args = ("--model", tmp_path / "none.onnx", "--bin_dir", tmp_path / "nothing", "--fixture_model",
            tmp_path / "none.onnx", "--metrics", tmp_path / "real.json", "--plot", tmp_path / "cm.png")
    r = _run(*args, env={"CI": "false"})
    assert r.returncode == 0 and "skipped" in r.stdout
    assert "skipped" in json.loads((tmp_path / "real.json").read_text())
    (tmp_path / "real.json").unlink()
    r = _run(*args, env={"CI": "true"})
    assert r.returncode == 1 and r.stderr.startswith("error:") and r.stderr.count("\n") == 1
    assert not (tmp_path / "real.json").exists()


def test_bad_model_one_line_no_outputs(finn_fixture, tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    r = _run("--model", bad, "--bin_dir", finn_fixture / "kws_bin_files", "--fixture_model",
             finn_fixture / "QONNX_model.onnx", "--metrics", tmp_path / "real.json", "--plot", tmp_path / "cm.png")
    assert r.returncode == 1 and "bad.onnx" in r.stderr and r.stderr.count("\n") == 1
    assert not (tmp_path / "real.json").exists() and not (tmp_path / "cm.png").exists()
    with pytest.raises(KwsError, match="not an ONNX model"):
        real_speech.score(bad, finn_fixture / "kws_bin_files", finn_fixture / "QONNX_model.onnx")
