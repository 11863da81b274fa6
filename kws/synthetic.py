"""An offline Speech Commands v2 look-alike spoken by several Debian TTS engines.

A speaker is (engine, voice, pitch, rate, formant): an espeak-ng voice+variant, a flite voice or
a festival voice, with its own f0 factor, speaking-rate factor and vocal-tract factor (formants
scaled by resampling, the VTLP trick). Real speech is far more varied than any one synthesiser:
a model trained on one engine barely transfers to another, so diversity across engines and
speakers is what makes the corpus useful on real clips. Every file is a pure function of
(params, seed, file name), so the corpus is byte-identical whatever the worker scheduling.
Output: the two official archives' look-alikes, plus README.txt (speakers and their splits):
  speech_commands_v0.02.tar.gz: <word>/<speaker>_nohash_<n>.wav, {validation,testing}_list.txt,
      _background_noise_/*.wav
  speech_commands_test_set_v0.02.tar.gz: {<keyword>,_silence_,_unknown_}/*.wav
Archives rather than 42k loose files: DVC checks 3 files on every `dvc repro` instead of 42k
(a no-op run measured 1.0 s instead of 3.4 s), and the dataset stage reads real archives the
same way.
"""
from __future__ import annotations

import functools
import gzip
import hashlib
import io
import math
import multiprocessing
import shutil
import subprocess
import tarfile
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from kws import params
from kws.common import KwsError, atomic_path
from kws.labels import (ALL_WORDS, BACKGROUND_NOISE_DIR, KEYWORDS, OTHER_WORDS, SILENCE_DIR, TEST_ARCHIVE,
                        TRAIN_ARCHIVE, UNKNOWN_DIR, VALIDATION_NOISE)

SAMPLE_RATE = 16000
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
}
ENGINE_COMMANDS = {"espeak": ("espeak-ng",), "flite": ("flite",), "festival": ("festival",),
                   "mbrola": ("mbrola", "festival"), "mbrola_accented": ("mbrola",), "pico": ("pico2wave",),
                   "rhvoice": ("RHVoice-test",)}
# festvox-rablpc16k is in Debian's contrib, MBROLA's voices, pico and RHVoice in non-free (the
# Makefile enables both components); MBROLA's voices and RHVoice's evgeniy-eng and lyubov are
# licensed for non-commercial use only
ENGINE_PACKAGES = {"espeak": "espeak-ng", "flite": "flite",
                   "festival": "festival festvox-kallpc16k festvox-kdlpc16k festvox-rablpc16k festvox-us-slt-hts",
                   "mbrola": "mbrola mbrola-us1 mbrola-us2 mbrola-us3 mbrola-en1 festvox-us1 festvox-us2 "
                             "festvox-us3 festvox-en1",
                   "mbrola_accented": " ".join(f"mbrola-{v}" for v in ACCENTED_MBROLA),
                   "pico": "libttspico-utils", "rhvoice": "rhvoice rhvoice-english"}
FESTIVAL_VOICE_PACKAGE = {"kal_diphone": "festvox-kallpc16k", "ked_diphone": "festvox-kdlpc16k",
                          "rab_diphone": "festvox-rablpc16k", "cmu_us_slt_arctic_hts": "festvox-us-slt-hts",
                          "us1_mbrola": "festvox-us1", "us2_mbrola": "festvox-us2",
                          "us3_mbrola": "festvox-us3", "en1_mbrola": "festvox-en1"}
INTONATIONS = ("", ".", "?", "!")  # statement / question / exclamation prosody, per take
TAKE_JITTER = 0.06  # per-take log-uniform jitter of pitch and rate around the speaker's own
# _background_noise_/<kind>.wav; VALIDATION_NOISE's silence goes to validation, the rest to train
NOISE_KINDS = ("white_noise", "pink_noise", "room_tone", "brown_noise", "electric_hum", "running_tap", "babble")
BABBLE_WORDS = ("the", "and", "that", "have", "with", "this", "from", "they", "would", "there",
                "their", "what", "about", "which", "when", "make", "like", "time", "just", "know",
                "people", "year", "take", "them", "some", "could", "than", "then", "look", "only")


# ---------------------------------------------------------------- params

def check_params(cfg: "params.Synthetic | dict | None") -> dict:
    """The `synthetic:` section as a dict, checked by kws.params (defaults from the schema)."""
    return params.section(params.Synthetic, cfg, "synthetic").model_dump()


# ---------------------------------------------------------------- speakers

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
            rng = _rng(seed, "speaker", engine, i)
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
    picked = set(_rng(seed, sid, "other_words").choice(OTHER_WORDS, other_words, replace=False))
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


# ---------------------------------------------------------------- engines

def _run_tts(cmd: list[str], what: str) -> bytes:
    try:
        r = subprocess.run(cmd, capture_output=True, timeout=300)
    except FileNotFoundError:
        engine = next(e for e, c in ENGINE_COMMANDS.items() if cmd[0] in c)
        raise KwsError(f"{cmd[0]} not found: the {engine} engine needs apt-get install {ENGINE_PACKAGES[engine]}") from None
    if r.returncode != 0:
        last = (r.stderr.decode(errors="replace").strip().splitlines() or ["no message"])[-1]
        raise KwsError(f"{what} failed: {last}")
    return r.stdout


def _read_wav_bytes(data: bytes, what: str, header_frames: bool = True) -> tuple[np.ndarray, int]:
    with wave.open(io.BytesIO(data)) as w:
        if w.getsampwidth() != 2 or w.getnchannels() != 1:
            raise KwsError(f"{what}: unexpected output format {w.getparams()}")
        rate = w.getframerate()
        pcm = w.readframes(w.getnframes()) if header_frames else data[44:]  # espeak's stdout header lies
    return np.frombuffer(pcm[: len(pcm) // 2 * 2], "<i2") / 32768.0, rate


def espeak(text: str, voice: str, pitch: int = 50, speed: int = 160) -> tuple[np.ndarray, int]:
    """espeak-ng's output as float64 in [-1, 1] and its rate (22050 Hz, 16000 for MBROLA voices)."""
    out = _run_tts(["espeak-ng", "-v", voice, "-p", str(pitch), "-s", str(speed), "--stdout", text],
                   f"espeak-ng -v {voice}")
    x, rate = _read_wav_bytes(out, f"espeak-ng -v {voice}", header_frames=False)
    if rate not in (ESPEAK_RATE, SAMPLE_RATE):
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
    festival starts slowly (0.5-2 s), so it gets all of a speaker's items in one script."""
    default_f0 = ENGINE_VOICES[engine][voice]
    out = []
    program = front_end(engine, voice)
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
                _run_tts(["pico2wave", "-l", voice, "-w", path, markup], f"pico2wave -l {voice}")
        elif program == "rhvoice":
            for i, ((text, pitch, rate), path) in enumerate(zip(items, paths)):
                text_path = Path(tmp) / f"{i}.txt"
                text_path.write_text(text + "\n")
                _run_tts(["RHVoice-test", "-p", voice, "-t", str(round(100 * pitch)), "-r", str(round(100 / rate)),
                          "-i", str(text_path), "-o", path], f"RHVoice-test -p {voice}")
        elif program == "flite":
            for (text, pitch, rate), path in zip(items, paths):
                cmd = ["flite", "-voice", voice, "--setf", f"duration_stretch={rate:.4f}"]
                if default_f0:
                    cmd += ["--setf", f"int_f0_target_mean={default_f0 * pitch:.2f}"]
                _run_tts(cmd + ["-t", text, "-o", path], f"flite -voice {voice}")
        elif program == "festival":
            try:
                _festival(voice, default_f0, items, paths, Path(tmp) / "script.scm")
            except KwsError:
                # festival 2.5 sometimes corrupts its heap over a long script (the same script
                # every time); one process per item gives the same audio, only slower
                for item, path in zip(items, paths):
                    _festival_one(voice, default_f0, item, path, Path(tmp) / "script.scm")
        else:
            raise KwsError(f"unknown engine {engine}")
        for path in paths:
            if not Path(path).is_file():
                raise KwsError(f"{engine} voice {voice}: wrote no audio (is {ENGINE_PACKAGES[engine]} installed?)")
            out.append(_read_wav_bytes(Path(path).read_bytes(), f"{engine} voice {voice}"))
    return out


def _festival(voice: str, default_f0: float | None, items: list[tuple[str, float, float]],
              paths: list[str], script: Path) -> None:
    lines = [f"(voice_{voice})"]
    for (text, pitch, rate), path in zip(items, paths):
        if default_f0:  # the diphone voices' linear-regression intonation model
            lines.append(f"(set! int_lr_params '((target_f0_mean {default_f0 * pitch:.2f}) "
                         f"(target_f0_std {default_f0 / 7.5 * pitch:.2f}) (model_f0_mean 170) (model_f0_std 34)))")
        lines.append(f"(Parameter.set 'Duration_Stretch {rate:.4f})")
        lines.append(f'(utt.save.wave (utt.synth (Utterance Text "{text}")) "{path}" \'riff)')
    script.write_text("\n".join(lines) + "\n")
    _run_tts(["festival", "-b", str(script)], f"festival voice {voice} ({FESTIVAL_VOICE_PACKAGE[voice]})")


def _festival_one(voice: str, default_f0: float | None, item: tuple[str, float, float], path: str,
                  script: Path) -> None:
    """One item; if festival crashes on it (ked_diphone does on e.g. "on." at a low pitch and a
    slow rate), the same word without punctuation, then at the voice's own pitch and rate."""
    text, pitch, rate = item
    bare = text.rstrip("".join(INTONATIONS))
    for attempt in (item, (bare, pitch, rate), (bare, 1.0, 1.0)):
        try:
            return _festival(voice, default_f0, [attempt], [path], script)
        except KwsError as e:
            error = e
    raise error


def check_engines(engines: list[str]) -> None:
    """Fail with one line if a selected engine or one of its voices is missing. Engines fall back
    to a default voice silently, so every voice must produce audio unlike every other voice.
    espeak-ng is always needed: it speaks the babble noise."""
    for engine in sorted({"espeak", *engines}):
        for command in ENGINE_COMMANDS[engine]:
            if shutil.which(command) is None:
                raise KwsError(f"synthetic.engines: {engine} needs the command {command}, "
                               f"not installed (apt-get install {ENGINE_PACKAGES[engine]})")
    seen = {}
    for engine in sorted({"espeak", *engines}):
        voices = list(ENGINE_VOICES[engine])
        if engine == "espeak":  # every base voice and every variant
            voices = [*VOICES, *(f"en-us+{x}" for x in VARIANTS)]
            audio = [espeak("forward marvin", v) for v in voices]
        elif engine == "flite":
            listed = _run_tts(["flite", "-lv"], "flite -lv").decode().split()
            missing = [v for v in voices if v not in listed]
            if missing:
                raise KwsError(f"synthetic.engines: flite has no voice {missing[0]} (flite -lv)")
            audio = [synthesize(engine, v, [("forward marvin", 1.0, 1.0)])[0] for v in voices]
        else:
            audio = [synthesize(engine, v, [("forward marvin", 1.0, 1.0)])[0] for v in voices]
        for v, (x, rate) in zip(voices, audio):
            key = hashlib.sha256(x.tobytes()).hexdigest()
            if x.size < rate // 4 or np.abs(x).max() < 0.05:
                raise KwsError(f"{engine} voice {v}: produces no audio")
            if key in seen:
                raise KwsError(f"{engine} voice {v}: sounds exactly like {seen[key]} (not installed?)")
            seen[key] = f"{engine} voice {v}"


def check_voices() -> None:
    check_engines(list(ENGINE_VOICES))


# ---------------------------------------------------------------- audio

@functools.lru_cache(maxsize=64)
def _table(up: int, down: int) -> np.ndarray:
    return _resample_table(up, down)


def _resample_table(up: int, down: int, half_width: int = 64, beta: float = 8.0) -> np.ndarray:
    """Kaiser-windowed sinc taps for each of the `up` output phases (polyphase resampler)."""
    cutoff = 0.92 * min(1.0, up / down)  # of the input Nyquist: a margin below 8 kHz
    frac = np.arange(up)[:, None] * down % up / up  # fractional input position per phase
    u = frac - np.arange(-half_width + 1, half_width + 1)[None, :]  # distance to each tap
    window = np.i0(beta * np.sqrt(np.clip(1 - (u / half_width) ** 2, 0, None))) / np.i0(beta)
    return cutoff * np.sinc(cutoff * u) * window


def resample(x: np.ndarray, rate_in: int = ESPEAK_RATE, rate_out: int = SAMPLE_RATE) -> np.ndarray:
    """Band-limited resampling with a fixed polyphase table: deterministic, numpy only.
    Rates should share a large divisor (multiples of 100 Hz): the table has rate_out/gcd rows."""
    g = np.gcd(rate_in, rate_out)
    up, down = rate_out // g, rate_in // g
    table = _table(up, down)
    half = table.shape[1] // 2
    total = len(x) * up // down
    xp = np.concatenate([np.zeros(half), x, np.zeros(half + 1)])
    windows = np.lib.stride_tricks.sliding_window_view(xp, 2 * half)  # a view, no copy
    out = np.empty(total)
    # output n sits between input n*down//up and the next one: taps from there -half+1..half.
    # Outputs n0, n0+up, n0+2up, ... share one phase and step `down` inputs: a strided view of
    # the windows times one row of taps, with no gathered (n, taps) copies
    for n0 in range(min(up, total)):
        rows = windows[n0 * down // up + 1::down][: len(range(n0, total, up))]
        out[n0::up] = np.einsum("nk,k->n", rows, table[n0 * down % up])
    return out


def trim(x: np.ndarray, rel_threshold: float = 0.02, margin: int = 220) -> np.ndarray:
    loud = np.flatnonzero(np.abs(x) > rel_threshold * np.abs(x).max())
    return x[max(loud[0] - margin, 0): loud[-1] + margin + 1]


def to_int16(x: np.ndarray) -> np.ndarray:
    return np.round(np.clip(x, -1, 1) * 32767).astype(np.int16)


def write_wav(path: Path, audio: np.ndarray, rate: int = SAMPLE_RATE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(audio.astype("<i2").tobytes())


def channel(x: np.ndarray, rng: np.random.Generator, tilt_db: tuple[float, float], ripple_db: float) -> np.ndarray:
    """A random microphone/room colouring: a spectral tilt (dB per octave around 1 kHz) plus a few
    smooth ripples across octaves. Synthesisers are brighter and flatter than real recordings."""
    n = len(x)
    octave = np.log2(np.maximum(np.fft.rfftfreq(n, 1 / SAMPLE_RATE), 62.5) / 1000)
    gain = rng.uniform(*tilt_db) * octave
    for _ in range(3):
        gain += rng.uniform(-ripple_db, ripple_db) * np.cos(2 * np.pi * octave / rng.uniform(1, 4) + rng.uniform(0, 2 * np.pi))
    return np.fft.irfft(np.fft.rfft(x) * 10 ** (gain / 20), n)


def place(x: np.ndarray, rate: int, formant: float, rng: np.random.Generator, cfg: dict) -> np.ndarray:
    """Engine output -> one 16 kHz take: formants scaled by resampling, coloured, trimmed, squeezed
    into 1 s if too long, at a random offset and gain, over a noise floor (dB re the peak)."""
    # reading `rate` Hz audio as if it were rate * formant Hz scales every frequency by `formant`
    x = trim(resample(x, int(round(rate * formant / 100)) * 100, SAMPLE_RATE))
    if len(x) > SAMPLE_RATE:  # a slow speaker saying "backward": speed it up to fit
        x = trim(resample(x, -(-len(x) // 100) * 100 + 200, SAMPLE_RATE))
    x = channel(x, rng, cfg["channel_tilt_db"], cfg["channel_ripple_db"])
    x = x / np.abs(x).max() * rng.uniform(0.1, 0.9)
    out = np.zeros(SAMPLE_RATE)
    start = rng.integers(0, SAMPLE_RATE - len(x) + 1)
    out[start:start + len(x)] = x
    # rooms and mics hum and rumble: the floor is white to brown noise with an uneven spectrum
    floor = _colored(rng, SAMPLE_RATE, rng.uniform(0.0, 2.0))
    floor = channel(floor, rng, (0.0, 0.0), cfg["noise_floor_ripple_db"])
    out += floor / floor.std() * np.abs(x).max() * 10 ** (rng.uniform(*cfg["noise_floor_db"]) / 20)
    return to_int16(out)


def speaker_takes(speaker: Speaker, words: list[str], takes: int, seed: int, sid: str,
                  cfg: dict) -> dict[tuple[str, int], np.ndarray]:
    """All takes of `words` by one speaker; each take's randomness comes from its own stream."""
    keys = [(w, t) for w in words for t in range(takes)]
    rngs = {k: _rng(seed, sid, *k) for k in keys}
    items = []
    for w, t in keys:
        rng = rngs[(w, t)]
        jitter = np.exp(rng.uniform(-TAKE_JITTER, TAKE_JITTER, 2))
        mark = INTONATIONS[rng.integers(len(INTONATIONS))] if cfg["intonation"] else ""
        items.append((w + mark, speaker.pitch * jitter[0], speaker.rate * jitter[1]))
    audio = synthesize(speaker.engine, speaker.voice, items)
    return {k: place(x, rate, speaker.formant, rngs[k], cfg) for k, (x, rate) in zip(keys, audio)}


# ---------------------------------------------------------------- noise

def _colored(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
    """Gaussian noise with power spectrum ~ 1/f**exponent (pink 1, brown 2)."""
    spec = np.fft.rfft(rng.normal(size=n))
    f = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    spec *= 1 / np.maximum(f, 20.0) ** (exponent / 2)  # flat below 20 Hz: no DC drift
    return np.fft.irfft(spec, n)


def noise(kind: str, seconds: float, rng: np.random.Generator) -> np.ndarray:
    n = int(seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    if kind == "white_noise":
        x = rng.normal(size=n)
    elif kind == "pink_noise":
        x = _colored(rng, n, 1.0)
    elif kind == "brown_noise":
        x = _colored(rng, n, 2.0)
    elif kind == "room_tone":
        # between pink and brown: the spectrum of the quiet frames of noisy real recordings
        # (their mean MFCCs c1..c4 match this noise's, white noise's c1 has the other sign)
        x = _colored(rng, n, 1.5)
    elif kind == "electric_hum":
        mains = rng.choice([50.0, 60.0])
        x = sum(rng.uniform(0.2, 1.0) / k * np.sin(2 * np.pi * mains * k * t + rng.uniform(0, 2 * np.pi))
                for k in range(1, 8))
        x = x * (1 + 0.2 * np.sin(2 * np.pi * rng.uniform(0.1, 0.5) * t)) + 0.05 * _colored(rng, n, 1.0) / 30
    elif kind == "running_tap":
        # a stream (band-limited noise) plus sparse drips: clicks with short exponential decays
        x = 0.3 * np.diff(_colored(rng, n + 1, 1.0)) * 30
        clicks = np.zeros(n)
        idx = rng.choice(n, size=int(seconds * rng.uniform(3, 8)), replace=False)
        clicks[idx] = rng.uniform(0.3, 1.0, idx.size) * rng.choice([-1, 1], idx.size)
        decay = np.exp(-np.arange(800) / rng.uniform(40, 200)) * np.sin(2 * np.pi * 1500 * np.arange(800) / SAMPLE_RATE)
        x = x / np.abs(x).max() * 0.3 + np.convolve(clicks, decay)[:n]
    elif kind == "babble":
        # several espeak-ng voices talking over each other (no vocabulary words)
        x = np.zeros(n)
        for _ in range(5):
            words = " ".join(rng.choice(BABBLE_WORDS, size=int(seconds * 3)))
            voice = f"{VOICES[rng.integers(len(VOICES))]}+{VARIANTS[rng.integers(len(VARIANTS))]}"
            v = resample(*espeak(words, voice, int(rng.integers(20, 80)), int(rng.integers(130, 190))))
            v = np.tile(v, n // max(len(v), 1) + 2)
            start = rng.integers(0, len(v) - n + 1)
            x += v[start:start + n] * rng.uniform(0.3, 1.0)
    else:
        raise KwsError(f"unknown noise kind {kind}")
    return x / np.abs(x).max() * rng.uniform(0.3, 0.7)


# ---------------------------------------------------------------- corpus

def _rng(seed: int, *keys) -> np.random.Generator:
    """A generator that depends only on the seed and the item: scheduling cannot change it."""
    h = hashlib.sha256(repr((seed, *keys)).encode()).digest()
    return np.random.default_rng(list(np.frombuffer(h, np.uint32)))


def _make_speaker(task) -> None:
    root, seed, sid, speaker, takes, cfg = task
    words = list(speaker_words(sid, seed, cfg["other_words_per_speaker"]))
    for (word, take), audio in speaker_takes(speaker, words, takes, seed, sid, cfg).items():
        write_wav(Path(root) / "train" / word / f"{sid}_nohash_{take}.wav", audio)


def _make_noise(task) -> None:
    root, seed, kind, seconds = task
    write_wav(Path(root) / "train" / BACKGROUND_NOISE_DIR / f"{kind}.wav",
              to_int16(noise(kind, seconds, _rng(seed, "noise", kind))))


def _make_silence(task) -> None:
    # fresh noise (own stream), never the train recordings: no train/test overlap
    root, seed, i, kinds = task
    rng = _rng(seed, "test_silence", i)
    kind = kinds[i % len(kinds)]
    clip = noise(kind, 1.0, rng) * rng.uniform(0.05, 1.0)
    write_wav(Path(root) / "test" / SILENCE_DIR / f"{kind}_{i:04d}_nohash_0.wav", to_int16(clip))


def _run(fn, tasks, workers: int, desc: str, unit: str = "it") -> None:
    if workers <= 1:
        for t in tqdm(tasks, desc=desc, unit=unit):
            fn(t)
        return
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        for _ in tqdm(pool.imap_unordered(fn, tasks, chunksize=1), total=len(tasks), desc=desc, unit=unit):
            pass


def build_corpus(out: str | Path, cfg: dict, seed: int, workers: int = 2) -> dict:
    """Write the whole corpus into `out` (atomically); returns a small summary."""
    cfg = check_params(cfg)
    takes = int(cfg["takes_per_word"])
    speakers = select_speakers(cfg, seed)
    split = split_speakers(list(speakers), cfg["validation_fraction"], cfg["test_fraction"], seed)
    check_engines([e for e, s in cfg["engines"].items() if s > 0])
    with atomic_path(out) as tmp:
        train = tmp / "train"
        # slow festival speakers first: the pool's tail is then short tasks
        order = sorted(speakers, key=lambda s: (front_end(speakers[s].engine, speakers[s].voice) != "festival", s))
        tasks = [(str(tmp), seed, sid, speakers[sid], takes, cfg) for sid in order]
        _run(_make_speaker, tasks, workers, "speakers", "speaker")
        _run(_make_noise, [(str(tmp), seed, k, cfg["noise_seconds"]) for k in cfg["noise_kinds"]], workers, "noise")
        _run(_make_silence, [(str(tmp), seed, i, cfg["noise_kinds"]) for i in range(int(cfg["test_silence_clips"]))],
             workers, "test silence")
        rel = {s: [] for s in ("train", "validation", "test")}
        for sid in speakers:
            for w in speaker_words(sid, seed, cfg["other_words_per_speaker"]):
                rel[split[sid]] += [f"{w}/{sid}_nohash_{t}.wav" for t in range(takes)]
        for name, s in (("validation_list.txt", "validation"), ("testing_list.txt", "test")):
            (train / name).write_text("".join(p + "\n" for p in sorted(rel[s])))
        # test archive layout: keywords of test speakers as they are, a sample of their other words
        for p in rel["test"]:
            word, name = p.split("/")
            if word in KEYWORDS:
                (tmp / "test" / word).mkdir(parents=True, exist_ok=True)
                shutil.copyfile(train / p, tmp / "test" / p)
        others = sorted(p for p in rel["test"] if p.split("/")[0] in OTHER_WORDS)
        n_unknown = min(int(cfg["test_unknown_clips"]), len(others))
        (tmp / "test" / UNKNOWN_DIR).mkdir(parents=True, exist_ok=True)
        for p in np.random.default_rng([seed, 2]).choice(others, n_unknown, replace=False):
            word, name = p.split("/")
            shutil.copyfile(train / p, tmp / "test" / UNKNOWN_DIR / f"{word}_{name}")
        for folder, archive in (("train", TRAIN_ARCHIVE), ("test", TEST_ARCHIVE)):
            write_archive(tmp / folder, tmp / archive)
            shutil.rmtree(tmp / folder)
        per_engine = {e: sum(s.engine == e for s in speakers.values()) for e in ENGINE_VOICES}
        (tmp / "README.txt").write_text(
            f"Synthetic Speech Commands v2 look-alike, seed {seed}.\n"
            f"{len(speakers)} speakers ({', '.join(f'{e} {c}' for e, c in per_engine.items() if c)}): "
            f"{sum(v == 'train' for v in split.values())} train, "
            f"{sum(v == 'validation' for v in split.values())} validation, "
            f"{sum(v == 'test' for v in split.values())} test.\n"
            + "".join(f"{sid} {split[sid]} {spk.spec()}\n" for sid, spk in speakers.items()))
    return {"speakers": len(speakers), "engines": {e: c for e, c in per_engine.items() if c},
            "files": {k: len(v) for k, v in rel.items()}, "test_unknown": n_unknown}


def _normalized(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = 0
    info.mode = 0o755 if info.isdir() else 0o644
    return info


def write_archive(folder: Path, archive: Path) -> None:
    """`folder`'s files as a .tar.gz like the official archives (<word>/<file>.wav at the top),
    sorted, with fixed owners, modes and times: the same files always give the same bytes.
    gzip level 0 (stored): noisy WAV audio barely compresses (to 65% at level 1), and level 1
    took 26 s for the default corpus against 8 s stored."""
    paths = sorted(folder.rglob("*"))
    with open(archive, "wb") as raw, \
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=0, mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for path in tqdm(paths, desc=f"packing {archive.name}", unit="file"):
            tar.add(path, arcname=str(path.relative_to(folder)), recursive=False, filter=_normalized)


def write_unused(out: str | Path, source: str) -> None:
    """The DVC out of a pipeline that does not use the synthetic corpus."""
    with atomic_path(out) as tmp:
        tmp.mkdir()
        (tmp / "README.txt").write_text(
            f"The synthetic corpus is not used: params dataset.source is {source!r}.\n")
