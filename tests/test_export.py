import copy
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from kws import checkpoints as C

from kws.engines import local as L

from kws import train as T
from kws.common import KwsError
from kws.params import load_params
from kws.export import (ROUNDING_MARGIN, compare, export_checked, logits_and_rounding_margins, model_from_state,
                        run_export)
from kws.model import ModelConfig, build_model
from kws.qonnx_model import MAX_IR_VERSION, MAX_OPSET, check_runtime_compatible, input_quant, load_qonnx

REPO = Path(__file__).resolve().parents[1]
PARAMS = load_params(REPO / "params.yaml")


def make_blobs(folder: Path, n_train=1200, n_eval=360, seed=1) -> Path:
    """One Gaussian blob per class in (N, 49, 10): learnable in a couple of epochs (see test_train)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 3, (12, 49, 10)).astype(np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("validation", n_eval), ("test", n_eval)):
        y = rng.integers(0, 12, n)
        np.savez(folder / f"{split}.npz", x=(centers[y] + rng.normal(0, 6, (n, 49, 10))).astype(np.float32), y=y)
    return folder


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    features = make_blobs(root / "features")
    params = copy.deepcopy(PARAMS)
    # blobs: no time axis to shift; the default's warm-up, shortened
    params["train"].update(epochs=2, batch_size=128, lr=2e-3, augment={"enabled": False}, warmup_epochs=1)
    train_metrics = L.run_local(params, features, root / "checkpoints", root / "metrics/train.json",
                                root / "plots/train.csv", progress=False)
    out = root / "training_checkpoint/QONNX_model.onnx"
    metrics = run_export(params, features, out, root / "metrics/export.json", ckpt_dir=root / "checkpoints",
                         report_path=root / "reports/export.json")
    return {"root": root, "features": features, "params": params, "out": out, "metrics": metrics,
            "train_metrics": train_metrics}


def test_export_check_passes_and_metrics(trained):
    m = trained["metrics"]
    assert json.loads((trained["root"] / "reports/export.json").read_text()) == m
    assert json.loads((trained["root"] / "metrics/export.json").read_text()) == {
        "max_abs_logit_diff": m["max_abs_logit_diff"]}
    assert m["max_abs_logit_diff"] <= 1e-4 and m["argmax_agreement"] == 1.0 and m["check_samples"] == 360
    # the QONNX model scores like the Brevitas model it came from (same argmax on all but rare ties)
    assert abs(m["qonnx_test_accuracy"] - trained["train_metrics"]["test_accuracy"]) <= 2 / 360
    assert m["qonnx_test_accuracy"] > 0.3  # well above chance (1/12) after 2 epochs on the blobs
    assert (m["opset"], m["ir_version"]) == (PARAMS["export"]["opset"], 8)


def test_written_model_is_stamped_for_finns_release_runtime(trained):
    proto = onnx.load(trained["out"])
    assert {o.domain: o.version for o in proto.opset_import}[""] == PARAMS["export"]["opset"] <= MAX_OPSET
    assert proto.ir_version <= MAX_IR_VERSION


def test_export_at_another_opset_gives_the_same_graph(trained, tmp_path):
    """Opset 11 (the FINN submission's) exports the same nodes and weights; only the stamps and
    BatchNormalization's training_mode (an attribute from opset 14 on) differ."""
    state, _ = C.latest_local_state(trained["root"] / "checkpoints")
    model, _ = model_from_state(state, trained["params"]["model"], "ckpt")
    x = T.load_features(trained["features"]).x["validation"][:64].numpy()
    _, stats = export_checked(model, tmp_path / "op11.onnx", x, 1e-4, opset=11)
    assert (stats["opset"], stats["ir_version"]) == (11, 6)
    old, new = onnx.load(tmp_path / "op11.onnx"), onnx.load(trained["out"])
    for n in new.graph.node:
        if n.op_type == "BatchNormalization":
            assert [(a.name, a.i) for a in n.attribute if a.name == "training_mode"] == [("training_mode", 0)]
            n.ClearField("attribute")
            n.attribute.extend(a for a in old.graph.node[list(new.graph.node).index(n)].attribute)
    assert old.graph.SerializeToString() == new.graph.SerializeToString()


@pytest.mark.parametrize("opset, ir, message", [(20, 9, "opset 20, IR version 9"), (18, 9, "IR version 9"),
                                                (17, 8, "not params export.opset 18")])
def test_runtime_check_rejects_what_finns_release_cannot_load(trained, tmp_path, opset, ir, message):
    proto = onnx.load(trained["out"])
    next(o for o in proto.opset_import if o.domain == "").version = opset
    proto.ir_version = ir
    onnx.save(proto, tmp_path / "m.onnx")
    with pytest.raises(KwsError, match=f"m.onnx: .*{message}"):
        check_runtime_compatible(tmp_path / "m.onnx", opset=18)


def test_exported_graph_structure(trained):
    model = load_qonnx(trained["out"])
    assert model.get_tensor_shape(model.graph.input[0].name) == [1, 1, 10, 49]
    assert model.get_tensor_shape(model.graph.output[0].name) == [1, 12]
    iq = input_quant(model)
    assert (iq.bit_width, iq.signed, iq.narrow, iq.zero_point) == (8, True, True, 0.0)
    assert iq.scale == pytest.approx(trained["train_metrics"]["input_scale"], rel=1e-6)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("MatMul") == 4 and ops.count("BatchNormalization") == 3 and ops.count("Relu") == 3
    weight_quants = [n for n in model.graph.node if n.op_type == "Quant" and model.get_initializer(n.input[0]) is not None]
    act_quants = [n for n in model.graph.node if n.op_type == "Quant" and model.find_producer(n.input[0]) is not None
                  and model.find_producer(n.input[0]).op_type == "Relu"]
    assert len(weight_quants) == 4 and len(act_quants) == 3
    for n in weight_quants + act_quants:
        assert float(model.get_initializer(n.input[3])) == 3.0
    assert {a.name: a.i for a in act_quants[0].attribute if a.name in ("signed", "narrow")} == {"signed": 0, "narrow": 0}


def test_export_is_deterministic(trained, tmp_path):
    state, _ = C.latest_local_state(trained["root"] / "checkpoints")
    model, _ = model_from_state(state, trained["params"]["model"], "ckpt")
    x = T.load_features(trained["features"]).x["validation"][:64].numpy()
    export_checked(model, tmp_path / "again.onnx", x, 1e-4)
    assert (tmp_path / "again.onnx").read_bytes() == trained["out"].read_bytes()


@pytest.mark.parametrize("narrow", [True, False])
def test_weight_range_reaches_the_qonnx_graph(trained, tmp_path, narrow):
    state, _ = C.latest_local_state(trained["root"] / "checkpoints")
    model = build_model(dataclasses.replace(ModelConfig.from_dict(state["model_config"]), weight_narrow_range=narrow))
    model.load_state_dict(state["model"])
    with torch.no_grad():
        model.features[3].weight.mul_(3)  # many weights clip: the range's ends are used
    levels = model.features[3].quant_weight()
    assert int(torch.round(levels.value / levels.scale).min()) == (-3 if narrow else -4)
    x = T.load_features(trained["features"]).x["validation"][:128].numpy()
    export_checked(model.eval(), tmp_path / "m.onnx", x, 1e-4)  # qonnx agrees with Brevitas
    graph = load_qonnx(tmp_path / "m.onnx")
    weight_quants = [n for n in graph.graph.node if n.op_type == "Quant" and graph.get_initializer(n.input[0]) is not None]
    assert [next(a.i for a in n.attribute if a.name == "narrow") for n in weight_quants] == [int(narrow)] * 4


def test_tampered_onnx_fails_the_check(trained, tmp_path):
    proto = onnx.load(trained["out"])
    init = next(i for i in proto.graph.initializer if 490 in numpy_helper.to_array(i).shape)
    w = numpy_helper.to_array(init).copy()
    w[:, : w.shape[1] // 2] *= -1  # flip half of the first layer's weights
    init.CopyFrom(numpy_helper.from_array(w, init.name))
    onnx.save(proto, tmp_path / "tampered.onnx")
    state, _ = C.latest_local_state(trained["root"] / "checkpoints")
    model, _ = model_from_state(state, None, "ckpt")
    x = T.load_features(trained["features"]).x["validation"].numpy()
    assert compare(load_qonnx(trained["out"]), model, x, 1e-4)["argmax_agreement"] == 1.0
    with pytest.raises(KwsError, match="does not match the Brevitas model"):
        compare(load_qonnx(tmp_path / "tampered.onnx"), model, x, 1e-4)


def _first_hidden_layer(model):
    from brevitas.nn import QuantReLU

    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm1d))
    relu = next(m for m in model.modules() if isinstance(m, QuantReLU))
    return bn, relu, float(relu.act_quant.scale())


def _pre_activations(model, relu, x):
    seen = {}

    def hook(module, inputs, output):
        seen["v"] = inputs[0].detach().numpy().copy()

    handle = relu.register_forward_hook(hook)
    with torch.no_grad():
        model(torch.from_numpy(x))
    handle.remove()
    return seen["v"]


def test_rounding_margin_finds_an_activation_on_a_boundary(trained):
    state, _ = C.latest_local_state(trained["root"] / "checkpoints")
    model, _ = model_from_state(state, None, "ckpt")
    x = T.load_features(trained["features"]).x["validation"].numpy()[:64]
    assert (logits_and_rounding_margins(model, x)[1] >= ROUNDING_MARGIN).mean() > 0.9  # a boundary is rare
    bn, relu, scale = _first_hidden_layer(model)
    t = _pre_activations(model, relu, x)[0] / scale
    j = int(np.argmax((t > 1) & (t < 5)))
    with torch.no_grad():  # move sample 0's unit j onto the boundary between two levels
        bn.bias[j] += float((np.floor(t[j]) + 0.5 - t[j]) * scale)
    assert logits_and_rounding_margins(model, x)[1][0] < ROUNDING_MARGIN


def test_rounding_margin_scales_with_the_range_at_8_bits():
    """Float round-off is relative to the values: at 8 bits an activation 4e-5 steps past a
    boundary can flip (a W8A8 model's did), at 3 bits that is 100x further than any flip seen."""
    from kws.model import build_model, config_from_params

    torch.manual_seed(0)
    cfg = config_from_params({"act_bit_width": 8, "hidden_layers": [32]}, (1, 10, 49), 0.3)
    model = build_model(cfg).eval()
    x = (5 * torch.randn(4, 1, 10, 49)).numpy()
    bn, relu, scale = _first_hidden_layer(model)
    t = _pre_activations(model, relu, x)[0] / scale
    j = int(np.argmax((t > 1) & (t < 200)))
    with torch.no_grad():
        bn.bias[j] += float((np.floor(t[j]) + 0.5 + 4e-5 - t[j]) * scale)
    margin = logits_and_rounding_margins(model, x)[1][0]
    assert margin < ROUNDING_MARGIN  # 4e-5 steps = 1.6e-7 of the range
    assert margin > 0.5e-7  # not an arbitrary small value: the distance was measured


def test_a_small_non_rounding_difference_fails_the_check(trained):
    # a third of a step on one BatchNorm: few samples change, none of them by a rounding tie
    state, _ = C.latest_local_state(trained["root"] / "checkpoints")
    model, _ = model_from_state(state, None, "ckpt")
    x = T.load_features(trained["features"]).x["validation"].numpy()
    exported = load_qonnx(trained["out"])
    bn, relu, scale = _first_hidden_layer(model)
    with torch.no_grad():
        bn.bias[:4] += scale / 3
    with pytest.raises(KwsError, match=r"differ by more than atol .* without an activation on a rounding boundary"):
        compare(exported, model, x, 1e-4)


def test_mismatch_writes_nothing(trained, tmp_path):
    state, _ = C.latest_local_state(trained["root"] / "checkpoints")
    model, _ = model_from_state(state, None, "ckpt")
    other, _ = model_from_state(state, None, "ckpt")
    with torch.no_grad():
        other.features[3].weight.mul_(-1)  # the Brevitas weights changed after export
    x = T.load_features(trained["features"]).x["validation"][:128].numpy()
    with pytest.raises(KwsError, match="nothing written"):
        export_checked(model, tmp_path / "out.onnx", x, 1e-4, reference=other)
    assert list(tmp_path.iterdir()) == []


def test_checkpoint_of_another_architecture(trained, tmp_path):
    params = copy.deepcopy(trained["params"])
    params["model"]["hidden_layers"] = [128]
    with pytest.raises(KwsError, match="model.hidden_layers"):
        run_export(params, trained["features"], tmp_path / "m.onnx", tmp_path / "e.json",
                   ckpt_dir=trained["root"] / "checkpoints")
    state, _ = C.latest_local_state(trained["root"] / "checkpoints")
    state = dict(state, model={k: v for k, v in state["model"].items() if "features.15" not in k})
    with pytest.raises(KwsError, match="do not fit"):
        model_from_state(state, None, "ckpt")
    assert not (tmp_path / "m.onnx").exists() and not (tmp_path / "e.json").exists()


def test_bad_inputs(trained, tmp_path):
    with pytest.raises(KwsError, match="no complete training checkpoint"):
        run_export(trained["params"], trained["features"], tmp_path / "m.onnx", tmp_path / "e.json", ckpt_dir=tmp_path)
    bad = copy.deepcopy(trained["params"])
    bad["export"]["atol"] = -1
    with pytest.raises(KwsError, match="export.atol"):
        run_export(bad, trained["features"], tmp_path / "m.onnx", tmp_path / "e.json", ckpt_dir=tmp_path)
    for opset in (20, 10, "18", True):
        bad = copy.deepcopy(trained["params"])
        bad["export"]["opset"] = opset
        with pytest.raises(KwsError, match="params export.opset: expected"):
            run_export(bad, trained["features"], tmp_path / "m.onnx", tmp_path / "e.json", ckpt_dir=tmp_path)
    (tmp_path / "x").mkdir()
    (tmp_path / "x/state.pt").write_bytes(b"not torch")
    (tmp_path / "x/metadata.json").write_text('{"steps_completed": 1}')
    r = subprocess.run([sys.executable, str(REPO / "scripts/export_training_checkpoint.py"), "--params",
                        str(REPO / "params.yaml"), "--checkpoints", str(tmp_path), "--features", str(trained["features"]),
                        "--out", str(tmp_path / "m.onnx"), "--metrics", str(tmp_path / "e.json")],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 1 and r.stderr.startswith("error: ") and "not a training checkpoint" in r.stderr
    assert r.stderr.strip().count("\n") == 0


@pytest.fixture(scope="module")
def trained_cnn(tmp_path_factory):
    """A small model.arch cnn, trained briefly on the blobs, exported through run_export."""
    root = tmp_path_factory.mktemp("export_cnn")
    features = make_blobs(root / "features")
    params = copy.deepcopy(PARAMS)
    params["model"].update(arch="cnn", cnn_channels=[16, 16], cnn_kernel=3, cnn_stride=2)
    params["train"].update(epochs=2, batch_size=128, lr=2e-3, augment={"enabled": False}, warmup_epochs=1)
    train_metrics = L.run_local(params, features, root / "checkpoints", root / "metrics/train.json",
                                root / "plots/train.csv", progress=False)
    out = root / "QONNX_model.onnx"
    metrics = run_export(params, features, out, root / "metrics/export.json", ckpt_dir=root / "checkpoints")
    return {"root": root, "features": features, "params": params, "out": out, "metrics": metrics,
            "train_metrics": train_metrics}


def test_cnn_exports_and_every_runtime_agrees(trained_cnn):
    from kws.qonnx_model import onnxruntime_logits, run_batch

    m = trained_cnn["metrics"]
    assert m["max_abs_logit_diff"] <= 1e-4 and m["argmax_agreement"] == 1.0
    assert abs(m["qonnx_test_accuracy"] - trained_cnn["train_metrics"]["test_accuracy"]) <= 2 / 360
    assert m["qonnx_test_accuracy"] > 0.3  # learnt something: chance is 1/12
    assert (m["opset"], m["ir_version"]) == (PARAMS["export"]["opset"], 8)
    model = load_qonnx(trained_cnn["out"])
    assert model.get_tensor_shape(model.graph.input[0].name) == [1, 1, 10, 49]
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("Conv") == 2 and ops.count("MatMul") == 1 and ops.count("Relu") == 2
    assert "Reshape" not in ops  # NCHW from the input to the Flatten: nothing for FINN or hls4ml to undo
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert [model.get_tensor_shape(n.output[0]) for n in convs] == [[1, 16, 1, 24], [1, 16, 1, 11]]
    x = T.load_features(trained_cnn["features"]).x["test"][:64].numpy()
    q = run_batch(model, x)
    assert np.abs(onnxruntime_logits(model, x) - q).max() <= 1e-4


def test_cnn_checkpoint_refuses_mlp_params(trained_cnn, tmp_path):
    params = copy.deepcopy(trained_cnn["params"])
    params["model"]["arch"] = "mlp"
    with pytest.raises(KwsError, match="model.arch='cnn' but params say 'mlp'"):
        run_export(params, trained_cnn["features"], tmp_path / "m.onnx", tmp_path / "e.json",
                   ckpt_dir=trained_cnn["root"] / "checkpoints")
    params["model"].update(arch="cnn", cnn_kernel=5)
    with pytest.raises(KwsError, match="model.cnn_kernel=3 but params say 5"):
        run_export(params, trained_cnn["features"], tmp_path / "m.onnx", tmp_path / "e.json",
                   ckpt_dir=trained_cnn["root"] / "checkpoints")
    assert not (tmp_path / "m.onnx").exists()
