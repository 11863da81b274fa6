"""The synthetic corpus (kws/synthetic/speakers.py, corpus.py and the stage script): real TTS audio,
Speech Commands layout, deterministic bytes."""
import os
import re
import subprocess
import sys
import tarfile
import wave
from pathlib import Path

import numpy as np
import pytest
import yaml

from kws.synthetic import build_corpus
from kws.synthetic.corpus import check_params
from kws.synthetic.speakers import engine_counts, select_speakers, speaker_words, split_speakers
from kws.synthetic.tts import ENGINE_VOICES
from kws.common import KwsError
from kws.labels import (ALL_WORDS, BACKGROUND_NOISE_DIR, KEYWORDS, OTHER_WORDS, SILENCE_DIR, TEST_ARCHIVE,
                        TRAIN_ARCHIVE, UNKNOWN_DIR)

REPO = Path(__file__).resolve().parents[1]
TINY = {"num_speakers": 7, "other_words_per_speaker": 25, "takes_per_word": 2, "validation_fraction": 0.2, "test_fraction": 0.2,
        "noise_seconds": 3, "test_silence_clips": 7, "test_unknown_clips": 5,
        "engines": {"espeak": 1, "flite": 1, "festival": 1, "mbrola": 1, "mbrola_accented": 1, "pico": 1, "rhvoice": 1},
        # one speaker each
        "channel_tilt_db": [-3, 3], "channel_ripple_db": 3, "noise_floor_db": [-85, -40], "noise_floor_ripple_db": 6,
        "noise_kinds": ["room_tone", "white_noise", "brown_noise", "electric_hum", "running_tap", "babble"]}
NAME = re.compile(r"^([0-9a-f]{8})_nohash_(\d+)\.wav$")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """The tiny corpus: its two archives, extracted next to them into train/ and test/."""
    out = tmp_path_factory.mktemp("syn") / "corpus"
    build_corpus(out, TINY, seed=3)
    assert sorted(p.name for p in out.iterdir()) == ["README.txt", TEST_ARCHIVE, TRAIN_ARCHIVE]
    for folder, archive in (("train", TRAIN_ARCHIVE), ("test", TEST_ARCHIVE)):
        with tarfile.open(out / archive) as tar:
            tar.extractall(out / folder, filter="data")
    return out


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_archives_like_the_official_ones(corpus):
    """Members at the top (<word>/<file>), sorted, with no owner, time or umask of the machine."""
    with tarfile.open(corpus / TRAIN_ARCHIVE) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names) and "validation_list.txt" in names and "yes" in names
    assert {(m.uid, m.gid, m.uname, m.gname, m.mtime) for m in members} == {(0, 0, "", "", 0)}
    assert {m.mode for m in members if m.isfile()} == {0o644}
    assert (corpus / TRAIN_ARCHIVE).read_bytes()[4:8] == b"\0\0\0\0"  # gzip header without a time


def _wav(path: Path) -> tuple:
    with wave.open(str(path)) as w:
        return w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()


def test_deterministic(corpus, tmp_path):
    again = tmp_path / "again"
    build_corpus(again, TINY, seed=3, workers=1)  # other scheduling, same bytes
    assert _files(again) == {k: v for k, v in _files(corpus).items() if "/" not in k}


def _cfg(**kw):
    return check_params({**TINY, **kw})


def test_seed_changes_speakers():
    cfg = _cfg(num_speakers=20)
    a, b = select_speakers(cfg, 0), select_speakers(cfg, 1)
    assert a == select_speakers(cfg, 0)
    assert set(a) != set(b)


def test_speakers_follow_engine_shares_and_ranges():
    cfg = _cfg(num_speakers=1000, engines={"espeak": 0.4, "flite": 0.2, "festival": 0.2, "mbrola": 0.1, "pico": 0.1})
    speakers = select_speakers(cfg, 0)
    engines = [s.engine for s in speakers.values()]
    assert {e: engines.count(e) for e in set(engines)} == {"espeak": 400, "flite": 200, "festival": 200,
                                                           "mbrola": 100, "pico": 100}
    for e in ("flite", "festival", "mbrola", "pico"):  # every voice of an engine gets its share
        voices = [s.voice for s in speakers.values() if s.engine == e]
        assert set(voices) == set(ENGINE_VOICES[e])
        assert max(map(voices.count, set(voices))) - min(map(voices.count, set(voices))) <= 1
    for key, attr in (("pitch_range", "pitch"), ("rate_range", "rate"), ("formant_range", "formant")):
        v = np.array([getattr(s, attr) for s in speakers.values()])
        lo, hi = cfg[key]
        assert lo - 1e-3 <= v.min() and v.max() <= hi + 1e-3 and np.ptp(v) > 0.8 * (hi - lo)
    assert engine_counts({"a": 1, "b": 1, "c": 1}, 10) in ({"a": 4, "b": 3, "c": 3},)


def test_train_layout(corpus):
    train = corpus / "train"
    speakers = set()
    for word in ALL_WORDS:
        names = sorted(p.name for p in (train / word).iterdir())
        assert len(names) == TINY["num_speakers"] * TINY["takes_per_word"]
        for name in names:
            m = NAME.match(name)
            assert m and int(m.group(2)) < TINY["takes_per_word"], name
            speakers.add(m.group(1))
            ch, width, rate, frames = _wav(train / word / name)
            assert (ch, width, rate) == (1, 2, 16000) and 0 < frames <= 16000
    assert len(speakers) == TINY["num_speakers"]
    assert sorted(p.name for p in train.iterdir() if p.is_dir()) == sorted([*ALL_WORDS, BACKGROUND_NOISE_DIR])


def test_audio_is_speech_at_random_offsets(corpus):
    starts = []
    for p in sorted((corpus / "train" / "yes").iterdir()):
        with wave.open(str(p)) as w:
            a = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(float)
        loud = np.flatnonzero(np.abs(a) > 0.3 * np.abs(a).max())
        assert np.abs(a).max() > 1000 and 800 < loud[-1] - loud[0] < 16000  # a word, not a click
        starts.append(loud[0])
    assert len(set(starts)) > 1


def test_split_lists_no_speaker_leak(corpus):
    train = corpus / "train"
    lists = {n: (train / f"{n}_list.txt").read_text().split() for n in ("validation", "testing")}
    owners = {}
    for split, entries in lists.items():
        assert entries
        for e in entries:
            word, name = e.split("/")
            assert word in ALL_WORDS and (train / e).is_file()
            owners.setdefault(NAME.match(name).group(1), set()).add(split)
    assert all(len(s) == 1 for s in owners.values())
    all_speakers = {NAME.match(p.name).group(1) for p in (train / "yes").iterdir()}
    assert all_speakers - set(owners)  # some speakers are left for train


def test_test_folder_only_test_speakers(corpus):
    test = corpus / "test"
    testing = (corpus / "train" / "testing_list.txt").read_text().split()
    test_speakers = {NAME.match(e.split("/")[1]).group(1) for e in testing}
    assert sorted(p.name for p in test.iterdir()) == sorted([*KEYWORDS, SILENCE_DIR, UNKNOWN_DIR])
    for k in KEYWORDS:
        for p in (test / k).iterdir():
            assert NAME.match(p.name).group(1) in test_speakers
            assert p.read_bytes() == (corpus / "train" / k / p.name).read_bytes()
    unknown = sorted((test / UNKNOWN_DIR).iterdir())
    assert len(unknown) == TINY["test_unknown_clips"]
    for p in unknown:
        word, name = p.name.split("_", 1)
        assert word in OTHER_WORDS and NAME.match(name).group(1) in test_speakers
    silence = sorted((test / SILENCE_DIR).iterdir())
    assert len(silence) == TINY["test_silence_clips"]
    assert all(_wav(p) == (1, 2, 16000, 16000) for p in silence)


def test_speakers_say_every_keyword_and_some_other_words(tmp_path):
    cfg = {**TINY, "num_speakers": 6, "takes_per_word": 1, "engines": {"espeak": 1}, "other_words_per_speaker": 3}
    build_corpus(tmp_path / "c", cfg, seed=0)
    with tarfile.open(tmp_path / "c" / TRAIN_ARCHIVE) as tar:
        names = [m.name for m in tar.getmembers() if m.isfile() and m.name.endswith(".wav")]
        listed = tar.extractfile("testing_list.txt").read().decode().split()
        listed += tar.extractfile("validation_list.txt").read().decode().split()
    words = {}
    for n in names:
        if not n.startswith(BACKGROUND_NOISE_DIR):
            word, name = n.split("/")
            words.setdefault(NAME.match(name).group(1), set()).add(word)
    assert len(words) == 6 and set(listed) <= set(names)
    for sid, said in words.items():
        assert set(KEYWORDS) <= said and len(said - set(KEYWORDS)) == 3
        assert said == set(speaker_words(sid, 0, 3))
    assert len({frozenset(s) for s in words.values()}) > 1  # drawn per speaker
    assert speaker_words("abc", 0, len(OTHER_WORDS)) == ALL_WORDS


def test_background_noise(corpus):
    noise = sorted((corpus / "train" / BACKGROUND_NOISE_DIR).iterdir())
    assert sorted(p.name for p in noise) == sorted(f"{k}.wav" for k in TINY["noise_kinds"])  # params pick them
    spectra = []
    for p in noise:
        assert _wav(p) == (1, 2, 16000, TINY["noise_seconds"] * 16000)
        with wave.open(str(p)) as w:
            a = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(float)
        assert np.abs(a).max() > 3000
        s = np.abs(np.fft.rfft(a)) ** 2
        spectra.append([s[:len(s) // 16].sum() / s.sum()])  # share of power below 500 Hz
    assert np.ptp(spectra) > 0.5  # white vs brown/hum: really different colours


@pytest.mark.parametrize("bad, key", [
    ({"num_speakers": 2}, "num_speakers"), ({"engines": {"espeak": 1, "sapi": 1}}, "engines"),
    ({"engines": {"espeak": 0}}, "engines"), ({"formant_range": [1.2, 0.9]}, "formant_range"),
    ({"channel_tilt_db": [0, 20]}, "channel_tilt_db"), ({"intonation": "yes"}, "intonation"),
    ({"noise_floor_ripple_db": -1}, "noise_floor_ripple_db"),
    ({"noise_kinds": ["running_tap", "hiss"]}, "noise_kinds"), ({"noise_kinds": ["pink_noise"]}, "noise_kinds"),
    ({"noise_kinds": ["running_tap", "running_tap"]}, "noise_kinds"),
    ({"other_words_per_speaker": 0}, "other_words_per_speaker"), ({"other_words_per_speaker": 26}, "other_words_per_speaker"),
    ({"other_words_per_speaker": 2.5}, "other_words_per_speaker"),
])
def test_bad_params(bad, key):
    with pytest.raises(KwsError, match=f"synthetic.{key}"):
        select_speakers(_cfg(**bad), 0)
    with pytest.raises(KwsError, match="test_fraction"):
        split_speakers(["a", "b", "c"], 0.1, 0.7, 0)


def _script(tmp_path, params, out, env=None):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return subprocess.run([sys.executable, str(REPO / "scripts" / "make_synthetic_dataset.py"),
                           "--params", str(tmp_path / "params.yaml"), "--out", str(out)],
                          capture_output=True, text=True, cwd=REPO, env=env)


def test_script_unused_source_writes_readme_only(tmp_path):
    r = _script(tmp_path, {"seed": 0, "synthetic": TINY, "dataset": {"source": "local"}}, tmp_path / "c")
    assert r.returncode == 0, r.stderr
    assert [p.name for p in (tmp_path / "c").iterdir()] == ["README.txt"]


def test_script_bad_param_one_line(tmp_path):
    r = _script(tmp_path, {"seed": 0, "synthetic": {**TINY, "num_speakers": 100000},
                           "dataset": {"source": "synthetic"}}, tmp_path / "c")
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "num_speakers" in r.stderr
    assert not (tmp_path / "c").exists()


def test_missing_engine_is_one_line_no_fallback(tmp_path):
    """festival selected but not on PATH: a clear error, no corpus from the other engines."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("espeak-ng", "flite", "mbrola", "pico2wave", "RHVoice-test"):
        (bin_dir / tool).symlink_to(subprocess.run(["which", tool], capture_output=True, text=True).stdout.strip())
    r = _script(tmp_path, {"seed": 0, "synthetic": TINY, "dataset": {"source": "synthetic"}}, tmp_path / "c",
                env={**os.environ, "PATH": str(bin_dir)})
    assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
    assert "festival" in r.stderr and "apt-get install" in r.stderr
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("engine, own_field", [("piper", 3), ("kokoro", 2), ("kokoro_en", 2)])
def test_neural_speakers_same_bytes_whatever_the_workers(tmp_path, engine, own_field):
    """The neural engines' speakers in the corpus (Piper draws noise inside its network; Kokoro's
    network runs in this process, loaded by check_engines before the workers fork, then by each
    worker): built by one process and by a pool of two, the archives are the same bytes, and each
    speaker is its own (Joe at its own pitch; a Kokoro voice of its own)."""
    cfg = {**TINY, "num_speakers": 3, "takes_per_word": 1, "engines": {engine: 1}, "other_words_per_speaker": 1,
           "test_silence_clips": 1, "test_unknown_clips": 1}
    for workers in (1, 2):
        build_corpus(tmp_path / str(workers), cfg, seed=5, workers=workers)
    for archive in (TRAIN_ARCHIVE, TEST_ARCHIVE):
        assert (tmp_path / "1" / archive).read_bytes() == (tmp_path / "2" / archive).read_bytes(), archive
    speakers = [line.split() for line in (tmp_path / "1" / "README.txt").read_text().splitlines()
                if f" {engine}:" in line]
    assert len(speakers) == 3 and len({s[own_field] for s in speakers}) == 3, speakers
