"""Stage bins on the FINN submission's real model and BIN files (tests/conftest.py finn_fixture)."""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml
import onnx
import pytest
from onnx import TensorProto, helper

from kws import bins, files, scoring
from kws.common import KwsError, atomic_path
from kws.labels import LABELS
from kws.qonnx_model import InputQuant, input_quant, load_model, load_qonnx, run_batch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "make_bin_files.py"


@pytest.fixture(scope="module")
def model(finn_fixture):
    return load_qonnx(finn_fixture / "QONNX_model.onnx")


@pytest.fixture(scope="module")
def fixture_bins(finn_fixture, model):
    """The fixture's BIN files as int8 (N,1,10,49) plus names and labels from y_labels.csv."""
    folder = finn_fixture / "kws_bin_files"
    names, labels, _ = files.read_labels_csv(folder / files.LABELS_CSV)
    q = np.stack([np.fromfile(folder / n, dtype=np.int8) for n in names]).reshape(-1, 1, 10, 49)
    return names, labels, q


@pytest.fixture()
def features_dir(tmp_path, model, fixture_bins):
    """The fixture's samples as float features in the MLPerf layout (N, 49 frames, 10 coeffs)."""
    _, labels, q = fixture_bins
    x = input_quant(model).dequantize(q)[:, 0].transpose(0, 2, 1)
    out = tmp_path / "features"
    out.mkdir()
    np.savez(out / "test.npz", x=x, y=labels, feature_type="mfcc")
    return out


def run(*args, cwd):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})


def make_args(tmp_path, finn_fixture, features_dir, *extra):
    """The stage's command line on the repo's params, but in the split's own order."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["bins"]["shuffle_seed"] = None
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return ["--model", finn_fixture / "QONNX_model.onnx", "--features", features_dir,
            "--params", tmp_path / "params.yaml", "--bin_file_path", tmp_path / "bins",
            "--metrics", tmp_path / "bins.json", "--plot", tmp_path / "confusion.png",
            "--per_class", tmp_path / "per_class.csv", "--report", tmp_path / "report.json", *extra]


def test_validator_reproduces_fixture_predictions(finn_fixture, model, tmp_path):
    v = bins.validate_bins(finn_fixture / "kws_bin_files", model)
    ref_names, ref_pred, _ = files.read_labels_csv(finn_fixture / "kws_bin_files" / "tflm_labels.csv")
    assert v.names == ref_names and len(v.names) == 200
    assert (v.predictions == ref_pred).all()
    assert int((v.predictions == v.labels).sum()) == 162
    # our predictions file is byte for byte the submission's
    files.write_labels_csv(tmp_path / "p.csv", v.names, v.predictions, 12)
    assert (tmp_path / "p.csv").read_bytes() == (finn_fixture / "kws_bin_files" / "tflm_labels.csv").read_bytes()


def test_onnxruntime_qcdq_agrees_with_qonnx(finn_fixture, model):
    v = bins.validate_bins(finn_fixture / "kws_bin_files", model, onnxruntime=True)
    assert v.onnxruntime_max_abs_diff is not None and v.onnxruntime_max_abs_diff < 1e-4
    assert int((v.predictions == v.labels).sum()) == 162


def test_round_trip_is_byte_identical(finn_fixture, features_dir, tmp_path):
    r = run(*make_args(tmp_path, finn_fixture, features_dir, "--num_bin_files", 200), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    ours, theirs = tmp_path / "bins", finn_fixture / "kws_bin_files"
    ref = sorted(p.name for p in theirs.glob("*.bin"))
    assert sorted(p.name for p in ours.glob("*.bin")) == ref
    for name in ref:
        assert (ours / name).read_bytes() == (theirs / name).read_bytes(), name
    assert (ours / "y_labels.csv").read_bytes() == (theirs / "y_labels.csv").read_bytes()
    assert (ours / files.PREDICTIONS_CSV).read_bytes() == (theirs / "tflm_labels.csv").read_bytes()
    m = json.loads((tmp_path / "report.json").read_text())
    assert m["num_files"] == 200 and m["accuracy"] == pytest.approx(0.81) and m["accuracy_gap"] == 0
    assert set(m) == {"accuracy", "num_files", "ties", "float_accuracy", "accuracy_gap", "onnxruntime_max_abs_diff"}
    assert json.loads((tmp_path / "bins.json").read_text()) == {"accuracy": m["accuracy"], "ties": m["ties"]}
    rows = list(csv.DictReader(open(tmp_path / "per_class.csv")))
    assert [r["label"] for r in rows] == list(LABELS) and sum(int(r["files"]) for r in rows) == 200
    assert sum(int(r["correct"]) for r in rows) == round(m["accuracy"] * 200)
    assert (tmp_path / "confusion.png").read_bytes()[:4] == b"\x89PNG"

    # again over the existing folder, with a stale file: replaced as a whole, same bytes
    (ours / "stale.bin").write_bytes(b"x")
    before = [(tmp_path / f).read_bytes() for f in ("bins.json", "confusion.png")]
    r = run(*make_args(tmp_path, finn_fixture, features_dir, "--num_bin_files", 200), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert not (ours / "stale.bin").exists()
    assert [(tmp_path / f).read_bytes() for f in ("bins.json", "confusion.png")] == before


def test_more_files_than_samples_writes_all_with_warning(finn_fixture, features_dir, tmp_path):
    r = run(*make_args(tmp_path, finn_fixture, features_dir, "--num_bin_files", 5000), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "warning: 5000 BIN files asked, the split has 200" in r.stdout
    assert len(list((tmp_path / "bins").glob("*.bin"))) == 200


def test_validate_command_and_wrong_size(finn_fixture, tmp_path):
    folder = tmp_path / "copy"
    folder.mkdir()
    for p in (finn_fixture / "kws_bin_files").iterdir():
        (folder / p.name).write_bytes(p.read_bytes())
    args = ["validate", "--bin_file_path", folder, "--model", finn_fixture / "QONNX_model.onnx",
            "--params", REPO / "params.yaml"]
    r = run(*args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "200 BIN files: accuracy 0.8100" in r.stdout
    victim = folder / "tst_000007_Yes_9.bin"
    victim.write_bytes(victim.read_bytes()[:-1])
    r = run(*args, cwd=tmp_path)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        f"error: {victim}: 489 bytes, the model input (1, 10, 49) of int8 needs 490"]


def test_not_onnx(finn_fixture, features_dir, tmp_path):
    bad = tmp_path / "model.onnx"
    bad.write_text("this is not a protobuf\n" * 10)
    args = make_args(tmp_path, finn_fixture, features_dir)
    args[1] = bad
    r = run(*args, cwd=tmp_path)
    assert r.returncode == 1
    assert len(r.stderr.strip().splitlines()) == 1 and f"error: {bad}: not an ONNX model" in r.stderr
    assert not (tmp_path / "bins").exists() and not (tmp_path / "bins.json").exists()


def test_model_without_input_quant(tmp_path):
    w = helper.make_tensor("w", TensorProto.FLOAT, [490, 12], np.zeros(490 * 12, np.float32))
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("MatMul", ["f", "w"], ["y"])],
        "no_quant",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 10, 49])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 12])],
        [w],
    )
    path = tmp_path / "plain.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    r = run("validate", "--bin_file_path", tmp_path, "--model", path, "--params", REPO / "params.yaml", cwd=tmp_path)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        f"error: {path}: model input 'global_in' feeds Flatten, not one Quant node"]


def test_features_of_wrong_shape(finn_fixture, tmp_path):
    feats = tmp_path / "features"
    feats.mkdir()
    np.savez(feats / "test.npz", x=np.zeros((4, 49, 40), np.float32), y=np.zeros(4, np.int64), feature_type="mfcc")
    r = run(*make_args(tmp_path, finn_fixture, feats), cwd=tmp_path)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        f"error: {feats / 'test.npz'}: samples of shape (49, 40) do not fit the model input (1, 10, 49)"]
    assert not (tmp_path / "bins").exists()


def test_accuracy_gap_fails_and_writes_nothing(model, fixture_bins, tmp_path, monkeypatch):
    """A quantization bug (here: every sample written as zeros) must not reach the outputs."""
    _, labels, q = fixture_bins
    x = input_quant(model).dequantize(q)[:, 0].transpose(0, 2, 1)
    target = tmp_path / "bins"
    target.mkdir()
    (target / "keep.bin").write_bytes(b"old")
    monkeypatch.setattr(InputQuant, "quantize", lambda self, x: np.zeros(x.shape, self.dtype))
    with pytest.raises(KwsError, match="exceeds bins.max_accuracy_gap 0.02"):
        with atomic_path(target) as tmp:
            bins.make_bins(tmp, model, x, labels, "mfcc", 200, 0.02)
    assert [p.name for p in target.iterdir()] == ["keep.bin"]


def test_float_predictions_equal_a_model_run_on_the_float_samples(model, fixture_bins, tmp_path):
    """The shortcut (the model's Quant of the float samples equals its Quant of the files) must
    give what running the model on the float samples gives; files that differ from the samples
    must make it run the model on them instead of reusing the files' predictions."""
    _, labels, q = fixture_bins
    x = input_quant(model).dequantize(q)[:, 0].transpose(0, 2, 1) + np.float32(0.1)  # off-grid
    with atomic_path(tmp_path / "bins") as out:
        v, float_accuracy = bins.make_bins(out, model, x, labels, "mfcc", 200, 0.0)
    x_model = files.to_model_layout(x, (1, 1, 10, 49))
    on_float = scoring.predict(run_batch(model, x_model))[0]
    assert (bins.float_predictions(model, x_model, v) == on_float).all()
    assert float_accuracy == float((on_float == labels).mean())

    # every sample's files shifted by 3 quantization steps: the files no longer are the samples
    shifted = (q.astype(np.int16) + 3).clip(-127, 127).astype(np.int8)
    for name, sample in zip(v.names, shifted):
        sample.tofile(tmp_path / "bins" / name)
    tampered = bins.validate_bins(tmp_path / "bins", model)
    assert (tampered.predictions != on_float).any()
    assert (bins.float_predictions(model, x_model, tampered) == on_float).all()


@pytest.mark.parametrize("exporter", ["kws.export", "brevitas-dynamo"])
def test_own_brevitas_model_round_trip(tmp_path, exporter):
    """A tiny model from kws.model, exported to QONNX, through bins end to end; the dynamo
    exporter flattens with a constant Reshape([1, 490]) that batched runs must rewrite."""
    torch = pytest.importorskip("torch")
    from kws.model import build_model, config_from_params

    torch.manual_seed(0)
    cfg = config_from_params({"hidden_layers": [16], "dropout": 0.0}, (1, 10, 49), 0.25)
    net = build_model(cfg).eval()
    rng = np.random.default_rng(0)
    x = rng.normal(0, 8, (300, 49, 10)).astype(np.float32)
    y = rng.integers(0, 12, 300)
    path = tmp_path / "model.onnx"
    if exporter == "kws.export":
        from kws.export import export_checked

        export_checked(net, path, files.to_model_layout(x[:32], (1, 1, 10, 49)), atol=1e-4)
    else:
        from brevitas.export import export_qonnx

        export_qonnx(net, input_t=torch.zeros(1, 1, 10, 49), export_path=str(path), dynamo=True)
    model = load_model(path)
    with atomic_path(tmp_path / "bins") as out:
        v, float_accuracy = bins.make_bins(out, model, x, y, "mfcc", 300, 0.02, onnxruntime=True)
    assert len(v.names) == 300 and v.accuracy == float_accuracy
    assert v.onnxruntime_max_abs_diff < 1e-4
    # the BIN files hold exactly what the Brevitas model sees after its input quantizer
    q = files.read_bins(tmp_path / "bins", v.names, (1, 1, 10, 49), np.int8)
    with torch.no_grad():
        want = net(torch.from_numpy(input_quant(model).dequantize(q))).numpy()
    assert (scoring.predict(want)[0] == v.predictions).all()
    assert v.ties == scoring.predict(want)[1]


def test_td_samples_files_are_int16(tmp_path):
    """A hand-built QONNX model on raw audio (1, 1, 16000): files are int16, 32000 bytes."""
    rng = np.random.default_rng(1)
    inits = [
        helper.make_tensor("s", TensorProto.FLOAT, [], [1.0 / 128]),
        helper.make_tensor("z", TensorProto.FLOAT, [], [0.0]),
        helper.make_tensor("b", TensorProto.FLOAT, [], [8.0]),
        helper.make_tensor("w", TensorProto.FLOAT, [16000, 12], rng.normal(size=16000 * 12).astype(np.float32)),
    ]
    nodes = [
        helper.make_node("Quant", ["x", "s", "z", "b"], ["xq"], domain="qonnx.custom_op.general",
                         signed=1, narrow=1, rounding_mode="ROUND"),
        helper.make_node("Flatten", ["xq"], ["f"]),
        helper.make_node("MatMul", ["f", "w"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "td", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 16000])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 12])], inits)
    path = tmp_path / "td.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13),
                                                      helper.make_opsetid("qonnx.custom_op.general", 1)]), path)
    model = load_model(path)
    x = rng.uniform(-1.2, 1.2, (20, 16000, 1)).astype(np.float32)
    y = rng.integers(0, 12, 20)
    with atomic_path(tmp_path / "bins") as out:
        v, float_accuracy = bins.make_bins(out, model, x, y, "td_samples", 20, 0.0, onnxruntime=True)
    assert v.accuracy == float_accuracy
    files = sorted((tmp_path / "bins").glob("*.bin"))
    assert len(files) == 20 and {f.stat().st_size for f in files} == {32000}
    q = np.fromfile(tmp_path / "bins" / v.names[0], dtype=np.int16)
    assert q.min() == -127 and q.max() == 127  # clipped to the 8-bit narrow range, stored as int16
    assert np.array_equal(q, np.clip(np.round(x[0, :, 0] * 128), -127, 127))


def test_sample_order_is_seeded_and_covers_the_split():
    from kws.bins import sample_order

    assert sample_order(5, None).tolist() == [0, 1, 2, 3, 4]
    a, b = sample_order(1000, 0), sample_order(1000, 0)
    assert np.array_equal(a, b) and sorted(a.tolist()) == list(range(1000))
    assert not np.array_equal(a, sample_order(1000, 1)) and not np.array_equal(a, np.arange(1000))
