"""The TTS engines (kws/synthetic/tts.py): every voice is real and distinct, pitch control works,
and the one Debian package list agrees with the Makefile and the code's install hints."""
import hashlib
import json
import shutil
import subprocess
import sys
import typing
from pathlib import Path

import numpy as np
import pytest

from kws import params
from kws.common import KwsError
from kws.synthetic import tts

REPO = Path(__file__).resolve().parents[1]


def test_engines_available():
    tts.check_engines(list(tts.ENGINE_VOICES))  # every voice of every engine really synthesises, all different


def _f0(x: np.ndarray, rate: int) -> float:
    """The f0 of a sustained vowel by autocorrelation over its middle 0.1 s."""
    mid = x[len(x) // 2 - rate // 20: len(x) // 2 + rate // 20]
    ac = np.correlate(mid, mid, "full")[len(mid) - 1:]
    lo, hi = rate // 400, rate // 70
    return rate / (lo + np.argmax(ac[lo:hi]))


@pytest.mark.parametrize("engine, voice", [("pico", "en-US"), ("mbrola", "us1_mbrola"), ("festival", "rab_diphone"),
                                           ("flite", "slt"), ("rhvoice", "clb")])
def test_pitch_factor_moves_f0(engine, voice):
    """Each engine's own pitch control (pico's markup, festival's intonation targets, flite's
    f0 mean, RHVoice's percent) really moves f0 by about the requested factor."""
    low, high = tts.synthesize(engine, voice, [("ah", 0.8, 1.0), ("ah", 1.25, 1.0)])
    ratio = _f0(*high) / _f0(*low)
    assert ratio == pytest.approx(1.25 / 0.8, rel=0.15)


def test_engines_match_the_params_schema():
    assert set(tts.ENGINE_VOICES) == set(tts.ENGINE_COMMANDS) == set(typing.get_args(params.Engine))


def test_one_debian_package_list_for_the_makefile_and_the_code():
    """debian-packages.txt is the list: `make debian-packages` installs its first column, in order,
    and the code's install hints name only its packages, for known engines and voices."""
    listed = [package for package, _, _ in tts.debian_packages()]
    make = subprocess.run(["make", "--no-print-directory", "--eval", "print-debian-packages: ; @echo $(DEBIAN_PACKAGES)",
                           "print-debian-packages"], cwd=REPO, capture_output=True, text=True, check=True)
    assert make.stdout.split() == listed
    assert len(set(listed)) == len(listed), "a package listed twice"
    for package, engine, voices in tts.debian_packages():
        assert engine is None or engine in tts.ENGINE_VOICES, f"{package}: unknown engine {engine}"
        assert set(voices) <= set(tts.ENGINE_VOICES.get(engine, ())), f"{package}: unknown voices {voices}"
    for engine, voices in tts.ENGINE_VOICES.items():
        assert tts.packages(engine) and set(tts.packages(engine).split()) <= set(listed), engine
        for voice in voices:
            if tts.front_end(engine, voice) == "festival":  # its error names the voice's own package
                assert len(tts.packages(engine, voice).split()) == 1, (engine, voice)
    assert tts.packages("festival", "rab_diphone") == "festvox-rablpc16k"
    assert tts.packages("mbrola_accented", "mb-de4-en") == "mbrola-de4"
    assert tts.packages("rhvoice", "clb") == tts.packages("rhvoice") == "rhvoice rhvoice-english"


def test_festival_runs_with_glibc_malloc_perturb(tmp_path, monkeypatch):
    """festival's diphone voices read heap bytes they never wrote (docs/reproducibility.md); the
    fixed fill byte glibc's perturb gives every allocation is what makes their audio repeatable.
    Asked through festival's own getenv, so the test sees the environment festival really got,
    kept beside any tunables the user set."""
    script = tmp_path / "env.scm"
    script.write_text('(print (getenv "GLIBC_TUNABLES"))\n')
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    assert tts._run_tts(["festival", "-b", str(script)], "festival").decode().split() == [tts.FESTIVAL_MALLOC_PERTURB]
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.check=0")
    got = tts._run_tts(["festival", "-b", str(script)], "festival").decode().split()
    assert got == [f"glibc.malloc.check=0:{tts.FESTIVAL_MALLOC_PERTURB}"]


# ---------------------------------------------------------------- piper (PyPI, not Debian)

PIPER_ITEMS = [("yes.", 1.0, 1.0), ("marvin?", 0.85, 1.15), ("backward!", 1.2, 0.9)]


def _sha(audio) -> list[str]:
    return [hashlib.sha256(x.tobytes()).hexdigest() for x, _ in audio]


def test_piper_speaks_with_the_real_voice():
    """Joe's bundled model says the words: 22,050 Hz speech of about a word's length, louder than
    silence, each take different; a slower rate gives a longer take of the same word."""
    model, config = tts.piper_model("joe")
    assert model.stat().st_size > 50_000_000 and json.loads(config.read_text())["dataset"] == "joe"
    audio = tts.synthesize("piper", "joe", PIPER_ITEMS)
    for (text, _, _), (x, rate) in zip(PIPER_ITEMS, audio):
        assert rate == 22050
        assert 0.2 < len(x) / rate < 1.5, text
        assert np.abs(x).max() > 0.2 and np.sqrt(np.mean(x ** 2)) > 0.02, text
    assert len(set(_sha(audio))) == len(audio)
    slow, fast = tts.synthesize("piper", "joe", [("seven", 1.0, 1.2), ("seven", 1.0, 0.8)])
    assert len(slow[0]) > 1.2 * len(fast[0])


def test_piper_pitch_factor_moves_f0():
    """Piper has no pitch control: ffmpeg's rubberband filter shifts f0 by the requested factor."""
    low, high = tts.synthesize("piper", "joe", [("ah", 0.8, 1.0), ("ah", 1.25, 1.0)])
    assert _f0(*high) / _f0(*low) == pytest.approx(1.25 / 0.8, rel=0.15)


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
    monkeypatch.setitem(tts.PIPER_VOICE_PACKAGES, "joe", "kws_no_such_voice_package")
    with pytest.raises(KwsError, match="piper voice joe: the package kws_no_such_voice_package is not installed"):
        tts.check_engines(["piper"])
