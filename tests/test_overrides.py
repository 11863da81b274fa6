"""scripts/overrides.py and `make repro-real`: the real corpus with the submission's recipe in one command
(here the tiny synthetic corpus's archives stand in for the two official ones)."""
import json
import shutil
import subprocess
import sys

import yaml

from pipeline_repo import REPO, VENV_BIN, make_tiny_repo, run

RECIPE = yaml.safe_load((REPO / "recipes" / "real_corpus.yaml").read_text())


def overrides(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "scripts.overrides", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})


def test_recipe_becomes_dvc_options_and_a_bad_recipe_one_line(tmp_path):
    r = overrides(REPO / "recipes" / "real_corpus.yaml", "--params", REPO / "params.yaml")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [w for key, value in (
        ("features.train_copies", 1), ("model.weight_narrow_range", "true"), ("model.act_max", 1.0),
        ("train.epochs", 1000), ("train.warmup_epochs", 0), ("train.unknown_share", 1.0),
        ("train.unknown_weight_divisor", 3.6), ("train.label_smoothing", 0.0)) for w in ("-S", f"{key}={value}")]
    (tmp_path / "bad.yaml").write_text("train:\n  epoch: 3\n")
    r = overrides(tmp_path / "bad.yaml", "--params", REPO / "params.yaml")
    assert r.returncode == 1 and r.stderr == "error: params train.epoch: unknown key (did you mean train.epochs?)\n"


def test_make_repro_real_runs_the_recipe_on_the_archives(tiny_repo, tmp_path):
    data = tmp_path / "archives"
    data.mkdir()
    for archive in ("speech_commands_v0.02.tar.gz", "speech_commands_test_set_v0.02.tar.gz"):
        shutil.copy(tiny_repo / "data" / "synthetic_corpus" / archive, data / archive)
    repo = make_tiny_repo(tmp_path / "repo")
    make = ["make", "-o", "setup", f"VENV={VENV_BIN.parent}"]  # the venv as it is: never reinstalled from the copy
    usage = run([*make, "repro-real"], repo, check=False)
    assert usage.returncode == 2 and "usage: make repro-real DATA=" in usage.stdout
    # the recipe's 1000 epochs, cut to 2 for the test (a later -S wins)
    run([*make, "repro-real", f"DATA={data}", "EXTRA=-S train.epochs=2"], repo)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert params["dataset"]["source"] == "local" and params["dataset"]["local_dir"] == str(data / "speech_commands_v0.02.tar.gz")
    for section, values in RECIPE.items():
        for key, value in values.items():
            assert params[section][key] == (2 if (section, key) == ("train", "epochs") else value), (section, key)
    assert json.loads((repo / "reports" / "train.json").read_text())["epochs"] == 2
    summary = json.loads((repo / "data" / "dataset" / "summary.json").read_text())
    tiny = json.loads((tiny_repo / "data" / "dataset" / "summary.json").read_text())
    assert summary.pop("source") == "local" and tiny.pop("source") == "synthetic"
    assert summary == tiny  # the same clips, read from the archives as the real corpus would be
    assert len(list((repo / "kws_bin_files").glob("tst_*.bin"))) == 20


def test_every_recipe_is_valid_params():
    """Each recipe in recipes/, applied over params.yaml, passes the params schema."""
    recipes = sorted((REPO / "recipes").glob("*.yaml"))
    assert len(recipes) >= 2
    for recipe in recipes:
        r = overrides(recipe, "--params", REPO / "params.yaml")
        assert r.returncode == 0 and r.stdout.startswith("-S "), (recipe.name, r.stderr)
