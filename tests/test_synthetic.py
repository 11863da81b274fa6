"""The espeak-ng corpus: real audio, Speech Commands layout, deterministic bytes."""
import re
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest
import yaml

from kws import synthetic
from kws.common import KwsError
from kws.labels import ALL_WORDS, BACKGROUND_NOISE_DIR, KEYWORDS, OTHER_WORDS, SILENCE_DIR, UNKNOWN_DIR

REPO = Path(__file__).resolve().parents[1]
TINY = {"num_speakers": 3, "takes_per_word": 2, "validation_fraction": 0.2, "test_fraction": 0.2,
        "noise_seconds": 3, "test_silence_clips": 7, "test_unknown_clips": 5}
NAME = re.compile(r"^([0-9a-f]{8})_nohash_(\d+)\.wav$")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("syn") / "corpus"
    synthetic.build_corpus(out, TINY, seed=3)
    return out


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _wav(path: Path) -> tuple:
    with wave.open(str(path)) as w:
        return w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()


def test_deterministic(corpus, tmp_path):
    again = tmp_path / "again"
    synthetic.build_corpus(again, TINY, seed=3, workers=1)  # other scheduling, same bytes
    assert _files(again) == _files(corpus)


def test_seed_changes_corpus(tmp_path):
    a, b = synthetic.select_speakers(20, 0), synthetic.select_speakers(20, 1)
    assert a == synthetic.select_speakers(20, 0)
    assert set(a) != set(b)


def test_speakers_available():
    synthetic.check_voices()  # every listed voice/variant really sounds different
    pool = synthetic.all_speakers()
    assert len(pool) >= 100
    assert len({synthetic.speaker_id(s, 0) for s in pool}) == len(pool)


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


def test_background_noise(corpus):
    noise = sorted((corpus / "train" / BACKGROUND_NOISE_DIR).iterdir())
    assert len(noise) >= 6 and "running_tap.wav" in [p.name for p in noise]
    spectra = []
    for p in noise:
        assert _wav(p) == (1, 2, 16000, TINY["noise_seconds"] * 16000)
        with wave.open(str(p)) as w:
            a = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(float)
        assert np.abs(a).max() > 3000
        s = np.abs(np.fft.rfft(a)) ** 2
        spectra.append([s[:len(s) // 16].sum() / s.sum()])  # share of power below 500 Hz
    assert np.ptp(spectra) > 0.5  # white vs brown/hum: really different colours


def test_resample_keeps_tone_rejects_alias():
    t = np.arange(22050) / 22050
    for f, passes in ((1000, True), (6000, True), (9500, False)):
        y = synthetic.resample(np.sin(2 * np.pi * f * t))
        assert len(y) == 16000
        assert (np.abs(y[500:-500]).max() > 0.95) == passes


def test_bad_params():
    with pytest.raises(KwsError, match="num_speakers"):
        synthetic.select_speakers(2, 0)
    with pytest.raises(KwsError, match="test_fraction"):
        synthetic.split_speakers(["a", "b", "c"], 0.1, 0.7, 0)


def _script(tmp_path, params, out):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return subprocess.run([sys.executable, str(REPO / "scripts" / "make_synthetic_dataset.py"),
                           "--params", str(tmp_path / "params.yaml"), "--out", str(out)],
                          capture_output=True, text=True, cwd=REPO)


def test_script_unused_source_writes_readme_only(tmp_path):
    r = _script(tmp_path, {"seed": 0, "synthetic": TINY, "dataset": {"source": "local"}}, tmp_path / "c")
    assert r.returncode == 0, r.stderr
    assert [p.name for p in (tmp_path / "c").iterdir()] == ["README.txt"]


def test_script_bad_param_one_line(tmp_path):
    r = _script(tmp_path, {"seed": 0, "synthetic": {**TINY, "num_speakers": 100000},
                           "dataset": {"source": "synthetic"}}, tmp_path / "c")
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "num_speakers" in r.stderr
    assert not (tmp_path / "c").exists()
