"""The quantized KWS networks (Brevitas); defaults = FINN's MLPerf Tiny v0.7 KWS-W3A3 MLP.

Both take (N, 1, coeffs, frames) -> 8-bit input quantizer with a constant scale taken from the
training features -> dropout, then (params model.arch):
  mlp: Flatten -> [Linear (no bias) -> BatchNorm -> quantized ReLU -> dropout] x hidden -> Linear 12.
  cnn: [Conv (no bias) -> BatchNorm -> quantized ReLU -> dropout] x cnn_channels -> Flatten -> Linear 12,
       1-D convolutions along the frames with the coefficients as channels (docs/cnn.md).
Dropout is training-only: the exported graph has none."""
from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass

from brevitas.inject.enum import QuantType, ScalingImplType
from brevitas.nn import QuantConv2d, QuantIdentity, QuantLinear, QuantReLU
from brevitas.quant.scaled_int import Int8ActPerTensorFloat, Int8WeightPerTensorFloat, Uint8ActPerTensorFloat
from torch import nn

# Brevitas' graph tools announce, on import, a CUDA kernel package this CPU-only MLP never uses
warnings.filterwarnings("ignore", message="fast_hadamard_transform package not found")

from kws import params
from kws.common import KwsError
from kws.labels import NUM_CLASSES

@dataclass(frozen=True)
class ModelConfig:
    """Everything that defines the architecture; stored in checkpoints to refuse mismatches."""

    input_shape: tuple[int, int, int]  # (1, coeffs, frames)
    input_scale: float  # constant input quantizer scale (from the training features)
    input_bit_width: int = 8
    hidden_layers: tuple[int, ...] = (256, 256, 256)
    weight_bit_width: int = 3
    weight_narrow_range: bool = True  # [-(2**(b-1) - 1), 2**(b-1) - 1]; False adds the level -2**(b-1)
    act_bit_width: int = 3
    act_max: float = 1.0
    output_bit_width: int = 3
    weight_scale_init: float = 0.1
    dropout: float = 0.1  # after each hidden layer
    input_dropout: float = 0.1  # on the input features (older checkpoints: it equalled dropout, 0.1)
    num_classes: int = NUM_CLASSES
    # a config stored before the CNN existed is an MLP's; the other arch's fields stay empty, so
    # a knob the net does not use never makes a checkpoint "another architecture"
    arch: str = "mlp"
    cnn_channels: tuple[int, ...] = ()
    cnn_kernel: int = 0
    cnn_stride: int = 0

    def to_dict(self) -> dict:
        d = asdict(self)
        for key in ("input_shape", "hidden_layers", "cnn_channels"):
            d[key] = list(d[key])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        d = dict(d)
        for key in ("input_shape", "hidden_layers", "cnn_channels"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(**d)


def config_from_params(model_params: "params.Model | dict", input_shape: tuple[int, ...], input_scale: float) -> ModelConfig:
    """The architecture of the `model:` params section (checked by kws.params) and the input scale."""
    p = params.section(params.Model, model_params, "model")
    if not (isinstance(input_scale, float) and input_scale > 0 and input_scale < float("inf")):
        raise KwsError(f"input quantizer scale must be positive and finite, got {input_scale!r}")
    input_shape = tuple(int(s) for s in input_shape)
    cnn = p.arch == "cnn"
    if cnn and min(cnn_frames(input_shape[-1], len(p.cnn_channels), p.cnn_kernel, p.cnn_stride)) < 1:
        raise KwsError(f"params model.cnn_kernel/cnn_stride/cnn_channels: {len(p.cnn_channels)} convolutions "
                       f"of kernel {p.cnn_kernel}, stride {p.cnn_stride} do not fit {input_shape[-1]} frames")
    return ModelConfig(
        input_shape=input_shape,
        input_scale=float(input_scale),
        input_bit_width=p.input_bit_width,
        hidden_layers=() if cnn else tuple(p.hidden_layers),
        weight_bit_width=p.weight_bit_width,
        weight_narrow_range=p.weight_narrow_range,
        act_bit_width=p.act_bit_width,
        act_max=float(p.act_max),
        output_bit_width=p.output_bit_width,
        weight_scale_init=float(p.weight_scale_init),
        dropout=float(p.dropout),
        input_dropout=float(p.input_dropout),
        arch=p.arch,
        cnn_channels=tuple(p.cnn_channels) if cnn else (),
        cnn_kernel=p.cnn_kernel if cnn else 0,
        cnn_stride=p.cnn_stride if cnn else 0,
    )


class WeightQuant(Int8WeightPerTensorFloat):
    """Signed narrow-range weights with a learned scale started at a constant (not from stats)."""

    scaling_impl_type = ScalingImplType.PARAMETER
    scaling_init = 0.1


class FullRangeWeightQuant(WeightQuant):
    """All 2**bits signed levels, [-2**(b-1), 2**(b-1) - 1]: 8 at 3 bits where narrow range has 7.
    The scale is still the largest positive level's, so the extra level is -(2**(b-1)) x scale."""

    narrow_range = False


def _weight_kwargs(bit_width: int, scale_init: float, per_channel: bool, narrow_range: bool = True) -> dict:
    kw = dict(
        weight_quant=WeightQuant if narrow_range else FullRangeWeightQuant,
        weight_scaling_init=scale_init,
        weight_scaling_per_output_channel=per_channel,
        weight_bit_width=bit_width,
    )
    if bit_width == 1:  # a 1-bit narrow signed int has the single level 0: use +-scale instead
        kw["weight_quant_type"] = QuantType.BINARY
    return kw


def build_model(cfg: ModelConfig) -> nn.Module:
    # a 1-bit signed input is a binary (+-scale) quantizer, otherwise narrow range: [-qmax, qmax]
    input_max = cfg.input_scale * (2 ** (cfg.input_bit_width - 1) - 1 if cfg.input_bit_width > 1 else 1)
    input_kw = dict(
        act_quant=Int8ActPerTensorFloat,
        bit_width=cfg.input_bit_width,
        narrow_range=True,
        scaling_impl_type=ScalingImplType.CONST,
        min_val=-input_max,
        max_val=input_max,
    )
    if cfg.input_bit_width == 1:
        input_kw["quant_type"] = QuantType.BINARY
    layers: list[nn.Module] = [QuantIdentity(**input_kw), nn.Dropout(cfg.input_dropout)]
    hidden_weights = _weight_kwargs(cfg.weight_bit_width, cfg.weight_scale_init, True, cfg.weight_narrow_range)
    if cfg.arch == "cnn":
        width = _cnn_layers(cfg, layers, hidden_weights)
    else:
        layers.append(nn.Flatten())
        width = 1
        for s in cfg.input_shape:
            width *= s
        for h in cfg.hidden_layers:
            layers += [QuantLinear(width, h, bias=False, **hidden_weights), nn.BatchNorm1d(h), _relu(cfg),
                       nn.Dropout(cfg.dropout)]
            width = h
    layers.append(
        QuantLinear(width, cfg.num_classes, bias=False, **_weight_kwargs(
            cfg.output_bit_width, cfg.weight_scale_init, False, cfg.weight_narrow_range))
    )
    model = nn.Sequential()
    model.features = nn.Sequential(*layers)
    return model


def _relu(cfg: ModelConfig) -> nn.Module:
    # constant max: scale = act_max / (2**bits - 1), as FINN's thresholds expect
    return QuantReLU(act_quant=Uint8ActPerTensorFloat, bit_width=cfg.act_bit_width,
                     scaling_impl_type=ScalingImplType.CONST, max_val=cfg.act_max)


def _cnn_layers(cfg: ModelConfig, layers: list[nn.Module], weights: dict) -> int:
    """Appends the convolutions to `layers`; returns the flattened width they leave.

    1-D convolutions along the frames with the coefficients as channels, written as 2-D
    convolutions on the (1, coeffs, frames) input: the first kernel spans all coefficients
    (coeffs x k), the later ones are 1 x k on a map one row high. The graph then stays NCHW from
    input to Flatten, with no Reshape in between (FINN and hls4ml lower such convolutions as they
    are)."""
    _, rows, frames = cfg.input_shape
    channels = 1
    for c in cfg.cnn_channels:
        layers += [QuantConv2d(channels, c, (rows, cfg.cnn_kernel), stride=(1, cfg.cnn_stride), bias=False, **weights),
                   nn.BatchNorm2d(c), _relu(cfg), nn.Dropout(cfg.dropout)]
        channels, rows = c, 1
    layers.append(nn.Flatten())
    return channels * cnn_frames(frames, len(cfg.cnn_channels), cfg.cnn_kernel, cfg.cnn_stride)[-1]


def cnn_frames(frames: int, layers: int, kernel: int, stride: int) -> list[int]:
    """The frames left after each of `layers` unpadded convolutions (below 1: they do not fit)."""
    out = []
    for _ in range(layers):
        frames = (frames - kernel) // stride + 1
        out.append(frames)
    return out


def num_weights(model: nn.Module) -> int:
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, (QuantLinear, QuantConv2d)))


def weight_kib(model: nn.Module) -> float:
    """Weight storage at the quantized bit widths (the FPGA's on-chip weight memory)."""
    bits = sum(m.weight.numel() * int(m.quant_weight().bit_width) for m in model.modules()
               if isinstance(m, (QuantLinear, QuantConv2d)))
    return round(bits / 8 / 1024, 2)
