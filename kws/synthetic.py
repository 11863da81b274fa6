"""An offline Speech Commands v2 look-alike spoken by espeak-ng.

Speakers are espeak-ng voice x variant x pitch x speed; every file is a pure function of
(params, seed, file name), so the corpus is byte-identical whatever the worker scheduling.
Layout (like speech_commands_v0.02 + speech_commands_test_set_v0.02):
  train/<word>/<speaker>_nohash_<n>.wav, train/{validation,testing}_list.txt,
  train/_background_noise_/*.wav, test/{<keyword>,_silence_,_unknown_}/*.wav
"""
from __future__ import annotations

import hashlib
import io
import itertools
import multiprocessing
import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np
from tqdm import tqdm

from kws.common import KwsError, atomic_path
from kws.labels import ALL_WORDS, BACKGROUND_NOISE_DIR, KEYWORDS, OTHER_WORDS, SILENCE_DIR, UNKNOWN_DIR

SAMPLE_RATE = 16000
ESPEAK_RATE = 22050
# English voices that really synthesise here (the mbrola ones need data Debian does not ship
# and silently fall back to en-gb); variants and voices are probed by check_voices().
VOICES = ("en-gb", "en-us", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-rp", "en-gb-x-gbcwmd",
          "en-029", "en-us-nyc")
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5",
            "klatt", "klatt2", "klatt3", "klatt4", "croak", "grandma", "grandpa", "Andy", "Annie",
            "steph", "linda", "quincy", "norbert", "travis", "victor", "zac")
PITCHES = (30, 50, 70)   # espeak-ng -p, 0..99
SPEEDS = (130, 160, 190)  # espeak-ng -s, words per minute
# tfds puts the silence cut from running_tap.wav into validation, the rest into train.
NOISE_KINDS = ("white_noise", "pink_noise", "brown_noise", "electric_hum", "running_tap", "babble")
BABBLE_WORDS = ("the", "and", "that", "have", "with", "this", "from", "they", "would", "there",
                "their", "what", "about", "which", "when", "make", "like", "time", "just", "know",
                "people", "year", "take", "them", "some", "could", "than", "then", "look", "only")


# ---------------------------------------------------------------- speakers

def speaker_spec(voice: str, variant: str, pitch: int, speed: int) -> str:
    return f"{voice}+{variant} p{pitch} s{speed}"


def all_speakers() -> list[tuple[str, str, int, int]]:
    """Every available speaker (voice, variant, pitch, speed), in a fixed order."""
    return list(itertools.product(VOICES, VARIANTS, PITCHES, SPEEDS))


def speaker_id(speaker: tuple, seed: int) -> str:
    return hashlib.sha256(f"{speaker_spec(*speaker)}|seed={seed}".encode()).hexdigest()[:8]


def select_speakers(num_speakers: int, seed: int) -> dict[str, tuple]:
    """A deterministic subset: speaker id -> (voice, variant, pitch, speed)."""
    pool = all_speakers()
    if not 3 <= num_speakers <= len(pool):
        raise KwsError(f"synthetic.num_speakers: {num_speakers} must be in [3, {len(pool)}]")
    order = np.random.default_rng(seed).permutation(len(pool))[:num_speakers]
    chosen = {speaker_id(pool[i], seed): pool[i] for i in order}
    if len(chosen) != num_speakers:
        raise KwsError(f"seed {seed}: speaker id collision, pick another seed")
    return dict(sorted(chosen.items()))


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


# ---------------------------------------------------------------- audio

def espeak(text: str, voice: str, pitch: int = 50, speed: int = 160) -> np.ndarray:
    """espeak-ng's 22050 Hz output as float64 in [-1, 1]."""
    cmd = ["espeak-ng", "-v", voice, "-p", str(pitch), "-s", str(speed), "--stdout", text]
    try:
        out = subprocess.run(cmd, capture_output=True, check=True, timeout=60).stdout
    except FileNotFoundError:
        raise KwsError("espeak-ng not found: install it (apt-get install espeak-ng)") from None
    except subprocess.CalledProcessError as e:
        raise KwsError(f"espeak-ng -v {voice} failed: {e.stderr.decode().strip()}") from None
    with wave.open(io.BytesIO(out)) as w:  # the header's frame count is bogus on stdout
        if w.getframerate() != ESPEAK_RATE or w.getsampwidth() != 2:
            raise KwsError(f"espeak-ng -v {voice}: unexpected output format {w.getparams()}")
        pcm = out[44:]
    return np.frombuffer(pcm[: len(pcm) // 2 * 2], "<i2") / 32768.0


def check_voices() -> None:
    """Fail if a listed voice or variant does not really synthesise: espeak-ng falls back to a
    default voice silently, so every voice and every variant must sound different."""
    seen = {}
    for v in [*VOICES, *(f"en-us+{x}" for x in VARIANTS)]:
        x = espeak("forward marvin", v)
        key = hashlib.sha256(x.tobytes()).hexdigest()
        if x.size < ESPEAK_RATE // 4 or np.abs(x).max() < 0.05:
            raise KwsError(f"espeak-ng voice {v}: produces no audio")
        if key in seen:
            raise KwsError(f"espeak-ng voice {v}: sounds exactly like {seen[key]} (not installed?)")
        seen[key] = v


def _resample_table(up: int, down: int, half_width: int = 64, beta: float = 8.0) -> np.ndarray:
    """Kaiser-windowed sinc taps for each of the `up` output phases (polyphase resampler)."""
    cutoff = 0.92 * min(1.0, up / down)  # of the input Nyquist: a margin below 8 kHz
    frac = np.arange(up)[:, None] * down % up / up  # fractional input position per phase
    u = frac - np.arange(-half_width + 1, half_width + 1)[None, :]  # distance to each tap
    window = np.i0(beta * np.sqrt(np.clip(1 - (u / half_width) ** 2, 0, None))) / np.i0(beta)
    return cutoff * np.sinc(cutoff * u) * window


_TABLE = None


def resample(x: np.ndarray, rate_in: int = ESPEAK_RATE, rate_out: int = SAMPLE_RATE) -> np.ndarray:
    """Band-limited resampling with a fixed polyphase table: deterministic, numpy only."""
    global _TABLE
    g = np.gcd(rate_in, rate_out)
    up, down = rate_out // g, rate_in // g
    if _TABLE is None or _TABLE.shape[0] != up:
        _TABLE = _resample_table(up, down)
    half = _TABLE.shape[1] // 2
    n = np.arange(len(x) * up // down)
    xp = np.concatenate([np.zeros(half), x, np.zeros(half + 1)])
    windows = np.lib.stride_tricks.sliding_window_view(xp, 2 * half)  # a view, no copy
    # output n sits between input n*down//up and the next one: taps from there -half+1..half;
    # chunks bound the gathered (n, taps) memory for long noise recordings
    return np.concatenate([np.einsum("nk,nk->n", _TABLE[c * down % up], windows[c * down // up + 1])
                           for c in np.array_split(n, max(1, len(n) // 32768))] or [np.zeros(0)])


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


def utterance(speaker: tuple, word: str, rng: np.random.Generator) -> np.ndarray:
    """One take: jittered pitch/speed, trimmed, resampled, at a random offset and gain in 1 s."""
    voice, variant, pitch, speed = speaker
    pitch = int(np.clip(pitch + rng.integers(-6, 7), 0, 99))
    speed = int(speed + rng.integers(-10, 11))
    while True:  # a slow speaker saying "backward" may not fit: speak faster, deterministically
        x = resample(trim(espeak(word, f"{voice}+{variant}", pitch, speed)))
        if len(x) <= SAMPLE_RATE:
            break
        speed += 30
    x = x / np.abs(x).max() * rng.uniform(0.1, 0.9)
    out = np.zeros(SAMPLE_RATE)
    start = rng.integers(0, SAMPLE_RATE - len(x) + 1)
    out[start:start + len(x)] = x
    out += rng.normal(0, rng.uniform(3e-4, 2e-3), SAMPLE_RATE)  # a mic's noise floor
    return to_int16(out)


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
            spk = all_speakers()[rng.integers(len(all_speakers()))]
            v = resample(espeak(words, f"{spk[0]}+{spk[1]}", spk[2], spk[3]))
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


def _make_utterance(task) -> None:
    root, seed, sid, speaker, word, take = task
    audio = utterance(speaker, word, _rng(seed, sid, word, take))
    write_wav(Path(root) / "train" / word / f"{sid}_nohash_{take}.wav", audio)


def _make_noise(task) -> None:
    root, seed, kind, seconds = task
    write_wav(Path(root) / "train" / BACKGROUND_NOISE_DIR / f"{kind}.wav",
              to_int16(noise(kind, seconds, _rng(seed, "noise", kind))))


def _make_silence(task) -> None:
    # fresh noise (own stream), never the train recordings: no train/test overlap
    root, seed, i = task
    rng = _rng(seed, "test_silence", i)
    kind = NOISE_KINDS[i % len(NOISE_KINDS)]
    clip = noise(kind, 1.0, rng) * rng.uniform(0.05, 1.0)
    write_wav(Path(root) / "test" / SILENCE_DIR / f"{kind}_{i:04d}_nohash_0.wav", to_int16(clip))


def _run(fn, tasks, workers: int, desc: str) -> None:
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        for _ in tqdm(pool.imap_unordered(fn, tasks, chunksize=8), total=len(tasks), desc=desc):
            pass


def build_corpus(out: str | Path, cfg: dict, seed: int, workers: int = 2) -> dict:
    """Write the whole corpus into `out` (atomically); returns a small summary."""
    for key in ("num_speakers", "takes_per_word", "validation_fraction", "test_fraction",
                "noise_seconds", "test_silence_clips", "test_unknown_clips"):
        if key not in cfg:
            raise KwsError(f"params synthetic.{key}: missing")
    takes = int(cfg["takes_per_word"])
    if takes < 1 or cfg["noise_seconds"] < 2:
        raise KwsError("params synthetic: takes_per_word must be >= 1 and noise_seconds >= 2")
    check_voices()
    speakers = select_speakers(int(cfg["num_speakers"]), seed)
    split = split_speakers(list(speakers), cfg["validation_fraction"], cfg["test_fraction"], seed)
    with atomic_path(out) as tmp:
        train = tmp / "train"
        tasks = [(str(tmp), seed, sid, spk, w, t) for sid, spk in speakers.items()
                 for w in ALL_WORDS for t in range(takes)]
        _run(_make_utterance, tasks, workers, "utterances")
        _run(_make_noise, [(str(tmp), seed, k, cfg["noise_seconds"]) for k in NOISE_KINDS], workers, "noise")
        _run(_make_silence, [(str(tmp), seed, i) for i in range(int(cfg["test_silence_clips"]))],
             workers, "test silence")
        rel = {s: [] for s in ("train", "validation", "test")}
        for sid in speakers:
            for w in ALL_WORDS:
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
        (tmp / "README.txt").write_text(
            f"Synthetic Speech Commands v2 look-alike (espeak-ng), seed {seed}.\n"
            f"{len(speakers)} speakers: {sum(v == 'train' for v in split.values())} train, "
            f"{sum(v == 'validation' for v in split.values())} validation, "
            f"{sum(v == 'test' for v in split.values())} test.\n")
    return {"speakers": len(speakers), "files": {k: len(v) for k, v in rel.items()},
            "test_unknown": n_unknown}


def write_unused(out: str | Path, source: str) -> None:
    """The DVC out of a pipeline that does not use the synthetic corpus."""
    with atomic_path(out) as tmp:
        tmp.mkdir()
        (tmp / "README.txt").write_text(
            f"The synthetic corpus is not used: params dataset.source is {source!r}.\n")
