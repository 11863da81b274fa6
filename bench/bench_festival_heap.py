"""festival's start-up cost: the corpus stage's festival speakers with festival's default Scheme
heap (10 million cells) against kws.synthetic.tts.FESTIVAL_HEAP_CELLS, side by side, as a
markdown table. Each round synthesizes the first --speakers speakers of the default corpus that
festival speaks (one script per speaker, as the corpus stage does, without the placement step),
once per heap, in alternating order; the audio of both heaps must be the same, byte for byte.
    python bench/bench_festival_heap.py [--speakers 24] [--rounds 3]
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's kws

from kws.params import load_params  # noqa: E402
from kws.synthetic import speakers as sp  # noqa: E402
from kws.synthetic import tts  # noqa: E402
from kws.synthetic.corpus import check_params  # noqa: E402

SMALL_HEAP = tts.festival


# festival as the corpus stage ran it before FESTIVAL_HEAP_CELLS: no --heap
default_heap = functools.partial(tts.festival, heap_cells=None)


def synthesize_all(chosen, speakers, cfg, seed) -> tuple[float, str]:
    """(seconds, digest of all audio) for the chosen speakers."""
    h = hashlib.sha256()
    t = time.perf_counter()
    for sid in chosen:
        words = list(sp.speaker_words(sid, seed, cfg["other_words_per_speaker"]))
        for key, (x, rate) in sorted(sp.speaker_takes(speakers[sid], words, cfg["takes_per_word"], seed, sid,
                                                      cfg).items()):
            h.update(repr((sid, key, rate)).encode() + x.tobytes())
    return time.perf_counter() - t, h.hexdigest()[:16]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--speakers", type=int, default=24)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    p = load_params(args.params)
    cfg, seed = check_params(p["synthetic"]), p["seed"]
    speakers = sp.select_speakers(cfg, seed)
    chosen = sorted(s for s in speakers if tts.front_end(speakers[s].engine, speakers[s].voice) == "festival")
    chosen = chosen[: args.speakers]
    sp.place = lambda x, rate, *_: (x, rate)  # the raw engine audio: the heap is all that differs
    variants = {"default heap (10,000,000 cells)": default_heap,
                f"--heap {tts.FESTIVAL_HEAP_CELLS:,}": SMALL_HEAP}
    times = {name: [] for name in variants}
    digests = {name: set() for name in variants}
    for r in range(args.rounds):
        order = list(variants) if r % 2 == 0 else list(reversed(variants))
        for name in order:
            tts.festival = variants[name]
            seconds, digest = synthesize_all(chosen, speakers, cfg, seed)
            times[name].append(seconds)
            digests[name].add(digest)
    tts.festival = SMALL_HEAP
    same = len(set().union(*digests.values())) == 1
    base = statistics.median(times[next(iter(variants))])
    print(f"{len(chosen)} festival speakers, {args.rounds} rounds, alternating; same audio: {'yes' if same else 'NO'}\n")
    print("| festival | median s | s per speaker | ratio |")
    print("|---|---|---|---|")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"| {name} | {med:.2f} | {med / len(chosen):.3f} | {med / base:.2f} |")
    if not same:
        sys.exit("the two heaps gave different audio")


if __name__ == "__main__":
    main()
