"""Signal processing that turns an engine's output into one 16 kHz take: band-limited resampling
(which also scales the formants), trimming, a random microphone/room colouring, placement in the
1 s clip, a coloured noise floor, and 16-bit WAV files."""
from __future__ import annotations

import functools
import wave
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000


@functools.lru_cache(maxsize=64)
def _resample_table(up: int, down: int, half_width: int = 64, beta: float = 8.0) -> np.ndarray:
    """Kaiser-windowed sinc taps for each of the `up` output phases (polyphase resampler)."""
    cutoff = 0.92 * min(1.0, up / down)  # of the input Nyquist: a margin below 8 kHz
    frac = np.arange(up)[:, None] * down % up / up  # fractional input position per phase
    u = frac - np.arange(-half_width + 1, half_width + 1)[None, :]  # distance to each tap
    window = np.i0(beta * np.sqrt(np.clip(1 - (u / half_width) ** 2, 0, None))) / np.i0(beta)
    return cutoff * np.sinc(cutoff * u) * window


def resample(x: np.ndarray, rate_in: int, rate_out: int = SAMPLE_RATE) -> np.ndarray:
    """Band-limited resampling with a fixed polyphase table: deterministic, numpy only.
    Rates should share a large divisor (multiples of 100 Hz): the table has rate_out/gcd rows."""
    g = np.gcd(rate_in, rate_out)
    up, down = rate_out // g, rate_in // g
    table = _resample_table(up, down)
    half = table.shape[1] // 2
    total = len(x) * up // down
    xp = np.concatenate([np.zeros(half), x, np.zeros(half + 1)])
    windows = np.lib.stride_tricks.sliding_window_view(xp, 2 * half)  # a view, no copy
    out = np.empty(total)
    # output n sits between input n*down//up and the next one: taps from there -half+1..half.
    # Outputs n0, n0+up, n0+2up, ... share one phase and step `down` inputs: a strided view of
    # the windows times one row of taps, with no gathered (n, taps) copies
    for n0 in range(min(up, total)):
        rows = windows[n0 * down // up + 1::down][: len(range(n0, total, up))]
        out[n0::up] = np.einsum("nk,k->n", rows, table[n0 * down % up])
    return out


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
    x = trim(resample(x, int(round(rate * formant / 100)) * 100, SAMPLE_RATE))
    if len(x) > SAMPLE_RATE:  # a slow speaker saying "backward": speed it up to fit
        x = trim(resample(x, -(-len(x) // 100) * 100 + 200, SAMPLE_RATE))
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
