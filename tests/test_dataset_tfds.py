"""dataset.source speech_commands for real: tensorflow-datasets' own speech_commands builder
prepares the synthetic corpus's two archives from dataset.tfds_manual_dir, offline, and the stage
writes the same clips, labels and splits as dataset.source local on the same archives.

What differs, by design (docs/datasets.md): the order of the clips within a split (tfds shuffles
its examples by a hash of their keys) and the `file` column (tfds keeps no file names, so it holds
tfds' record ids). Everything else is compared exactly.
"""
import hashlib
import json
import os
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from kws import dataset, synthetic
from kws.common import KwsError
from kws.labels import TEST_ARCHIVE, TRAIN_ARCHIVE

from pipeline_repo import TINY_PARAMS, merge  # tests/ is on sys.path (conftest.py)

REPO = Path(__file__).resolve().parents[1]
SPLITS = ("train", "validation", "test")
# Google's archives hold text files beside the audio (the test set's README.md says "See the
# LICENSE file in this folder"): tfds hands every file of the test archive to pydub, which runs
# ffprobe and ffmpeg to reject them (without ffmpeg, tfds fails: FileNotFoundError 'ffprobe').
# The synthetic corpus has none, so they are added here.
EXTRA_FILES = {TRAIN_ARCHIVE: ("README.md", "LICENSE", "_background_noise_/README.md"),
               TEST_ARCHIVE: ("README.md", "LICENSE")}


def _require(ok: bool, what: str) -> None:
    """Missing tensorflow-datasets or ffmpeg: skip with the reason, but fail under CI."""
    if ok:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{what} (required under CI)")
    pytest.skip(what)


def _with_extra_files(archive: Path, extra: tuple[str, ...], out: Path) -> None:
    """`archive` repacked by the corpus's own packer with `extra` text files added."""
    folder = out.parent / f"{archive.name}.d"
    with tarfile.open(archive) as tar:
        tar.extractall(folder, filter="data")
    for name in extra:
        (folder / name).write_text("Not audio: tfds must skip this file.\n")
    synthetic.write_archive(folder, out)
    shutil.rmtree(folder)


@pytest.fixture(scope="module")
def manual_dir(tmp_path_factory) -> Path:
    """The tiny profile's synthetic corpus (a dozen speakers; espeak-ng only, which is the fastest
    engine: every engine's clips are written as the same 16-bit PCM WAV) as a tfds manual dir."""
    try:
        import tensorflow_datasets  # noqa: F401
        has_tfds = True
    except ImportError:
        has_tfds = False
    _require(has_tfds, "tensorflow-datasets is not installed")
    _require(all(shutil.which(tool) for tool in ("ffmpeg", "ffprobe")),
             "ffmpeg or ffprobe not found on PATH (the Debian package ffmpeg, in the Makefile)")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    cfg = merge(params["synthetic"], TINY_PARAMS["synthetic"]) | {"engines": {"espeak": 1.0}}
    root = tmp_path_factory.mktemp("tfds_manual")
    synthetic.build_corpus(root / "corpus", cfg, seed=params["seed"])
    (root / "manual").mkdir()
    for name, extra in EXTRA_FILES.items():
        _with_extra_files(root / "corpus" / name, extra, root / "manual" / name)
    return root / "manual"


def _rows(npz) -> list[tuple[int, int, str]]:
    """A split as a sorted list of (label, length, sha256 of the padded audio): equal lists mean
    the same clips with the same labels, whatever the order."""
    return sorted((int(label), int(length), hashlib.sha256(audio.tobytes()).hexdigest())
                  for audio, label, length in zip(npz["audio"], npz["label"], npz["length"]))


def _tfds_cfg(manual: Path, data_dir: Path) -> dict:
    return {"source": "speech_commands", "tfds_manual_dir": str(manual), "tfds_data_dir": str(data_dir)}


@pytest.fixture(scope="module")
def stages(manual_dir) -> Path:
    """The dataset stage on the manual dir's archives: once by the local source, once by tfds
    (which prepares them into tfds_data/)."""
    out = manual_dir.parent
    dataset.make_dataset({"source": "local", "local_dir": str(manual_dir / TRAIN_ARCHIVE),
                          "local_test_dir": str(manual_dir / TEST_ARCHIVE)}, out / "local")
    dataset.make_dataset(_tfds_cfg(manual_dir, out / "tfds_data"), out / "tfds")
    return out


def test_tfds_equals_local_on_the_same_archives(stages):
    # prepared by tfds itself: its builder's records, named after it
    assert list((stages / "tfds_data" / "speech_commands").glob("*/speech_commands-train.tfrecord-*"))
    a, b = stages / "local", stages / "tfds"
    assert (a / "background_noise.npz").read_bytes() == (b / "background_noise.npz").read_bytes()
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
    assert sa["counts"] == sb["counts"] and sa["background_noise"] == sb["background_noise"]
    assert (sa["source"], sb["source"]) == ("local", "speech_commands")
    for split in SPLITS:
        la, lb = np.load(a / f"{split}.npz"), np.load(b / f"{split}.npz")
        for key in ("audio", "length", "label", "file"):
            assert la[key].dtype.kind == lb[key].dtype.kind and la[key].shape == lb[key].shape, (split, key)
        assert la["audio"].dtype == lb["audio"].dtype == np.int16
        # the same clips, labels and splits (silence cuts and the test archive's _silence_ and
        # _unknown_ included); only the order and the file column differ
        assert _rows(la) == _rows(lb), split
        n = len(lb["file"])
        assert set(lb["file"]) == {f"speech_commands-{split}.tfrecord-00000-of-00001__{i}" for i in range(n)}
    counts = sa["counts"]
    assert counts["train"]["Silence"] > 0 and counts["validation"]["Silence"] > 0
    assert counts["test"]["Silence"] == TINY_PARAMS["synthetic"]["test_silence_clips"]
    assert counts["test"]["Unknown"] == TINY_PARAMS["synthetic"]["test_unknown_clips"]


def test_tfds_prepared_once_then_read(stages, manual_dir, tmp_path):
    """A second run reads tfds' prepared records (no new preparation): the same bytes."""
    records = sorted((stages / "tfds_data" / "speech_commands").rglob("*.tfrecord-*"))
    mtimes = [p.stat().st_mtime_ns for p in records]
    dataset.make_dataset(_tfds_cfg(manual_dir, stages / "tfds_data"), tmp_path / "again")
    assert [p.stat().st_mtime_ns for p in records] == mtimes
    for name in (*(f"{s}.npz" for s in SPLITS), "background_noise.npz"):
        assert (stages / "tfds" / name).read_bytes() == (tmp_path / "again" / name).read_bytes(), name


def test_tfds_prepares_again_for_other_archives(stages, manual_dir, tmp_path):
    """A tfds_data_dir prepared from other archives is not reused: tfds prepares the new ones."""
    data_dir = tmp_path / "tfds_data"
    shutil.copytree(stages / "tfds_data", data_dir)
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(manual_dir / TRAIN_ARCHIVE, other / TRAIN_ARCHIVE)
    folder = tmp_path / "test_folder"
    with tarfile.open(manual_dir / TEST_ARCHIVE) as tar:
        tar.extractall(folder, filter="data")
    sorted((folder / "yes").iterdir())[0].unlink()
    synthetic.write_archive(folder, other / TEST_ARCHIVE)
    dataset.make_dataset(_tfds_cfg(other, data_dir), tmp_path / "second")
    first, second = (json.loads((d / "summary.json").read_text())["counts"]["test"]
                     for d in (stages / "tfds", tmp_path / "second"))
    assert second["Yes"] == first["Yes"] - 1 and second["total"] == first["total"] - 1


def test_tfds_without_ffmpeg_one_line(manual_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(KwsError, match=r"^ffmpeg and ffprobe: not found on PATH") as e:
        dataset.make_dataset(_tfds_cfg(manual_dir, tmp_path / "tfds_data"), tmp_path / "out")
    assert "\n" not in str(e.value) and not (tmp_path / "out").exists()
