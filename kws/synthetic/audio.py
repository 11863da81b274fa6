"""Signal processing that turns an engine's output into one 16 kHz take: band-limited resampling
(which also scales the formants), trimming, a random microphone/room colouring, placement in the
1 s clip, a coloured noise floor, and 16-bit WAV files."""
from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import soxr

SAMPLE_RATE = 16000


def resample(x: np.ndarray, rate_in: float, rate_out: int = SAMPLE_RATE) -> np.ndarray:
    """Band-limited resampling by libsoxr at its HQ setting (the resampler `kws.recording` uses for
    users' recordings): any ratio, deterministic for the same input and rates."""
    return soxr.resample(x, rate_in, rate_out, quality="HQ")


def trim(x: np.ndarray, rel_threshold: float = 0.02, margin: int = 220) -> np.ndarray:
    loud = np.flatnonzero(np.abs(x) > rel_threshold * np.abs(x).max())
    return x[max(loud[0] - margin, 0): loud[-1] + margin + 1]


def to_int16(x: np.ndarray) -> np.ndarray:
    return np.round(np.clip(x, -1, 1) * 32767).astype(np.int16)


def write_wav(path: Path, audio: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(audio.astype("<i2").tobytes())


def colored(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
    """Gaussian noise with power spectrum ~ 1/f**exponent (pink 1, brown 2)."""
    spec = np.fft.rfft(rng.normal(size=n))
    f = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    spec *= 1 / np.maximum(f, 20.0) ** (exponent / 2)  # flat below 20 Hz: no DC drift
    return np.fft.irfft(spec, n)


def channel(x: np.ndarray, rng: np.random.Generator, tilt_db: tuple[float, float], ripple_db: float) -> np.ndarray:
    """A random microphone/room colouring: a spectral tilt (dB per octave around 1 kHz) plus a few
    smooth ripples across octaves. Synthesisers are brighter and flatter than real recordings."""
    n = len(x)
    octave = np.log2(np.maximum(np.fft.rfftfreq(n, 1 / SAMPLE_RATE), 62.5) / 1000)
    gain = rng.uniform(*tilt_db) * octave
    for _ in range(3):
        gain += rng.uniform(-ripple_db, ripple_db) * np.cos(2 * np.pi * octave / rng.uniform(1, 4) + rng.uniform(0, 2 * np.pi))
    return np.fft.irfft(np.fft.rfft(x) * 10 ** (gain / 20), n)


def place(x: np.ndarray, rate: int, formant: float, rng: np.random.Generator, cfg: dict) -> np.ndarray:
    """Engine output -> one 16 kHz take: formants scaled by resampling, coloured, trimmed, squeezed
    into 1 s if too long, at a random offset and gain, over a noise floor (dB re the peak).
    `cfg`: the synthetic params (channel_*, noise_floor_*)."""
    # reading `rate` Hz audio as if it were rate * formant Hz scales every frequency by `formant`
    x = trim(resample(x, rate * formant))
    if len(x) > SAMPLE_RATE:  # a slow speaker saying "backward": read it faster, so that it fits
        x = trim(resample(x, len(x) + 200))
    x = channel(x, rng, cfg["channel_tilt_db"], cfg["channel_ripple_db"])
    x = x / np.abs(x).max() * rng.uniform(0.1, 0.9)
    out = np.zeros(SAMPLE_RATE)
    start = rng.integers(0, SAMPLE_RATE - len(x) + 1)
    out[start:start + len(x)] = x
    # rooms and mics hum and rumble: the floor is white to brown noise with an uneven spectrum
    floor = colored(rng, SAMPLE_RATE, rng.uniform(0.0, 2.0))
    floor = channel(floor, rng, (0.0, 0.0), cfg["noise_floor_ripple_db"])
    out += floor / floor.std() * np.abs(x).max() * 10 ** (rng.uniform(*cfg["noise_floor_db"]) / 20)
    return to_int16(out)
