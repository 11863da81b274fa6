"""The TTS engines (kws/synthetic/tts.py): every voice is real and distinct, pitch control works,
and festival runs in the environment that makes it repeatable."""
import functools
import typing

import numpy as np
import pytest

from kws import params
from kws.synthetic import tts


def test_engines_available():
    tts.check_engines(list(tts.ENGINE_VOICES))  # every voice of every engine really synthesises, all different


def sustained_f0(x: np.ndarray, rate: int) -> float:
    """The f0 of a sustained vowel by autocorrelation over its middle 0.1 s."""
    mid = x[len(x) // 2 - rate // 20: len(x) // 2 + rate // 20]
    ac = np.correlate(mid, mid, "full")[len(mid) - 1:]
    lo, hi = rate // 400, rate // 70
    return rate / (lo + np.argmax(ac[lo:hi]))


@pytest.mark.parametrize("engine, voice", [("pico", "en-US"), ("mbrola", "us1_mbrola"), ("festival", "rab_diphone"),
                                           ("flite", "slt"), ("rhvoice", "clb")])
def test_pitch_factor_movessustained_f0(engine, voice):
    """Each engine's own pitch control (pico's markup, festival's intonation targets, flite's
    f0 mean, RHVoice's percent) really moves f0 by about the requested factor."""
    low, high = tts.synthesize(engine, voice, [("ah", 0.8, 1.0), ("ah", 1.25, 1.0)])
    ratio = sustained_f0(*high) / sustained_f0(*low)
    assert ratio == pytest.approx(1.25 / 0.8, rel=0.15)


def test_engines_match_the_params_schema():
    assert set(tts.ENGINE_VOICES) == set(tts.ENGINE_COMMANDS) == set(typing.get_args(params.Engine))


def test_festival_runs_with_glibc_malloc_perturb(tmp_path, monkeypatch):
    """festival's diphone voices read heap bytes they never wrote (docs/reproducibility.md); the
    fixed fill byte glibc's perturb gives every allocation is what makes their audio repeatable.
    Asked through festival's own getenv, so the test sees the environment festival really got,
    kept beside any tunables the user set."""
    script = tmp_path / "env.scm"
    script.write_text('(print (getenv "GLIBC_TUNABLES"))\n')
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    assert tts.festival(script, "festival").decode().split() == [tts.FESTIVAL_MALLOC_PERTURB]
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.check=0")
    got = tts.festival(script, "festival").decode().split()
    assert got == [f"glibc.malloc.check=0:{tts.FESTIVAL_MALLOC_PERTURB}"]


def test_festival_heap_gives_the_default_heaps_audio(monkeypatch):
    """festival runs with a small Scheme heap (FESTIVAL_HEAP_CELLS) because its default heap costs
    0.2 s a start; the audio must be the default heap's. This speaker's script of the default corpus
    crashes festival ("double free or corruption") with 0.3 million cells, so a heap too small fails
    here."""
    from kws.synthetic import speakers
    speaker = speakers.Speaker("festival", "rab_diphone", 0.814, 1.073, 0.966)
    words = list(speakers.speaker_words("b5197366", 0, 8))
    monkeypatch.setattr(speakers, "place", lambda x, rate, *_: (x, rate))
    small = speakers.speaker_takes(speaker, words, 1, 0, "b5197366", {"intonation": True})
    monkeypatch.setattr(tts, "festival", functools.partial(tts.festival, heap_cells=None))
    default = speakers.speaker_takes(speaker, words, 1, 0, "b5197366", {"intonation": True})
    assert len(small) == 18
    for key, (x, rate) in default.items():
        assert small[key][1] == rate and np.array_equal(small[key][0], x), key
