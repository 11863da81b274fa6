"""Loading and running QONNX models (qonnx, and onnxruntime on the QCDQ form): the one place that knows their API.

Shared by export (check against Brevitas), bins (quantize + validate), the hls4ml and FINN checks."""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import numpy as np
import onnx
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.core.onnx_exec import execute_onnx
from qonnx.custom_op.registry import getCustomOp
from qonnx.transformation.change_batchsize import ChangeBatchSize
from qonnx.transformation.infer_shapes import InferShapes
from qonnx.util.cleanup import cleanup_model

from kws.common import KwsError


def load_qonnx(path: str | os.PathLike) -> ModelWrapper:
    """Load and clean up a QONNX model; cleanup also modernizes old Brevitas exports
    (empty or `finn` domains, Quant nodes without rounding_mode)."""
    if not os.path.isfile(path):
        raise KwsError(f"{path}: model file not found")
    try:
        proto = onnx.load(os.fspath(path))
    except Exception as e:  # onnx raises DecodeError and friends for non-ONNX bytes
        raise KwsError(f"{path}: not an ONNX model ({type(e).__name__})") from None
    model = cleanup_model(ModelWrapper(proto))
    # old exporters list initializers as graph inputs too; cleanup removes them
    if len(model.graph.input) != 1 or len(model.graph.output) != 1:
        raise KwsError(f"{path}: expected one graph input and one output")
    return model


# FINN's latest release, v0.10.1, runs models with onnx 1.13.0 (ai.onnx opset <= 18, IR version
# <= 8: its checker rejects IR 9) and onnxruntime 1.16.1 (opset <= 19, IR <= 9); FINN's dev branch
# pins onnxruntime 1.18.1 (opset <= 20). torch stamps an export at opset 19 with IR 9, at 20 with
# IR 9 (which FINN's release cannot run), so the opset is a param and the written file is checked.
# Opsets 11 (the FINN submission's) to 18 export the same nodes and weights (BatchNormalization
# gains training_mode=0 from 14 on) and all pass FINN v0.10.1's front end (docs/finn.md).
FINN_RELEASE_RUNTIME = "FINN v0.10.1's runtime (onnx 1.13.0, onnxruntime 1.16.1)"
MAX_OPSET, MAX_IR_VERSION = 18, 8  # kws.params bounds export.opset at the same 18


def check_runtime_compatible(path: str | os.PathLike, opset: int | None = None, name=None) -> tuple[int, int]:
    """(ai.onnx opset, IR version) of the ONNX file at `path`; KwsError (naming `name`, default
    `path`) unless FINN's release runtime can load it and, given `opset`, it is stamped at it."""
    proto = onnx.load(os.fspath(path), load_external_data=False)
    path = path if name is None else name
    stamped = [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")]
    if len(stamped) != 1:
        raise KwsError(f"{path}: expected one ai.onnx opset import, found {len(stamped)}")
    got, ir = stamped[0], proto.ir_version
    if got > MAX_OPSET or ir > MAX_IR_VERSION:
        raise KwsError(f"{path}: ai.onnx opset {got}, IR version {ir}: {FINN_RELEASE_RUNTIME} loads opset "
                       f"<= {MAX_OPSET} and IR version <= {MAX_IR_VERSION}")
    if opset is not None and got != opset:
        raise KwsError(f"{path}: exported at ai.onnx opset {got}, not params export.opset {opset}")
    return got, ir


@dataclass(frozen=True)
class InputQuant:
    """The model's own input quantizer: q = clip(round(x / scale + zero_point), qmin, qmax)."""

    scale: float
    zero_point: float
    bit_width: int
    signed: bool
    narrow: bool

    @property
    def qmin(self) -> int:
        if not self.signed:
            return 0
        return -(2 ** (self.bit_width - 1)) + (1 if self.narrow else 0)

    @property
    def qmax(self) -> int:
        if not self.signed:
            return 2**self.bit_width - 1 - (1 if self.narrow else 0)
        return 2 ** (self.bit_width - 1) - 1

    @property
    def dtype(self) -> np.dtype:
        """Smallest integer type of the quantizer's signedness that holds [qmin, qmax]."""
        for dt in (np.int8, np.int16, np.int32) if self.signed else (np.uint8, np.uint16, np.uint32):
            if np.iinfo(dt).min <= self.qmin and self.qmax <= np.iinfo(dt).max:
                return np.dtype(dt)
        raise KwsError(f"input quantizer range [{self.qmin}, {self.qmax}] does not fit 32 bits")

    def quantize(self, x: np.ndarray) -> np.ndarray:
        # np.round is round-half-to-even, as Brevitas/qonnx ROUND
        q = np.clip(np.round(x / self.scale + self.zero_point), self.qmin, self.qmax)
        return q.astype(self.dtype)

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        return ((q.astype(np.float32) - np.float32(self.zero_point)) * np.float32(self.scale)).astype(np.float32)


def input_name(model: ModelWrapper) -> str:
    return model.graph.input[0].name


def input_shape(model: ModelWrapper) -> tuple[int, ...]:
    return tuple(model.get_tensor_shape(input_name(model)))


def input_quant_node(model: ModelWrapper) -> onnx.NodeProto:
    """The Quant node fed directly by the graph input."""
    consumers = model.find_consumers(input_name(model)) or []
    quants = [n for n in consumers if n.op_type == "Quant"]
    if len(quants) != 1:
        found = ", ".join(n.op_type for n in consumers) or "nothing"
        raise KwsError(f"model input '{input_name(model)}' feeds {found}, not one Quant node")
    return quants[0]


def input_only_feeds_quant(model: ModelWrapper) -> bool:
    """True when the input Quant node is all the graph sees of its input."""
    return len(model.find_consumers(input_name(model)) or []) == 1


def run_input_quant(model: ModelWrapper, x: np.ndarray) -> np.ndarray:
    """The input Quant node alone, executed by qonnx's own Quant op on x (any batch size)."""
    node = input_quant_node(model)
    context = {name: model.get_initializer(name) for name in node.input[1:]}
    context[node.input[0]] = np.asarray(x, dtype=np.float32)
    getCustomOp(node).execute_node(context, model.graph)
    return context[node.output[0]]


def input_quant(model: ModelWrapper) -> InputQuant:
    """Read the Quant node fed directly by the graph input."""
    node = input_quant_node(model)
    values = []
    for name in node.input[1:4]:  # scale, zero point, bit width
        init = model.get_initializer(name)
        if init is None:
            raise KwsError(f"input Quant node '{node.name}': {name} is not a constant")
        if init.size != 1:
            raise KwsError(f"input Quant node '{node.name}': per-channel {name} is not supported")
        values.append(float(init.reshape(-1)[0]))
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    scale, zero_point, bit_width = values
    if not bit_width.is_integer() or not 1 < bit_width <= 32:
        raise KwsError(f"input Quant node '{node.name}': bit width {bit_width} is not supported")
    return InputQuant(
        scale=scale,
        zero_point=zero_point,
        bit_width=int(bit_width),
        signed=bool(attrs.get("signed", 1)),
        narrow=bool(attrs.get("narrow", 0)),
    )


def with_batch_size(model: ModelWrapper, batch: int) -> ModelWrapper:
    """A copy of the model whose input/output have batch size `batch`, shapes re-inferred.
    qonnx's ChangeBatchSize also patches constant Reshape shapes: new Brevitas (dynamo) exports
    flatten with Reshape(x, [1, 490]), which a plain shape change leaves at batch 1."""
    model = ModelWrapper(onnx.ModelProto.FromString(model.model.SerializeToString()))
    return model.transform(ChangeBatchSize(batch)).transform(InferShapes())


def run_batch(model: ModelWrapper, x: np.ndarray) -> np.ndarray:
    """Logits for all of `x` in one execute_onnx call (one call per sample is ~100x slower)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    expected = input_shape(model)[1:]
    if tuple(x.shape[1:]) != tuple(expected):
        raise KwsError(f"input of shape {x.shape[1:]} does not match the model's {tuple(expected)}")
    batched = with_batch_size(model, len(x))
    out = execute_onnx(batched, {input_name(batched): x})
    return np.asarray(out[batched.graph.output[0].name]).reshape(len(x), -1)


def load_model(path: str | os.PathLike) -> ModelWrapper:
    """A cleaned-up QONNX model that has an input Quant node (what BIN files are made with), else
    an error naming the file."""
    model = load_qonnx(path)
    try:
        input_quant(model)
    except KwsError as e:
        raise KwsError(f"{path}: {e}") from None
    return model


def onnxruntime_session(model: ModelWrapper, batch: int, threads: int | None = None):
    """A function x (batch, ...) -> logits (batch, classes) running onnxruntime on the QCDQ form
    (QuantizeLinear-Clip-DequantizeLinear), an independent runtime, built once for reuse.
    Basic graph optimisation only: higher levels fuse ops and change numbers. `threads`: its
    intra-op threads (None: onnxruntime's default, one per core)."""
    import onnxruntime as ort
    from qonnx.transformation.qonnx_to_qcdq import QuantToQCDQ

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the opset bump of old exports is expected
        qcdq = with_batch_size(model, batch).transform(QuantToQCDQ())
    left = [n.op_type for n in qcdq.graph.node if n.op_type in ("Quant", "BipolarQuant", "Trunc")]
    if left:
        raise KwsError(f"onnxruntime check: {len(left)} {left[0]} node(s) have no QCDQ form")
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    if threads is not None:
        opts.intra_op_num_threads = opts.inter_op_num_threads = threads
    sess = ort.InferenceSession(qcdq.model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name

    def run(x: np.ndarray) -> np.ndarray:
        out = sess.run(None, {name: np.ascontiguousarray(x, dtype=np.float32)})[0]
        return np.asarray(out).reshape(len(x), -1)

    return run


def onnxruntime_logits(model: ModelWrapper, x: np.ndarray) -> np.ndarray:
    """Logits from onnxruntime on the QCDQ form (see onnxruntime_session), in one batch."""
    return onnxruntime_session(model, len(x))(x)
