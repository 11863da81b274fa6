"""Stage features: the MLPerf Tiny v0.5 KWS reference preprocessing (get_dataset.py), in tf.signal.

Per clip, as the reference does it:
  1. int16 -> float32, divided by the clip's maximum sample (td_samples: by 2**15 instead);
     zero-padded to 16000 samples.
  2. The reference's fixed time shift: pad 2 zeros on each side, slice 16000 from offset 2.
     With those constants the shift is the identity; it is kept so the graph matches the reference.
  3. Training split only: mix in background noise (recording / 2**15, a random 1 s segment)
     times a volume that is uniform in [0, background_volume) for a background_frequency share
     of clips and 0 otherwise, then clip to [-1, 1] (every training clip is clipped, as in the
     reference, even at volume 0).
  4. mfcc: |STFT| (frame 480, step 320, periodic Hann, 512-point FFT) -> 40 mel bins 20-4000 Hz
     -> log(x + 1e-6) -> first 10 MFCCs: (49, 10).
     lfbe: pre-emphasis 1 - 2**-5 -> |STFT| with a symmetric Hamming window -> power / 480,
     floored at 1e-30 -> mel bins 0-8000 Hz -> 10 log10 -> (x + 52) / 64 clipped to [0, 1]: (49, 40).
     td_samples: the waveform itself: (16000, 1).

Deviations from the reference (on purpose):
  - Noise is drawn PER CLIP from a numpy Generator seeded with params `seed` (noise_plan), so the
    training set is reproducible byte for byte. The reference calls np.random inside a function
    that tf.data traces once, so all its training clips share one noise segment and one volume.
  - Features are computed once per split and stored, not re-drawn every epoch. Instead the
    training split can hold `train_copies` copies of every clip, each with its own noise draw
    (copy 1 is the single-copy split, so train_copies 1 gives the same bytes as before).
  - lfbe takes its mel bin count from `num_mel_bins` (40); the reference reuses
    dct_coefficient_count, i.e. it must be run with --dct_coefficient_count 40 to get 49x40.
  - The peak is taken over the clip's first `length` samples (the reference sees the unpadded
    clip); this only differs from the padded maximum for clips with no positive sample.
"""
from __future__ import annotations

import functools
import os
import warnings
import zipfile
from pathlib import Path

import numpy as np
from pydantic import ConfigDict, model_validator
from tqdm import tqdm

from kws import params
from kws.common import KwsError, atomic_path, save_npz
from kws.labels import NUM_CLASSES

FEATURE_TYPES = ("mfcc", "lfbe", "td_samples")
SPLITS = ("train", "validation", "test")
NOISE_FILE = "background_noise.npz"
TIME_SHIFT = 2  # the reference's fixed time_shift padding and offset
LFBE_PREEMPHASIS = 1 - 2**-5
LFBE_POWER_OFFSET = 52


# TensorFlow sizes its thread pools by the CPUs the process may use, and the shards they split
# an op into decide which values take Eigen's vectorised or scalar path (log, ...): bound to one
# CPU, the tiny pipeline's features came out up to 2e-6 apart. Pinned at the thread count of the
# 2-CPU machines that made dvc.lock, so taskset, a cpuset or more cores give the same bytes.
TF_THREADS = 2


def _tf():
    # imported lazily: input errors surface in well under a second, before TF's start-up and logs
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # TensorFlow turns its oneDNN kernels on by default only on CPUs with AVX512_VNNI, AVX_VNNI or
    # AMX, and they round otherwise than its Eigen kernels: off everywhere, one kernel path on every
    # x86 CPU (docs/reproducibility.md). Set before TensorFlow loads; it reads it once.
    os.environ["TF_ENABLE_ONEDNN_OPTS"] = "0"
    # google.api_core (imported by TensorFlow) warns that Python 3.11's support ends in 2027
    warnings.filterwarnings("ignore", message="You are using a Python version", category=FutureWarning)
    import tensorflow as tf

    if tf.config.threading.get_intra_op_parallelism_threads() != TF_THREADS:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(TF_THREADS)
            tf.config.threading.set_inter_op_parallelism_threads(TF_THREADS)
        except RuntimeError:  # TF already ran in this process (a test of another module): as it is
            pass
    return tf


class FeatureConfig(params.Features):
    """The `features:` params section (kws.params holds the fields, their types and defaults) with
    the sizes derived from it; frozen, so the traced TF graphs can be cached per config."""

    model_config = ConfigDict(frozen=True)

    @model_validator(mode="after")
    def _fits(self):
        if self.window_samples <= 0 or self.stride_samples <= 0 or self.desired_samples < self.window_samples:
            raise ValueError("window_size_ms: window_size_ms / window_stride_ms do not fit clip_duration_ms")
        if self.feature_type == "mfcc" and not self.dct_coefficient_count <= self.num_mel_bins:
            raise ValueError("dct_coefficient_count: must be in [1, num_mel_bins]")
        return self

    @classmethod
    def from_params(cls, params_: dict, feature_type: str | None = None) -> "FeatureConfig":
        section = dict(params_.get("features") or {})
        if feature_type is not None:
            section["feature_type"] = feature_type
        return params.section(cls, section, "features")

    @property
    def desired_samples(self) -> int:
        return int(self.sample_rate * self.clip_duration_ms / 1000)

    @property
    def window_samples(self) -> int:
        return int(self.sample_rate * self.window_size_ms / 1000)

    @property
    def stride_samples(self) -> int:
        return int(self.sample_rate * self.window_stride_ms / 1000)

    @property
    def shape(self) -> tuple[int, int]:
        """Per-clip feature shape in the reference layout: (frames, coeffs)."""
        if self.feature_type == "td_samples":
            return (self.desired_samples, 1)
        frames = 1 + (self.desired_samples - self.window_samples) // self.stride_samples
        coeffs = self.dct_coefficient_count if self.feature_type == "mfcc" else self.num_mel_bins
        return (frames, coeffs)


# ----------------------------------------------------------------------------- inputs

def _load_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise KwsError(f"{path}: file not found")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise KwsError(f"{path}: not a readable npz file ({type(e).__name__})") from None


def load_split(path: str | os.PathLike, cfg: FeatureConfig) -> dict[str, np.ndarray]:
    """Read and check one data/dataset/{split}.npz (the dataset stage's contract)."""
    path = Path(path)
    d = _load_npz(path)
    for key in ("audio", "length", "label", "file"):
        if key not in d:
            raise KwsError(f"{path}: missing array {key!r}")
    audio, length, label, file = d["audio"], d["length"], d["label"], d["file"]
    n, s = (len(audio) if audio.ndim else 0), cfg.desired_samples
    if audio.dtype != np.int16 or audio.shape != (n, s):
        raise KwsError(f"{path}: audio must be int16 (N, {s}), got {audio.dtype} {audio.shape}")
    for key, arr, kind in (("length", length, "iu"), ("label", label, "iu"), ("file", file, "U")):
        if arr.dtype.kind not in kind or arr.shape != (n,):
            raise KwsError(f"{path}: {key} must be ({n},) {'str' if kind == 'U' else 'integer'}, got {arr.dtype} {arr.shape}")
    if n == 0:
        raise KwsError(f"{path}: no clips")
    bad = np.flatnonzero((length < 1) | (length > s))
    if bad.size:
        raise KwsError(f"{path}: clip {file[bad[0]]}: length {length[bad[0]]} outside [1, {s}]")
    bad = np.flatnonzero((label < 0) | (label >= NUM_CLASSES))
    if bad.size:
        raise KwsError(f"{path}: clip {file[bad[0]]}: label {label[bad[0]]} outside [0, {NUM_CLASSES})")
    for i in range(0, n, 4096):  # chunked: a full masked copy of a real train split is GBs
        a, valid = audio[i:i + 4096], np.arange(s) < length[i:i + 4096, None]
        bad = np.flatnonzero(np.any(np.where(valid, 0, a), axis=1))
        if bad.size:
            raise KwsError(f"{path}: clip {file[i + bad[0]]}: non-zero samples after its length")
        if cfg.feature_type != "td_samples":
            bad = np.flatnonzero(np.where(valid, a, np.iinfo(np.int16).min).max(axis=1) == 0)
            if bad.size:  # x / max(x) would be NaN / inf
                raise KwsError(f"{path}: clip {file[i + bad[0]]}: maximum sample is 0 (all-zero clip?), cannot normalize by it")
    return {"audio": audio, "length": length.astype(np.int32), "label": label.astype(np.int64), "file": file}


def load_noise(path: str | os.PathLike, cfg: FeatureConfig) -> dict[str, np.ndarray]:
    """Read and check background_noise.npz: int16 1-D recordings longer than one clip, by name."""
    path = Path(path)
    noise = _load_npz(path)
    if not noise:
        raise KwsError(f"{path}: no background noise recordings")
    for name, rec in noise.items():
        if rec.dtype != np.int16 or rec.ndim != 1 or len(rec) <= cfg.desired_samples:
            raise KwsError(f"{path}: {name}: expected int16 (L,) with L > {cfg.desired_samples}, got {rec.dtype} {rec.shape}")
    return dict(sorted(noise.items()))


def noise_plan(num_clips: int, noise_lengths: list[int], cfg: FeatureConfig, rng: np.random.Generator):
    """Per clip: which recording, at which offset, at which volume (the reference's draws, in its
    order, but once per clip). Drawn up front so the result does not depend on batching."""
    lengths = np.asarray(noise_lengths, dtype=np.int64)
    index = rng.integers(len(lengths), size=num_clips)
    offset = rng.integers(0, lengths[index] - cfg.desired_samples)
    mixed = rng.random(num_clips) < cfg.background_frequency
    volume = np.where(mixed, rng.uniform(0, cfg.background_volume, num_clips), 0).astype(np.float32)
    return index, offset, volume


# ----------------------------------------------------------------------------- tf graph

def _filterbank(tf, spectrum, mel_w):
    """spectrum (..., bins) @ mel_w (bins, mels), summed in one order on every CPU.

    tf.tensordot runs oneDNN's sgemm even with TF_ENABLE_ONEDNN_OPTS=0, and oneDNN picks its code
    (AVX2, AVX-512) by the CPU at run time: the same clips gave other float32 features
    on an AVX-512 machine than on an AVX2 one (docs/reproducibility.md). TensorFlow's sparse matmul
    loops over the filterbank's nonzero weights itself, with no BLAS or oneDNN underneath."""
    bins, mels = mel_w.shape
    flat = tf.reshape(spectrum, [-1, bins])
    weights = tf.sparse.from_dense(tf.transpose(mel_w))  # (mels, bins), row-major index order
    out = tf.transpose(tf.sparse.sparse_dense_matmul(weights, flat, adjoint_b=True))  # (N, mels)
    return tf.reshape(out, tf.concat([tf.shape(spectrum)[:-1], [mels]], 0))


@functools.lru_cache(maxsize=None)
def _graphs(cfg: FeatureConfig):
    """(clean, noisy) tf.functions over a batch, traced once per config."""
    tf = _tf()
    s = cfg.desired_samples

    def waveform(audio, length):
        x = tf.cast(audio, tf.float32)
        if cfg.feature_type == "td_samples":
            x = x / 2.0**15
        else:
            valid = tf.sequence_mask(length, s)
            x = x / tf.reduce_max(tf.where(valid, x, -np.inf), axis=1, keepdims=True)
        x = tf.pad(x, [[0, 0], [TIME_SHIFT, TIME_SHIFT]])
        return x[:, TIME_SHIFT:TIME_SHIFT + s]

    def features(x):
        if cfg.feature_type == "td_samples":
            return x[..., None]
        if cfg.feature_type == "mfcc":
            mag = tf.abs(tf.signal.stft(x, cfg.window_samples, cfg.stride_samples, window_fn=tf.signal.hann_window))
            mel_w = tf.signal.linear_to_mel_weight_matrix(
                cfg.num_mel_bins, mag.shape[-1], cfg.sample_rate, cfg.lower_edge_hertz, cfg.upper_edge_hertz)
            log_mel = tf.math.log(_filterbank(tf, mag, mel_w) + 1e-6)
            return tf.signal.mfccs_from_log_mel_spectrograms(log_mel)[..., :cfg.dct_coefficient_count]
        x = tf.pad(x, [[0, 0], [1, 0]])
        x = x[:, 1:] - LFBE_PREEMPHASIS * x[:, :-1]
        hamming = functools.partial(tf.signal.hamming_window, periodic=False)
        mag = tf.abs(tf.signal.stft(x, cfg.window_samples, cfg.stride_samples, window_fn=hamming))
        power = (1 / cfg.window_samples) * tf.square(mag)
        power = tf.clip_by_value(power, 1e-30, tf.reduce_max(power, axis=[1, 2], keepdims=True))  # per clip
        mel_w = tf.signal.linear_to_mel_weight_matrix(
            cfg.num_mel_bins, mag.shape[-1], cfg.sample_rate, 0.0, cfg.sample_rate / 2.0)
        db = 10 * (tf.math.log(_filterbank(tf, power, mel_w)) / tf.math.log(10.0))
        return tf.clip_by_value((db + LFBE_POWER_OFFSET - 32 + 32.0) / 64.0, 0, 1)

    audio_spec = (tf.TensorSpec([None, s], tf.int16), tf.TensorSpec([None], tf.int32))

    @tf.function(input_signature=audio_spec)
    def clean(audio, length):
        return features(waveform(audio, length))

    @tf.function(input_signature=audio_spec + (
        tf.TensorSpec([None], tf.float32), tf.TensorSpec([None], tf.int64), tf.TensorSpec([None], tf.float32)))
    def noisy(audio, length, noise_flat, start, volume):
        # a loop of contiguous slices: ~4x faster than one tf.gather of B x 16000 indices
        segment = tf.map_fn(lambda i: noise_flat[i:i + s], start, fn_output_signature=tf.float32)
        x = segment * volume[:, None] + waveform(audio, length)
        return features(tf.clip_by_value(x, -1.0, 1.0))

    return clean, noisy


def extract(audio: np.ndarray, length: np.ndarray, cfg: FeatureConfig,
            noise: dict[str, np.ndarray] | None = None, plan=None, desc: str = "features",
            progress: bool = True) -> np.ndarray:
    """Features (N, *cfg.shape) float32 of int16 clips (N, samples), in batches through tf.
    With `noise` (name -> int16 recording) and `plan` (from noise_plan): the training-time mix."""
    tf = _tf()
    clean, noisy = _graphs(cfg)
    n = len(audio)
    out = np.empty((n, *cfg.shape), np.float32)
    if noise is not None:
        recs = list(noise.values())
        noise_flat = tf.constant(np.concatenate(recs).astype(np.float32) / 2.0**15)
        base = np.concatenate([[0], np.cumsum([len(r) for r in recs])[:-1]])
        index, offset, volume = plan
        start = (base[index] + offset).astype(np.int64)
    with tqdm(total=n, desc=desc, unit="clip", disable=not progress) as bar:
        for i in range(0, n, cfg.batch_size):
            sl = slice(i, i + cfg.batch_size)
            a, l = tf.constant(audio[sl]), tf.constant(length[sl], tf.int32)
            y = clean(a, l) if noise is None else noisy(a, l, noise_flat, start[sl], volume[sl])
            out[sl] = y.numpy().reshape(-1, *cfg.shape)
            bar.update(len(out[sl]))
    return out


# ----------------------------------------------------------------------------- outputs

def make_features(dataset_dir: str | os.PathLike, out_dir: str | os.PathLike, cfg: FeatureConfig, seed: int) -> dict:
    """The stage: data/dataset/{split}.npz -> out_dir/{split}.npz with x, y, file, feature_type.
    Every input is checked before any TF work; out_dir appears only when all splits are done."""
    dataset_dir = Path(dataset_dir)
    data = {split: load_split(dataset_dir / f"{split}.npz", cfg) for split in SPLITS}
    noise = load_noise(dataset_dir / NOISE_FILE, cfg)
    summary = {}
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        for split, d in data.items():
            y, file, desc = d["label"], d["file"], f"{split} {cfg.feature_type}"
            if split == "train":
                # copy k = every training clip with the k-th noise draw (one generator, drawn in turn)
                rng = np.random.default_rng(seed)
                lengths = [len(r) for r in noise.values()]
                copies = cfg.train_copies
                x = np.concatenate([
                    extract(d["audio"], d["length"], cfg, noise=noise, plan=noise_plan(len(y), lengths, cfg, rng),
                            desc=desc + (f" copy {k + 1}/{copies}" if copies > 1 else ""))
                    for k in range(copies)])
                y, file = np.tile(y, copies), np.tile(file, copies)
            else:
                x = extract(d["audio"], d["length"], cfg, desc=desc)
            if not np.isfinite(x).all():
                raise KwsError(f"{dataset_dir / split}.npz: non-finite {cfg.feature_type} features")
            save_npz(tmp / f"{split}.npz", x=x, y=y, file=file, feature_type=np.array(cfg.feature_type))
            summary[split] = {"clips": len(x), "shape": list(x.shape[1:])}
    return summary
