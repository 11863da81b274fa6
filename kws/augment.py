"""Training-time augmentation of feature batches (N, 1, coeffs, frames), vectorised in torch.

A model trained on synthetic speech overfits the synthesisers' too-clean, too-regular spectra;
SpecAugment-style masks (whole frames, whole coefficients) and time shifts make it rely on more
of the word. Every draw comes from the caller's torch.Generator: the same generator state gives
the same batch, so training stays reproducible and resumable. Masked cells take the clip's own
mean of that coefficient (a neutral value: MFCC c0 of silence is far from 0)."""
from __future__ import annotations

import torch

from kws import params
from kws.common import KwsError

def check_params(p: "params.Augment | dict | None") -> dict:
    """The `train.augment:` section as a dict, checked by kws.params (defaults from the schema)."""
    return params.section(params.Augment, p, "train.augment").model_dump()


def _band_mask(n: int, length: int, count: int, max_width: int, gen: torch.Generator) -> torch.Tensor:
    """(n, length) bool: the union of `count` bands per row, each 0..max_width wide at a uniform start."""
    if count == 0 or max_width == 0:
        return torch.zeros(n, length, dtype=torch.bool)
    max_width = min(max_width, length)
    width = torch.randint(0, max_width + 1, (n, count, 1), generator=gen)
    start = (torch.rand(n, count, 1, generator=gen) * (length - width + 1)).floor().long()
    pos = torch.arange(length).view(1, 1, length)
    return ((pos >= start) & (pos < start + width)).any(dim=1)


def time_shift(x: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Shift every clip by its own whole number of frames; frames shifted in repeat the edge frame."""
    if max_shift == 0:
        return x
    n, frames = x.shape[0], x.shape[-1]
    shift = torch.randint(-max_shift, max_shift + 1, (n, 1), generator=gen)
    idx = (torch.arange(frames).view(1, frames) - shift).clamp(0, frames - 1)
    return x.gather(-1, idx.view(n, 1, 1, frames).expand_as(x))


def mask(x: torch.Tensor, time_masks: int, time_width: int, coeff_masks: int, coeff_width: int,
         gen: torch.Generator) -> torch.Tensor:
    """SpecAugment-style frame and coefficient masks, filled with each clip's coefficient mean."""
    n, _, coeffs, frames = x.shape
    t = _band_mask(n, frames, time_masks, time_width, gen).view(n, 1, 1, frames)
    c = _band_mask(n, coeffs, coeff_masks, coeff_width, gen).view(n, 1, coeffs, 1)
    return torch.where(t | c, x.mean(dim=-1, keepdim=True), x)


def channel_offset(x: torch.Tensor, scale: float, gen: torch.Generator) -> torch.Tensor:
    """Add a per-clip constant to each coefficient, normal with `scale` x the batch's std of that
    coefficient: a microphone or room filter multiplies the spectrum, i.e. adds a constant to the
    log-mel bins and so to every MFCC over the whole clip (cepstral mean shift)."""
    if scale == 0:
        return x
    n, _, coeffs, _ = x.shape
    std = x.std(dim=(0, 1, 3)).view(1, 1, coeffs, 1)
    return x + scale * std * torch.randn(n, 1, coeffs, 1, generator=gen)


def augment(x: torch.Tensor, cfg: dict, gen: torch.Generator) -> torch.Tensor:
    """A new augmented batch (x is left untouched); cfg from check_params."""
    if not cfg["enabled"]:
        return x
    if x.ndim != 4:
        raise KwsError(f"augment: expected a batch (N, 1, coeffs, frames), got shape {tuple(x.shape)}")
    y = time_shift(x, cfg["max_shift"], gen)
    y = mask(y, cfg["time_masks"], cfg["time_mask_width"], cfg["coeff_masks"], cfg["coeff_mask_width"], gen)
    y = channel_offset(y, cfg["channel_offset"], gen)
    if cfg["probability"] < 1.0:
        keep = torch.rand(x.shape[0], generator=gen) >= cfg["probability"]
        y = torch.where(keep.view(-1, 1, 1, 1), x, y)
    return y
