"""kws.files: the files stages hand each other (features, BIN folders, layout, JSON and CSV)."""
import numpy as np
import pytest

from kws import files
from kws.common import KwsError
from kws.qonnx_model import InputQuant


def write_splits(folder, splits):
    for s, (x, y) in splits.items():
        np.savez(folder / f"{s}.npz", x=x, y=y)


@pytest.mark.parametrize("mutate,match", [
    (lambda d: d.pop("validation"), "validation.npz: features file not found"),
    (lambda d: d.__setitem__("train", (np.zeros((4, 490), np.float32), np.zeros(4, np.int64))), "x must be"),
    (lambda d: d.__setitem__("test", (np.zeros((4, 49, 10), np.float32), np.full(4, 12))), "labels must be"),
    (lambda d: d.__setitem__("test", (np.zeros((4, 49, 10), np.float32), np.zeros(4))), "integer labels"),
    (lambda d: d.__setitem__("test", (np.full((4, 49, 10), np.nan, np.float32), np.zeros(4, np.int64))), "NaN"),
    (lambda d: d.__setitem__("test", (np.zeros((4, 49, 40), np.float32), np.zeros(4, np.int64))), "different feature shapes"),
])
def test_bad_features_name_the_file(tmp_path, mutate, match):
    splits = {s: (np.zeros((4, 49, 10), np.float32), np.arange(4)) for s in files.SPLITS}
    mutate(splits)
    write_splits(tmp_path, splits)
    with pytest.raises(KwsError, match=match):
        files.load_feature_splits(tmp_path)


def test_feature_splits_and_their_digest(tmp_path):
    rng = np.random.default_rng(0)
    splits = {s: (rng.normal(size=(5, 49, 10)).astype(np.float32), np.arange(5)) for s in files.SPLITS}
    write_splits(tmp_path, splits)
    x, y, digest = files.load_feature_splits(tmp_path)
    assert all(np.array_equal(x[s], splits[s][0]) and y[s].dtype == np.int64 for s in files.SPLITS)
    splits["test"][0][0, 0, 0] += 1  # one value changed: another digest
    write_splits(tmp_path, splits)
    assert files.load_feature_splits(tmp_path)[2] != digest


def test_feature_type_must_match(tmp_path):
    np.savez(tmp_path / "t.npz", x=np.zeros((2, 49, 40), np.float32), y=np.zeros(2, np.int64), feature_type="lfbe")
    with pytest.raises(KwsError, match="holds lfbe features"):
        files.load_features(tmp_path / "t.npz", "mfcc")


def test_model_layout():
    x = np.arange(2 * 49 * 10, dtype=np.float32).reshape(2, 49, 10)
    assert np.array_equal(files.to_model_layout(x, (1, 1, 10, 49))[:, 0], x.transpose(0, 2, 1))
    assert files.to_model_layout(x, (1, 49, 10)) is x
    td = np.zeros((2, 16000, 1), np.float32)
    assert files.to_model_layout(td, (1, 1, 16000)).shape == (2, 1, 16000)
    with pytest.raises(KwsError, match="do not fit the model input"):
        files.to_model_layout(x, (1, 1, 10, 50))


def test_bin_folder_round_trip(tmp_path):
    quant = InputQuant(scale=0.5, zero_point=0.0, bit_width=8, signed=True, narrow=True)
    assert files.bin_dtype(quant.dtype, "td_samples") == np.int16 and files.bin_dtype(quant.dtype, "mfcc") == np.int8
    q = np.arange(3 * 490).reshape(3, 1, 10, 49).astype(np.int8)
    names = files.write_bins(tmp_path / "bins", q, np.array([0, 5, 11]))
    assert names == ["tst_000000_Down_0.bin", "tst_000001_On_5.bin", "tst_000002_Unknown_11.bin"]
    # the MLPerf Tiny runner's format, byte for byte
    assert (tmp_path / "bins" / files.LABELS_CSV).read_text().splitlines()[1] == "tst_000001_On_5.bin, 12, 5"
    got_names, labels, x = files.read_bin_folder(tmp_path / "bins", quant, (1, 1, 10, 49), "mfcc", 12)
    assert got_names == names and labels.tolist() == [0, 5, 11] and np.array_equal(x, quant.dequantize(q))
    with pytest.raises(KwsError, match="3 classes"):
        files.write_labels_csv(tmp_path / "bins" / files.LABELS_CSV, names, labels % 3, 3)
        files.read_bin_folder(tmp_path / "bins", quant, (1, 1, 10, 49), "mfcc", 12)
    (tmp_path / "bins" / names[1]).write_bytes(b"\0" * 10)
    with pytest.raises(KwsError, match="tst_000001_On_5.bin: 10 bytes"):
        files.read_bin_folder(tmp_path / "bins", quant, (1, 1, 10, 49))


def test_json_and_csv_are_written_whole(tmp_path):
    files.write_json(tmp_path / "m" / "a.json", {"accuracy": 0.5})
    assert (tmp_path / "m" / "a.json").read_text() == '{\n  "accuracy": 0.5\n}\n'
    files.write_csv(tmp_path / "t.csv", [{"epoch": 1, "loss": 1 / 3, "acc": None}], ("epoch", "loss", "acc"))
    assert (tmp_path / "t.csv").read_text() == "epoch,loss,acc\n1,0.333333,\n"
    with pytest.raises(ValueError):  # a row with a key the header lacks: nothing is left behind
        files.write_csv(tmp_path / "t.csv", [{"epoch": 2, "other": 1}], ("epoch",))
    assert (tmp_path / "t.csv").read_text() == "epoch,loss,acc\n1,0.333333,\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m", "t.csv"]
