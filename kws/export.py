"""Export a trained checkpoint to QONNX, checked against the Brevitas model before anything is written."""
from __future__ import annotations

import os
import tempfile
from dataclasses import fields
from pathlib import Path

import numpy as np
import torch
from torch import nn

from kws import params
from kws.common import KwsError, atomic_path
from kws.model import ModelConfig, build_model, config_from_params
from kws.checkpoints import download_experiment_state, latest_local_state
from kws.files import load_feature_splits, to_model_layout, write_metrics
from kws.qonnx_model import check_runtime_compatible, load_qonnx, run_batch


def model_from_state(state: dict, model_params: dict | None, source: str) -> tuple[nn.Module, ModelConfig]:
    """Rebuild the trained model; the architecture in params.yaml must match the checkpoint's."""
    try:
        cfg = ModelConfig.from_dict(state["model_config"])
    except (TypeError, KeyError) as e:
        raise KwsError(f"{source}: checkpoint has an unreadable model config ({e})") from None
    if model_params is not None:
        want = config_from_params(model_params, cfg.input_shape, cfg.input_scale)
        diff = [f.name for f in fields(ModelConfig) if getattr(want, f.name) != getattr(cfg, f.name)]
        diff.sort(key=lambda k: k != "arch")  # another arch also empties the other's keys: name the cause
        if diff:
            k = diff[0]
            raise KwsError(f"{source}: checkpoint has model.{k}={getattr(cfg, k)!r} but params say "
                           f"{getattr(want, k)!r}: another architecture (retrain)")
    model = build_model(cfg)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise KwsError(f"{source}: weights do not fit the model architecture ({first})") from None
    return model.eval(), cfg


def brevitas_logits(model: nn.Module, x: np.ndarray) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        return model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()


# A hidden activation whose input lies this close to a rounding boundary k + 0.5 may round either
# way: torch and numpy compute BatchNorm's float32 terms in another order. Float round-off scales
# with the values, not with the step, so the margin is a fraction of the activation's range
# (2**bits - 1 steps). At 3 bits the flips seen were all within 1.1e-6 steps of a boundary (8
# samples of 4096 for one model) and 1.5e-6 of the range (1.05e-5 steps) marks about 1% of samples
# as possibly flipping; a W8A8 model flipped between 1e-5 and 1e-4 steps (3.8e-4 steps here).
ROUNDING_MARGIN = 1.5e-6


def logits_and_rounding_margins(model: nn.Module, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Brevitas logits and, per sample, the smallest distance of any hidden activation's input from
    a rounding boundary, as a fraction of that activation's range (inputs clamped to the range do
    not count), from one forward pass. The input quantizer is left out: both sides divide the same
    floats by the same scale."""
    from brevitas.nn import QuantReLU

    margins = np.full(len(x), np.inf)

    def hook(module, inputs, output):
        v = torch.relu(inputs[0].detach())
        scale = module.act_quant.scale().detach()
        off = ((v - output.detach()) / scale).flatten(1).abs()  # input vs its level, in steps
        steps = float(2 ** module.act_quant.bit_width().detach() - 1)
        m = torch.where(off <= 0.5 + ROUNDING_MARGIN * steps, 0.5 - off, torch.inf).abs() / steps
        margins[:] = np.minimum(margins, m.min(1).values.double().numpy())

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, QuantReLU)]
    try:
        logits = brevitas_logits(model, x)
    finally:
        for h in handles:
            h.remove()
    return logits, margins


def compare(qonnx_model, reference: nn.Module, x: np.ndarray, atol: float) -> dict:
    """QONNX vs Brevitas logits on `x`; KwsError unless every sample matches within atol with the
    same argmax. Two float effects are not export errors and are allowed, and counted:
      - a sample with an activation on a rounding boundary (ROUNDING_MARGIN) may differ by the
        resulting one-step flip (a few samples in thousands: 8 of 4096 for one trained model);
      - low-bit logits tie exactly, and float rounding (~1e-7) then decides either argmax: a
        different argmax is allowed if the QONNX pick is within atol of the Brevitas maximum.
    A wrong export (scales, layers, layout) differs on far more samples than sit on a boundary."""
    got = run_batch(qonnx_model, x)
    want, margins = logits_and_rounding_margins(reference, x)
    sample_diff = np.abs(got - want).max(1)
    off = sample_diff > atol
    on_boundary = margins < ROUNDING_MARGIN
    unexplained = off & ~on_boundary
    pick = got.argmax(1)
    differs = pick != want.argmax(1)
    tied = want[np.arange(len(x)), pick] >= want.max(1) - atol
    agree = float(np.mean(~differs | tied | on_boundary))
    diff = float(sample_diff.max())
    if unexplained.any() or agree < 1.0:
        raise KwsError(f"QONNX export does not match the Brevitas model on {len(x)} samples: {int(unexplained.sum())} "
                       f"differ by more than atol {atol:g} (max |logit diff| {diff:.3g}) without an activation on "
                       f"a rounding boundary, argmax agreement {agree:.4f}; nothing written")
    return {"check_samples": len(x), "max_abs_logit_diff": float(sample_diff[~off].max(initial=0.0)),
            "argmax_agreement": agree, "ties_decided_by_rounding": int(np.sum(differs & tied)),
            "rounding_flips": int(off.sum()), "max_rounding_flip_logit_diff": float(sample_diff[off].max(initial=0.0))}


def export_checked(model: nn.Module, out_path: str | os.PathLike, x_check: np.ndarray, atol: float,
                   reference: nn.Module | None = None, opset: int = params.Export().opset):
    """brevitas -> QONNX (cleaned up) at out_path, stamped at ai.onnx `opset`, only if it matches
    `reference` (default: the exported model itself) on x_check and FINN's release runtime can
    load the written file. Returns (qonnx ModelWrapper, check stats)."""
    from brevitas.export import export_qonnx

    model = model.eval()
    input_shape = (1, *x_check.shape[1:])
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.onnx"
        # TorchScript exporter: Flatten/MatMul/BatchNormalization like FINN's own KWS export
        # (the dynamo exporter fuses to Gemm)
        export_qonnx(model, input_t=torch.zeros(input_shape), export_path=os.fspath(raw), dynamo=False,
                     opset_version=opset)
        qmodel = load_qonnx(raw)
    stats = compare(qmodel, reference if reference is not None else model, x_check, atol)
    with atomic_path(out_path) as tmp_out:
        qmodel.save(os.fspath(tmp_out))
        try:
            stats["opset"], stats["ir_version"] = check_runtime_compatible(tmp_out, opset, name=out_path)
        except KwsError as e:
            raise KwsError(f"{e}; nothing written") from None
    return qmodel, stats


def check_export_params(p: "params.Export | dict | None") -> tuple[int, float, int]:
    """(check_samples, atol, opset) of the `export:` section, checked by kws.params."""
    e = params.section(params.Export, p, "export")
    return e.check_samples, float(e.atol), e.opset


# metrics/export.json: what a user compares across experiments (all figures: reports/export.json)
HEADLINE = ("max_abs_logit_diff",)


def run_export(params: dict, features_dir, out_path, metrics_path, ckpt_dir=None, experiment_file=None,
               report_path=None) -> dict:
    n_check, atol, opset = check_export_params(params.get("export"))
    if experiment_file is not None:
        with tempfile.TemporaryDirectory() as tmp:
            state, source = download_experiment_state(experiment_file, tmp)
    else:
        state, source = latest_local_state(ckpt_dir)
    model, cfg = model_from_state(state, params.get("model"), str(source))
    xs, ys, _ = load_feature_splits(features_dir)
    x_val = to_model_layout(xs["validation"], (None, *cfg.input_shape), f"{features_dir}/validation.npz")
    x_test = to_model_layout(xs["test"], (None, *cfg.input_shape), f"{features_dir}/test.npz")
    qmodel, stats = export_checked(model, out_path, x_val[:n_check], atol, opset=opset)
    y_test = ys["test"]
    test_acc = float(np.mean(run_batch(qmodel, x_test).argmax(1) == y_test))
    metrics = {**stats, "qonnx_test_accuracy": test_acc, "num_test": len(y_test),
               "epoch": int(state["epoch"]), "input_scale": cfg.input_scale}
    write_metrics(metrics_path, report_path, metrics, HEADLINE)
    return metrics
