"""hls4ml C-simulation check: convert the exported QONNX model with hls4ml's ONNX front end,
compile its C++ emulation with g++ (no Vivado) and compare its predictions with qonnx's on the
BIN files.

Three exact graph rewrites make the model convertible (`rewrite_for_hls4ml`):
- every Quant node gets an explicit rounding_mode (qonnx defaults to ROUND; hls4ml 1.3 rejects
  a missing attribute);
- a per-output-channel weight scale s (hls4ml cannot move it below a MatMul) is folded away:
  the weights become the integers round(W/s) with scale 1, and the following BatchNorm absorbs
  s as gamma*s and mean/s (plus bias/s for a bias Add in between);
- an input Quant that feeds a Flatten/Reshape is moved behind it (an element-wise quantizer
  with scalar parameters commutes with a reshape), so hls4ml can push the input scale below
  the first MatMul and every MatMul accumulates integers.
For a CNN (model.arch cnn) the Conv weight scales are folded the same way, qonnx's channels-last
rewrite follows (hls4ml takes convolutions channels-last only), and the last convolution's
quantizer moves behind the Flatten like the input's; a Conv accumulator is bounded like a
MatMul's (fan-in = input channels x kernel).

Fixed-point precisions (`derive_precisions`) follow from the quantizers, not from a guess.
After conversion each hidden layer computes, per output channel j,
    acc_j = sum_i q_i * w_ij                    (integers: q from the previous quantizer)
    t_j   = acc_j * k_j + c_j                   (BatchNorm with the input/weight scales folded in)
    v_j   = relu(t_j) * m                       (m = 1/scale of the next quantizer)
    out_j = clip(round_half_even(v_j), qmin, qmax)
- Accumulators: |acc_j| <= max|q| * sum_i |w_ij| =: A_j, so acc needs ceil(log2(A+1)) + 1
  bits (sign) and no fraction: exact.
- The real constants k, c, m are the only approximations. qonnx itself evaluates v in float32,
  so v is only known to about one float32 ulp at the top of the quantizer's range:
  eps = 2^(floor(log2(qmax + 1/2)) - mantissa_bits). Each of the three error terms gets eps/4:
    m * |acc| * 2^-Fk <= eps/4   where only |acc| <= min(A_j, 2(|c_j| + t_hi)/|k_j|) matters
                                  (t_hi = (qmax + 1/2)/m: beyond it the quantizer saturates),
    m * 2^-Fc <= eps/4,   t_hi * 2^-Fm <= eps/4.
  Integer bits are those of the largest magnitude (+1 sign). BatchNorm and ReLU results keep
  the exact sum (max(Fk, Fc) fraction bits, integer bits of max|A k| + max|c|), so the only
  rounding left is the quantizer's own.
- Input: the graph input carries q * s_in (dequantized BIN values) and hls4ml re-quantizes it
  with round(x * (1/s_in)). x gets the integer bits of max|q| * s_in and Fx with 2^-Fx/s_in <= 1/8,
  1/s_in gets Fm with max|x| * 2^-Fm <= 1/8: the total error 1/4 < 1/2 recovers q exactly.
- Output logits = acc * mu (mu = product of the remaining scales): mu gets the fraction bits
  that keep the error below one float32 ulp of the largest possible logit.
"""
from __future__ import annotations

import contextlib
import io
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.general.quant import quant as qonnx_quant
from qonnx.transformation.infer_shapes import InferShapes
from tqdm import tqdm

from kws.common import KwsError
from kws.files import read_bin_folder
from kws.qonnx_model import input_name, input_quant, input_shape, run_batch
from kws.scoring import is_tie, predict

RESHAPES = ("Flatten", "Reshape", "Transpose")  # layout only: the derivation walks through them
WEIGHTED = ("MatMul", "Conv")  # the layers whose integer accumulators the derivation bounds


# ---------------------------------------------------------------- graph rewrite


def _attrs(node) -> dict:
    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out


def _copy(model: ModelWrapper) -> ModelWrapper:
    return ModelWrapper(onnx.ModelProto.FromString(model.model.SerializeToString()))


def _const(model: ModelWrapper, name: str, node) -> np.ndarray:
    value = model.get_initializer(name)
    if value is None:
        raise KwsError(f"node '{node.name}' ({node.op_type}): input {name} is not a constant")
    return value


def _quant_params(model: ModelWrapper, node) -> tuple[np.ndarray, int, bool, bool]:
    """(scale, bit width, signed, narrow) of a Quant node with constant parameters and zero point 0."""
    scale = _const(model, node.input[1], node).astype(np.float64)
    zero = _const(model, node.input[2], node)
    bits = _const(model, node.input[3], node)
    if np.any(zero != 0):
        raise KwsError(f"Quant node '{node.name}': non-zero zero point is not supported")
    if bits.size != 1 or not float(bits.reshape(-1)[0]).is_integer():
        raise KwsError(f"Quant node '{node.name}': bit width {bits.reshape(-1)} is not one integer")
    a = _attrs(node)
    return scale, int(bits.reshape(-1)[0]), bool(a.get("signed", 1)), bool(a.get("narrow", 0))


def _add_rounding_modes(model: ModelWrapper) -> None:
    for node in model.graph.node:
        if node.op_type == "Quant" and "rounding_mode" not in _attrs(node):
            node.attribute.append(helper.make_attribute("rounding_mode", "ROUND"))


def _fold_weight_scales(model: ModelWrapper) -> None:
    for mm in [n for n in model.graph.node if n.op_type in WEIGHTED]:
        q = model.find_producer(mm.input[1])
        if q is None or q.op_type != "Quant" or model.get_initializer(q.input[0]) is None:
            continue
        scale, bits, signed, narrow = _quant_params(model, q)
        if scale.size == 1:
            continue
        w = _const(model, q.input[0], q)
        axis = -1 if mm.op_type == "MatMul" else 0  # MatMul (in, out), Conv (out, in, kh, kw)
        cols = w.shape[axis]
        if scale.size != cols or scale.shape[axis] != cols:
            raise KwsError(f"Quant node '{q.name}': scale of shape {scale.shape} is not per output channel")
        s = scale.reshape(-1)
        mode = _attrs(q).get("rounding_mode", "ROUND")
        # quantize exactly as qonnx executes the node (float32 inputs, its own rounding)
        raw = [model.get_initializer(i) for i in q.input[1:4]]
        w_int = np.round(qonnx_quant(w, *raw, np.int64(signed), np.int64(narrow), mode) / raw[0])
        # the path to the BatchNorm that will absorb s: MatMul [-> Add(const bias)] -> BatchNorm
        nxt = model.find_consumers(mm.output[0]) or []
        bias_add = None
        if len(nxt) == 1 and nxt[0].op_type == "Add":
            bias_add = nxt[0]
            nxt = model.find_consumers(bias_add.output[0]) or []
        if len(nxt) != 1 or nxt[0].op_type != "BatchNormalization":
            raise KwsError(
                f"{mm.op_type} '{mm.name}': per-output-channel weight scale of '{q.name}' is not followed by a "
                "BatchNormalization that could absorb it (hls4ml cannot move it below the MatMul)"
            )
        bn = nxt[0]
        if bias_add is not None:
            b_name = next((i for i in bias_add.input if model.get_initializer(i) is not None), None)
            if b_name is None:
                raise KwsError(f"Add node '{bias_add.name}': bias is not a constant")
            model.set_initializer(b_name, (model.get_initializer(b_name) / s).astype(np.float32))
        gamma, mean = _const(model, bn.input[1], bn), _const(model, bn.input[3], bn)
        model.set_initializer(bn.input[1], (gamma * s).astype(np.float32))
        if mm.op_type == "Conv" and len(mm.input) > 2:
            raise KwsError(f"Conv '{mm.name}': a bias is not supported")
        model.set_initializer(bn.input[3], (mean / s).astype(np.float32))
        model.set_initializer(q.input[0], w_int.astype(np.float32))
        model.set_initializer(q.input[1], np.array(1.0, dtype=np.float32))


def _move_quant_behind_reshape(model: ModelWrapper, q) -> None:
    """A per-tensor Quant `q` whose only consumer is a Flatten/Reshape goes behind it (an
    element-wise quantizer with scalar parameters commutes with a reshape), so hls4ml can push its
    scale below the next MatMul and the MatMul accumulates integers."""
    nxt = model.find_consumers(q.output[0]) or []
    scale = model.get_initializer(q.input[1])
    if len(nxt) != 1 or nxt[0].op_type not in RESHAPES or scale is None or scale.size != 1:
        return
    rs = nxt[0]
    inner = q.output[0]  # now carries the reshaped float input
    rs.input[0], q.input[0] = q.input[0], inner
    rs.output[0], q.output[0] = inner, rs.output[0]
    model.graph.node.remove(rs)
    model.graph.node.insert(list(model.graph.node).index(q), rs)  # keep topological order
    for vi in [v for v in model.graph.value_info if v.name == inner]:
        model.graph.value_info.remove(vi)


def _move_input_quant_behind_reshape(model: ModelWrapper) -> None:
    consumers = model.find_consumers(input_name(model)) or []
    if len(consumers) == 1 and consumers[0].op_type == "Quant":
        _move_quant_behind_reshape(model, consumers[0])


def rewrite_for_hls4ml(model: ModelWrapper) -> ModelWrapper:
    """A copy of the (cleaned) QONNX model with the exact rewrites listed in the module doc;
    its qonnx outputs equal the original's up to float rounding."""
    model = _copy(model)
    _add_rounding_modes(model)
    _fold_weight_scales(model)
    _move_input_quant_behind_reshape(model)
    model = model.transform(InferShapes())
    if any(n.op_type == "Conv" for n in model.graph.node):
        # hls4ml's ONNX front end takes convolutions channels-last only; qonnx's own rewrite adds an
        # input Transpose and reorders the Flatten's consumer weights to match
        from qonnx.transformation.channels_last import ConvertToChannelsLastAndClean
        from qonnx.transformation.general import GiveUniqueNodeNames

        model = model.transform(ConvertToChannelsLastAndClean(make_input_channels_last=False))
        model = model.transform(GiveUniqueNodeNames())  # its Transpose is unnamed: hls4ml needs names
        # the last convolution's quantizer feeds the Flatten: as for the input, hls4ml then leaves
        # its scale in front of the MatMul, which would accumulate dequantized values
        for q in [n for n in model.graph.node if n.op_type == "Quant"]:
            _move_quant_behind_reshape(model, q)
        model = model.transform(InferShapes())
    for init in model.graph.initializer:  # hls4ml's parser looks up every input's shape in value_info
        model.set_tensor_shape(init.name, list(init.dims))
    return model


# ---------------------------------------------------------------- precisions


def _int_bits(x: float) -> int:
    """Integer bits, sign included, of a signed fixed-point type holding |x|."""
    return max(1, math.floor(math.log2(x)) + 2) if x > 0 else 1


def _frac_bits(x: float) -> int:
    """Smallest F with 2^-F <= x."""
    return max(0, math.ceil(-math.log2(x)))


@dataclass
class _Fixed:
    integer: int
    frac: int

    def merge(self, other: "_Fixed") -> "_Fixed":
        return _Fixed(max(self.integer, other.integer), max(self.frac, other.frac))

    def type(self, mode: str = "") -> str:
        return f"fixed<{self.integer + self.frac},{self.integer}{',' + mode if mode else ''}>"


def _is_unit_or_nonpo2(s: float) -> bool:
    return s == 1.0 or math.frexp(s)[0] != 0.5


def derive_precisions(model: ModelWrapper, mantissa_bits: int = 23) -> dict[str, dict[str, str]]:
    """hls4ml precisions {onnx node name: {'result'|'accum'|'scale'|'bias': type}} for a model
    from rewrite_for_hls4ml, derived as in the module doc. Layers of the form
    Quant [-> Flatten] -> (MatMul -> BatchNorm [-> Relu] -> Quant)* -> MatMul are supported."""
    need: dict[tuple[str, str], _Fixed] = {}

    def require(name: str, key: str, fx: _Fixed) -> None:
        need[(name, key)] = need[(name, key)].merge(fx) if (name, key) in need else fx

    def quantizer(node):
        scale, bits, signed, narrow = _quant_params(model, node)
        if scale.size != 1:
            raise KwsError(f"Quant node '{node.name}': per-channel scale left after the rewrite")
        s = float(scale.reshape(-1)[0])
        if not _is_unit_or_nonpo2(s):
            raise KwsError(f"Quant node '{node.name}': power-of-two scale {s} is not covered by the precision derivation")
        if signed:
            qmin, qmax = -(2 ** (bits - 1)) + narrow, 2 ** (bits - 1) - 1
        else:
            qmin, qmax = 0, 2**bits - 1 - narrow
        return s, qmin, qmax

    def only_consumer(tensor, where):
        nodes = model.find_consumers(tensor) or []
        if len(nodes) != 1:
            raise KwsError(f"after '{where.name}': expected one consumer, found {len(nodes)}")
        return nodes[0]

    node = only_consumer(input_name(model), model.graph.node[0])
    while node.op_type in RESHAPES:
        node = only_consumer(node.output[0], node)
    if node.op_type != "Quant":
        raise KwsError(f"node '{node.name}' ({node.op_type}): expected the input Quant node")
    s_in, qmin, qmax = quantizer(node)
    x_max = max(-qmin, qmax) * s_in
    require("global_in", "result", _Fixed(_int_bits(x_max), _frac_bits(s_in / 8)))
    require(node.name, "scale", _Fixed(_int_bits(1 / s_in), _frac_bits(1 / (8 * x_max))))
    require(node.name, "bias", _Fixed(1, 0))
    act = (node.name, s_in, qmin, qmax)  # the quantizer whose integers feed the next MatMul

    out_name = model.graph.output[0].name
    while True:
        node = only_consumer(node.output[0], node)
        while node.op_type in RESHAPES:
            node = only_consumer(node.output[0], node)
        if node.op_type not in WEIGHTED:
            raise KwsError(f"node '{node.name}' ({node.op_type}): expected a MatMul or Conv")
        wq = model.find_producer(node.input[1])
        if wq is None or wq.op_type != "Quant":
            raise KwsError(f"MatMul '{node.name}': weights are not quantized by a Quant node")
        s_w, _, _ = quantizer(wq)
        w_int = np.round(_const(model, wq.input[0], wq).astype(np.float64) / s_w)
        a_name, s_a, a_min, a_max = act
        # |acc_j| bound: the sum over output j's inputs (MatMul (in, out); Conv (out, in, kh, kw))
        fan_in = 0 if node.op_type == "MatMul" else tuple(range(1, w_int.ndim))
        acc = max(-a_min, a_max) * np.abs(w_int).sum(axis=fan_in)
        acc_bits = _int_bits(float(acc.max()))
        require(node.name, "accum", _Fixed(acc_bits, 0))
        require(node.name, "result", _Fixed(acc_bits, 0))
        sigma = s_a * s_w  # scale of the integer accumulator, moved below the MatMul by hls4ml
        if node.output[0] == out_name:
            mu_max = float(acc.max()) * sigma
            eps = 2.0 ** (math.floor(math.log2(mu_max)) - mantissa_bits)
            fx = _Fixed(_int_bits(mu_max), _frac_bits(eps / float(acc.max())))
            # the remaining rescale lands on the last non-unit scale's ApplyAlpha
            name = wq.name if s_w != 1.0 else a_name
            require(name, "scale", _Fixed(_int_bits(sigma), fx.frac))
            require(name, "bias", _Fixed(1, 0))
            require(name, "result", fx)
            break
        bn = only_consumer(node.output[0], node)
        if bn.op_type != "BatchNormalization":
            raise KwsError(f"node '{bn.name}' ({bn.op_type}): expected a BatchNormalization after MatMul '{node.name}'")
        gamma, beta, mean, var = (_const(model, i, bn).astype(np.float64) for i in bn.input[1:5])
        inv = gamma / np.sqrt(var + _attrs(bn).get("epsilon", 1e-5))
        k, c = sigma * inv, beta - mean * inv
        nxt = only_consumer(bn.output[0], bn)
        relu = None
        if nxt.op_type == "Relu":
            relu, nxt = nxt, only_consumer(nxt.output[0], nxt)
        while nxt.op_type in RESHAPES:  # the CNN's Flatten, moved in front of its quantizer
            nxt = only_consumer(nxt.output[0], nxt)
        if nxt.op_type != "Quant":
            raise KwsError(f"node '{nxt.name}' ({nxt.op_type}): expected a Quant after BatchNorm '{bn.name}'")
        s_q, q_min, q_max = quantizer(nxt)
        m = 1 / s_q
        eps = 2.0 ** (math.floor(math.log2(q_max + 0.5)) - mantissa_bits)
        t_hi = (q_max + 0.5) * s_q
        with np.errstate(divide="ignore"):
            acc_rel = np.minimum(acc, 2 * (np.abs(c) + t_hi) / np.abs(k))
        fk = _Fixed(_int_bits(float(np.abs(k).max())), _frac_bits(eps / (4 * m * float(acc_rel.max()))))
        fc = _Fixed(_int_bits(float(np.abs(c).max())), _frac_bits(eps / (4 * m)))
        ft = _Fixed(_int_bits(float((acc * np.abs(k)).max() + np.abs(c).max())), max(fk.frac, fc.frac))
        require(bn.name, "scale", fk)
        require(bn.name, "bias", fc)
        require(bn.name, "result", ft)
        if relu is not None:
            require(relu.name, "result", ft)
        require(nxt.name, "scale", _Fixed(_int_bits(m), _frac_bits(eps / (4 * t_hi))))
        require(nxt.name, "bias", _Fixed(1, 0))
        act, node = (nxt.name, s_q, q_min, q_max), nxt

    out: dict[str, dict[str, str]] = {}
    for (name, key), fx in need.items():
        # constants round to nearest; data paths are exact by construction (TRN never bites),
        # except the input, which saturates like the quantizer it feeds
        mode = "RND" if key in ("scale", "bias") else ("RND,SAT" if name == "global_in" else "")
        out.setdefault(name, {})[key] = fx.type(mode)
    return out


# ---------------------------------------------------------------- conversion and emulation


def _hls4ml():
    # hls4ml imports TensorFlow: its C++ INFO lines and google.api_core's note on Python 3.11's
    # end of support (2027) say nothing about this check
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    warnings.filterwarnings("ignore", message="You are using a Python version", category=FutureWarning)
    import hls4ml  # heavy; only the enabled stage pays for it

    return hls4ml


def _check_supported(model: ModelWrapper) -> None:
    hls4ml = _hls4ml()
    supported = set(hls4ml.converters.get_supported_onnx_layers()) | {"Dropout", "Identity"}
    for node in model.graph.node:
        if node.op_type not in supported:
            raise KwsError(
                f"node '{node.name}' ({node.op_type}): hls4ml {hls4ml.__version__} has no ONNX handler for {node.op_type}"
            )
        if node.op_type == "Quant":
            a = _attrs(node)
            if a.get("rounding_mode", "ROUND") not in ("ROUND", "FLOOR"):
                raise KwsError(f"Quant node '{node.name}': hls4ml supports rounding ROUND and FLOOR, not {a['rounding_mode']}")
            if a.get("narrow", 0) and not a.get("signed", 1):
                raise KwsError(f"Quant node '{node.name}': hls4ml does not support narrow range on unsigned quantizers")


def _failing_layer(exc: BaseException) -> str:
    """The hls4ml layer an optimizer pass or handler was working on when it raised."""
    tb, found = exc.__traceback__, "the model"
    while tb is not None:
        local = tb.tb_frame.f_locals
        for key in ("node", "layer"):
            name = getattr(local.get(key), "name", None)
            if isinstance(name, str):
                found = f"layer '{name}'"
                owner = type(local.get("self"))
                if owner.__module__.startswith("hls4ml.model.optimizer"):
                    found += f" (pass {owner.__name__})"
        tb = tb.tb_next
    return found


def convert(model: ModelWrapper, build_dir: str | os.PathLike, precisions: dict[str, dict[str, str]],
            backend: str = "Vitis"):
    """hls4ml model of a rewritten QONNX model, its C++ emulation compiled with g++ in build_dir."""
    hls4ml = _hls4ml()
    _check_supported(model)
    log = io.StringIO()  # hls4ml prints every layer; keep it out of the user's terminal
    try:
        with contextlib.redirect_stdout(log), warnings.catch_warnings():
            # hls4ml only warns when it cannot move a scale, then fails later without a name
            warnings.filterwarnings("error", message="Failed to propagate")
            config = hls4ml.utils.config.config_from_onnx_model(model, granularity="name", backend=backend)
            for name, types in precisions.items():
                config["LayerName"].setdefault(name, {}).setdefault("Precision", {}).update(types)
            hls_model = hls4ml.converters.convert_from_onnx_model(
                model, output_dir=os.fspath(build_dir), backend=backend, io_type="io_parallel", hls_config=config
            )
    except Exception as e:
        why = f"{e}" if isinstance(e, UserWarning) else f"{type(e).__name__}: {e}"
        raise KwsError(f"hls4ml cannot convert {_failing_layer(e)}: {why}".replace("\n", " ")) from None
    try:
        with contextlib.redirect_stdout(log):
            hls_model.compile()
    except Exception as e:
        raise KwsError(f"{build_dir}: g++ build of the hls4ml emulation failed ({e})") from None
    return hls_model


def layer_precisions(hls_model) -> dict[str, dict[str, str]]:
    """The types hls4ml finally used, per layer (shows where the derived precisions landed)."""
    out = {}
    for layer in hls_model.get_layers():
        types = {k: str(v.precision) for k, v in layer.types.items()}
        types["result_t"] = str(layer.get_output_variable().type.precision)
        out[layer.name] = dict(sorted(types.items()))
    return out


# ---------------------------------------------------------------- BIN files and the check


def check(model: ModelWrapper, bin_dir: str | os.PathLike, build_dir: str | os.PathLike,
          feature_type: str = "mfcc", mantissa_bits: int = 23, backend: str = "Vitis") -> dict:
    """Run the hls4ml emulation and qonnx on every BIN file; metrics of their agreement.
    `passed` is true when predictions are identical on every file where neither side ties."""
    bin_dir = Path(bin_dir)
    files, labels, x = read_bin_folder(bin_dir, input_quant(model), input_shape(model), feature_type)
    _check_supported(model)  # before the rewrite and the derivation: their errors are less direct
    rewritten = rewrite_for_hls4ml(model)
    precisions = derive_precisions(rewritten, mantissa_bits)
    hls_model = convert(rewritten, build_dir, precisions, backend)
    # the emulation runs sample by sample (~15 ms each): chunks only to show progress
    x64 = np.ascontiguousarray(x, dtype=np.float64)
    chunks = [hls_model.predict(x64[i:i + 100]).reshape(len(x64[i:i + 100]), -1)
              for i in tqdm(range(0, len(x64), 100), desc="hls4ml emulation", unit="chunk", leave=False)]
    y_hls = np.concatenate(chunks).astype(np.float64)
    y_q = run_batch(model, x).astype(np.float64)
    (p_hls, _), (p_q, _) = predict(y_hls), predict(y_q)  # the last maximum wins
    ties = is_tie(y_hls) | is_tie(y_q)
    disagree = (p_hls != p_q) & ~ties
    return {
        "enabled": True,
        "files": len(files),
        "agree": int((p_hls == p_q).sum()),
        "ties": int(ties.sum()),
        "disagree_without_tie": int(disagree.sum()),
        "disagreeing_files": [files[i] for i in np.flatnonzero(disagree)],
        "passed": bool(not disagree.any()),
        "hls4ml_accuracy": float((p_hls == labels).mean()),
        "qonnx_accuracy": float((p_q == labels).mean()),
        "max_abs_logit_diff": float(np.abs(y_hls - y_q).max()),
        "precisions": precisions,
        "layer_types": layer_precisions(hls_model),
    }
