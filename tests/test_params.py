"""kws/params.py: the one schema of params.yaml."""
import subprocess
import sys

import pytest
import yaml

from kws.common import KwsError
from kws.params import Params, load_params, validate
from pipeline_repo import REPO

RAW = yaml.safe_load((REPO / "params.yaml").read_text())


def test_schema_defaults_are_params_yaml():
    """Defaults live in the schema only, and they are the values params.yaml sets."""
    assert Params().model_dump() == RAW


def test_loading_params_yaml_changes_nothing():
    """Values keep their yaml types and order (the training fingerprint hashes them)."""
    loaded = load_params(REPO / "params.yaml")
    assert loaded == RAW
    assert yaml.safe_dump(loaded, sort_keys=False) == yaml.safe_dump(RAW, sort_keys=False)


def test_a_missing_key_takes_the_schema_default(tmp_path):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    del params["train"]["epochs"], params["bins"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    loaded = load_params(tmp_path / "params.yaml")
    assert loaded["train"]["epochs"] == RAW["train"]["epochs"]
    assert loaded["bins"] == RAW["bins"]


@pytest.mark.parametrize("override, message", [
    ({"train": {"epoch": 5}}, "params train.epoch: unknown key (did you mean train.epochs?)"),
    ({"trian": {}}, "params trian: unknown key (did you mean train?)"),
    ({"train": {"augment": {"max_shfit": 3}}}, "params train.augment.max_shfit: unknown key (did you mean train.augment.max_shift?)"),
    ({"model": {"weight_bit_width": True}}, "params model.weight_bit_width: expected an integer, got True"),
    ({"model": {"hidden_layers": [256, 0]}}, "params model.hidden_layers.1: expected more than 0, got 0"),
    ({"bins": {"num_bin_files": "10"}}, "params bins.num_bin_files: expected an integer, got '10'"),
    ({"synthetic": {"engines": {"espeak": 0}}}, "params synthetic.engines: all shares are 0"),
    ({"synthetic": {"engines": {"espeek": 1}}}, "params synthetic.engines.espeek: expected 'espeak', 'flite',"),
    ({"synthetic": {"pitch_range": [1.5, 1.0]}}, "params synthetic.pitch_range: expected [low, high]"),
    ({"dataset": {"source": "tfds"}}, "params dataset.source: expected 'synthetic', 'local' or 'speech_commands', got 'tfds'"),
])
def test_bad_params_name_their_key(override, message):
    with pytest.raises(KwsError) as e:
        validate(override)
    assert str(e.value).startswith(message), str(e.value)
    assert "\n" not in str(e.value)


# every stage script, with the arguments it needs to get as far as reading params
STAGE_SCRIPTS = {
    "make_synthetic_dataset": ["--out", "out"],
    "make_dataset": ["--out", "out"],
    "make_features": ["--out", "out"],
    "run_training": [],
    "export_training_checkpoint": [],
    "make_bin_files": [],
    "hls4ml_check": [],
}


@pytest.mark.parametrize("script", sorted(STAGE_SCRIPTS))
def test_a_misspelled_key_stops_every_stage_before_any_work(script, tmp_path):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["bins"]["num_bin_file"] = 10  # the typo sits in another stage's section
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = subprocess.run([sys.executable, "-m", f"scripts.{script}", "--params", str(tmp_path / "params.yaml"),
                             *STAGE_SCRIPTS[script]], cwd=tmp_path, capture_output=True, text=True,
                            env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip() == "error: params bins.num_bin_file: unknown key (did you mean bins.num_bin_files?)"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]  # nothing written
