"""Score our exported QONNX model on real speech: the FINN fixture's 200 BIN files.

The BIN files are MLPerf MFCC features of real Speech Commands test clips, quantized with the
fixture model's input quantizer: they are dequantized with THAT quantizer, then run through our
model (which re-quantizes with its own). 200 clips: +-3 points is noise."""
import argparse
import os
import sys

from kws.common import HelpFormatter, run_cli
from kws.files import write_json
from kws.real_speech import check_real_speech


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--model", default="training_checkpoint/QONNX_model.onnx", help="the QONNX model to score")
    ap.add_argument("--bin_dir", required=True, help="folder with tst_*.bin and y_labels.csv")
    ap.add_argument("--fixture_model", required=True, help="QONNX model whose input Quant made the BIN files")
    ap.add_argument("--metrics", default="metrics/real_speech.json", help="accuracy, per label and the confusion matrix (JSON)")
    ap.add_argument("--plot", default="plots/real_speech_confusion.png", help="confusion matrix PNG")
    args = ap.parse_args()
    if not (os.path.isfile(args.fixture_model) and os.path.isdir(args.bin_dir)):
        note = f"real-speech fixture not found ({args.fixture_model}, {args.bin_dir})"
        if os.environ.get("CI", "").lower() == "true":
            print(f"error: {note}; it is required under CI", file=sys.stderr)
            sys.exit(1)
        print(f"note: {note}: skipped")
        write_json(args.metrics, {"skipped": note})
        return
    out = check_real_speech(args.model, args.bin_dir, args.fixture_model, args.metrics, args.plot)
    print(f"real speech: {out['correct']}/{out['num_files']} = {out['accuracy']:.3f} "
          f"(200 clips: +-3 points is noise)")


if __name__ == "__main__":
    run_cli(main)
