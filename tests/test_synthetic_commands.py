"""Running the engines (kws/synthetic/commands.py): the one Debian package list agrees with the
Makefile and the code's install hints, and a missing or failing program is one clear line."""
import subprocess
from pathlib import Path

import pytest

from kws.common import KwsError
from kws.synthetic import commands, tts

REPO = Path(__file__).resolve().parents[1]


def test_one_debian_package_list_for_the_makefile_and_the_code():
    """debian-packages.txt is the list: `make debian-packages` installs its first column, in order,
    and the code's install hints name only its packages, for known engines and voices."""
    listed = [package for package, _, _ in commands.debian_packages()]
    make = subprocess.run(["make", "--no-print-directory", "--eval", "print-debian-packages: ; @echo $(DEBIAN_PACKAGES)",
                           "print-debian-packages"], cwd=REPO, capture_output=True, text=True, check=True)
    assert make.stdout.split() == listed
    assert len(set(listed)) == len(listed), "a package listed twice"
    for package, engines, voices in commands.debian_packages():
        assert set(engines) <= set(tts.ENGINE_VOICES), f"{package}: unknown engines {engines}"
        assert not voices or len(engines) == 1, f"{package}: voices of which engine?"
        assert set(voices) <= set(tts.ENGINE_VOICES.get(engines[0] if engines else "", ())), f"{package}: unknown voices {voices}"
    for engine, voices in tts.ENGINE_VOICES.items():
        assert commands.packages(engine) and set(commands.packages(engine).split()) <= set(listed), engine
        for voice in voices:
            if tts.front_end(engine, voice) == "festival":  # its error names the voice's own package
                assert len(commands.packages(engine, voice).split()) == 1, (engine, voice)
    assert commands.packages("festival", "rab_diphone") == "festvox-rablpc16k"
    assert commands.packages("mbrola_accented", "mb-de4-en") == "mbrola-de4"
    assert commands.packages("rhvoice", "clb") == commands.packages("rhvoice") == "rhvoice rhvoice-english"
    assert commands.packages("piper") == commands.packages("kokoro") == commands.packages("kokoro_en") == "ffmpeg"


def test_a_missing_or_failing_program_is_one_clear_line(monkeypatch):
    """A program not installed names the engine and what installs it; a failed run says its last
    stderr line."""
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(KwsError, match=r"^pico2wave not found: the pico engine needs apt-get install libttspico-utils$"):
        commands.run(["pico2wave", "-l", "en-US", "-w", "/dev/null", "yes"], "pico2wave")
    monkeypatch.undo()
    with pytest.raises(KwsError, match=r"^espeak-ng -v nobody failed: Error: The specified espeak-ng voice does not exist\.$"):
        commands.run(["espeak-ng", "-v", "nobody", "--stdout", "yes"], "espeak-ng -v nobody")
