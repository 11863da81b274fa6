"""The corpus's speakers: who they are (engine, voice, pitch, rate, formant, drawn from params and
seed), which words each says, which split each belongs to, and their takes as 16 kHz clips."""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np

from kws.common import KwsError
from kws.labels import ALL_WORDS, KEYWORDS, OTHER_WORDS
from kws.synthetic.audio import place
from kws.synthetic.tts import ENGINE_VOICES, INTONATIONS, synthesize

TAKE_JITTER = 0.06  # per-take log-uniform jitter of pitch and rate around the speaker's own


def item_rng(seed: int, *keys) -> np.random.Generator:
    """A generator that depends only on the seed and the item: scheduling cannot change it."""
    h = hashlib.sha256(repr((seed, *keys)).encode()).digest()
    return np.random.default_rng(list(np.frombuffer(h, np.uint32)))


@dataclass(frozen=True)
class Speaker:
    engine: str
    voice: str
    pitch: float    # f0 factor vs the voice's default
    rate: float     # duration factor, > 1 is slower
    formant: float  # vocal-tract factor: the spectrum (formants and f0) is scaled by it

    def spec(self) -> str:
        return f"{self.engine}:{self.voice} p{self.pitch:.3f} r{self.rate:.3f} f{self.formant:.3f}"


def speaker_id(speaker: Speaker, seed: int) -> str:
    """The 8 hex digits before `_nohash_` in the speaker's file names."""
    return hashlib.sha256(f"{speaker.spec()}|seed={seed}".encode()).hexdigest()[:8]


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def engine_counts(engines: dict, n: int) -> dict[str, int]:
    """Speakers per engine: shares scaled to n, largest remainders first (sums to n exactly)."""
    total = sum(engines.values())
    names = sorted(engines)
    exact = [engines[e] / total * n for e in names]
    counts = [math.floor(x) for x in exact]
    for i in sorted(range(len(names)), key=lambda i: (counts[i] - exact[i], names[i]))[: n - sum(counts)]:
        counts[i] += 1
    return {e: c for e, c in zip(names, counts) if c}


def select_speakers(cfg: dict, seed: int) -> dict[str, Speaker]:
    """A deterministic set of speakers: id -> Speaker. Voices of an engine are used in turn (in
    a seeded order) so each gets its share; the continuous knobs are drawn per speaker."""
    n = cfg["num_speakers"]
    chosen = {}
    for engine, count in engine_counts(cfg["engines"], n).items():
        voices = sorted(ENGINE_VOICES[engine])
        order = np.random.default_rng([seed, 3]).permutation(len(voices))
        for i in range(count):
            rng = item_rng(seed, "speaker", engine, i)
            spk = Speaker(engine, voices[order[i % len(voices)]], round(_log_uniform(rng, *cfg["pitch_range"]), 3),
                          round(_log_uniform(rng, *cfg["rate_range"]), 3),
                          round(_log_uniform(rng, *cfg["formant_range"]), 3))
            chosen[speaker_id(spk, seed)] = spk
    if len(chosen) != n:
        raise KwsError(f"seed {seed}: speaker id collision, pick another seed")
    return dict(sorted(chosen.items()))


def speaker_words(sid: str, seed: int, other_words: int) -> tuple[str, ...]:
    """Every keyword and `other_words` of the other words, drawn per speaker (Speech Commands'
    speakers skip words too): Unknown clips cost as much to make as keyword clips but are wanted
    less, so the same minutes buy more speakers of the keywords."""
    if other_words >= len(OTHER_WORDS):
        return ALL_WORDS
    picked = set(item_rng(seed, sid, "other_words").choice(OTHER_WORDS, other_words, replace=False))
    return KEYWORDS + tuple(w for w in OTHER_WORDS if w in picked)


def split_speakers(ids: list[str], validation_fraction: float, test_fraction: float,
                   seed: int) -> dict[str, str]:
    """Speaker id -> 'train' | 'validation' | 'test'; every split gets at least one speaker."""
    for name, f in (("validation_fraction", validation_fraction), ("test_fraction", test_fraction)):
        if not 0 < f < 0.5:
            raise KwsError(f"synthetic.{name}: {f} must be in (0, 0.5)")
    n = len(ids)
    n_test = max(1, round(test_fraction * n))
    n_val = max(1, round(validation_fraction * n))
    order = np.random.default_rng([seed, 1]).permutation(sorted(ids))
    return {sid: "test" if i < n_test else "validation" if i < n_test + n_val else "train"
            for i, sid in enumerate(order)}


def speaker_takes(speaker: Speaker, words: list[str], takes: int, seed: int, sid: str,
                  cfg: dict) -> dict[tuple[str, int], np.ndarray]:
    """All takes of `words` by one speaker; each take's randomness comes from its own stream."""
    keys = [(w, t) for w in words for t in range(takes)]
    rngs = {k: item_rng(seed, sid, *k) for k in keys}
    items = []
    for w, t in keys:
        rng = rngs[(w, t)]
        jitter = np.exp(rng.uniform(-TAKE_JITTER, TAKE_JITTER, 2))
        mark = INTONATIONS[rng.integers(len(INTONATIONS))] if cfg["intonation"] else ""
        items.append((w + mark, speaker.pitch * jitter[0], speaker.rate * jitter[1]))
    audio = synthesize(speaker.engine, speaker.voice, items)
    return {k: place(x, rate, speaker.formant, rngs[k], cfg) for k, (x, rate) in zip(keys, audio)}
