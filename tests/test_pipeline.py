"""The DVC pipeline end to end on the tiny profile: real `dvc repro` in a temporary git repo."""
import json

import yaml

from pipeline_repo import ALL_STAGES, FIRST_RUN, dvc, make_tiny_repo, out_hashes, stages_run




def set_param(repo, section, key, value):
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params[section][key] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def test_outputs_and_metrics_exist(tiny_repo):
    assert (tiny_repo / "training_checkpoint" / "QONNX_model.onnx").is_file()
    bins = sorted((tiny_repo / "kws_bin_files").glob("tst_*.bin"))
    assert len(bins) == 20
    metrics = json.loads(dvc(tiny_repo, "metrics", "show", "--json").stdout)
    assert metrics, "dvc metrics show returned nothing"
    shown = dvc(tiny_repo, "metrics", "show").stdout
    for name in ("metrics/train.json", "metrics/export.json", "metrics/bins.json"):
        assert name in shown


def test_nothing_reruns_when_nothing_changed(tiny_repo):
    result = dvc(tiny_repo, "repro")
    assert stages_run(result.stdout) == []
    assert "up to date" in dvc(tiny_repo, "status").stdout


def test_bins_param_reruns_only_bins(tiny_repo):
    """...and the optional hls4ml check of the bins (disabled here: it only writes its note)."""
    set_param(tiny_repo, "bins", "num_bin_files", 10)
    assert stages_run(dvc(tiny_repo, "repro").stdout) == ["bins", "hls4ml"]
    assert len(list((tiny_repo / "kws_bin_files").glob("tst_*.bin"))) == 10


def test_model_param_reruns_train_export_bins(tiny_repo):
    set_param(tiny_repo, "model", "hidden_layers", [64, 64, 64])
    assert stages_run(dvc(tiny_repo, "repro").stdout) == ["train", "export", "bins", "hls4ml"]


def test_forced_rerun_in_a_fresh_clone_is_bit_identical(tiny_repo, tmp_path):
    """Same params and seed, another checkout: every out (corpus, features, checkpoints,
    model, bins) has the same bytes. --force with no persisted checkpoint retrains from scratch."""
    assert FIRST_RUN
    again = make_tiny_repo(tmp_path)
    assert stages_run(dvc(again, "repro", "--force").stdout) == ALL_STAGES
    differing = {p for p, md5 in out_hashes(again).items() if FIRST_RUN.get(p) != md5}
    assert not differing, f"outs with other bytes in the second run: {sorted(differing)}"
