import numpy as np
import onnx
import pytest
from qonnx.core.onnx_exec import execute_onnx

from kws.common import KwsError
from kws.qonnx_model import InputQuant, input_quant, input_shape, load_qonnx, run_batch


def read_fixture_bins(fixture, n=None):
    names = [line.split(",")[0] for line in (fixture / "kws_bin_files" / "y_labels.csv").read_text().splitlines()]
    names = names[:n] if n else names
    return np.stack([np.fromfile(fixture / "kws_bin_files" / name, dtype=np.int8) for name in names])


def test_reads_the_fixture_input_quantizer(finn_fixture):
    model = load_qonnx(finn_fixture / "QONNX_model.onnx")
    q = input_quant(model)
    assert q.bit_width == 8 and q.signed and q.narrow and q.zero_point == 0
    assert q.scale == pytest.approx(0.33674246, rel=1e-6)
    assert (q.qmin, q.qmax, q.dtype) == (-127, 127, np.int8)
    assert input_shape(model) == (1, 1, 10, 49)


def test_batched_run_equals_one_call_per_sample(finn_fixture):
    model = load_qonnx(finn_fixture / "QONNX_model.onnx")
    x = input_quant(model).dequantize(read_fixture_bins(finn_fixture, 5)).reshape(5, 1, 10, 49)
    batched = run_batch(model, x)
    name = model.graph.input[0].name
    single = np.concatenate([execute_onnx(model, {name: x[i:i + 1]})[model.graph.output[0].name] for i in range(5)])
    np.testing.assert_allclose(batched, single, atol=1e-5)


def test_quantizer_ranges_and_rounding():
    unsigned = InputQuant(scale=0.5, zero_point=3, bit_width=4, signed=False, narrow=False)
    assert (unsigned.qmin, unsigned.qmax, unsigned.dtype) == (0, 15, np.uint8)
    q = unsigned.quantize(np.array([-10.0, 0.25, 0.75, 1.25, 100.0]))
    assert q.tolist() == [0, 4, 4, 6, 15]  # clipped; halves (3.5, 4.5, 5.5) round to even
    wide = InputQuant(scale=1.0, zero_point=0, bit_width=16, signed=True, narrow=False)
    assert wide.dtype == np.int16 and wide.qmin == -32768


def test_rejects_files_that_are_not_onnx(tmp_path):
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"not a model at all")
    with pytest.raises(KwsError, match="model.onnx: not an ONNX model"):
        load_qonnx(bad)
    with pytest.raises(KwsError, match="not found"):
        load_qonnx(tmp_path / "missing.onnx")


def test_model_without_input_quant_is_rejected(tmp_path):
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    path = tmp_path / "relu.onnx"
    onnx.save(onnx.helper.make_model(graph), path)
    with pytest.raises(KwsError, match="feeds Relu, not one Quant node"):
        input_quant(load_qonnx(path))
