"""The generated `_background_noise_` recordings: white, pink, brown noise, room tone, electric
hum, a running tap, and babble (espeak-ng voices talking over each other)."""
from __future__ import annotations

import numpy as np

from kws.common import KwsError
from kws.synthetic.audio import SAMPLE_RATE, colored, resample
from kws.synthetic.tts import VARIANTS, VOICES, espeak

BABBLE_WORDS = ("the", "and", "that", "have", "with", "this", "from", "they", "would", "there",
                "their", "what", "about", "which", "when", "make", "like", "time", "just", "know",
                "people", "year", "take", "them", "some", "could", "than", "then", "look", "only")


def noise(kind: str, seconds: float, rng: np.random.Generator) -> np.ndarray:
    """`seconds` of the noise `kind` (params synthetic.noise_kinds), peak 0.3 to 0.7."""
    n = int(seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    if kind == "white_noise":
        x = rng.normal(size=n)
    elif kind == "pink_noise":
        x = colored(rng, n, 1.0)
    elif kind == "brown_noise":
        x = colored(rng, n, 2.0)
    elif kind == "room_tone":
        # between pink and brown: the spectrum of the quiet frames of noisy real recordings
        # (their mean MFCCs c1..c4 match this noise's, white noise's c1 has the other sign)
        x = colored(rng, n, 1.5)
    elif kind == "electric_hum":
        mains = rng.choice([50.0, 60.0])
        x = sum(rng.uniform(0.2, 1.0) / k * np.sin(2 * np.pi * mains * k * t + rng.uniform(0, 2 * np.pi))
                for k in range(1, 8))
        x = x * (1 + 0.2 * np.sin(2 * np.pi * rng.uniform(0.1, 0.5) * t)) + 0.05 * colored(rng, n, 1.0) / 30
    elif kind == "running_tap":
        # a stream (band-limited noise) plus sparse drips: clicks with short exponential decays
        x = 0.3 * np.diff(colored(rng, n + 1, 1.0)) * 30
        clicks = np.zeros(n)
        idx = rng.choice(n, size=int(seconds * rng.uniform(3, 8)), replace=False)
        clicks[idx] = rng.uniform(0.3, 1.0, idx.size) * rng.choice([-1, 1], idx.size)
        decay = np.exp(-np.arange(800) / rng.uniform(40, 200)) * np.sin(2 * np.pi * 1500 * np.arange(800) / SAMPLE_RATE)
        x = x / np.abs(x).max() * 0.3 + np.convolve(clicks, decay)[:n]
    elif kind == "babble":
        # several espeak-ng voices talking over each other (no vocabulary words)
        x = np.zeros(n)
        for _ in range(5):
            words = " ".join(rng.choice(BABBLE_WORDS, size=int(seconds * 3)))
            voice = f"{VOICES[rng.integers(len(VOICES))]}+{VARIANTS[rng.integers(len(VARIANTS))]}"
            v = resample(*espeak(words, voice, int(rng.integers(20, 80)), int(rng.integers(130, 190))))
            v = np.tile(v, n // max(len(v), 1) + 2)
            start = rng.integers(0, len(v) - n + 1)
            x += v[start:start + n] * rng.uniform(0.3, 1.0)
    else:
        raise KwsError(f"unknown noise kind {kind}")
    return x / np.abs(x).max() * rng.uniform(0.3, 0.7)
