"""Makefile targets leave `dvc status` clean (real make and dvc on the tiny profile)."""
import yaml

from pipeline_repo import dvc, make, stages_run


def test_make_bins_leaves_the_optional_hls4ml_stage_up_to_date(tiny_repo):
    """New BIN files change the optional hls4ml and finn stages' deps: `make bins` reruns them too
    (a note each while disabled), so `dvc status` is clean, not 'hls4ml: changed deps'."""
    params_file = tiny_repo / "params.yaml"
    before = params_file.read_text()
    params = yaml.safe_load(before)
    params["bins"]["shuffle_seed"] += 1
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        assert stages_run(make(tiny_repo, "bins").stdout) == ["bins", "hls4ml", "finn"]
        assert "up to date" in dvc(tiny_repo, "status").stdout
    finally:  # the shared repo as it was, for the other tests
        params_file.write_text(before)
        dvc(tiny_repo, "repro")
