"""Accuracy of a trained checkpoint on a synthetic split, per TTS engine: which engines' held-out
speakers the model hears well. Each clip's speaker (the 8 hex digits before `_nohash_`, or after
the word in the test folder's _unknown_ names) is looked up in the corpus's README.txt.

    python bench/score_by_engine.py [--split validation] [--repo .]
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's kws

from kws.checkpoints import latest_local_state  # noqa: E402
from kws.export import brevitas_logits, model_from_state  # noqa: E402
from kws.files import to_model_layout  # noqa: E402

SPEAKER = re.compile(r"([0-9a-f]{8})_nohash_")
NEURAL = ("kokoro", "kokoro_en", "piper")  # the optional neural engines, scored apart from the default's


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", default=".", help="a pipeline's folder: data/, checkpoints/")
    ap.add_argument("--split", default="validation", choices=("validation", "test"))
    args = ap.parse_args()
    repo = Path(args.repo)
    engine_of = {}
    for line in (repo / "data/synthetic_corpus/README.txt").read_text().splitlines()[2:]:
        sid, _, spec = line.split(" ", 2)
        engine_of[sid] = spec.split(":")[0]
    z = np.load(repo / f"data/features/{args.split}.npz")
    state, path = latest_local_state(repo / "checkpoints")
    model, cfg = model_from_state(state, None, str(path))
    right = brevitas_logits(model, to_model_layout(z["x"], (len(z["x"]), *cfg.input_shape))).argmax(1) == z["y"]
    engines = np.array([engine_of[m.group(1)] if (m := SPEAKER.search(f)) else "silence" for f in z["file"]])
    print(f"{args.split}: {len(right)} clips, model {path}: accuracy {right.mean():.4f}\n")
    print("| engine | clips | accuracy |\n|---|---|---|")
    for e in sorted(set(engines)):
        print(f"| {e} | {(engines == e).sum()} | {right[engines == e].mean():.4f} |")
    others = ~np.isin(engines, NEURAL)
    print(f"| all but {', '.join(NEURAL)} | {others.sum()} | {right[others].mean():.4f} |")


if __name__ == "__main__":
    main()
