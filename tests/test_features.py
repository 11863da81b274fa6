"""Stage features against an independent per-clip tf.signal computation of the MLPerf Tiny reference."""
import functools
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from kws.common import save_npz
from kws.features import FeatureConfig, extract, noise_plan

REPO = Path(__file__).resolve().parents[1]
S = 16000
SHAPES = {"mfcc": (49, 10), "lfbe": (49, 40), "td_samples": (S, 1)}


def make_clips(n, seed):
    """Sums of sines plus a chirp, int16, some shorter than 1 s (zero-padded, as the contract says)."""
    rng = np.random.default_rng(seed)
    t = np.arange(S) / S
    audio, length = np.zeros((n, S), np.int16), np.full(n, S, np.int32)
    for i in range(n):
        x = sum(np.sin(2 * np.pi * f * t + i) for f in rng.uniform(100, 3500, 3))
        x = x + 0.5 * np.sin(2 * np.pi * (100 + 2000 * t) * t)
        x = x - 0.8 * (i % 3 == 0)  # every third clip: min well below -max, so clipping to [-1, 1] shows
        length[i] = S if i % 2 else rng.integers(8000, S)
        audio[i, :length[i]] = np.round(x / np.abs(x).max() * rng.uniform(3000, 30000))[:length[i]]
    return audio, length


def reference(clip, n, feature_type, noise=None):
    """One clip the way get_dataset.py does it, written independently of kws.features."""
    import tensorflow as tf

    x = clip[:n].astype(np.float32)
    x = x / np.float32(2**15) if feature_type == "td_samples" else x / x.max()
    x = np.pad(x, (0, S - n))
    if noise is not None:
        x = np.clip(x + noise, -1, 1)
    if feature_type == "td_samples":
        return x[:, None]
    if feature_type == "mfcc":
        mag = tf.abs(tf.signal.stft(x, 480, 320, window_fn=tf.signal.hann_window))
        mel = tf.tensordot(mag, tf.signal.linear_to_mel_weight_matrix(40, 257, S, 20.0, 4000.0), 1)
        return tf.signal.mfccs_from_log_mel_spectrograms(tf.math.log(mel + 1e-6))[:, :10].numpy()
    x = x - (1 - 2**-5) * np.concatenate([[0], x[:-1]]).astype(np.float32)  # pre-emphasis
    mag = tf.abs(tf.signal.stft(x, 480, 320, window_fn=functools.partial(tf.signal.hamming_window, periodic=False)))
    power = np.maximum(mag.numpy() ** 2 / 480, 1e-30)
    mel = power @ tf.signal.linear_to_mel_weight_matrix(40, 257, S, 0.0, 8000.0).numpy()
    return np.clip((10 * np.log10(mel.astype(np.float64)) + 52) / 64, 0, 1)


@pytest.mark.parametrize("feature_type", ["mfcc", "lfbe", "td_samples"])
def test_features_match_independent_tf_signal(feature_type):
    audio, length = make_clips(11, seed=1)
    cfg = FeatureConfig(feature_type=feature_type, batch_size=4)  # several batches, a ragged last one
    x = extract(audio, length, cfg, progress=False)
    assert x.dtype == np.float32 and x.shape == (11, *SHAPES[feature_type]) == (11, *cfg.shape)
    ref = np.stack([reference(audio[i], length[i], feature_type) for i in range(11)])
    assert np.abs(x - ref).max() <= 1e-5
    assert np.abs(ref).max() > 0.1  # the comparison is not between two near-zero arrays
    one_batch = extract(audio, length, FeatureConfig(feature_type=feature_type, batch_size=64), progress=False)
    # batching is for speed: the mel projection is one GEMM over the batch's frames, whose blocking (and so the
    # order of its sums) the CPU's GEMM picks by size; an AMD EPYC (AVX2) gave 2 float32 ulps at |x| ~ 10
    np.testing.assert_allclose(x, one_batch, rtol=1e-6, atol=1e-6)


def test_time_shift_is_the_reference_identity():
    """pad [2, 2] then slice from 2 leaves the clip in place; a real 2-sample shift would show."""
    audio, length = make_clips(4, seed=2)
    x = extract(audio, length, FeatureConfig(feature_type="td_samples"), progress=False)
    np.testing.assert_array_equal(x[..., 0], audio.astype(np.float32) / 2**15)
    mfcc = extract(audio, length, FeatureConfig(), progress=False)
    shifted = np.stack([reference(np.concatenate([[0, 0], audio[i, :-2]]), S, "mfcc") for i in (1, 3)])
    assert np.abs(mfcc[[1, 3]] - shifted).max() > 1e-3


def noise_recordings(seed):
    rng = np.random.default_rng(seed)
    return {"b_noise.wav": rng.integers(-8000, 8000, 20000, dtype=np.int16),
            "a_noise.wav": rng.integers(-3000, 3000, 40000, dtype=np.int16)}


def test_noise_mixing_follows_the_plan():
    audio, length = make_clips(9, seed=3)
    noise = dict(sorted(noise_recordings(3).items()))
    cfg = FeatureConfig(batch_size=4)
    index, offset, volume = noise_plan(9, [len(r) for r in noise.values()], cfg, np.random.default_rng(7))
    volume[0] = 0  # clip 0 has min < -max: at volume 0 the training path must still clip to [-1, 1]
    x = extract(audio, length, cfg, noise=noise, plan=(index, offset, volume), progress=False)
    recs = list(noise.values())
    ref = np.stack([reference(audio[i], length[i], "mfcc",
                              recs[index[i]][offset[i]:offset[i] + S].astype(np.float32) / 2**15 * volume[i])
                    for i in range(9)])
    assert np.abs(x - ref).max() <= 1e-5
    clean = extract(audio, length, cfg, progress=False)
    assert np.abs(x[0] - clean[0]).max() > 1e-3  # clipping alone changed clip 0
    assert all(np.abs(x[i] - clean[i]).max() > 1e-3 for i in range(9) if volume[i] > 0)


def test_noise_plan_draws():
    cfg = FeatureConfig()
    lengths = [20000, 40000]
    a = noise_plan(10000, lengths, cfg, np.random.default_rng(0))
    b = noise_plan(10000, lengths, cfg, np.random.default_rng(0))
    c = noise_plan(10000, lengths, cfg, np.random.default_rng(1))
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    assert not np.array_equal(a[2], c[2])
    index, offset, volume = a
    assert set(index) == {0, 1} and (offset >= 0).all() and (offset + S < np.take(lengths, index)).all()
    assert (volume >= 0).all() and (volume < 0.1).all()
    assert abs((volume > 0).mean() - 0.8) < 0.03


# ----------------------------------------------------------------------------- the stage, via the script

def write_dataset(folder, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    for k, split in enumerate(("train", "validation", "test")):
        audio, length = make_clips(6, seed=10 + k)
        save_npz(folder / f"{split}.npz", audio=audio, length=length, label=np.arange(6, dtype=np.int64) * 2,
                 file=np.array([f"{split}/word/clip_{i}.wav" for i in range(6)]))
    save_npz(folder / "background_noise.npz", **noise_recordings(seed))
    return folder


def write_params(path, **features):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    seed = features.pop("seed", 0)
    params["seed"] = seed
    params["features"].update(features)
    path.write_text(yaml.safe_dump(params))
    return path


def run_script(*args):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, str(REPO / "scripts" / "make_features.py"), *map(str, args)],
                          cwd=REPO, env=env, capture_output=True, text=True)


def load_main():
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_features", REPO / "scripts" / "make_features.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.main


def read(folder):
    return {f.name: f.read_bytes() for f in sorted(folder.iterdir())}


def test_stage_outputs_deterministic_and_noise_only_on_train(tmp_path):
    script_main = load_main()

    def main(args):
        script_main([str(a) for a in args])

    data = write_dataset(tmp_path / "dataset")
    p0 = write_params(tmp_path / "p0.yaml", seed=0, batch_size=4, train_copies=1)
    p1 = write_params(tmp_path / "p1.yaml", seed=1, batch_size=4, train_copies=1)
    main(["--params", p0, "--dataset", data, "--out", tmp_path / "a"])
    main(["--params", p0, "--dataset", data, "--out", tmp_path / "b"])
    main(["--params", p1, "--dataset", data, "--out", tmp_path / "c"])
    a, b, c = read(tmp_path / "a"), read(tmp_path / "b"), read(tmp_path / "c")
    assert sorted(a) == ["test.npz", "train.npz", "validation.npz"]
    assert a == b  # same inputs and seed: same bytes
    with zipfile.ZipFile(tmp_path / "a" / "train.npz") as z:  # np.savez would stamp the wall clock
        assert {i.date_time for i in z.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    assert a["validation.npz"] == c["validation.npz"] and a["test.npz"] == c["test.npz"]
    assert a["train.npz"] != c["train.npz"]  # the seed only moves the training noise
    cfg = FeatureConfig()
    for split in ("train", "validation", "test"):
        src = np.load(data / f"{split}.npz")
        with np.load(tmp_path / "a" / f"{split}.npz", allow_pickle=False) as z:
            assert z["x"].dtype == np.float32 and z["x"].shape == (6, 49, 10)
            assert z["y"].dtype == np.int64 and (z["y"] == src["label"]).all()
            assert (z["file"] == src["file"]).all() and str(z["feature_type"]) == "mfcc"
            clean = extract(src["audio"], src["length"], cfg, progress=False)
            assert (np.abs(z["x"] - clean).max() > 1e-3) == (split == "train")


def test_train_copies_are_fresh_noise_draws_of_the_same_clips(tmp_path):
    script_main = load_main()
    data = write_dataset(tmp_path / "dataset")
    for copies in (1, 3):
        p = write_params(tmp_path / f"p{copies}.yaml", batch_size=4, train_copies=copies, background_frequency=1.0)
        script_main(["--params", str(p), "--dataset", str(data), "--out", str(tmp_path / f"c{copies}")])
    one, three = (np.load(tmp_path / f"c{k}" / "train.npz") for k in (1, 3))
    assert three["x"].shape == (18, 49, 10)
    assert (three["y"] == np.tile(one["y"], 3)).all() and (three["file"] == np.tile(one["file"], 3)).all()
    assert (three["x"][:6] == one["x"]).all()  # copy 1 is the single-copy split
    for k in (1, 2):  # every later copy has its own noise
        assert np.abs(three["x"][6 * k:6 * k + 6] - one["x"]).max(axis=(1, 2)).min() > 1e-3
    for split in ("validation", "test"):
        assert (tmp_path / "c1" / f"{split}.npz").read_bytes() == (tmp_path / "c3" / f"{split}.npz").read_bytes()
    bad = write_params(tmp_path / "bad.yaml", train_copies=0)
    r = run_script("--params", bad, "--dataset", data, "--out", tmp_path / "bad")
    assert r.returncode == 1 and r.stderr.strip() == "error: params features.train_copies: expected more than 0, got 0"
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("case, expected", [
    ("zero_clip", "test.npz: clip test/word/clip_4.wav: maximum sample is 0"),
    ("missing_split", "validation.npz: file not found"),
    ("wrong_shape", "train.npz: audio must be int16 (N, 16000)"),
    ("wrong_dtype", "test.npz: audio must be int16"),
    ("bad_length", "train.npz: length must be"),
    ("missing_noise", "background_noise.npz: file not found"),
    ("unknown_feature_type", "params features.feature_type: expected 'mfcc', 'lfbe' or 'td_samples', got 'spectrogram'"),
])
def test_bad_input_is_one_line_error(tmp_path, case, expected):
    data = write_dataset(tmp_path / "dataset")
    extra = []
    if case == "zero_clip":
        z = dict(np.load(data / "test.npz"))
        z["audio"][4] = 0
        save_npz(data / "test.npz", **z)
    elif case == "missing_split":
        (data / "validation.npz").unlink()
    elif case == "wrong_shape":
        z = dict(np.load(data / "train.npz"))
        save_npz(data / "train.npz", **{**z, "audio": z["audio"][:, :8000]})
    elif case == "wrong_dtype":
        z = dict(np.load(data / "test.npz"))
        save_npz(data / "test.npz", **{**z, "audio": z["audio"].astype(np.float32)})
    elif case == "bad_length":
        z = dict(np.load(data / "train.npz"))
        save_npz(data / "train.npz", **{**z, "length": z["length"][:3]})
    elif case == "missing_noise":
        (data / "background_noise.npz").unlink()
    else:
        extra = ["--feature_type", "spectrogram"]
    out = tmp_path / "features"
    r = run_script("--params", REPO / "params.yaml", "--dataset", data, "--out", out, *extra)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], r.stderr
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["dataset"]


def test_features_bound_to_one_cpu_are_bit_identical(tmp_path):
    """TensorFlow sizes its thread pools by the CPUs the process may use, and the pools split the
    reductions: bound to one CPU, the tiny pipeline's features came out up to 2e-6 apart. The stage
    pins the pools, so taskset, a cpuset or a machine with more cores gives the same bytes."""
    data = tmp_path / "dataset"
    data.mkdir()
    for k, split in enumerate(("train", "validation", "test")):
        audio = np.random.default_rng(k).normal(0, 2000, (27, 16000)).astype(np.int16)  # speech-like spectra
        save_npz(data / f"{split}.npz", audio=audio, length=np.full(27, 16000, np.int32),
                 label=np.arange(27, dtype=np.int64) % 12, file=np.array([f"{split}/w/c{i}.wav" for i in range(27)]))
    save_npz(data / "background_noise.npz", **noise_recordings(0))
    params = write_params(tmp_path / "p.yaml", train_copies=1)
    outs = {}
    for name, cpus in (("all", None), ("one", {min(os.sched_getaffinity(0))})):
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        r = subprocess.run([sys.executable, str(REPO / "scripts" / "make_features.py"), "--params", str(params),
                            "--dataset", str(data), "--out", str(tmp_path / name)], cwd=REPO, env=env,
                           capture_output=True, text=True,
                           preexec_fn=None if cpus is None else lambda: os.sched_setaffinity(0, cpus))
        assert r.returncode == 0, r.stderr
        outs[name] = read(tmp_path / name)
    assert [f for f in outs["all"] if outs["all"][f] != outs["one"][f]] == []


def test_features_do_not_depend_on_the_cpus_instruction_set():
    """oneDNN (inside TensorFlow even with TF_ENABLE_ONEDNN_OPTS=0) picks AVX2 or AVX-512 code by the
    CPU, and its sgemm ran the mel filterbank: an AVX-512 machine wrote other features than an AVX2
    one. ONEDNN_MAX_CPU_ISA makes one machine take each path; the features must not change."""
    script = ("import hashlib; from tests.test_features import make_clips; "
              "from kws.features import FeatureConfig, extract; "
              "a, n = make_clips(40, 3); x = extract(a, n, FeatureConfig.from_params({}), progress=False); "
              "print(hashlib.sha256(x.tobytes()).hexdigest())")
    digests = {}
    for isa in ("SSE41", "AVX2", "ALL"):
        env = {**os.environ, "PYTHONPATH": str(REPO), "ONEDNN_MAX_CPU_ISA": isa}
        r = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        digests[isa] = r.stdout.split()[-1]
    assert len(set(digests.values())) == 1, digests
