"""scripts/predict.py and kws/predict.py on real audio made here (espeak-ng, ffmpeg, the corpus's
TTS engines and noise) with the project's trained model (training_checkpoint/QONNX_model.onnx,
pulled from the in-repo DVC remote if missing)."""
import json
import os
import re
import subprocess
import sys
import wave

import numpy as np
import pytest

import recordings
from kws.recording import decode
from kws.common import KwsError
from kws.features import FeatureConfig
from kws.labels import LABELS, SILENCE
from kws.params import Params
from kws.predict import Spotter, cut, merge, window_starts
from pipeline_repo import REPO, VENV_BIN

MODEL = REPO / "training_checkpoint" / "QONNX_model.onnx"
LINE = re.compile(r"^(\d+\.\d\d)-(\d+\.\d\d) s  (\w+)  (\d\.\d\d)$")


@pytest.fixture(scope="session")
def trained_model():
    """The shipped model: `dvc pull` restores it offline from dvc-storage/ (docs/dvc.md). Not
    there after that: skip, except under CI, where it is a failure."""
    if not MODEL.is_file():
        subprocess.run([str(VENV_BIN / "dvc"), "pull", "-q", "training_checkpoint/QONNX_model.onnx"], cwd=REPO,
                       capture_output=True, text=True)
    if not MODEL.is_file():
        msg = f"{MODEL.relative_to(REPO)} missing and `dvc pull` did not restore it (run make repro)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg + " (required under CI)")
        pytest.skip(msg)
    return MODEL


@pytest.fixture(scope="module")
def spotter(trained_model):
    return Spotter(trained_model, FeatureConfig(), Params().predict)


def sh(*cmd):
    subprocess.run(cmd, check=True, capture_output=True)


def espeak(path, text):
    sh("espeak-ng", "-v", "en-us", "-w", str(path), text)
    return path


def write_wav(path, audio: np.ndarray, rate: int = 16000):
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(audio.astype("<i2").tobytes())
    return path


@pytest.fixture(scope="module")
def yes_mp3(tmp_path_factory):
    """espeak-ng saying "yes", as a 44.1 kHz stereo mp3."""
    d = tmp_path_factory.mktemp("yes")
    espeak(d / "yes.wav", "yes")
    sh("ffmpeg", "-loglevel", "error", "-i", str(d / "yes.wav"), "-ar", "44100", "-ac", "2", str(d / "yes.mp3"))
    return d / "yes.mp3"


@pytest.fixture(scope="module")
def go_pause_stop(tmp_path_factory):
    """"go", 1 s of silence, "stop" (espeak-ng, joined by ffmpeg); returns the file and the
    second at which "stop" begins."""
    d = tmp_path_factory.mktemp("gostop")
    go, stop = espeak(d / "go.wav", "go"), espeak(d / "stop.wav", "stop")
    out = d / "go_pause_stop.flac"
    sh("ffmpeg", "-loglevel", "error", "-i", str(go), "-f", "lavfi", "-t", "1", "-i", "anullsrc=r=22050:cl=mono",
       "-i", str(stop), "-filter_complex", "[0][1][2]concat=n=3:v=0:a=1", str(out))
    with wave.open(str(go)) as w:
        go_seconds = w.getnframes() / w.getframerate()
    return out, go_seconds + 1.0


def predict_cli(*args):
    return subprocess.run([sys.executable, "-m", "scripts.predict", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True)


# ------------------------------------------------------------------ windows and merging

def test_windows_cover_the_recording_as_if_silence_surrounded_it():
    assert window_starts(100, 16000, 1600).tolist() == [0]  # shorter than a window: one
    assert window_starts(16000, 16000, 1600).tolist() == [0]
    starts = window_starts(40000, 16000, 1600)
    assert starts[0] == -14400 and starts[-1] <= 40000 - 1600 < starts[-1] + 1600
    assert set(np.diff(starts)) == {1600}
    audio = np.arange(1, 20001, dtype=np.int16)
    windows, lengths = cut(audio, np.array([-14400, 0, 18400]), 16000)
    assert (windows[0, :14400] == 0).all() and (windows[0, 14400:] == audio[:1600]).all()
    assert (windows[1] == audio[:16000]).all()
    assert (windows[2, :1600] == audio[18400:]).all() and (windows[2, 1600:] == 0).all()
    assert lengths.tolist() == [16000, 16000, 1600]


def one_hot(labels, score=0.9):
    s = np.full((len(labels), len(LABELS)), (1 - score) / (len(LABELS) - 1), np.float32)
    s[np.arange(len(labels)), labels] = score
    return s


def test_consecutive_windows_of_one_keyword_merge_into_one_detection():
    yes, no, unk = LABELS.index("Yes"), LABELS.index("No"), LABELS.index("Unknown")
    labels = np.array([unk, yes, yes, yes, unk, no, no, no, no, yes, yes, SILENCE])
    scores = one_hot(labels)
    scores[7, no] = 0.95
    starts = np.arange(len(labels)) * 0.1
    got = merge(starts, labels, scores, 1.0, threshold=0.7, min_windows=3)
    # each spans the audio all its windows hold: the last window's start to the first one's end
    assert [(round(d.start, 6), round(d.end, 6), d.label, round(d.score, 3), d.windows) for d in got] == [
        (0.3, 1.1, "Yes", 0.9, 3), (0.8, 1.5, "No", 0.95, 4)]
    assert merge(starts, labels, scores, 1.0, 0.7, 2)[-1].label == "Yes"  # the run of 2 counts at 2
    assert merge(starts, labels, scores, 1.0, 0.96, 1) == []  # nothing reaches the threshold
    low = scores.copy()
    low[2, yes] = 0.5  # one window below the threshold splits the run
    assert [d.label for d in merge(starts, labels, low, 1.0, 0.7, 1)] == ["Yes", "Yes", "No", "Yes"]
    # a recording of one window (a short file) needs only that one
    assert merge(np.zeros(1), np.array([yes]), one_hot([yes]), 1.0, 0.7, 3)[0].label == "Yes"


def test_spotter_refuses_a_hop_longer_than_the_window_and_features_the_model_does_not_take(trained_model):
    with pytest.raises(KwsError, match="predict.hop_ms"):
        Spotter(trained_model, FeatureConfig(), {"hop_ms": 1500})
    with pytest.raises(KwsError, match=r"takes input \(1, 10, 49\), not params features: lfbe \(49, 40\)"):
        Spotter(trained_model, FeatureConfig(feature_type="lfbe"))


# ------------------------------------------------------------------ decoding

def test_decode_any_format_rate_and_channels(tmp_path):
    src = espeak(tmp_path / "yes.wav", "yes")  # 22050 Hz mono 16-bit
    ref = decode(src)
    # two channels are averaged: the same speech in both is the same speech (ffmpeg's own -ac 2
    # upmix would lower it by 3 dB, hence the pan filter)
    for name, opts in [("float.wav", ["-acodec", "pcm_f32le"]), ("u8.wav", ["-acodec", "pcm_u8"]),
                       ("stereo48k.flac", ["-ar", "48000", "-af", "pan=stereo|c0=c0|c1=c0"]), ("x.ogg", [])]:
        sh("ffmpeg", "-loglevel", "error", "-i", str(src), *opts, str(tmp_path / name))
        x = decode(tmp_path / name)
        assert x.dtype == np.int16 and abs(len(x) - len(ref)) < 0.03 * 16000, name
        n = min(len(x), len(ref))
        # the same speech at the same level (lossy ogg and 8-bit: roughly)
        assert np.corrcoef(x[:n].astype(float), ref[:n].astype(float))[0, 1] > 0.9, name
        assert 0.8 < np.abs(x).max() / np.abs(ref).max() < 1.25, name
    with wave.open(str(src)) as w:
        assert abs(len(ref) - w.getnframes() * 16000 / w.getframerate()) <= 1  # resampled to 16 kHz


@pytest.mark.parametrize("make, message", [
    (lambda p: None, "file not found"),
    (lambda p: p.write_bytes(b""), "empty file"),
    (lambda p: p.write_text("not audio at all\n" * 40), "not audio ffmpeg can decode"),
])
def test_bad_files_are_one_line_naming_them(tmp_path, make, message):
    path = tmp_path / "bad.wav"
    make(path)
    with pytest.raises(KwsError) as e:
        decode(path)
    assert str(e.value).startswith(f"{path}: {message}") and "\n" not in str(e.value)


# ------------------------------------------------------------------ the model on real audio

def test_short_file_is_one_window_and_says_yes(spotter, yes_mp3):
    result = spotter.run(yes_mp3)
    assert result.duration < 1.0 and len(result.starts) == 1
    assert [d.label for d in result.detections] == ["Yes"]
    assert result.detections[0].score >= Params().predict.threshold


def test_go_pause_stop_in_order_at_plausible_times(spotter, go_pause_stop):
    path, stop_begins = go_pause_stop
    result = spotter.run(path)
    assert [d.label for d in result.detections] == ["Go", "Stop"], result.detections
    go, stop = result.detections
    assert 0 <= go.start < go.end <= stop_begins - 0.5  # "go" is over before the pause ends
    assert stop_begins - 0.3 <= stop.end and stop.start <= result.duration
    assert go.end <= stop.start


def test_silence_gives_nothing(spotter, tmp_path):
    from kws.synthetic import audio as synthetic_audio, noise

    zeros = write_wav(tmp_path / "zeros.wav", np.zeros(3 * 16000, np.int16))
    quiet = noise.noise("room_tone", 5.0, np.random.default_rng(1)) * 10 ** (-50 / 20)  # -50 dBFS room tone
    for path in (zeros, write_wav(tmp_path / "room.wav", synthetic_audio.to_int16(quiet))):
        result = spotter.run(path)
        assert result.detections == [], (path.name, result.detections)
    assert (spotter.run(zeros).labels == SILENCE).all()


def test_sixty_seconds_of_voices_and_noise_precision_and_recall(spotter, tmp_path):
    """Held out: the defaults were chosen on other seeds and other voices (bench/tune_predict.py)."""
    audio, words = recordings.recording(seed=0, voices=recordings.TEST_VOICES)
    path = write_wav(tmp_path / "sixty.wav", audio)
    result = spotter.run(path)
    s = recordings.score(result.detections, words)
    print(f"60 s recording: {s}")
    assert len(audio) == 60 * 16000 and s["keywords"] == 10
    assert s["precision"] >= 0.8 and s["recall"] >= 0.8, (s, [d.line() for d in result.detections])


# ------------------------------------------------------------------ the command line

def test_cli_text_lines_and_plot(trained_model, go_pause_stop, tmp_path):
    path, _ = go_pause_stop
    r = predict_cli("--model", trained_model, path, "--plot", tmp_path / "out.png")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert [LINE.match(line).group(3) for line in lines] == ["Go", "Stop"], r.stdout
    assert (tmp_path / "out.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"{path}: 2 detections" in r.stderr


def test_cli_json_lines_and_bad_files_among_good_ones(trained_model, yes_mp3, tmp_path):
    missing, empty = tmp_path / "missing.wav", tmp_path / "empty.mp3"
    empty.write_bytes(b"")
    r = predict_cli("--model", trained_model, "--json", missing, yes_mp3, empty)
    assert r.returncode == 1
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [(row["file"], row["label"]) for row in rows] == [(str(yes_mp3), "Yes")]
    assert set(rows[0]) == {"file", "start", "end", "label", "score", "windows"}
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {missing}: file not found", f"error: {empty}: empty file",
                      "error: 2 of 3 file(s) could not be processed"], r.stderr
