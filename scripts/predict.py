"""Find keywords in recordings with a trained model.

  python -m scripts.predict [--model training_checkpoint/QONNX_model.onnx] AUDIO...

Any file ffmpeg reads (wav, mp3, flac, ogg, m4a, ...) at any sample rate and channel count. The
model sees 1 s windows every predict.hop_ms (100 ms), with the training features (kws/features.py).
Score: the softmax of the model's logits, i.e. the model's probability of its top label. A
detection is a run of at least predict.min_windows consecutive windows whose top label is the same
keyword with a score of at least predict.threshold; it is printed as
  0.20-1.10 s  Stop  0.93
(the audio its windows share, the keyword, its highest window score), one line per detection;
with several files each line starts with the file's name. A file that cannot be read gets one
error line; the others are still processed and the exit status is 1. Details: docs/predict.md."""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

from kws.common import KwsError, HelpFormatter, atomic_path, run_cli
from kws.features import FeatureConfig
from kws.params import Params, load_params

DEFAULTS = Params().predict


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("audio", nargs="+", metavar="AUDIO", help="recordings to search (any format ffmpeg reads)")
    p.add_argument("--model", default="training_checkpoint/QONNX_model.onnx",
                   help="the QONNX model (make repro or dvc pull builds it)")
    p.add_argument("--params", default="params.yaml",
                   help="params file whose features: and predict: sections apply (no params.yaml: the schema's values)")
    p.add_argument("--hop_ms", type=float, help=f"window hop in ms (default: params predict.hop_ms, {DEFAULTS.hop_ms:g})")
    p.add_argument("--threshold", type=float,
                   help=f"lowest window score (softmax of the logits, 0-1) that counts (default: params predict.threshold, {DEFAULTS.threshold:g})")
    p.add_argument("--min_windows", type=int,
                   help=f"consecutive windows a detection needs (default: params predict.min_windows, {DEFAULTS.min_windows})")
    p.add_argument("--json", action="store_true",
                   help="write JSON lines instead: one object per detection with file, start, end, label, score, windows")
    p.add_argument("--plot", help="PNG: each file's waveform and window scores with its detections marked")
    p.add_argument("--threads", type=int, help="onnxruntime threads (default: one per core)")
    return p.parse_args()


def settings(args) -> tuple[FeatureConfig, dict]:
    if args.params == "params.yaml" and not Path(args.params).is_file():
        params = {}  # outside the repository: the schema's defaults, which trained the shipped model
    else:
        params = load_params(args.params)
    predict = dict(params.get("predict") or {})
    for key in ("hop_ms", "threshold", "min_windows"):
        if getattr(args, key) is not None:
            predict[key] = getattr(args, key)
    return FeatureConfig.from_params(params), predict


def main() -> None:
    args = parse_args()
    features, predict = settings(args)
    if not Path(args.model).is_file():
        raise KwsError(f"{args.model}: model file not found (make repro builds it; dvc pull restores the shipped one)")
    # TensorFlow's import pulls in google.api_core, which warns about Python 3.11's end of life
    # (2027): nothing a user of this command can act on
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"google\.api_core")
    from kws.predict import Spotter  # after the arguments: --help and bad options answer at once

    spotter = Spotter(args.model, features, predict, threads=args.threads)
    results, failed = [], 0
    for path in args.audio:
        try:
            result = spotter.run(path)
        except KwsError as e:
            print(f"error: {e}", file=sys.stderr)
            failed += 1
            continue
        results.append(result)
        prefix = f"{path}  " if len(args.audio) > 1 else ""
        for d in result.detections:
            if args.json:
                print(json.dumps({"file": str(path), **d.as_dict()}))
            else:
                print(prefix + d.line())
        sys.stdout.flush()
        n = len(result.detections)
        w = len(result.starts)
        print(f"{path}: {n} detection{'s' * (n != 1)} in {result.duration:.2f} s ({w} window{'s' * (w != 1)})",
              file=sys.stderr)
    if args.plot and results:
        from kws.predict import plot

        with atomic_path(args.plot) as tmp:
            plot(results, tmp, spotter.settings.threshold)
    if failed:
        raise KwsError(f"{failed} of {len(args.audio)} file(s) could not be processed")


if __name__ == "__main__":
    run_cli(main)
