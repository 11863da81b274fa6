"""Stage dataset: one source (synthetic | local | speech_commands) -> the contract's npz files.

All sources share the tfds speech_commands split and label logic:
  train      = every word clip not in validation_list.txt / testing_list.txt
               + Silence cut from every _background_noise_ recording except running_tap.wav
  validation = validation_list.txt + Silence cut from running_tap.wav
  test       = the test-set archive (keywords, _silence_, _unknown_), or, for `local` without
               one, testing_list.txt
Silence cuts: 1 s windows every 0.5 s, starts range(0, len - 16000, 8000), as tfds does.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import socket
import tarfile
import time
import wave
from pathlib import Path

import numpy as np
from tqdm import tqdm

from kws.common import KwsError, atomic_path, save_npz
from kws.files import write_json
from kws.labels import (BACKGROUND_NOISE_DIR, KEYWORDS, LABELS, SILENCE, SILENCE_DIR, TEST_ARCHIVE,
                        TRAIN_ARCHIVE, UNKNOWN_DIR, VALIDATION_NOISE, word_to_label)

SAMPLE_RATE = 16000
SOURCES = ("synthetic", "local", "speech_commands")
SPLITS = ("train", "validation", "test")
# The archives tfds downloads (facts from tensorflow_datasets' speech_commands checksums.tsv).
TFDS_HOST = "download.tensorflow.org"
TFDS_ARCHIVES = {
    "speech_commands_v0.02.tar.gz":
        ("http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz",
         "af14739ee7dc311471de98f5f9d2c9191b18aedfe957f4a6ff791c709868ff58"),
    "speech_commands_test_set_v0.02.tar.gz":
        ("http://download.tensorflow.org/data/speech_commands_test_set_v0.02.tar.gz",
         "cc2a00c1147c2254e9be3fa0f779d8c17421dc349b86366567a8edfa9acd51df"),
}


# ---------------------------------------------------------------- WAV files

def read_wav(path: str | os.PathLike, data: bytes | None = None, max_seconds: float | None = 1.0,
             name: str | None = None) -> np.ndarray:
    """A 16 kHz mono 16-bit PCM clip as int16; anything else is a one-line KwsError."""
    name = name or str(path)
    try:
        with wave.open(io.BytesIO(data) if data is not None else str(path)) as w:
            channels, width, rate, frames = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
            raw = w.readframes(frames)
    except (wave.Error, EOFError, ValueError) as e:
        raise KwsError(f"{name}: not a readable PCM WAV file ({e})") from None
    if channels != 1:
        raise KwsError(f"{name}: {channels} channels, expected mono")
    if width != 2:
        raise KwsError(f"{name}: {8 * width}-bit samples, expected 16-bit PCM")
    if rate != SAMPLE_RATE:
        raise KwsError(f"{name}: sample rate {rate} Hz, expected {SAMPLE_RATE} Hz")
    if frames == 0:
        raise KwsError(f"{name}: empty WAV (no samples)")
    if len(raw) != frames * 2:
        raise KwsError(f"{name}: corrupt WAV, header says {frames} samples but the file holds {len(raw) // 2}")
    if max_seconds is not None and frames > max_seconds * SAMPLE_RATE:
        raise KwsError(f"{name}: {frames / SAMPLE_RATE:.3f} s long, expected at most {max_seconds:g} s")
    audio = np.frombuffer(raw, "<i2").astype(np.int16)
    if not audio.any():
        raise KwsError(f"{name}: all samples are zero (the reference divides by the clip's max: NaN)")
    return audio


def cut_silence(noise: np.ndarray, name: str) -> list[tuple[np.ndarray, str]]:
    """tfds' Silence clips: 1 s windows every 0.5 s over a background recording."""
    if len(noise) <= SAMPLE_RATE:
        raise KwsError(f"{name}: {len(noise) / SAMPLE_RATE:.2f} s long, a background recording must exceed 1 s")
    clips = []
    for start in range(0, len(noise) - SAMPLE_RATE, SAMPLE_RATE // 2):
        clip = noise[start:start + SAMPLE_RATE]
        if not clip.any():
            raise KwsError(f"{name}: the 1 s at sample {start} is all zeros (NaN after normalisation)")
        clips.append((clip, f"{name}#{start}"))
    return clips


# ---------------------------------------------------------------- examples

class Examples:
    """Clips of one split: audio (int16, <= 1 s), label, file."""

    def __init__(self):
        self.audio, self.label, self.file = [], [], []

    def add(self, audio: np.ndarray, label: int, file: str) -> None:
        self.audio.append(audio)
        self.label.append(label)
        self.file.append(file)

    def arrays(self) -> dict[str, np.ndarray]:
        n = len(self.audio)
        audio = np.zeros((n, SAMPLE_RATE), np.int16)
        for i, a in enumerate(self.audio):
            audio[i, :len(a)] = a
        return {"audio": audio, "length": np.array([len(a) for a in self.audio], np.int32).reshape(n),
                "label": np.array(self.label, np.int64).reshape(n),
                "file": np.array(self.file, dtype=str).reshape(n)}


class Corpus:
    """The files of an extracted corpus folder or of an official .tar.gz archive (read into
    memory in one pass): the synthetic corpus ships as archives, so DVC checks 3 files, not 42k."""

    def __init__(self, path: str | os.PathLike, what: str):
        self.path = Path(path)
        self.files: dict[str, Path | bytes] = {}
        if self.path.is_dir():
            for sub in sorted(self.path.iterdir()):
                kids = sorted(sub.iterdir()) if sub.is_dir() else [sub]
                self.files.update({str(k.relative_to(self.path)): k for k in kids if k.is_file()})
        elif self.path.is_file() and self.path.name.endswith((".tar.gz", ".tgz", ".tar")):
            try:
                with tarfile.open(self.path) as tar:
                    for m in tqdm(tar, desc=f"reading {self.path.name}", unit="file"):
                        if m.isfile():
                            self.files[os.path.normpath(m.name)] = tar.extractfile(m).read()
            except (tarfile.TarError, OSError, EOFError) as e:
                raise KwsError(f"{self.path}: not a readable tar archive ({e})") from None
        else:
            raise KwsError(f"{self.path}: {what} not found (a folder or a .tar.gz archive)")

    def name(self, rel: str) -> str:
        return str(self.path / rel) if self.path.is_dir() else f"{self.path}:{rel}"

    def folders(self) -> list[str]:
        return sorted({r.split("/")[0] for r in self.files if "/" in r and not r.startswith(".")})

    def wavs(self, folder: str) -> list[str]:
        return sorted(r for r in self.files if r.startswith(folder + "/") and r.count("/") == 1
                      and r.lower().endswith(".wav"))

    def read(self, rel: str, max_seconds: float | None = 1.0) -> np.ndarray:
        data = self.files[rel]
        if isinstance(data, Path):
            return read_wav(data, max_seconds=max_seconds, name=self.name(rel))
        return read_wav(rel, data, max_seconds=max_seconds, name=self.name(rel))

    def read_list(self, rel: str, words: set[str]) -> list[str]:
        if rel not in self.files:
            raise KwsError(f"{self.name(rel)}: missing (the split list of a speech_commands_v0.02 corpus)")
        data = self.files[rel]
        text = data.read_text() if isinstance(data, Path) else data.decode()
        entries = [line.strip() for line in text.splitlines() if line.strip()]
        for e in entries:
            if e.split("/")[0] not in words:
                raise KwsError(f"{self.name(rel)}: entry {e!r} is not in a word folder of the corpus")
        return entries


def read_local(train_dir: str | os.PathLike, test_dir: str | os.PathLike | None = None
               ) -> tuple[dict[str, Examples], dict[str, np.ndarray]]:
    """A speech_commands_v0.02 corpus (+ optional test-set corpus): extracted folders or the
    official .tar.gz archives themselves."""
    root = Corpus(train_dir, "corpus")
    words = [w for w in root.folders() if w != BACKGROUND_NOISE_DIR]
    missing = [k for k in KEYWORDS if k not in words]
    if missing:
        raise KwsError(f"{root.path}: keyword folder(s) missing: {', '.join(missing)} (not a speech_commands layout)")
    noise = root.wavs(BACKGROUND_NOISE_DIR)
    if not noise:
        raise KwsError(f"{root.name(BACKGROUND_NOISE_DIR)}: missing or without .wav recordings (Silence is cut from them)")
    validation = set(root.read_list("validation_list.txt", set(words)))
    testing = set(root.read_list("testing_list.txt", set(words)))
    for w in words:
        if not root.wavs(w):
            raise KwsError(f"{root.name(w)}: word folder without .wav files")
    files = [f for w in words for f in root.wavs(w)]
    known = set(files)
    for name, lst in (("validation_list.txt", validation), ("testing_list.txt", testing)):
        if lst - known:
            raise KwsError(f"{root.name(name)}: lists {sorted(lst - known)[0]} which does not exist")

    splits = {s: Examples() for s in SPLITS}
    for f in tqdm(files, desc=f"decoding {root.path.name}", unit="wav"):
        split = "validation" if f in validation else "test" if f in testing else "train"
        if split == "test" and test_dir is not None:
            continue  # the test-set archive replaces testing_list.txt
        splits[split].add(root.read(f), word_to_label(f.split("/")[0]), f)

    background = {}
    for f in noise:
        name = f.split("/")[1]
        background[name] = root.read(f, max_seconds=None)
        split = "validation" if name == VALIDATION_NOISE else "train"
        for clip, cut in cut_silence(background[name], f"{BACKGROUND_NOISE_DIR}/{name}"):
            splits[split].add(clip, SILENCE, cut)

    if test_dir is not None:
        read_test_folder(test_dir, splits["test"])
    return splits, background


def read_test_folder(test_dir: str | os.PathLike, examples: Examples) -> None:
    """The speech_commands_test_set_v0.02 layout (folder or archive): keyword folders, _silence_,
    _unknown_."""
    root = Corpus(test_dir, "test-set corpus")
    folders = root.folders()
    missing = [k for k in (*KEYWORDS, SILENCE_DIR, UNKNOWN_DIR) if k not in folders]
    if missing:
        raise KwsError(f"{root.path}: test folder(s) missing: {', '.join(missing)} (not a test-set archive layout)")
    files = [f for w in folders for f in root.wavs(w)]
    for f in tqdm(files, desc=f"decoding {root.path.name}", unit="wav"):
        examples.add(root.read(f), word_to_label(f.split("/")[0]), f)


# ---------------------------------------------------------------- tensorflow-datasets

def probe(host: str = TFDS_HOST, port: int = 80, timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def read_speech_commands(cfg: dict) -> tuple[dict[str, Examples], dict[str, np.ndarray]]:
    """tensorflow-datasets' speech_commands: prepared in tfds_data_dir, downloaded, or built from
    the two archives in tfds_manual_dir (tfds picks them up by file name). Clips, labels and
    splits equal the `local` source's on the same archives; the order is tfds' (it shuffles by a
    hash of each example's key) and `file` is tfds' record id (tfds keeps no file names)."""
    data_dir = Path(cfg.get("tfds_data_dir") or "data/tfds")
    manual = cfg.get("tfds_manual_dir")
    archives = {name: Path(manual) / name for name in TFDS_ARCHIVES} if manual else {}
    for path in archives.values():
        if not path.is_file():
            raise KwsError(f"dataset.tfds_manual_dir: {path} not found "
                           f"(put both archives there, Google's or the synthetic corpus's: {', '.join(TFDS_ARCHIVES)})")
    prepared = _tfds_prepared(data_dir, archives)
    if not prepared:
        if not manual and not probe():  # before tfds' retry loop, which takes minutes to give up
            raise KwsError(f"dataset.source speech_commands: cannot reach {TFDS_HOST} to download "
                           "(offline?); set dataset.tfds_manual_dir to a folder with the two official "
                           "archives, or use dataset.source local with dataset.local_dir")
        missing = [tool for tool in ("ffmpeg", "ffprobe") if shutil.which(tool) is None]
        if missing:  # else a FileNotFoundError deep inside tfds
            raise KwsError(f"{' and '.join(missing)}: not found on PATH; tensorflow-datasets' speech_commands "
                           "hands every file of the test archive to pydub, which runs ffprobe and ffmpeg on "
                           "those that are not PCM WAV (README.md, LICENSE) to skip them (install the Debian "
                           "package ffmpeg, as the Makefile does)")
    import tensorflow_datasets as tfds  # slow import: only on this path
    from tensorflow_datasets.core.download.download_manager import NonMatchingChecksumError

    builder = _tfds_builder(data_dir, {} if prepared else archives)
    if not prepared:
        # REUSE_CACHE: a dataset prepared from other archives is prepared again, not reused
        config = tfds.download.DownloadConfig(manual_dir=manual,
                                              download_mode=tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS)
        try:
            builder.download_and_prepare(download_config=config)
        except NonMatchingChecksumError as e:
            # only Google's archives are checked against Google's checksums (_tfds_builder)
            raise KwsError(f"dataset.source speech_commands: {str(e).splitlines()[0].rstrip(':')} "
                           "(not the sha256 in tfds' checksums.tsv: a damaged download?)") from None
    names = builder.info.features["label"].names
    splits = {s: Examples() for s in SPLITS}
    for split, tfds_split in (("train", "train"), ("validation", "validation"), ("test", "test")):
        ds = builder.as_dataset(split=tfds_split, read_config=tfds.ReadConfig(add_tfds_id=True))
        for ex in tqdm(tfds.as_numpy(ds), total=builder.info.splits[tfds_split].num_examples,
                       desc=f"reading tfds {split}", unit="clip"):
            file = ex["tfds_id"].decode()
            audio = ex["audio"].astype(np.int16)
            if len(audio) > SAMPLE_RATE or not audio.any():
                raise KwsError(f"tfds speech_commands {file}: {len(audio)} samples"
                               f"{' all zero' if not audio.any() else ''}, expected a non-silent clip <= 1 s")
            splits[split].add(audio, word_to_label(names[ex["label"]]), file)
    return splits, _tfds_background(data_dir, manual)


def _tfds_prepared(data_dir: Path, archives: dict[str, Path]) -> bool:
    """speech_commands is prepared in data_dir (from these archives, if given: tfds records their
    total size as downloadSize, which tells the synthetic corpus from Google's)."""
    infos = [p for p in sorted((data_dir / "speech_commands").glob("*/dataset_info.json"))
             if not p.parent.name.startswith("incomplete")]  # tfds' folder while preparing
    if not infos or not archives:
        return bool(infos)
    recorded = json.loads(infos[-1].read_text()).get("downloadSize")
    return recorded is not None and int(recorded) == sum(p.stat().st_size for p in archives.values())


def _tfds_builder(data_dir: Path, archives: dict[str, Path]):
    """tfds' speech_commands builder. Archives that are not Google's (the synthetic corpus: not
    the sizes in tfds' checksums.tsv) would fail tfds' checksum check, so they get the same
    builder with their own checksums declared: tfds still finds them through its manual-dir
    mechanism, verifies them, and makes the examples with its own code."""
    import tensorflow_datasets as tfds
    from tensorflow_datasets.core.download import checksums

    cls = tfds.builder_cls("speech_commands")
    files = {TFDS_ARCHIVES[name][0]: path for name, path in archives.items()}
    if any(path.stat().st_size != cls.url_infos[url].size for url, path in files.items()):
        declared = {url: checksums.compute_url_info(path) for url, path in files.items()}

        class Archives(cls, skip_registration=True):
            name = "speech_commands"  # the same prepared layout in tfds_data_dir
            url_infos = declared

        cls = Archives
    return cls(data_dir=str(data_dir))


def _tfds_background(data_dir: Path, manual: str | None) -> dict[str, np.ndarray]:
    """The _background_noise_ recordings, read from the train archive tfds used."""
    from tensorflow_datasets.core.download import resource

    name = "speech_commands_v0.02.tar.gz"
    fname = resource.get_dl_fname(*TFDS_ARCHIVES[name])  # how tfds names its download
    downloads = data_dir / "downloads"
    candidates = [Path(manual) / name] if manual else []
    candidates += [downloads / "speech_commands" / fname, downloads / fname, downloads / "manual" / name]
    archive = next((c for c in candidates if c.is_file()), None)
    if archive is None:
        raise KwsError(f"{candidates[-1]}: train archive not found (needed for {BACKGROUND_NOISE_DIR}); "
                       f"put {name} in dataset.tfds_manual_dir")
    background = {}
    with tarfile.open(archive, "r:gz") as tar:
        for m in tqdm(tar, desc=f"scanning {archive.name} for noise", unit="file"):
            parts = Path(m.name).parts
            if m.isfile() and BACKGROUND_NOISE_DIR in parts and m.name.endswith(".wav"):
                background[parts[-1]] = read_wav(m.name, tar.extractfile(m).read(), max_seconds=None,
                                                 name=f"{archive}:{m.name}")
    if not background:
        raise KwsError(f"{archive}: no {BACKGROUND_NOISE_DIR}/*.wav inside")
    return dict(sorted(background.items()))


# ---------------------------------------------------------------- stage

def load_source(cfg: dict, corpus: str | os.PathLike | None = None):
    source = cfg.get("source")
    if source == "synthetic":
        corpus = Path(corpus or "data/synthetic_corpus")
        if not corpus.is_dir():
            raise KwsError(f"{corpus}: synthetic corpus folder not found (run the synthetic_corpus stage)")
        if not (corpus / TRAIN_ARCHIVE).is_file():
            raise KwsError(f"{corpus}: no {TRAIN_ARCHIVE} (built with another dataset.source? see README.txt)")
        return read_local(corpus / TRAIN_ARCHIVE, corpus / TEST_ARCHIVE)
    if source == "local":
        if not cfg.get("local_dir"):
            raise KwsError("params dataset.local_dir: must be set for dataset.source local")
        for key in ("local_dir", "local_test_dir"):  # the usual mistake: say which param holds the path
            if cfg.get(key) and not Path(cfg[key]).exists():
                raise KwsError(f"{cfg[key]}: not found (params dataset.{key}: a speech_commands folder "
                               "or .tar.gz archive)")
        return read_local(cfg["local_dir"], cfg.get("local_test_dir"))
    if source == "speech_commands":
        return read_speech_commands(cfg)
    raise KwsError(f"dataset.source: unknown source {source!r}, expected one of {', '.join(SOURCES)}")


def make_dataset(cfg: dict, out: str | os.PathLike, corpus: str | os.PathLike | None = None) -> dict:
    """Read the configured source and write {train,validation,test}.npz, background_noise.npz,
    summary.json into `out` in one atomic step."""
    t0 = time.time()
    splits, background = load_source(cfg, corpus)
    for s in SPLITS:
        if not splits[s].audio:
            raise KwsError(f"dataset.source {cfg['source']}: the {s} split is empty")
    summary = {"source": cfg["source"], "labels": list(LABELS), "counts": {}}
    with atomic_path(out) as tmp:
        tmp.mkdir()
        for s in SPLITS:
            arrays = splits[s].arrays()
            save_npz(tmp / f"{s}.npz", **arrays)
            counts = np.bincount(arrays["label"], minlength=len(LABELS))
            summary["counts"][s] = {LABELS[i]: int(c) for i, c in enumerate(counts)} | {"total": int(counts.sum())}
        save_npz(tmp / "background_noise.npz", **background)
        summary["background_noise"] = {k: round(len(v) / SAMPLE_RATE, 2) for k, v in background.items()}
        write_json(tmp / "summary.json", summary)
    summary["seconds"] = round(time.time() - t0, 1)
    return summary
