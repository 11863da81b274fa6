"""Does what a recording chain does to speech move the trained model's accuracy? Speech Commands
clips were recorded in web browsers, which run WebRTC's audio processing (noise suppression,
automatic gain, a high-pass filter) on microphone input by default, and went through a server
before they became WAV files. If such a chain's artefacts were what the synthetic corpus lacks,
the model would lose accuracy on synthetic clips sent through it. Sends the synthetic test clips
(data/dataset/test.npz) through ffmpeg's lossy encoders and back, and through WebRTC's processing
(PyPI webrtc-noise-gain, if installed: all clips as one stream, as one recording session),
computes the pipeline's features and scores the trained checkpoint (checkpoints/) on them. No real
clip is used.
    python bench/check_channel_robustness.py
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
WEBRTC = ((0, 1), (0, 3), (3, 2))  # (automatic gain target in -dBFS, 0: off; noise suppression level 0-4)
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


def webrtc(audio: np.ndarray, auto_gain_dbfs: int, noise_suppression: int) -> np.ndarray:
    """The clips through one WebRTC audio processor, 10 ms at a time, in order."""
    import webrtc_noise_gain
    processor = webrtc_noise_gain.AudioProcessor(auto_gain_dbfs, noise_suppression)
    out = np.empty_like(audio)
    for i, clip in enumerate(audio):
        pcm = clip.tobytes()
        out[i] = np.frombuffer(b"".join(processor.Process10ms(pcm[j:j + 320]).audio
                                        for j in range(0, len(pcm), 320)), np.int16)
    return out


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
    print("| clips | codec kbit/s | accuracy | mean abs. change of c0 / c1-c9 |")
    print("|---|---|---|---|")
    print(f"| as written | | {clean:.4f} | |")
    chains = {name: lambda options=options: round_trip(audio, options) for name, options in CODECS.items()}
    try:
        import webrtc_noise_gain  # noqa: F401
        for gain, level in WEBRTC:
            name = f"WebRTC noise suppression {level}" + (f", automatic gain to -{gain} dBFS" if gain else "")
            chains[name] = lambda gain=gain, level=level: (webrtc(audio, gain, level), None)
    except ImportError:
        print("(webrtc-noise-gain is not installed: `pip install webrtc-noise-gain==1.3.0` adds WebRTC's rows)\n")
    for name, chain in chains.items():
        clips, kbps = chain()
        accuracy, x = score(clips)
        change = np.abs(x - x_clean).mean(axis=(0, 1))
        rate = f"{kbps:.1f}" if kbps else ""
        print(f"| {name} | {rate} | {accuracy:.4f} | {change[0]:.2f} / {change[1:].mean():.2f} |")


if __name__ == "__main__":
    main()
