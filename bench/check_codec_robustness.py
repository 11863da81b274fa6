"""Does a lossy codec's round trip move the trained model's accuracy? Speech Commands clips went
through a browser and a server before they became WAV files; if a codec's artefacts were what the
synthetic corpus lacks, the model would lose accuracy on synthetic clips sent through one. Sends
the synthetic test clips (data/dataset/test.npz) through ffmpeg's encoders and back, computes the
pipeline's features and scores the trained checkpoint (checkpoints/) on them. No real clip is used.
    python bench/check_codec_robustness.py
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's kws

from kws.checkpoints import latest_local_state  # noqa: E402
from kws.export import brevitas_logits, model_from_state  # noqa: E402
from kws.features import FeatureConfig, extract  # noqa: E402
from kws.files import to_model_layout  # noqa: E402
from kws.params import load_params  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CODECS = {  # name: ffmpeg output options
    "Ogg Vorbis, quality 0": ["-c:a", "libvorbis", "-q:a", "0", "-f", "ogg"],
    "Ogg Vorbis, quality 3": ["-c:a", "libvorbis", "-q:a", "3", "-f", "ogg"],
    "MP3, 32 kbit/s": ["-c:a", "libmp3lame", "-b:a", "32k", "-f", "mp3"],
    "Opus, 16 kbit/s": ["-c:a", "libopus", "-b:a", "16k", "-f", "ogg"],
}
GAP = 8000  # samples of silence before each clip, so that no codec frame spans two clips


def round_trip(audio: np.ndarray, options: list[str]) -> tuple[np.ndarray, float]:
    """(clips after encoding and decoding, bit rate in kbit/s): all clips as one stream."""
    n, samples = audio.shape
    stream = np.zeros((n, GAP + samples), np.int16)
    stream[:, GAP:] = audio
    pcm = ["-f", "s16le", "-ar", "16000", "-ac", "1"]
    encoded = subprocess.run(["ffmpeg", "-v", "error", *pcm, "-i", "-", *options, "-"], input=stream.tobytes(),
                             capture_output=True, check=True).stdout
    decoded = subprocess.run(["ffmpeg", "-v", "error", "-i", "-", *pcm, "-"], input=encoded,
                             capture_output=True, check=True).stdout
    out = np.frombuffer(decoded, np.int16)
    if len(out) < stream.size:
        raise SystemExit(f"ffmpeg {' '.join(options)}: decoded {len(out)} samples of {stream.size}")
    kbps = len(encoded) * 8 / (stream.size / 16000) / 1000
    return out[:stream.size].reshape(n, GAP + samples)[:, GAP:], kbps


def main() -> None:
    cfg = FeatureConfig.from_params(load_params(REPO / "params.yaml"))
    test = np.load(REPO / "data" / "dataset" / "test.npz")
    audio, length, labels = test["audio"], test["length"], test["label"]
    state, path = latest_local_state(REPO / "checkpoints")
    model, model_cfg = model_from_state(state, None, str(path))

    def score(clips: np.ndarray) -> tuple[float, np.ndarray]:
        x = extract(np.ascontiguousarray(clips), length, cfg, progress=False)
        logits = brevitas_logits(model, to_model_layout(x, (len(x), *model_cfg.input_shape)))
        return float((logits.argmax(1) == labels).mean()), x

    clean, x_clean = score(audio)
    print(f"{len(audio)} synthetic test clips, model {path}\n")
    print("| clips | kbit/s | accuracy | mean abs. change of c0 / c1-c9 |")
    print("|---|---|---|---|")
    print(f"| as written | | {clean:.4f} | |")
    for name, options in CODECS.items():
        clips, kbps = round_trip(audio, options)
        accuracy, x = score(clips)
        change = np.abs(x - x_clean).mean(axis=(0, 1))
        print(f"| {name} | {kbps:.1f} | {accuracy:.4f} | {change[0]:.2f} / {change[1:].mean():.2f} |")


if __name__ == "__main__":
    main()
