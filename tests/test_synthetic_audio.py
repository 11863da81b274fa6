"""Signal processing (kws/synthetic/audio.py) and the generated noise (kws/synthetic/noise.py)."""
import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest

from kws.synthetic import audio
from kws.synthetic.noise import noise

ESPEAK_RATE = 22050


def _flat(floor_db):
    """The synthetic params that place() reads: no channel colouring, a fixed noise floor level."""
    return {"channel_tilt_db": [0, 0], "channel_ripple_db": 0, "noise_floor_db": floor_db, "noise_floor_ripple_db": 6}


def test_formant_factor_scales_the_spectrum():
    tone = np.sin(2 * np.pi * 1000 * np.arange(11025) / ESPEAK_RATE)  # 1 kHz, 0.5 s
    cfg = _flat([-120, -120])
    for f in (0.9, 1.0, 1.037, 1.15):  # any factor: the rate need not be round
        a = audio.place(tone, ESPEAK_RATE, f, np.random.default_rng(0), cfg).astype(float)
        peak_hz = np.argmax(np.abs(np.fft.rfft(a))) * audio.SAMPLE_RATE / len(a)
        assert abs(peak_hz - 1000 * f) < 10
        loud = np.flatnonzero(np.abs(a) > 0.5 * np.abs(a).max())
        assert abs(loud[-1] - loud[0] - 8000 / f) < 100  # and it lasts 1/f as long


def test_noise_floor_level_is_relative_to_the_peak():
    tone = np.sin(2 * np.pi * 500 * np.arange(2205) / ESPEAK_RATE)  # 0.1 s
    cfg = _flat([-40, -40])
    levels = []
    for seed in range(5):
        a = audio.place(tone, ESPEAK_RATE, 1.0, np.random.default_rng(seed), cfg).astype(float)
        loud = np.flatnonzero(np.abs(a) > 0.5 * np.abs(a).max())
        quiet = np.concatenate([a[:max(loud[0] - 300, 0)], a[loud[-1] + 300:]])
        levels.append(20 * np.log10(quiet.std() / np.abs(a).max()))
    assert np.allclose(levels, -40, atol=1.5)


def test_channel_tilts_the_spectrum():
    x = np.random.default_rng(0).normal(size=16000)
    y = audio.channel(x, np.random.default_rng(1), (-6, -6), 0.0)
    p = np.abs(np.fft.rfft(y)) ** 2 / np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(16000, 1 / 16000)
    db = 10 * np.log10([p[(f > 450) & (f < 550)].mean(), p[(f > 3800) & (f < 4200)].mean()])
    assert db[0] - db[1] == pytest.approx(18, abs=1)  # 3 octaves at -6 dB per octave


def test_room_tone_lies_between_pink_and_brown():
    """room_tone's power falls 1.5 decades per decade of frequency (pink 1, brown 2)."""
    rng = np.random.default_rng(0)
    f = np.fft.rfftfreq(16000 * 4, 1 / 16000)
    band = (f >= 100) & (f <= 4000)
    slopes = {}
    for kind in ("pink_noise", "room_tone", "brown_noise"):
        power = np.abs(np.fft.rfft(noise(kind, 4.0, rng))) ** 2
        slopes[kind] = np.polyfit(np.log10(f[band]), np.log10(power[band]), 1)[0]
    assert slopes["room_tone"] == pytest.approx(-1.5, abs=0.1)
    assert slopes["brown_noise"] < slopes["room_tone"] < slopes["pink_noise"]


def test_resample_keeps_tone_rejects_alias():
    t = np.arange(22050) / 22050
    for f, passes in ((1000, True), (6000, True), (9500, False)):
        y = audio.resample(np.sin(2 * np.pi * f * t), 22050)
        assert len(y) == 16000
        assert (np.abs(y[500:-500]).max() > 0.95) == passes


@pytest.mark.parametrize("rate_in", [7400, 14900, 22000, 22050 * 1.037])
def test_resample_keeps_a_tone_pure_at_any_ratio(rate_in):
    """The formant factor makes every ratio occur. The hand-written polyphase resampler this
    replaced gave a 1 kHz tone spurs of -16 to -22 dB at these rates (its phases' fractional
    delays were permuted); only 2:1 came out clean."""
    n = int(rate_in)
    y = audio.resample(np.sin(2 * np.pi * 1000 * np.arange(n) / rate_in), rate_in)
    f = np.fft.rfftfreq(len(y), 1 / audio.SAMPLE_RATE)
    power = np.abs(np.fft.rfft(y * np.hanning(len(y)))) ** 2
    assert 10 * np.log10(power[f > 1100].max() / power.max()) < -80


def test_resample_gives_the_same_bytes_in_another_process():
    """DVC hashes the corpus: libsoxr must not vary with the process or its thread settings."""
    x = np.random.default_rng(0).normal(size=9000)
    here = hashlib.sha256(audio.resample(x, 22050 * 1.037).tobytes()).hexdigest()
    code = ("import hashlib, numpy as np; from kws.synthetic import audio; "
            "x = np.random.default_rng(0).normal(size=9000); "
            "print(hashlib.sha256(audio.resample(x, 22050 * 1.037).tobytes()).hexdigest())")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    there = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert there.stdout.strip() == here
