"""Two of qonnx 0.4.0's execution helpers, vectorized, with the release's semantics unchanged.

qonnx 0.4.0 (FINN v0.10.1's pin) executes graphs with Python loops over every element:
- `multithreshold` (MultiThreshold nodes, FINN's MVAU and Thresholding layers) loops over
  channels x samples x thresholds: 125 million iterations for the 8-bit input quantizer on 1000
  BIN files;
- `sanitize_quant_values` (run on every integer-typed tensor before and after every node) calls
  DataType.allowed once per element.
On 1000 BIN files that takes minutes per graph; vectorized, about a second. Later qonnx releases
vectorized both the same way. The replacements compute the same values:
- multithreshold: the same count of thresholds <= v, accumulated in v's dtype, then the same
  `out_scale * ret + out_bias`; every call also runs the release's own function on its first
  CHECK_ROWS samples and raises on any difference;
- sanitize_quant_values: the release's own DataType.allowed, called once per distinct value
  instead of once per element, and the same rounding and error threshold."""
from __future__ import annotations

import warnings

import numpy as np

CHECK_ROWS = 2


def install() -> None:
    import qonnx.core.onnx_exec as onnx_exec
    import qonnx.custom_op.general.multithreshold as mt
    from qonnx.util.basic import get_execution_error_thresh

    release_multithreshold = mt.multithreshold

    def multithreshold(v, thresholds, out_scale=None, out_bias=None):
        v, thresholds = np.asarray(v), np.asarray(thresholds)
        assert v.shape[1] == thresholds.shape[0] or thresholds.shape[0] == 1, "Threshold shape incorrect"
        vr = v.reshape((v.shape[0], v.shape[1], -1))
        count = np.zeros(vr.shape, dtype=np.int64)
        for a in range(thresholds.shape[1]):
            count += vr >= thresholds[:, a].reshape(1, -1, 1)
        ret = count.astype(vr.dtype)  # the release accumulates into np.zeros_like(v)
        scale = 1.0 if out_scale is None else out_scale
        out = scale * ret.reshape(v.shape) + (0.0 if out_bias is None else out_bias)
        want = release_multithreshold(v[:CHECK_ROWS], thresholds, out_scale, out_bias)
        if want.dtype != out.dtype or not np.array_equal(want, out[:CHECK_ROWS]):
            raise RuntimeError("vectorized multithreshold differs from qonnx's own (finn_side/fast_exec.py)")
        return out

    def sanitize_quant_values(model, node_tensors, execution_context, check_values=False):
        for name in node_tensors:
            dtype = model.get_tensor_datatype(name)
            if not dtype.is_integer():
                continue
            current = execution_context[name]
            distinct = np.unique(current)
            updated = current
            if not all(dtype.allowed(value) for value in distinct):
                updated = np.round(current)
                warnings.warn(f"The values of tensor {name} can't be represented with the set datatype "
                              f"annotation ({dtype.name}), they will be rounded to match the datatype annotation.")
            if np.abs(current - updated).max(initial=0) > get_execution_error_thresh():
                raise Exception(f"Rounding error is too high to match set QONNX datatype ({dtype}) for input {name}")
            if check_values and not all(dtype.allowed(value) for value in np.unique(updated)):
                raise Exception(f"Values can't be represented with set finn datatype ({dtype}) for input {name}")
            execution_context[name] = updated
        return execution_context

    mt.multithreshold = multithreshold
    onnx_exec.sanitize_quant_values = sanitize_quant_values
