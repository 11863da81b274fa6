import pytest
import torch
from brevitas.nn import QuantLinear

from kws.common import KwsError
from kws.model import ModelConfig, build_model, config_from_params, num_weights, weight_kib

DEFAULTS = {"input_bit_width": 8, "hidden_layers": [256, 256, 256], "weight_bit_width": 3, "act_bit_width": 3,
            "act_max": 1.0, "output_bit_width": 3, "weight_scale_init": 0.1, "dropout": 0.1,
            "input_dropout": 0.1}


def test_default_architecture_is_kws_w3a3():
    cfg = config_from_params(DEFAULTS, (1, 10, 49), 0.33674)
    model = build_model(cfg).eval()
    assert num_weights(model) == 490 * 256 + 2 * 256 * 256 + 256 * 12
    assert weight_kib(model) == round(num_weights(model) * 3 / 8 / 1024, 2)
    out = model(torch.randn(5, 1, 10, 49) * 10)
    assert out.shape == (5, 12) and torch.isfinite(out).all()
    f = model.features
    assert float(f[0].act_quant.scale()) == pytest.approx(0.33674)
    assert float(f[5].act_quant.scale()) == pytest.approx(1.0 / 7)  # 3-bit unsigned, max 1.0
    linears = [m for m in model.modules() if isinstance(m, QuantLinear)]
    assert [int(m.quant_weight().bit_width) for m in linears] == [3, 3, 3, 3]
    assert all(m.bias is None for m in linears)
    assert [m.quant_weight().scale.numel() for m in linears] == [256, 256, 256, 1]  # per channel, last per tensor
    # 3-bit narrow signed weights take the 7 levels -3..3
    q = linears[0].quant_weight()
    levels = torch.unique(torch.round(q.value / q.scale))
    assert levels.min() >= -3 and levels.max() <= 3


def test_one_bit_model_uses_binary_quantizers():
    p = dict(DEFAULTS, input_bit_width=1, weight_bit_width=1, act_bit_width=1, output_bit_width=1)
    model = build_model(config_from_params(p, (1, 10, 49), 1.0)).eval()
    w = model.features[3].quant_weight()
    assert set(torch.unique(torch.sign(w.value)).tolist()) <= {-1.0, 1.0}  # no zero level
    assert torch.isfinite(model(torch.randn(3, 1, 10, 49))).all()


@pytest.mark.parametrize("key,value", [
    ("weight_bit_width", 0), ("weight_bit_width", 9), ("act_bit_width", 0), ("input_bit_width", 9),
    ("output_bit_width", 2.5), ("hidden_layers", [0]), ("hidden_layers", []), ("dropout", 1.0),
    ("input_dropout", -0.1), ("input_dropout", True),
    ("act_max", -1.0), ("weight_scale_init", 0), ("weight_narrow_range", 1),
])
def test_bad_model_params_name_the_key(key, value):
    with pytest.raises(KwsError, match=f"model.{key}"):
        config_from_params(dict(DEFAULTS, **{key: value}), (1, 10, 49), 0.3)


@pytest.mark.parametrize("narrow,lowest", [(True, -3), (False, -4)])
def test_full_range_weights_add_the_lowest_level(narrow, lowest):
    model = build_model(config_from_params(dict(DEFAULTS, weight_narrow_range=narrow), (1, 10, 49), 0.3))
    for layer in (model.features[3], model.features[-1]):  # a hidden layer and the output layer
        with torch.no_grad():
            layer.weight.mul_(100)  # far beyond the scale: weights clip to both ends of the range
        q = layer.quant_weight()
        levels = torch.unique(torch.round(q.value / q.scale))
        assert levels.min() == lowest and levels.max() == 3


def test_input_and_hidden_dropout_are_separate():
    model = build_model(config_from_params(dict(DEFAULTS, input_dropout=0.2, dropout=0.0), (1, 10, 49), 0.3))
    drops = [m.p for m in model.features if isinstance(m, torch.nn.Dropout)]
    assert drops == [0.2, 0.0, 0.0, 0.0]  # the input, then after each of the 3 hidden layers
    model.train()
    x = torch.full((4, 1, 10, 49), 5.0)
    kept = model.features[1](model.features[0](x))
    assert 0 < int((kept == 0).sum()) < kept.numel()  # the input dropout acts in training


def test_checkpoint_config_without_input_dropout_keeps_old_model():
    d = config_from_params(DEFAULTS, (1, 10, 49), 0.5).to_dict()
    del d["input_dropout"]  # a config stored before the key existed: dropout 0.1 everywhere
    assert ModelConfig.from_dict(d).input_dropout == 0.1
    del d["weight_narrow_range"]  # stored before full-range weights existed: narrow range
    assert ModelConfig.from_dict(d).weight_narrow_range is True


def test_config_round_trips():
    cfg = config_from_params(DEFAULTS, (1, 10, 49), 0.5)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg


CNN = dict(DEFAULTS, arch="cnn", cnn_channels=[16, 24], cnn_kernel=3, cnn_stride=2)


def test_cnn_convolves_along_the_frames_with_coefficients_as_channels():
    from brevitas.nn import QuantConv2d, QuantReLU

    cfg = config_from_params(CNN, (1, 10, 49), 0.3)
    model = build_model(cfg).eval()
    convs = [m for m in model.modules() if isinstance(m, QuantConv2d)]
    # the first kernel spans all 10 coefficients: a 1-D convolution with them as input channels
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.stride) for c in convs] == [
        (1, 16, (10, 3), (1, 2)), (16, 24, (1, 3), (1, 2))]
    assert all(c.bias is None for c in convs)
    out_linear = model.features[-1]
    assert isinstance(out_linear, QuantLinear) and out_linear.in_features == 24 * 11  # 49 -> 24 -> 11 frames
    assert num_weights(model) == 16 * 30 + 24 * 16 * 3 + 24 * 11 * 12
    assert [int(m.quant_weight().bit_width) for m in convs + [out_linear]] == [3, 3, 3]
    assert [float(m.act_quant.scale()) for m in model.modules() if isinstance(m, QuantReLU)] == pytest.approx([1 / 7] * 2)
    x = torch.randn(5, 1, 10, 49) * 10
    assert model(x).shape == (5, 12)
    # a frame shift of 2 (the stride) moves the first layer's output by one column: the features it
    # sees are the same, which the MLP's first layer does not give
    first = torch.nn.Sequential(*model.features[:5])
    a, b = first(x[..., :47]), first(x[..., 2:])
    assert torch.allclose(a[..., 1:], b[..., :-1], atol=1e-5)


def test_cnn_config_leaves_the_mlp_keys_out_and_round_trips():
    cfg = config_from_params(dict(CNN, hidden_layers=[7]), (1, 10, 49), 0.3)
    assert (cfg.arch, cfg.hidden_layers, cfg.cnn_channels) == ("cnn", (), (16, 24))
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    mlp = config_from_params(dict(DEFAULTS, cnn_channels=[8]), (1, 10, 49), 0.3)
    assert (mlp.arch, mlp.cnn_channels, mlp.cnn_kernel) == ("mlp", (), 0)
    old = mlp.to_dict()
    for key in ("arch", "cnn_channels", "cnn_kernel", "cnn_stride"):  # stored before the CNN existed
        del old[key]
    assert ModelConfig.from_dict(old) == mlp


@pytest.mark.parametrize("key,value,message", [
    ("arch", "rnn", "model.arch: expected 'mlp' or 'cnn'"), ("cnn_channels", [], "model.cnn_channels"),
    ("cnn_kernel", 0, "model.cnn_kernel"), ("cnn_stride", 1.5, "model.cnn_stride"),
    ("cnn_kernel", 30, "model.cnn_kernel/cnn_stride/cnn_channels: 2 convolutions of kernel 30"),
])
def test_bad_cnn_params_name_the_key(key, value, message):
    with pytest.raises(KwsError, match=message):
        config_from_params(dict(CNN, **{key: value}), (1, 10, 49), 0.3)
