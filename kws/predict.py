"""Keywords in a recording: the trained model slid over it, window by window.

  1. Decode (kws.recording): any file ffmpeg reads -> int16 mono at features.sample_rate (soxr).
  2. Windows: one training clip long (features.clip_duration_ms, 1 s), one every predict.hop_ms.
     A recording no longer than a clip is one window, zero-padded with its length recorded,
     exactly as the dataset stage pads short clips. A longer one is windowed as if silence (zeros)
     came before and after it, from 1 s - hop before its start to one hop before its end, so a
     keyword said right at the start or end is heard by as many windows as one in the middle.
  3. Features: kws.features.extract, the training code itself (no noise mixing), so each window is
     normalised by its own peak as every training clip was.
  4. Model: onnxruntime on the QCDQ form of the QONNX model, batched (kws.qonnx_model).
  5. Score: the softmax of the model's logits; label: kws.scoring.predict (a tie goes to the last
     maximum, i.e. to Unknown over a keyword). A window without a positive sample (digital
     silence) has nothing to normalise by (the features would be NaN): it is Silence, score 1.
  6. Detections: consecutive windows whose label is the same keyword with a score of at least
     predict.threshold, at least predict.min_windows of them (fewer if the recording has fewer
     windows), make one detection. Its times are the audio every one of its windows holds (the
     last window's start to the first window's end: where the word must be), its score the
     highest of its windows.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from kws import params
from kws.recording import decode
from kws.common import KwsError
from kws.features import FeatureConfig, extract
from kws.files import to_model_layout
from kws.labels import KEYWORDS, LABELS, SILENCE
from kws.qonnx_model import input_shape, load_model, onnxruntime_session
from kws.scoring import predict

# windows per features + model call: bounds the memory of long recordings (512 1 s windows of
# int16 are 16 MB) and the model's batch (its onnxruntime session is built once for this size)
CHUNK = 512


@dataclass(frozen=True)
class Detection:
    start: float  # seconds
    end: float
    label: str
    score: float  # the highest softmax score of its windows
    windows: int  # how many windows it merges

    def line(self) -> str:
        return f"{self.start:.2f}-{self.end:.2f} s  {self.label}  {self.score:.2f}"

    def as_dict(self) -> dict:
        return {"start": round(self.start, 3), "end": round(self.end, 3), "label": self.label,
                "score": round(self.score, 4), "windows": self.windows}


@dataclass
class Result:
    path: str
    audio: np.ndarray = field(repr=False)  # int16 at sample_rate
    sample_rate: int
    window: float        # window length, seconds
    starts: np.ndarray   # window starts, seconds
    scores: np.ndarray   # (windows, classes) softmax of the logits
    labels: np.ndarray   # (windows,) predicted label index
    detections: list[Detection]

    @property
    def duration(self) -> float:
        return len(self.audio) / self.sample_rate


def window_starts(num_samples: int, size: int, hop: int) -> np.ndarray:
    """Start sample of each window; negative ones begin before the recording. A recording no
    longer than a window is one window at 0. A longer one is windowed as if silence came before
    and after it: from -(size - hop) every `hop` until a window holds only the last hop, so a word
    at either end is whole in as many windows as a word in the middle."""
    if num_samples <= size:
        return np.zeros(1, np.int64)
    return np.arange(-(size - hop), num_samples - hop + 1, hop, dtype=np.int64)


def cut(audio: np.ndarray, starts: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """int16 windows (len(starts), size), zeros outside the recording, and each window's length
    in the training clips' sense (samples up to the recording's end: the peak is taken over those)."""
    before = max(0, -int(starts.min()))
    after = max(0, int(starts.max()) + size - len(audio))
    padded = np.concatenate([np.zeros(before, np.int16), audio, np.zeros(after, np.int16)])
    windows = np.lib.stride_tricks.sliding_window_view(padded, size)[starts + before]
    return windows, np.minimum(len(audio) - starts, size).astype(np.int32)


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def merge(starts: np.ndarray, labels: np.ndarray, scores: np.ndarray, window: float,
          threshold: float, min_windows: int) -> list[Detection]:
    """Runs of consecutive windows whose label is the same keyword with a score >= threshold,
    at least min_windows long (or as many as the recording has: a short file is one window).
    `starts` in seconds, `window` the window's length in seconds."""
    need = min(min_windows, len(labels))
    top = scores[np.arange(len(labels)), labels]
    hit = np.where((labels < len(KEYWORDS)) & (top >= threshold), labels, -1)
    detections = []
    i = 0
    while i < len(hit):
        j = i
        while j + 1 < len(hit) and hit[j + 1] == hit[i]:
            j += 1
        if hit[i] >= 0 and j - i + 1 >= need:
            # the audio all of its windows share; a run whose windows span more than twice a
            # window's length shares none, and then its middle window stands for it
            lo, hi = starts[j], starts[i] + window
            if hi <= lo:
                mid = starts[(i + j) // 2]
                lo, hi = mid, mid + window
            detections.append(Detection(float(lo), float(hi), LABELS[hit[i]], float(top[i:j + 1].max()), j - i + 1))
        i = j + 1
    return detections


class Spotter:
    """A model and the settings to run it on recordings; the model's runtime is built once."""

    def __init__(self, model_path: str | os.PathLike, features: FeatureConfig,
                 settings: params.Predict | dict | None = None, threads: int | None = None):
        self.cfg = features
        self.settings = params.section(params.Predict, settings, "predict")
        self.size = features.desired_samples
        self.hop = int(round(self.settings.hop_ms * features.sample_rate / 1000))
        if self.hop < 1:
            raise KwsError(f"params predict.hop_ms: {self.settings.hop_ms} is less than one sample")
        if self.hop > self.size:
            raise KwsError(f"params predict.hop_ms: {self.settings.hop_ms} is longer than the window "
                           f"(features.clip_duration_ms {features.clip_duration_ms}): audio between windows would be skipped")
        self.model = load_model(model_path)
        self.shape = input_shape(self.model)
        try:  # the params' features must be what the model takes: said once, not once per file
            to_model_layout(np.zeros((1, *features.shape), np.float32), self.shape)
        except KwsError:
            raise KwsError(f"{model_path}: takes input {tuple(self.shape[1:])}, not params features: "
                           f"{features.feature_type} {features.shape}") from None
        self.threads = threads
        self._run = None

    def _logits(self, x: np.ndarray) -> np.ndarray:
        if self._run is None:
            self._run = onnxruntime_session(self.model, CHUNK, self.threads)
        batch = np.zeros((CHUNK, *x.shape[1:]), np.float32)
        batch[:len(x)] = x
        return self._run(batch)[:len(x)]

    def window_scores(self, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(window starts in seconds, softmax scores (windows, classes), labels) of int16 audio."""
        starts = window_starts(len(audio), self.size, self.hop)
        scores = np.zeros((len(starts), len(LABELS)), np.float32)
        scores[:, SILENCE] = 1.0
        for i in range(0, len(starts), CHUNK):
            chunk = starts[i:i + CHUNK]
            # only this chunk's stretch of the audio is copied (padded): long files stay cheap
            lo, hi = max(int(chunk[0]), 0), min(int(chunk[-1]) + self.size, len(audio))
            windows, lengths = cut(audio[lo:hi], chunk - lo, self.size)
            # no positive sample, no peak to divide by (x / max(x)): those windows stay Silence.
            # The zeros past the recording's end are never positive, so the whole window will do.
            keep = np.flatnonzero(windows.max(axis=1) > 0)
            if not len(keep):
                continue
            x = extract(windows[keep], lengths[keep], self.cfg, progress=False)
            x = to_model_layout(x, self.shape, "window features")
            scores[i + keep] = softmax(self._logits(x))
        labels, _ = predict(scores)
        return starts / self.cfg.sample_rate, scores, labels

    def detect(self, audio: np.ndarray, path: str = "") -> Result:
        starts, scores, labels = self.window_scores(audio)
        window = self.size / self.cfg.sample_rate
        detections = merge(starts, labels, scores, window, self.settings.threshold, self.settings.min_windows)
        # the silence around the recording is not part of it
        duration = len(audio) / self.cfg.sample_rate
        detections = [Detection(min(max(d.start, 0.0), duration), min(max(d.end, 0.0), duration), d.label, d.score,
                                d.windows) for d in detections]
        return Result(str(path), audio, self.cfg.sample_rate, window, starts, scores, labels, detections)

    def run(self, path: str | os.PathLike) -> Result:
        return self.detect(decode(path, self.cfg.sample_rate), str(path))


def plot(results: list[Result], path, threshold: float) -> None:
    """One panel per recording: its waveform, each window's top keyword score (at the window's
    centre) against the threshold, and its detections shaded and labelled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(results), 1, figsize=(12, 2.6 * len(results)), squeeze=False)
    for ax, r in zip(axes[:, 0], results):
        t = np.arange(len(r.audio)) / r.sample_rate
        ax.plot(t, r.audio / 32768.0, color="0.6", linewidth=0.5)
        ax.set_ylim(-1.05, 1.05)
        ax.set_xlim(0, max(r.duration, 1.0))
        ax.set_ylabel("waveform")
        ax.set_title(f"{r.path}: {len(r.detections)} detection(s)", fontsize=9, loc="left")
        score = ax.twinx()
        score.plot(r.starts + r.window / 2, r.scores[:, :len(KEYWORDS)].max(axis=1), color="tab:blue", linewidth=1,
                   label="top keyword score")
        score.axhline(threshold, color="tab:red", linestyle="--", linewidth=0.8, label="threshold")
        score.set_ylim(0, 1.05)
        score.set_ylabel("score")
        for d in r.detections:
            ax.axvspan(d.start, d.end, color="tab:orange", alpha=0.3)
            ax.text((d.start + d.end) / 2, 0.95, f"{d.label} {d.score:.2f}", ha="center", va="top", fontsize=8)
        score.legend(loc="lower right", fontsize=7)
    axes[-1, 0].set_xlabel("seconds")
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
