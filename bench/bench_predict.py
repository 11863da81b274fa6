"""Benchmark scripts/predict.py: a 60 s recording on ONE core, in times real time.

  python bench/bench_predict.py [--model M] [--repeats 5]

The recording: tests/recordings.py's 60 s of several voices and noise (the test's seed 0), written
as a 44.1 kHz stereo mp3 (what a phone or a browser records) and as a 16 kHz mono wav. The process
is pinned to one CPU (sched_setaffinity, inherited by ffmpeg) and onnxruntime runs one thread;
TensorFlow keeps the 2 threads kws/features.py pins (they share the one CPU). Timed per file, once
the model is loaded and the features' graph traced: decode (pydub/ffmpeg + soxr), then windows +
features + model + merge; medians of --repeats runs. The command's start-up (importing TensorFlow,
loading the model) is timed once, apart: it does not grow with the recording."""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]  # this checkout's kws and its test recordings
CPU = sorted(os.sched_getaffinity(0))[0]
os.sched_setaffinity(0, {CPU})  # before any library starts its threads

import recordings  # noqa: E402
from kws.recording import decode  # noqa: E402
from kws.features import FeatureConfig  # noqa: E402
from kws.params import Params  # noqa: E402
from kws.predict import Spotter  # noqa: E402

TARGET = 100  # x real time (issue 26)


def write_files(folder: Path) -> tuple[list[Path], float]:
    audio, words = recordings.recording(seed=0, voices=recordings.TEST_VOICES)
    wav = folder / "sixty_16k_mono.wav"
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(audio.astype("<i2").tobytes())
    mp3 = folder / "sixty_44k1_stereo.mp3"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-i", str(wav), "-ar", "44100", "-ac", "2", str(mp3)], check=True)
    return [mp3, wav], len(audio) / 16000


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(REPO / "training_checkpoint" / "QONNX_model.onnx"), help="QONNX model")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per file (median)")
    args = p.parse_args()
    if not Path(args.model).is_file():
        sys.exit(f"{args.model}: not found (make repro, or dvc pull training_checkpoint/QONNX_model.onnx)")
    settings = Params().predict
    with tempfile.TemporaryDirectory(prefix="bench_predict_") as tmp:
        files, seconds = write_files(Path(tmp))
        spotter = Spotter(args.model, FeatureConfig(), settings, threads=1)
        spotter.run(files[0])  # warm-up: TensorFlow traces the features' graph, onnxruntime builds its session
        print(f"model {args.model}; {seconds:.0f} s recording; CPU {CPU} only (sched_setaffinity), onnxruntime 1 "
              f"thread; hop {settings.hop_ms:g} ms; medians of {args.repeats} runs\n")
        print("| file | decode s | windows + features + model s | total s | x real time |")
        print("|---|---|---|---|---|")
        worst = float("inf")
        for path in files:
            dec, det, tot = [], [], []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                audio = decode(path)
                t1 = time.perf_counter()
                result = spotter.detect(audio, str(path))
                t2 = time.perf_counter()
                dec.append(t1 - t0)
                det.append(t2 - t1)
                tot.append(t2 - t0)
            total = statistics.median(tot)
            worst = min(worst, seconds / total)
            print(f"| {path.name} ({len(result.starts)} windows, {len(result.detections)} detections) | "
                  f"{statistics.median(dec):.3f} | {statistics.median(det):.3f} | {total:.3f} | {seconds / total:.0f}x |")
        t = time.perf_counter()
        r = subprocess.run(["taskset", "-c", str(CPU), sys.executable, "-m", "scripts.predict", "--model", args.model,
                            "--threads", "1", str(files[0])], cwd=REPO, capture_output=True, text=True)
        cold = time.perf_counter() - t
    if r.returncode != 0:
        sys.exit(f"scripts.predict failed: {r.stderr.strip().splitlines()[-1]}")
    print(f"\nthe whole command on the mp3, once, cold (start-up included): {cold:.1f} s")
    if worst < TARGET:
        print(f"note: below the {TARGET}x target", file=sys.stderr)


if __name__ == "__main__":
    main()
