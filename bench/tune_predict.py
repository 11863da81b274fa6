"""How the predict: defaults were chosen, and how well they do on recordings not used to choose them.

  python bench/tune_predict.py [--model M] [--tuning 101-108] [--held_out 0-8]

Generates 60 s recordings (tests/recordings.py: 10 keywords among other words, several synthetic
voices, the corpus's background noise at 20-30 dB SNR). The TUNING recordings (their own seeds and
voices) pick threshold x min_windows; the HELD-OUT ones (other seeds, the test's voices; seed 0 is
tests/test_predict.py's recording) are then scored at the chosen defaults (params predict:) only.
Prints both tables (docs/predict.md quotes them)."""
from __future__ import annotations

import argparse
import itertools
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]  # this checkout's kws and its test recordings

import recordings  # noqa: E402
from kws.features import FeatureConfig  # noqa: E402
from kws.params import Params  # noqa: E402
from kws.predict import Spotter, merge  # noqa: E402

WINDOW = FeatureConfig().clip_duration_ms / 1000  # seconds


def seeds(text: str) -> list[int]:
    lo, _, hi = text.partition("-")
    return list(range(int(lo), int(hi or lo) + 1))


def windows(spotter: Spotter, seed_list, voices, snr) -> list:
    out = []
    for seed in seed_list:
        audio, words = recordings.recording(seed, voices=voices, snr_db=snr)
        out.append((words, *spotter.window_scores(audio)))
        print(f"  seed {seed}: noise {recordings.recording.last_noise}", file=sys.stderr, flush=True)
    return out


def evaluate(data, threshold: float, min_windows: int) -> tuple[float, float, float]:
    """(precision, recall, worst single-recording min(precision, recall)) over all recordings."""
    right = found = total = 0
    worst = 1.0
    for words, starts, scores, labels in data:
        s = recordings.score(merge(starts, labels, scores, WINDOW, threshold, min_windows), words)
        right, found, total = right + s["right"], found + s["detections"], total + s["keywords"]
        worst = min(worst, s["precision"], s["recall"])
    return right / max(found, 1), right / total, worst


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(REPO / "training_checkpoint" / "QONNX_model.onnx"), help="QONNX model")
    p.add_argument("--tuning", default="101-108", help="seeds of the tuning recordings (TUNING_VOICES)")
    p.add_argument("--held_out", default="0-8", help="seeds of the held-out recordings (TEST_VOICES)")
    p.add_argument("--snr", default=f"{recordings.SNR_DB[0]:g},{recordings.SNR_DB[1]:g}",
                   help="speech-to-noise range in dB, drawn per recording")
    args = p.parse_args()
    defaults = Params().predict
    spotter = Spotter(args.model, FeatureConfig(), defaults)
    print("tuning recordings:", file=sys.stderr)
    snr = tuple(float(v) for v in args.snr.split(","))
    tuning = windows(spotter, seeds(args.tuning), recordings.TUNING_VOICES, snr)
    print(f"\ntuning: {len(tuning)} recordings, seeds {args.tuning}, SNR {args.snr} dB, hop {defaults.hop_ms:g} ms\n")
    print("| threshold | min_windows | precision | recall | worst recording |")
    print("|---|---|---|---|---|")
    for threshold, min_windows in itertools.product((0.5, 0.6, 0.7, 0.8, 0.9), (1, 2, 3, 4, 5)):
        pr, rc, worst = evaluate(tuning, threshold, min_windows)
        mark = " (default)" if (threshold, min_windows) == (defaults.threshold, defaults.min_windows) else ""
        print(f"| {threshold:g}{mark} | {min_windows} | {pr:.2f} | {rc:.2f} | {worst:.2f} |")
    print("held-out recordings:", file=sys.stderr)
    held = windows(spotter, seeds(args.held_out), recordings.TEST_VOICES, snr)
    print(f"\nheld out at the defaults (threshold {defaults.threshold:g}, min_windows {defaults.min_windows}):\n")
    print("| seed | keywords | detections | right | precision | recall |")
    print("|---|---|---|---|---|---|")
    for seed, (words, starts, scores, labels) in zip(seeds(args.held_out), held):
        s = recordings.score(merge(starts, labels, scores, WINDOW, defaults.threshold, defaults.min_windows), words)
        print(f"| {seed} | {s['keywords']} | {s['detections']} | {s['right']} | {s['precision']:.2f} | {s['recall']:.2f} |")
    pr, rc, worst = evaluate(held, defaults.threshold, defaults.min_windows)
    print(f"| all | | | | {pr:.2f} | {rc:.2f} |")


if __name__ == "__main__":
    main()
