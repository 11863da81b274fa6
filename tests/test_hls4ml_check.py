"""hls4ml C-simulation check: the exact rewrite, the fixture's 200 BIN files through g++, bad models."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from kws import files, scoring
from kws.common import KwsError
from kws.qonnx_model import input_quant, load_qonnx, run_batch

pytest.importorskip("hls4ml")
from kws import hls4ml_check  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "hls4ml_check.py"


def fixture_inputs(finn_fixture):
    model = load_qonnx(finn_fixture / "QONNX_model.onnx")
    folder = finn_fixture / "kws_bin_files"
    names, labels, _ = files.read_labels_csv(folder / files.LABELS_CSV)
    iq = input_quant(model)
    q = files.read_bins(folder, names, tuple(model.get_tensor_shape(model.graph.input[0].name)), iq.dtype)
    return model, iq.dequantize(q), labels


def test_rewrite_is_exact_on_fixture(finn_fixture):
    model, x, _ = fixture_inputs(finn_fixture)
    rewritten = hls4ml_check.rewrite_for_hls4ml(model)
    quants = [n for n in rewritten.graph.node if n.op_type == "Quant"]
    assert all(any(a.name == "rounding_mode" for a in n.attribute) for n in quants)
    assert all(rewritten.get_initializer(n.input[1]).size == 1 for n in quants), "per-channel scale left"
    assert rewritten.graph.node[0].op_type == "Flatten"  # input Quant moved behind the reshape
    before, after = run_batch(model, x), run_batch(rewritten, x)
    np.testing.assert_allclose(after, before, rtol=0, atol=1e-4)
    np.testing.assert_array_equal(scoring.predict(after)[0], scoring.predict(before)[0])
    # the original is untouched
    assert any(model.get_initializer(n.input[1]).size > 1 for n in model.graph.node if n.op_type == "Quant")


def test_check_on_fixture_bins(finn_fixture, tmp_path):
    metrics = tmp_path / "hls4ml.json"
    build = tmp_path / "build"
    cmd = [sys.executable, str(SCRIPT), "--model", str(finn_fixture / "QONNX_model.onnx"),
           "--bin_file_path", str(finn_fixture / "kws_bin_files"), "--metrics", str(metrics),
           "--build_dir", str(build), "--params", str(REPO / "params.yaml"), "--enabled", "true"]
    subprocess.run(cmd, check=True, cwd=REPO, capture_output=True, text=True)
    m = json.loads(metrics.read_text())
    _, _, labels = fixture_inputs(finn_fixture)
    assert m["enabled"] and m["passed"] and m["files"] == len(labels)
    assert m["disagree_without_tie"] == 0 and m["agree"] >= m["files"] - m["ties"]
    assert m["hls4ml_accuracy"] == m["qonnx_accuracy"]
    # the README's count of correct predictions of the submission's own run on these files
    tflm = files.read_labels_csv(finn_fixture / "kws_bin_files" / "tflm_labels.csv")[1]
    assert m["qonnx_accuracy"] == pytest.approx(float((tflm == labels).mean()))
    # a flipped hidden activation would move a logit by a multiple of the last layer's scale (~0.02)
    assert m["max_abs_logit_diff"] < 1e-3
    assert (build / "firmware" / "myproject.cpp").is_file()
    # the derived types reached the generated C++ (hls4ml prints them without the defaults)
    derived, used = m["precisions"], m["layer_types"]
    assert used["global_in"]["result_t"].startswith(derived["global_in"]["result"][:-1])
    assert used["BatchNormalization_0"]["scale_t"].startswith(derived["BatchNormalization_0"]["scale"][:-1])
    assert used["Relu_0"]["result_t"].startswith(derived["Relu_0"]["result"][:-1])


def test_disabled_writes_flag_only(tmp_path):
    metrics = tmp_path / "m.json"
    subprocess.run([sys.executable, str(SCRIPT), "--metrics", str(metrics), "--model", str(tmp_path / "absent.onnx"),
                    "--params", str(REPO / "params.yaml"), "--enabled", "false"], check=True, cwd=REPO)
    assert json.loads(metrics.read_text()) == {"enabled": False}


def tiny_mlp(path: Path, *, with_bn=True, extra_op=None) -> Path:
    """Quant -> Flatten -> MatMul(per-channel 3-bit weights) -> BN -> Relu -> Quant -> MatMul [-> extra_op]."""
    rng = np.random.default_rng(0)
    inits = {
        "s_in": np.array(0.3, np.float32), "z": np.array(0.0, np.float32), "b8": np.array(8.0, np.float32),
        "b3": np.array(3.0, np.float32), "w1": rng.normal(size=(4, 3)).astype(np.float32),
        "s_w1": np.array([[0.5, 0.3, 0.7]], np.float32), "s_act": np.array(1 / 7, np.float32),
        "w2": rng.normal(size=(3, 2)).astype(np.float32), "s_w2": np.array(0.4, np.float32),
        "gamma": np.ones(3, np.float32), "beta": np.zeros(3, np.float32),
        "mean": np.zeros(3, np.float32), "var": np.ones(3, np.float32),
    }
    dom = "qonnx.custom_op.general"
    nodes = [
        helper.make_node("Quant", ["x", "s_in", "z", "b8"], ["xq"], domain=dom, signed=1, narrow=1),
        helper.make_node("Flatten", ["xq"], ["xf"], axis=1),
        helper.make_node("Quant", ["w1", "s_w1", "z", "b3"], ["w1q"], domain=dom, signed=1, narrow=1),
        helper.make_node("MatMul", ["xf", "w1q"], ["h"]),
    ]
    h = "h"
    if with_bn:
        nodes.append(helper.make_node("BatchNormalization", ["h", "gamma", "beta", "mean", "var"], ["hb"]))
        h = "hb"
    nodes += [
        helper.make_node("Relu", [h], ["hr"]),
        helper.make_node("Quant", ["hr", "s_act", "z", "b3"], ["hq"], domain=dom, signed=0, narrow=0),
        helper.make_node("Quant", ["w2", "s_w2", "z", "b3"], ["w2q"], domain=dom, signed=1, narrow=1),
        helper.make_node("MatMul", ["hq", "w2q"], ["logits" if extra_op is None else "y"]),
    ]
    if extra_op is not None:
        nodes.append(helper.make_node(extra_op, ["y"], ["logits"]))
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 2, 2])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 2])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid(dom, 1)])
    onnx.save(model, path)
    return path


def write_bins(folder: Path, n: int = 2) -> Path:
    folder.mkdir()
    for i in range(n):
        np.arange(4, dtype=np.int8).tofile(folder / f"tst_{i}.bin")
    (folder / "y_labels.csv").write_text("".join(f"tst_{i}.bin, 2, {i % 2}\n" for i in range(n)))
    return folder


def test_unsupported_op_is_one_line_error(tmp_path):
    model_path = tiny_mlp(tmp_path / "erf.onnx", extra_op="Erf")
    metrics = tmp_path / "m.json"
    r = subprocess.run([sys.executable, str(SCRIPT), "--model", str(model_path), "--bin_file_path",
                        str(write_bins(tmp_path / "bins")), "--metrics", str(metrics), "--build_dir",
                        str(tmp_path / "build"), "--params", str(REPO / "params.yaml"), "--enabled", "true"],
                       cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 1
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith("error: ") and "Erf" in line and "no ONNX handler" in line, r.stderr
    assert not metrics.exists()


def test_per_channel_scale_without_batchnorm_is_rejected(tmp_path):
    model = load_qonnx(tiny_mlp(tmp_path / "nobn.onnx", with_bn=False))
    with pytest.raises(KwsError, match=r"MatMul '.*'.*per-output-channel weight scale.*BatchNormalization"):
        hls4ml_check.rewrite_for_hls4ml(model)


def test_tiny_model_rewrite_is_exact(tmp_path):
    model = load_qonnx(tiny_mlp(tmp_path / "ok.onnx"))
    x = input_quant(model).dequantize(np.random.default_rng(1).integers(-127, 128, size=(64, 1, 2, 2)))
    rewritten = hls4ml_check.rewrite_for_hls4ml(model)
    np.testing.assert_allclose(run_batch(rewritten, x), run_batch(model, x), rtol=0, atol=1e-5)
    p = hls4ml_check.derive_precisions(rewritten)
    assert {"global_in", "BatchNormalization_0", "Relu_0", "Quant_2"} <= set(p)
    # input: 127 * 0.3 = 38.1 needs 6 integer bits + sign; 2^-5 <= 0.3/8 re-quantizes exactly
    assert p["global_in"]["result"] == "fixed<12,7,RND,SAT>"
    # first accumulator: 127 * the largest column sum of |3-bit integer weights|, plus a sign bit
    w = numpy_helper.to_array(next(i for i in onnx.load(tmp_path / "ok.onnx").graph.initializer if i.name == "w1"))
    bound = 127 * np.abs(np.clip(np.round(w / np.array([0.5, 0.3, 0.7])), -3, 3)).sum(axis=0).max()
    bits = int(np.floor(np.log2(bound))) + 2
    assert p["MatMul_0"]["accum"] == f"fixed<{bits},{bits}>"


def test_hls4ml_failure_names_the_layer(tmp_path):
    # without the rewrite hls4ml cannot move the per-channel weight scale below the MatMul
    model = load_qonnx(tiny_mlp(tmp_path / "raw.onnx"))
    for node in model.graph.node:
        if node.op_type == "Quant":
            node.attribute.append(helper.make_attribute("rounding_mode", "ROUND"))
    with pytest.raises(KwsError, match=r"hls4ml cannot convert layer 'MatMul_0' \(pass ScaleDownMatMul\)"):
        hls4ml_check.convert(model, tmp_path / "build", {})


def test_cnn_is_bit_exact_in_the_c_simulation(tmp_path):
    """model.arch cnn: Brevitas -> QONNX (export's own checks) -> hls4ml C-sim on BIN files. The
    BatchNorms get spread-out statistics so that every quantizer level is used."""
    import torch

    from kws.export import export_checked
    from kws.model import build_model, config_from_params

    torch.manual_seed(0)
    cfg = config_from_params({"arch": "cnn", "cnn_channels": [8, 8], "cnn_kernel": 3, "cnn_stride": 2},
                             (1, 10, 49), 0.3)
    model = build_model(cfg).eval()
    with torch.no_grad():
        for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            bn.running_mean.uniform_(-2, 2)
            bn.running_var.uniform_(1, 20)
            bn.weight.uniform_(0.5, 2)
            bn.bias.uniform_(0, 1)
    rng = np.random.default_rng(0)
    q = rng.integers(-127, 128, size=(60, 1, 10, 49)).astype(np.int8)
    export_checked(model, tmp_path / "cnn.onnx", (q * 0.3).astype(np.float32), 1e-4)
    qmodel = load_qonnx(tmp_path / "cnn.onnx")
    bins = tmp_path / "bins"
    bins.mkdir()
    for i, sample in enumerate(q):
        sample.tofile(bins / f"tst_{i}.bin")  # the model's input layout, as kws.bins writes them
    (bins / "y_labels.csv").write_text("".join(f"tst_{i}.bin, 12, {i % 12}\n" for i in range(len(q))))
    m = hls4ml_check.check(qmodel, bins, tmp_path / "build")
    assert m["passed"] and m["disagree_without_tie"] == 0 and m["files"] == 60
    assert m["max_abs_logit_diff"] <= 1e-5
    assert m["agree"] + m["ties"] >= 60
    assert {"Conv_0", "Conv_1", "MatMul_0"} <= set(m["precisions"])
