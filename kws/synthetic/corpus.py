"""The corpus on disk: every speaker's takes, the noise recordings and the test-set silence written
by a pool of workers, the split lists and the test folder, packed into the two archives."""
from __future__ import annotations

import gzip
import multiprocessing
import shutil
import tarfile
from pathlib import Path

import numpy as np
from tqdm import tqdm

from kws import params
from kws.common import atomic_path
from kws.labels import BACKGROUND_NOISE_DIR, KEYWORDS, OTHER_WORDS, SILENCE_DIR, TEST_ARCHIVE, TRAIN_ARCHIVE, UNKNOWN_DIR
from kws.synthetic.audio import to_int16, write_wav
from kws.synthetic.noise import noise
from kws.synthetic.speakers import item_rng, select_speakers, speaker_takes, speaker_words, split_speakers
from kws.synthetic.tts import ENGINE_VOICES, check_engines, front_end


def check_params(cfg: "params.Synthetic | dict | None") -> dict:
    """The `synthetic:` section as a dict, checked by kws.params (defaults from the schema)."""
    return params.section(params.Synthetic, cfg, "synthetic").model_dump()


def _make_speaker(task) -> None:
    root, seed, sid, speaker, takes, cfg = task
    words = list(speaker_words(sid, seed, cfg["other_words_per_speaker"]))
    for (word, take), audio in speaker_takes(speaker, words, takes, seed, sid, cfg).items():
        write_wav(Path(root) / "train" / word / f"{sid}_nohash_{take}.wav", audio)


def _make_noise(task) -> None:
    root, seed, kind, seconds = task
    write_wav(Path(root) / "train" / BACKGROUND_NOISE_DIR / f"{kind}.wav",
              to_int16(noise(kind, seconds, item_rng(seed, "noise", kind))))


def _make_silence(task) -> None:
    # fresh noise (own stream), never the train recordings: no train/test overlap
    root, seed, i, kinds = task
    rng = item_rng(seed, "test_silence", i)
    kind = kinds[i % len(kinds)]
    clip = noise(kind, 1.0, rng) * rng.uniform(0.05, 1.0)
    write_wav(Path(root) / "test" / SILENCE_DIR / f"{kind}_{i:04d}_nohash_0.wav", to_int16(clip))


def _run(fn, tasks, workers: int, desc: str, unit: str = "it") -> None:
    if workers <= 1:
        for t in tqdm(tasks, desc=desc, unit=unit):
            fn(t)
        return
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        for _ in tqdm(pool.imap_unordered(fn, tasks, chunksize=1), total=len(tasks), desc=desc, unit=unit):
            pass


def build_corpus(out: str | Path, cfg: dict, seed: int, workers: int = 2) -> dict:
    """Write the whole corpus into `out` (atomically); returns a small summary."""
    cfg = check_params(cfg)
    takes = int(cfg["takes_per_word"])
    speakers = select_speakers(cfg, seed)
    split = split_speakers(list(speakers), cfg["validation_fraction"], cfg["test_fraction"], seed)
    check_engines([e for e, s in cfg["engines"].items() if s > 0])
    with atomic_path(out) as tmp:
        train = tmp / "train"
        # slow festival speakers first: the pool's tail is then short tasks
        order = sorted(speakers, key=lambda s: (front_end(speakers[s].engine, speakers[s].voice) != "festival", s))
        tasks = [(str(tmp), seed, sid, speakers[sid], takes, cfg) for sid in order]
        _run(_make_speaker, tasks, workers, "speakers", "speaker")
        _run(_make_noise, [(str(tmp), seed, k, cfg["noise_seconds"]) for k in cfg["noise_kinds"]], workers, "noise")
        _run(_make_silence, [(str(tmp), seed, i, cfg["noise_kinds"]) for i in range(int(cfg["test_silence_clips"]))],
             workers, "test silence")
        rel = {s: [] for s in ("train", "validation", "test")}
        for sid in speakers:
            for w in speaker_words(sid, seed, cfg["other_words_per_speaker"]):
                rel[split[sid]] += [f"{w}/{sid}_nohash_{t}.wav" for t in range(takes)]
        for name, s in (("validation_list.txt", "validation"), ("testing_list.txt", "test")):
            (train / name).write_text("".join(p + "\n" for p in sorted(rel[s])))
        # test archive layout: keywords of test speakers as they are, a sample of their other words
        for p in rel["test"]:
            word, name = p.split("/")
            if word in KEYWORDS:
                (tmp / "test" / word).mkdir(parents=True, exist_ok=True)
                shutil.copyfile(train / p, tmp / "test" / p)
        others = sorted(p for p in rel["test"] if p.split("/")[0] in OTHER_WORDS)
        n_unknown = min(int(cfg["test_unknown_clips"]), len(others))
        (tmp / "test" / UNKNOWN_DIR).mkdir(parents=True, exist_ok=True)
        for p in np.random.default_rng([seed, 2]).choice(others, n_unknown, replace=False):
            word, name = p.split("/")
            shutil.copyfile(train / p, tmp / "test" / UNKNOWN_DIR / f"{word}_{name}")
        for folder, archive in (("train", TRAIN_ARCHIVE), ("test", TEST_ARCHIVE)):
            write_archive(tmp / folder, tmp / archive)
            shutil.rmtree(tmp / folder)
        per_engine = {e: sum(s.engine == e for s in speakers.values()) for e in ENGINE_VOICES}
        (tmp / "README.txt").write_text(
            f"Synthetic Speech Commands v2 look-alike, seed {seed}.\n"
            f"{len(speakers)} speakers ({', '.join(f'{e} {c}' for e, c in per_engine.items() if c)}): "
            f"{sum(v == 'train' for v in split.values())} train, "
            f"{sum(v == 'validation' for v in split.values())} validation, "
            f"{sum(v == 'test' for v in split.values())} test.\n"
            + "".join(f"{sid} {split[sid]} {spk.spec()}\n" for sid, spk in speakers.items()))
    return {"speakers": len(speakers), "engines": {e: c for e, c in per_engine.items() if c},
            "files": {k: len(v) for k, v in rel.items()}, "test_unknown": n_unknown}


def _normalized(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = 0
    info.mode = 0o755 if info.isdir() else 0o644
    return info


def write_archive(folder: Path, archive: Path) -> None:
    """`folder`'s files as a .tar.gz like the official archives (<word>/<file>.wav at the top),
    sorted, with fixed owners, modes and times: the same files always give the same bytes.
    gzip level 0 (stored): noisy WAV audio barely compresses (to 65% at level 1), and level 1
    took 26 s for the default corpus against 8 s stored."""
    paths = sorted(folder.rglob("*"))
    with open(archive, "wb") as raw, \
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=0, mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for path in tqdm(paths, desc=f"packing {archive.name}", unit="file"):
            tar.add(path, arcname=str(path.relative_to(folder)), recursive=False, filter=_normalized)


def write_unused(out: str | Path, source: str) -> None:
    """The DVC out of a pipeline that does not use the synthetic corpus."""
    with atomic_path(out) as tmp:
        tmp.mkdir()
        (tmp / "README.txt").write_text(
            f"The synthetic corpus is not used: params dataset.source is {source!r}.\n")
