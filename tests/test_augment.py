"""Training-time augmentation: shapes, reproducibility, what each transform really changes."""
import pytest
import torch

from kws import augment
from kws.common import KwsError

ON = {"enabled": True, "time_masks": 2, "time_mask_width": 8, "coeff_masks": 1, "coeff_mask_width": 3,
      "max_shift": 4, "probability": 1.0}


def _batch(n=64, coeffs=10, frames=49, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, coeffs, frames, generator=g) * 5 + torch.arange(coeffs).view(1, 1, -1, 1)


def test_defaults_are_params_yaml_and_off_is_identity():
    from kws.params import Augment
    assert augment.check_params(None) == Augment().model_dump()  # the schema's defaults: params.yaml's
    x = _batch()
    cfg = augment.check_params({"enabled": False})
    assert augment.augment(x, cfg, torch.Generator().manual_seed(0)) is x


def test_same_generator_same_batch_and_input_untouched():
    x = _batch()
    before = x.clone()
    cfg = augment.check_params(ON)
    a = augment.augment(x, cfg, torch.Generator().manual_seed(1))
    b = augment.augment(x, cfg, torch.Generator().manual_seed(1))
    c = augment.augment(x, cfg, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(x, before) and a.shape == x.shape


def test_time_mask_fills_whole_frames_with_the_clip_mean():
    x = _batch()
    y = augment.mask(x, 1, 10, 0, 0, torch.Generator().manual_seed(0))
    changed = (y != x).any(dim=2).squeeze(1)  # (N, frames)
    assert 0 < changed.sum(1).max() <= 10
    mean = x.mean(dim=-1, keepdim=True).expand_as(x)
    cols = changed.view(len(x), 1, 1, -1).expand_as(x)
    assert torch.equal(y[cols], mean[cols])  # every coefficient of a masked frame


def test_coeff_mask_fills_whole_coefficients():
    x = _batch()
    y = augment.mask(x, 0, 0, 2, 3, torch.Generator().manual_seed(0))
    changed = (y != x).any(dim=3).squeeze(1)  # (N, coeffs)
    assert 0 < changed.sum(1).max() <= 6
    rows = changed.view(len(x), 1, -1, 1).expand_as(x)
    assert torch.equal(y[rows], x.mean(dim=-1, keepdim=True).expand_as(x)[rows])


def test_time_shift_moves_frames_and_repeats_edges():
    x = _batch(n=200)
    y = augment.time_shift(x, 3, torch.Generator().manual_seed(0))
    found = set()
    for i in range(len(x)):
        for s in range(-3, 4):
            src = (torch.arange(49) - s).clamp(0, 48)
            if torch.equal(y[i], x[i][..., src]):
                found.add(s)
                break
        else:
            pytest.fail(f"clip {i} is not a shifted copy")
    assert found == set(range(-3, 4))  # every shift is drawn


def test_probability_leaves_some_clips_alone():
    x = _batch(n=400)
    y = augment.augment(x, augment.check_params({**ON, "probability": 0.5}), torch.Generator().manual_seed(0))
    same = (y == x).flatten(1).all(1).float().mean().item()
    assert 0.35 < same < 0.65


def test_channel_offset_is_one_constant_per_clip_and_coefficient():
    x = _batch(n=2000)
    y = augment.channel_offset(x, 0.5, torch.Generator().manual_seed(0))
    d = y - x
    assert torch.allclose(d, d[..., :1].expand_as(d), atol=1e-5)  # the same over all frames
    per_coeff = d[..., 0].squeeze(1).std(0) / x.std(dim=(0, 1, 3))
    assert torch.allclose(per_coeff, torch.full_like(per_coeff, 0.5), atol=0.05)  # 0.5 x each coefficient's std
    assert augment.channel_offset(x, 0.0, torch.Generator()) is x


@pytest.mark.parametrize("bad, key", [({"time_masks": -1}, "time_masks"), ({"enabled": 1}, "enabled"),
                                      ({"probability": 1.5}, "probability"), ({"max_shit": 2}, "max_shit"),
                                      ({"coeff_mask_width": 2.5}, "coeff_mask_width")])
def test_bad_params_name_the_key(bad, key):
    with pytest.raises(KwsError, match=f"train.augment.*{key}"):
        augment.check_params(bad)
