"""FINN check: FINN v0.10.1's front end in its own venv (.venv-finn, built by `make finn-venv`, which
`make test` runs first) on our export and on the FINN submission's model. Needs the FINN checkout
fixture (../shared/fixtures/finn_v0.10.1 or FINN_ROOT) and the venv: skipped without them, a
failure under CI."""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml

from kws import bins
from kws.qonnx_model import load_model
from kws import finn_check as F
from kws.engines import local as L
from kws import train as T
from kws.common import KwsError
from kws.params import load_params

REPO = Path(__file__).resolve().parents[1]
PARAMS = load_params(REPO / "params.yaml")
SCRIPT = [sys.executable, "-m", "scripts.finn_check"]  # cwd REPO: this checkout's kws


@pytest.fixture(scope="session")
def finn_env() -> tuple[Path, Path]:
    """(FINN checkout, FINN venv python); missing: skip with the reason, except under CI."""
    try:
        return F.find_finn_root(), F.find_finn_python()
    except KwsError as e:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{e} (required under CI)")
        pytest.skip(str(e))


def run_cli(tmp: Path, model: Path, bin_dir: Path, finn: dict | None = None, *extra: str):
    params = copy.deepcopy(PARAMS)
    params["finn"] = {**params["finn"], **(finn or {})}
    (tmp / "params.yaml").write_text(yaml.safe_dump(params))
    args = ["--params", str(tmp / "params.yaml"), "--model", str(model), "--bin_file_path", str(bin_dir),
            "--metrics", str(tmp / "metrics/finn.json"), "--layers", str(tmp / "reports/finn_layers.json"), *extra]
    return subprocess.run(SCRIPT + args, capture_output=True, text=True, cwd=REPO)


def read(tmp: Path) -> tuple[dict, dict]:
    return (json.loads((tmp / "metrics/finn.json").read_text()),
            json.loads((tmp / "reports/finn_layers.json").read_text()))


def export_tiny(root: Path, **model) -> tuple[Path, Path]:
    """A model of params.yaml's architecture (with `model` overrides) and export.opset from a tiny
    training on Gaussian blobs, and 200 BIN files of it: what `dvc repro bins` makes, in seconds."""
    from test_export import make_blobs

    from kws.export import run_export

    features = make_blobs(root / "features")
    params = copy.deepcopy(PARAMS)
    params["model"].update(model)
    params["train"].update(epochs=2, batch_size=128, lr=2e-3, augment={"enabled": False}, warmup_epochs=1)
    params["export"]["check_samples"] = 64
    L.run_local(params, features, root / "checkpoints", root / "train.json", root / "train.csv", progress=False)
    model_path = root / "training_checkpoint" / "QONNX_model.onnx"
    run_export(params, features, model_path, root / "export.json", ckpt_dir=root / "checkpoints")
    qonnx_model = load_model(model_path)
    data = T.load_features(features)
    x, y = data.x["test"].numpy(), data.y["test"].numpy()
    bins.make_bins(root / "kws_bin_files", qonnx_model, x, y, "mfcc", 200, 1.0)
    return model_path, root / "kws_bin_files"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Our default model, trained on blobs, and its 200 BIN files."""
    return export_tiny(tmp_path_factory.mktemp("finn_export"))


@pytest.fixture(scope="module")
def default_run(finn_env, exported, tmp_path_factory):
    """scripts/finn_check.py on our default model, once: (metrics, detail, build folder)."""
    model, bin_dir = exported
    tmp = tmp_path_factory.mktemp("finn_default")
    r = run_cli(tmp, model, bin_dir, {"enabled": True}, "--build_dir", str(tmp / "build"))
    assert r.returncode == 0, r.stderr
    return (*read(tmp), tmp / "build")


def test_default_model_goes_through_finn_with_unchanged_predictions(exported, default_run):
    model, _ = exported
    assert {o.domain: o.version for o in onnx.load(model).opset_import}[""] == PARAMS["export"]["opset"]
    metrics, detail, build = default_run
    assert metrics["passed"] and metrics["disagree_without_tie"] == 0 and metrics["bin_files"] == 200
    # the five FINN graphs before specialize_layers execute; the rest hold HLS layers
    assert [s["step"] for s in detail["steps"] if s["executed"]] == F_STEPS_EXECUTED
    assert all("MVAU_hls" in s["needs_vitis_hls"] for s in detail["steps"] if not s["executed"])
    assert metrics["graphs_executed"] == 5
    assert all(g["agree"] + g["ties_deciding"] == 200 for g in detail["graphs"].values())
    for key in ("LUT", "BRAM_18K", "URAM", "DSP", "max_cycles", "estimated_throughput_fps", "estimated_latency_ns"):
        assert isinstance(metrics[key], (int, float)), key
    clock_hz = 1e9 / PARAMS["finn"]["synth_clk_period_ns"]
    assert metrics["LUT"] > 1000 and metrics["max_cycles"] <= clock_hz / PARAMS["finn"]["target_fps"]
    assert set(detail["layers"]) == {f"MVAU_hls_{i}" for i in range(4)}
    # FINN's build_dataflow can continue from here (start_step="step_hw_codegen", output_dir=build)
    assert (build / "intermediate_models/step_generate_estimate_reports.onnx").is_file()


F_STEPS_EXECUTED = ["step_qonnx_to_finn", "step_tidy_up", "step_streamline", "step_convert_to_hw",
                    "step_create_dataflow_partition"]


def test_export_runs_under_finns_release_runtime_with_the_same_predictions(default_run):
    """The exported file, as written, under qonnx 0.4.0 + onnxruntime 1.16.1 (FINN's release pins)."""
    metrics, detail, _ = default_run
    versions = detail["versions"]
    assert (versions["qonnx"], versions["onnxruntime"], versions["onnx"]) == ("0.4.0", "1.16.1", "1.13.0")
    original = detail["graphs"]["original"]
    assert metrics["release_runtime_agree"] == 200 and original["disagree_without_tie"] == 0
    assert original["max_abs_logit_diff"] <= 1e-5


def test_fixture_model_estimates_match_finn_v0_10_1(finn_env, finn_fixture, tmp_path):
    """The FINN submission's model at target_fps 1e5 on Pynq-Z2, 100 MHz: the figures FINN v0.10.1
    reports (fixture README), and its predictions on the 200 BIN files unchanged."""
    cfg = {"enabled": True, "board": "Pynq-Z2", "fpga_part": "xc7z020clg400-1", "synth_clk_period_ns": 10,
           "target_fps": 100000}
    r = run_cli(tmp_path, finn_fixture / "QONNX_model.onnx", finn_fixture / "kws_bin_files", cfg)
    assert r.returncode == 0, r.stderr
    metrics, detail = read(tmp_path)
    assert (metrics["LUT"], metrics["BRAM_18K"], metrics["URAM"], metrics["DSP"]) == (16406, 50, 0, 0)
    assert (metrics["max_cycles"], metrics["max_cycles_layer"]) == (784, "MVAU_hls_0")
    assert metrics["estimated_throughput_fps"] == pytest.approx(1e8 / 784)
    assert metrics["passed"] and all(g["agree"] + g["ties_deciding"] == 200 for g in detail["graphs"].values())
    # its own predictions (tflm_labels.csv) are right on 162 of the 200 files
    assert {g["accuracy"] for g in detail["graphs"].values()} == {0.81}
    assert "16406 LUT, 50 BRAM_18K, 0 URAM, 0 DSP, slowest layer 784 cycles" in r.stdout


def test_model_finn_cannot_build_gets_one_line(finn_env, exported, tmp_path):
    """An activation quantizer removed: a MatMul gets float inputs, FINN cannot make it a
    hardware layer, and the dataflow partition fails."""
    model, bin_dir = exported
    proto = onnx.load(model)
    relu = [n for n in proto.graph.node if n.op_type == "Relu"][1]
    quant = next(n for n in proto.graph.node if n.op_type == "Quant" and n.input[0] == relu.output[0])
    for node in proto.graph.node:
        node.input[:] = [relu.output[0] if i == quant.output[0] else i for i in node.input]
    proto.graph.node.remove(quant)
    onnx.save(proto, tmp_path / "broken.onnx")
    r = run_cli(tmp_path, tmp_path / "broken.onnx", bin_dir, {"enabled": True})
    assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith("error: FINN step_create_dataflow_partition failed at node ")
    assert not (tmp_path / "metrics/finn.json").exists()


def test_opset_finns_release_cannot_load_is_refused_before_finn_runs(finn_env, exported, tmp_path):
    model, bin_dir = exported
    proto = onnx.load(model)
    next(o for o in proto.opset_import if o.domain == "").version = 20
    proto.ir_version = 9
    onnx.save(proto, tmp_path / "op20.onnx")
    r = run_cli(tmp_path, tmp_path / "op20.onnx", bin_dir, {"enabled": True})
    assert r.returncode == 1 and r.stderr.count("\n") == 1
    assert "op20.onnx: ai.onnx opset 20, IR version 9: FINN v0.10.1's runtime" in r.stderr


def test_vectorized_execution_equals_qonnx_0_4_0(finn_env):
    """finn_side/fast_exec.py against the release's own functions on whole arrays, thresholds hit
    exactly included, and the datatype check still raising on a non-integer."""
    code = r"""
import sys, numpy as np
sys.path.insert(0, sys.argv[1])
import qonnx.custom_op.general.multithreshold as mt, qonnx.core.onnx_exec as ex
from qonnx.core.datatype import DataType
from qonnx.util.basic import qonnx_make_model, sanitize_quant_values
from qonnx.core.modelwrapper import ModelWrapper
from onnx import helper, TensorProto
release = mt.multithreshold
import fast_exec; fast_exec.install()
rng = np.random.default_rng(0)
for shape, thr in [((6, 64), (64, 255)), ((7, 16, 3, 3), (16, 7)), ((5, 12), (1, 3))]:
    t = np.sort(rng.integers(-40, 40, thr).astype(np.float32), axis=1)
    v = rng.integers(-45, 45, shape).astype(np.float32)  # integers: many land on a threshold
    for scale, bias in [(None, None), (2.0, -1.0)]:
        a, b = mt.multithreshold(v, t, scale, bias), release(v, t, scale, bias)
        assert a.dtype == b.dtype and np.array_equal(a, b), shape
vi = helper.make_tensor_value_info("t", TensorProto.FLOAT, [4])
m = ModelWrapper(qonnx_make_model(helper.make_graph([], "g", [vi], [vi])))
m.set_tensor_datatype("t", DataType["INT3"])
for value, ok in [([1, -4, 3, 0], True), ([1, 2.00001, 3, 0], True), ([1, 2.4, 3, 0], False)]:
    outs = []
    for f in (ex.sanitize_quant_values, sanitize_quant_values):
        try:
            outs.append(f(m, ["t"], {"t": np.array(value, dtype=np.float32)})["t"])
        except Exception as e:
            outs.append(type(e))
    assert (outs[0] is Exception) == (not ok) and str(outs[0]) == str(outs[1]), outs
print("ok")
"""
    _, python = finn_env
    r = subprocess.run([str(python), "-c", code, str(REPO / "finn_side")], capture_output=True, text=True,
                       env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]


def test_disabled_writes_only_notes(tmp_path):
    r = run_cli(tmp_path, tmp_path / "missing.onnx", tmp_path / "missing", {"enabled": False})
    assert r.returncode == 0, r.stderr
    assert read(tmp_path) == ({"enabled": False}, {"enabled": False})


def test_cnn_goes_through_finn_with_unchanged_predictions(finn_env, tmp_path):
    """model.arch cnn (2 convolutions, a small one): FINN lowers the convolutions (Im2Col, then
    ConvolutionInputGenerator + MVAU) and every graph it can execute predicts what qonnx predicts
    on the 200 BIN files, run as one batch (finn_side/conv_exec.py: the release's Im2Col mixes the
    samples of a batch, and its MVAU cannot read the convolution's stream without it)."""
    model, bin_dir = export_tiny(tmp_path / "cnn", arch="cnn", cnn_channels=[16, 16], cnn_kernel=3, cnn_stride=2)
    assert {n.op_type for n in onnx.load(model).graph.node} >= {"Conv", "Flatten", "MatMul"}
    r = run_cli(tmp_path, model, bin_dir, {"enabled": True})
    assert r.returncode == 0, r.stderr
    metrics, detail = read(tmp_path)
    assert metrics["passed"] and metrics["disagree_without_tie"] == 0 and metrics["graphs_executed"] == 5
    assert [s["step"] for s in detail["steps"] if s["executed"]] == F_STEPS_EXECUTED
    assert all(g["agree"] + g["ties_deciding"] == 200 for g in detail["graphs"].values())
    assert max(g["max_abs_logit_diff"] for g in detail["graphs"].values()) < 1e-4
    assert {name.rsplit("_", 1)[0] for name in detail["layers"]} == {"ConvolutionInputGenerator_rtl", "MVAU_hls"}
    assert metrics["LUT"] > 0 and F.estimates(metrics)["FINN LUT"] == metrics["LUT"]


@pytest.mark.parametrize("finn, message", [
    ({"target_fps": 0}, "params finn.target_fps: expected more than 0"),
    ({"synth_clk_period_ns": "10"}, "params finn.synth_clk_period_ns"),
    ({"enabled": "yes"}, "params finn.enabled"),
    ({"clock": 10}, "params finn.clock: unknown key"),
])
def test_bad_params(finn, message):
    with pytest.raises(KwsError, match=message):
        F.check_params({**PARAMS["finn"], **finn})


def test_params_accept_yaml_float_fps():
    assert F.check_params({"target_fps": 1.0e5})["target_fps"] == 100000


def test_bad_finn_root_and_board(finn_env, exported, tmp_path):
    model, bin_dir = exported
    r = run_cli(tmp_path, model, bin_dir, {"enabled": True}, "--finn_root", str(tmp_path))
    assert r.returncode == 1 and f"FINN_ROOT {tmp_path}: not a FINN checkout" in r.stderr
    r = run_cli(tmp_path, model, bin_dir, {"enabled": True, "board": "Pynq-Z2", "fpga_part": "xczu3eg-sbva484-1-e"})
    assert r.returncode == 1 and r.stderr.count("\n") == 1
    assert "board Pynq-Z2 has part xc7z020clg400-1, not xczu3eg-sbva484-1-e" in r.stderr


def test_compare_counts_ties_not_as_disagreements():
    ref = np.array([[0.1, 0.9, 0.2], [0.5 - 1e-7, 0.5, 0.0], [0.3, 0.2, 0.1], [0.9, 0.1, 0.1],
                    [2.0, 2.0 + 1.8e-7, 0.0], [0.5, 0.5 + 1e-5, 0.0]])
    got = np.array([[0.1, 0.9, 0.2], [0.25, 0.25, 0.0], [0.1, 0.2, 0.1], [0.1, 0.3, 0.3],
                    [2.0 + 1.8e-7, 2.0, 0.0], [0.5 + 1e-5, 0.5, 0.0]])
    c = F.compare(ref, got)
    # row 1: FINN ties exactly where qonnx's top two differ by 1e-7; row 3: a tie elsewhere;
    # row 4: a top two within float32 round-off (1.8e-7) swapped; row 5: 1e-5 apart is a real swap
    assert (c["agree"], c["ties"], c["ties_deciding"], c["disagreeing"]) == (1, 2, 2, [2, 3, 5])


def test_estimates_for_the_sweep_table(tmp_path):
    path = tmp_path / "finn.json"
    assert F.read_estimates(path) is None
    path.write_text('{"enabled": false}')
    assert F.read_estimates(path) is None
    path.write_text(json.dumps({"enabled": True, "LUT": 16406.0, "BRAM_18K": 50.0, "max_cycles": 784,
                                "estimated_throughput_fps": 127551.0, "DSP": 0}))
    assert F.read_estimates(path) == {"FINN LUT": 16406.0, "FINN BRAM_18K": 50.0, "FINN frames/s": 127551.0}
    assert F.estimates(None) is None


def test_pareto_front_and_plot(tmp_path):
    luts = [16406, 9000, 30000, 9000, 12000, None]
    acc = [0.95, 0.90, 0.96, 0.85, 0.89, 0.99]
    assert F.pareto_front(luts[:5], acc[:5]) == [1, 0, 2]  # 3 and 4 are beaten by 1
    F.plot_pareto(["a", "b", "c", "d", "e", "no FINN"], luts, acc, tmp_path / "pareto.png")
    assert (tmp_path / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(KwsError, match="no experiment has both"):
        F.plot_pareto(["x"], [None], [0.9], tmp_path / "none.png")
