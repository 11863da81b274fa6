"""Does festival give the same audio run after run? Synthesizes the first --speakers speakers of
the default corpus that festival speaks (its own voices and MBROLA's *_mbrola voices), each
--runs times in fresh festival processes, exactly as the corpus stage does (one script per
speaker), and counts the items whose audio differs between runs.

  python bench/check_festival_determinism.py [--speakers 40 | --speaker SID ...] [--runs 4] [--without-perturb]

--without-perturb runs festival without glibc's malloc perturb (kws.synthetic.tts.festival_env),
as the corpus stage did before: the nondeterminism docs/reproducibility.md describes."""
from __future__ import annotations

import argparse
import hashlib
import sys
from collections import defaultdict
from pathlib import Path

from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's kws

from kws.params import load_params  # noqa: E402
from kws.synthetic import speakers as sp  # noqa: E402
from kws.synthetic import tts  # noqa: E402
from kws.synthetic.corpus import check_params  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--speakers", type=int, default=40)
    ap.add_argument("--speaker", nargs="+", help="these speaker ids instead (e.g. f4752b67, whose 'left' varied)")
    ap.add_argument("--runs", type=int, default=4)
    ap.add_argument("--without-perturb", action="store_true")
    args = ap.parse_args()
    if args.without_perturb:
        tts.festival_env = lambda: None  # the environment the corpus stage used before
    p = load_params(args.params)
    cfg, seed = check_params(p["synthetic"]), p["seed"]
    speakers = sp.select_speakers(cfg, seed)
    chosen = sorted(s for s in speakers if tts.front_end(speakers[s].engine, speakers[s].voice) == "festival")
    chosen = args.speaker or chosen[: args.speakers]
    seen = defaultdict(set)
    for _ in tqdm(range(args.runs), desc="runs"):
        for sid in tqdm(chosen, desc="speakers", leave=False):
            words = list(sp.speaker_words(sid, seed, cfg["other_words_per_speaker"]))
            for key, x in sp.speaker_takes(speakers[sid], words, cfg["takes_per_word"], seed, sid, cfg).items():
                seen[(sid, *key)].add(hashlib.sha256(x.tobytes()).hexdigest())
    differing = sorted(k for k, v in seen.items() if len(v) > 1)
    mode = "without" if args.without_perturb else "with"
    print(f"{mode} malloc perturb: {len(chosen)} speakers, {len(seen)} items, {args.runs} runs each: "
          f"{len(differing)} items differ between runs")
    for sid, word, take in differing:
        s = speakers[sid]
        print(f"  {sid} {s.engine}/{s.voice} {word} take {take}: {len(seen[(sid, word, take)])} versions")


if __name__ == "__main__":
    main()
