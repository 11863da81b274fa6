"""The dataset stage: local / synthetic / speech_commands sources, splits, labels, bad input."""
import json
import shutil
import subprocess
import sys
import tarfile
import time
import wave
from pathlib import Path

import numpy as np
import pytest
import yaml

from kws import dataset, synthetic
from kws.common import KwsError
from kws.labels import KEYWORDS, LABELS

REPO = Path(__file__).resolve().parents[1]
SPEAKERS = ("aaaa0001", "bbbb0002", "cccc0003")  # train, validation, test
OTHERS = ("bed", "marvin")


def write_wav(path: Path, audio, rate=16000, channels=1):
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.asarray(audio, "<i2").tobytes())


def tone(seconds=0.5, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(0, 2000, int(seconds * 16000))).astype(np.int16)


def make_local(root: Path, with_test=False) -> tuple[Path, Path | None]:
    """A tiny speech_commands_v0.02-shaped folder (+ test-set archive folder) written by hand."""
    train = root / "sc"
    for i, w in enumerate((*KEYWORDS, *OTHERS)):
        for j, s in enumerate(SPEAKERS):
            write_wav(train / w / f"{s}_nohash_0.wav", tone(0.3 + 0.05 * j, seed=10 * i + j))
    write_wav(train / "_background_noise_" / "white_noise.wav", tone(3.0, seed=99))
    write_wav(train / "_background_noise_" / "running_tap.wav", tone(2.0, seed=98))
    (train / "_background_noise_" / "README.md").write_text("not audio")
    words = (*KEYWORDS, *OTHERS)
    (train / "validation_list.txt").write_text("".join(f"{w}/{SPEAKERS[1]}_nohash_0.wav\n" for w in words))
    (train / "testing_list.txt").write_text("".join(f"{w}/{SPEAKERS[2]}_nohash_0.wav\n" for w in words))
    test = None
    if with_test:
        test = root / "sc_test"
        for k in KEYWORDS:
            write_wav(test / k / "dddd0004_nohash_0.wav", tone(1.0, seed=7))
        write_wav(test / "_silence_" / "s_nohash_0.wav", tone(1.0, seed=8))
        write_wav(test / "_silence_" / "s_nohash_1.wav", tone(1.0, seed=9))
        write_wav(test / "_unknown_" / "bed_dddd0004_nohash_0.wav", tone(0.7, seed=6))
    return train, test


def counts(examples):
    return np.bincount(examples.label, minlength=len(LABELS)).tolist()


def test_local_labels_and_splits(tmp_path):
    train, _ = make_local(tmp_path)
    splits, background = dataset.read_local(train)
    assert sorted(background) == ["running_tap.wav", "white_noise.wav"]
    assert len(background["white_noise.wav"]) == 48000
    # train: speaker 0, 10 keywords + 2 unknown, silence from white_noise: starts 0, 8000, 16000, 24000
    assert counts(splits["train"]) == [1] * 10 + [4, 2]
    assert counts(splits["validation"]) == [1] * 10 + [2, 2]  # running_tap: starts 0, 8000
    assert counts(splits["test"]) == [1] * 10 + [0, 2]  # testing_list.txt, no test archive
    assert all(f.startswith(SPEAKERS[0]) for f in (Path(f).name for f in splits["train"].file if "#" not in f))
    i = splits["train"].file.index("yes/aaaa0001_nohash_0.wav")
    assert splits["train"].label[i] == KEYWORDS.index("yes")
    assert np.array_equal(splits["train"].audio[i], tone(0.3, seed=10 * KEYWORDS.index("yes")))
    i = splits["train"].file.index("_background_noise_/white_noise.wav#8000")
    assert np.array_equal(splits["train"].audio[i], background["white_noise.wav"][8000:24000])


def test_local_with_test_archive(tmp_path):
    train, test = make_local(tmp_path, with_test=True)
    splits, _ = dataset.read_local(train, test)
    assert counts(splits["test"]) == [1] * 10 + [2, 1]
    assert not any(SPEAKERS[2] in f for f in splits["test"].file)


def _tar_gz(folder: Path, archive: Path, prefix: str = "./") -> Path:
    """Pack a folder the way Google packed the official archives (./<word>/<file>)."""
    with tarfile.open(archive, "w:gz") as tar:
        for p in sorted(folder.rglob("*")):
            tar.add(p, arcname=prefix + str(p.relative_to(folder)), recursive=False)
    return archive


def test_local_archives_read_like_folders(tmp_path):
    """The official .tar.gz archives as local_dir / local_test_dir: the same bytes out as the
    extracted folders."""
    train, test = make_local(tmp_path, with_test=True)
    folders = {"source": "local", "local_dir": str(train), "local_test_dir": str(test)}
    archives = {"source": "local", "local_dir": str(_tar_gz(train, tmp_path / "train.tar.gz")),
                "local_test_dir": str(_tar_gz(test, tmp_path / "test.tar.gz", prefix=""))}
    dataset.make_dataset(folders, tmp_path / "a")
    dataset.make_dataset(archives, tmp_path / "b")
    for name in ("train.npz", "validation.npz", "test.npz", "background_noise.npz"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_bad_archive_one_line(tmp_path):
    train, _ = make_local(tmp_path)
    archive = _tar_gz(train, tmp_path / "sc.tar.gz")
    archive.write_bytes(archive.read_bytes()[:5000])  # cut off mid-way
    with pytest.raises(KwsError, match=r"sc\.tar\.gz: not a readable tar archive") as e:
        dataset.make_dataset({"source": "local", "local_dir": str(archive)}, tmp_path / "out")
    assert "\n" not in str(e.value) and not (tmp_path / "out").exists()
    broken = tmp_path / "broken"
    shutil.copytree(train, broken)
    write_wav(broken / "yes" / f"{SPEAKERS[0]}_nohash_0.wav", tone(1.5))
    archive = _tar_gz(broken, tmp_path / "long.tar.gz")
    with pytest.raises(KwsError, match=r"long\.tar\.gz:yes/aaaa0001_nohash_0\.wav: 1\.500 s long"):
        dataset.make_dataset({"source": "local", "local_dir": str(archive)}, tmp_path / "out")


def test_make_dataset_contract_and_bytes(tmp_path):
    train, test = make_local(tmp_path, with_test=True)
    cfg = {"source": "local", "local_dir": str(train), "local_test_dir": str(test)}
    summary = dataset.make_dataset(cfg, tmp_path / "a")
    dataset.make_dataset(cfg, tmp_path / "b")
    for name in ("train.npz", "validation.npz", "test.npz", "background_noise.npz", "summary.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    d = np.load(tmp_path / "a" / "train.npz")
    assert d["audio"].dtype == np.int16 and d["audio"].shape == (16, 16000)
    assert d["length"].dtype == np.int32 and d["label"].dtype == np.int64 and d["file"].dtype.kind == "U"
    i = list(d["file"]).index("no/aaaa0001_nohash_0.wav")
    assert d["length"][i] == 4800 and not d["audio"][i, 4800:].any() and d["audio"][i, :4800].any()
    on_disk = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert on_disk["source"] == "local" and on_disk["counts"]["test"]["Silence"] == 2
    assert summary["counts"]["train"]["total"] == 16
    bg = np.load(tmp_path / "a" / "background_noise.npz")
    assert sorted(bg.files) == ["running_tap.wav", "white_noise.wav"] and bg["white_noise.wav"].dtype == np.int16


def test_synthetic_source(tmp_path):
    cfg = {"num_speakers": 3, "takes_per_word": 1, "validation_fraction": 0.2, "test_fraction": 0.2,
           "noise_seconds": 2, "test_silence_clips": 4, "test_unknown_clips": 3,
           "engines": {"espeak": 1}, "other_words_per_speaker": 25}  # every speaker says all 35 words
    synthetic.build_corpus(tmp_path / "corpus", cfg, seed=1)
    dataset.make_dataset({"source": "synthetic"}, tmp_path / "ds", tmp_path / "corpus")
    s = json.loads((tmp_path / "ds" / "summary.json").read_text())["counts"]
    # one speaker per split; 6 noises of 2 s: 2 cuts each, running_tap's to validation
    assert [s["train"][k] for k in LABELS] == [1] * 10 + [10, 25]
    assert [s["validation"][k] for k in LABELS] == [1] * 10 + [2, 25]
    assert [s["test"][k] for k in LABELS] == [1] * 10 + [4, 3]


# ---------------------------------------------------------------- bad input

def assert_one_error_line(stderr: str, name: str) -> None:
    """tqdm may have drawn progress on stderr before; the error is one last line naming the culprit."""
    errors = [line for line in stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("error: ") and name in errors[0], stderr
    assert stderr.rstrip("\n").splitlines()[-1] == errors[0]


def _break(kind: str, train: Path) -> tuple[dict, str]:
    """Damage the tiny corpus one way; returns the dataset params and what the error must name."""
    cfg = {"source": "local", "local_dir": str(train)}
    f = train / "yes" / f"{SPEAKERS[0]}_nohash_0.wav"
    if kind == "corrupt":
        f.write_bytes(b"RIFF\x00\x00garbage" * 3)
    elif kind == "truncated":
        f.write_bytes(f.read_bytes()[:-100])
    elif kind == "empty":
        write_wav(f, np.zeros(0, np.int16))
    elif kind == "all_zero":
        write_wav(f, np.zeros(8000, np.int16))
    elif kind == "stereo":
        write_wav(f, np.zeros(16000, np.int16) + 5, channels=2)
    elif kind == "rate":
        write_wav(f, tone(0.5), rate=22050)
    elif kind == "too_long":
        write_wav(f, tone(1.5))
    elif kind == "missing_folder":
        cfg["local_dir"] = str(train.parent / "nowhere")
        return cfg, "nowhere"
    elif kind == "keyword_missing":
        for p in (train / "stop").iterdir():
            p.unlink()
        (train / "stop").rmdir()
        return cfg, "stop"
    elif kind == "no_noise":
        for p in (train / "_background_noise_").iterdir():
            p.unlink()
        return cfg, "_background_noise_"
    elif kind == "unknown_source":
        return {"source": "librispeech"}, "librispeech"
    return cfg, str(f)


BAD = ["corrupt", "truncated", "empty", "all_zero", "stereo", "rate", "too_long", "missing_folder",
       "keyword_missing", "no_noise", "unknown_source"]
MESSAGES = {"corrupt": "not a readable", "truncated": "corrupt", "empty": "empty", "all_zero": "zero",
            "stereo": "mono", "rate": "22050", "too_long": "1.500 s", "missing_folder": "not found",
            "keyword_missing": "missing", "no_noise": "missing", "unknown_source": "unknown source"}


@pytest.mark.parametrize("kind", BAD)
def test_bad_input_error(tmp_path, kind):
    train, _ = make_local(tmp_path)
    cfg, name = _break(kind, train)
    with pytest.raises(KwsError) as e:
        dataset.make_dataset(cfg, tmp_path / "out")
    assert name in str(e.value) and MESSAGES[kind] in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kind", ["corrupt", "all_zero", "keyword_missing", "unknown_source"])
def test_bad_input_script(tmp_path, kind):
    train, _ = make_local(tmp_path)
    cfg, name = _break(kind, train)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"dataset": cfg}))
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "make_dataset.py"), "--params",
                        str(tmp_path / "params.yaml"), "--out", str(tmp_path / "out")],
                       capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 1
    assert_one_error_line(r.stderr, name)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("key", ["local_dir", "local_test_dir", "unset"])
def test_missing_local_path_names_its_param(tmp_path, key):
    """A wrong or empty dataset.local_dir / local_test_dir: one line naming the param (and the path)."""
    train, test = make_local(tmp_path, with_test=True)
    cfg = {"source": "local", "local_dir": str(train), "local_test_dir": str(test)}
    if key == "unset":
        del cfg["local_dir"]
        expected = ["params dataset.local_dir"]
    else:
        cfg[key] = str(tmp_path / "typo")
        expected = [f"params dataset.{key}", str(tmp_path / "typo")]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"dataset": cfg}))
    # -m from the repo root, as dvc.yaml runs it: this checkout's kws, not the editable install's
    r = subprocess.run([sys.executable, "-m", "scripts.make_dataset", "--params",
                        str(tmp_path / "params.yaml"), "--out", str(tmp_path / "out")],
                       capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 1
    for name in expected:
        assert_one_error_line(r.stderr, name)
    assert not (tmp_path / "out").exists()


def test_synthetic_corpus_missing_or_unused(tmp_path):
    with pytest.raises(KwsError, match="synthetic corpus folder not found"):
        dataset.make_dataset({"source": "synthetic"}, tmp_path / "out", tmp_path / "none")
    synthetic.write_unused(tmp_path / "unused", "local")
    with pytest.raises(KwsError, match="no speech_commands_v0.02.tar.gz"):
        dataset.make_dataset({"source": "synthetic"}, tmp_path / "out", tmp_path / "unused")


def test_speech_commands_fails_fast_offline(tmp_path):
    if dataset.probe():
        pytest.skip(f"{dataset.TFDS_HOST} is reachable: the offline path cannot be exercised")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(
        {"dataset": {"source": "speech_commands", "tfds_data_dir": str(tmp_path / "tfds"), "tfds_manual_dir": None}}))
    t0 = time.time()
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "make_dataset.py"), "--params",
                        str(tmp_path / "params.yaml"), "--out", str(tmp_path / "out")],
                       capture_output=True, text=True, cwd=REPO)
    assert time.time() - t0 < 10
    assert r.returncode == 1
    assert_one_error_line(r.stderr, "tfds_manual_dir")
    assert "dataset.source local" in r.stderr
    assert not (tmp_path / "out").exists()


def test_speech_commands_manual_dir_without_archives(tmp_path):
    (tmp_path / "manual").mkdir()
    (tmp_path / "manual" / "speech_commands_v0.02.tar.gz").write_bytes(b"")
    cfg = {"source": "speech_commands", "tfds_data_dir": str(tmp_path / "tfds"),
           "tfds_manual_dir": str(tmp_path / "manual")}
    with pytest.raises(KwsError, match="speech_commands_test_set_v0.02.tar.gz not found"):
        dataset.make_dataset(cfg, tmp_path / "out")
