"""Long test recordings with known keyword times: several synthetic voices (the corpus's own TTS
engines, kws.synthetic.tts.synthesize) saying keywords with other words between them, over the corpus's
background noise (kws.synthetic.noise). Used by tests/test_predict.py, bench/bench_predict.py and
bench/tune_predict.py; a pure function of its arguments."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import soxr

from kws.synthetic import audio, tts
from kws.synthetic.noise import noise as background_noise
from kws.labels import KEYWORDS, LABELS, OTHER_WORDS

RATE = audio.SAMPLE_RATE
# words outside Speech Commands (none sounds like a keyword), besides its 25 other words
OUTSIDE_WORDS = ("table", "window", "garden", "morning", "purple", "pencil", "music", "coffee", "basket",
                 "river", "number", "little", "paper", "water", "city", "summer")
# disjoint voice pools: the defaults were chosen on TUNING_VOICES only, the test scores TEST_VOICES
TEST_VOICES = (("espeak", "en-us+m3"), ("espeak", "en-gb+f2"), ("espeak", "en-us-nyc+m1"),
               ("flite", "kal16"), ("flite", "slt"), ("pico", "en-US"), ("espeak", "en-029+f4"))
TUNING_VOICES = (("espeak", "en-gb-scotland+m2"), ("espeak", "en-us+f3"), ("espeak", "en-gb-x-rp+m5"),
                 ("flite", "awb"), ("flite", "rms"), ("pico", "en-GB"), ("espeak", "en-us+klatt"))
NOISE_KINDS = ("room_tone", "pink_noise", "babble", "running_tap")
# speech over noise (RMS): the training set's noisier half. Its features mix a noise recording
# (peak 0.3-0.7) at a gain uniform in [0, 0.1] into clips of peak 1: over the corpus's noise kinds
# that is 19 dB SNR at the 5th percentile, 30 dB at the median (docs/predict.md)
SNR_DB = (20.0, 30.0)


@dataclass(frozen=True)
class Word:
    start: float  # seconds
    end: float
    word: str
    label: str  # a keyword's label, "Unknown" for any other word
    voice: str = ""  # engine:voice


def speak(engine: str, voice: str, items: list[tuple[str, float, float]]) -> list[np.ndarray]:
    """(word, pitch factor, duration factor) -> trimmed float 16 kHz audio, peak 1."""
    out = []
    for x, rate in tts.synthesize(engine, voice, items):
        if rate != RATE:
            x = soxr.resample(x, rate, RATE)
        x = audio.trim(x)
        out.append(x / np.abs(x).max())
    return out


def recording(seed: int, seconds: float = 60.0, keywords: int = 10, voices=TEST_VOICES,
              snr_db: tuple[float, float] = SNR_DB, noise_kinds=NOISE_KINDS) -> tuple[np.ndarray, list[Word]]:
    """int16 16 kHz audio and the words in it. The recording is cut into `keywords` equal slots;
    in each, one voice says 1-2 other words, a keyword, then 1-2 other words, 0.3-0.9 s apart.
    The noise is a sum of two of `noise_kinds`, at an SNR drawn per recording (speech RMS over
    its words vs noise RMS)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    slot = seconds / keywords
    speech = np.zeros(n)
    words: list[Word] = []
    chosen = rng.permutation(np.resize(np.array(KEYWORDS), keywords))
    others = list(OTHER_WORDS) + list(OUTSIDE_WORDS)
    for k, keyword in enumerate(chosen):
        engine, voice = voices[rng.integers(len(voices))]
        before, after = rng.integers(1, 3), rng.integers(1, 3)
        texts = [*rng.choice(others, before), keyword, *rng.choice(others, after)]
        pitch, rate = np.exp(rng.uniform(np.log(0.85), np.log(1.2))), np.exp(rng.uniform(np.log(0.9), np.log(1.15)))
        clips = speak(engine, voice, [(str(t), pitch, rate) for t in texts])
        gaps = rng.uniform(0.3, 0.9, len(clips))
        total = sum(len(c) for c in clips) / RATE + gaps[1:].sum()
        t = k * slot + rng.uniform(0.2, max(0.2, slot - total - 0.2))
        gain = rng.uniform(0.3, 0.9)
        for i, (text, clip) in enumerate(zip(texts, clips)):
            if i:
                t += gaps[i]
            s = int(t * RATE)
            clip = clip[: n - s]
            speech[s:s + len(clip)] += gain * clip
            label = LABELS[KEYWORDS.index(text)] if text in KEYWORDS else "Unknown"
            words.append(Word(round(s / RATE, 3), round((s + len(clip)) / RATE, 3), str(text), label, f"{engine}:{voice}"))
            t += len(clip) / RATE
    kinds = rng.choice(noise_kinds, 2, replace=False)
    noise = sum(background_noise(str(kind), seconds, rng) * rng.uniform(0.5, 1.0) for kind in kinds)
    voiced = np.concatenate([speech[int(w.start * RATE):int(w.end * RATE)] for w in words])
    snr = rng.uniform(*snr_db)
    recording.last_noise = (tuple(str(k) for k in kinds), round(snr, 1))  # for diagnostics
    noise *= np.sqrt(np.mean(voiced ** 2) / np.mean(noise ** 2)) / 10 ** (snr / 20)
    mix = speech + noise
    mix *= 0.9 / np.abs(mix).max()
    return audio.to_int16(mix), words


def score(detections, words: list[Word], slack: float = 0.25) -> dict:
    """Precision and recall of detections (start, end, label) against the keywords among `words`:
    a detection is right when its span, widened by `slack` seconds, overlaps an undetected keyword
    with its label; a second detection of the same keyword counts as a false one."""
    truth = [w for w in words if w.label != "Unknown"]
    found = [False] * len(truth)
    right = 0
    for d in detections:
        for i, w in enumerate(truth):
            if not found[i] and w.label == d.label and d.start - slack < w.end and w.start < d.end + slack:
                found[i] = True
                right += 1
                break
    return {"detections": len(detections), "keywords": len(truth), "right": right,
            "precision": right / len(detections) if detections else 1.0,
            "recall": sum(found) / len(truth) if truth else 1.0}
