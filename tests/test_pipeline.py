"""The DVC pipeline end to end on the tiny profile: real `dvc repro` in a temporary git repo."""
import ast
import json
from pathlib import Path

import pytest
import yaml

from pipeline_repo import ALL_STAGES, FIRST_RUN, REPO, dvc, make_tiny_repo, out_hashes, stages_run


def _module_files(module: str, names=()) -> set[str]:
    """The repo files of `module` (a .py file, or a package's __init__.py) and, for a package, of
    the submodules `names` imported from it."""
    base = REPO / module.replace(".", "/")
    if base.is_dir():
        found = {f"{module.replace('.', '/')}/__init__.py"}
        return found | {f"{module.replace('.', '/')}/{n}.py" for n in names if (base / f"{n}.py").is_file()}
    return {f"{module.replace('.', '/')}.py"}


def kws_modules_imported_by(path: Path) -> set[str]:
    """The kws files `path` imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "kws":
            found |= _module_files(node.module, [a.name for a in node.names])
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("kws."):
                    found |= _module_files(a.name)
    return found - {"kws/__init__.py"}


def kws_modules_run_by(script: str) -> set[str]:
    needed, todo = {script}, [script]
    while todo:
        for module in kws_modules_imported_by(REPO / todo.pop()) - needed:
            needed.add(module)
            todo.append(module)
    return needed


STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_depends_on_all_the_code_it_runs(stage):
    """An edit to any module a stage's script imports, directly or not, must rerun the stage."""
    python, flag, module = STAGES[stage]["cmd"].split()[:3]
    # -m: the repo root goes on sys.path, so a stage runs this checkout's kws (a `dvc exp run` copy's
    # own code, say), not whichever checkout the venv's editable install points at
    assert (python, flag) == ("python", "-m"), STAGES[stage]["cmd"]
    needed = kws_modules_run_by(module.replace(".", "/") + ".py")
    missing = needed - set(STAGES[stage]["deps"])
    assert not missing, f"dvc.yaml stage {stage} runs {sorted(missing)} without listing them in deps"
    # and no more: a dep the stage does not run would rerun it for nothing
    extra = {d for d in STAGES[stage]["deps"] if d.startswith("kws/")} - needed
    assert not extra, f"dvc.yaml stage {stage} lists {sorted(extra)}, which it does not run"


# One module per stage: each is the work of one DVC stage. Shared code (kws.files, kws.scoring,
# kws.qonnx_model, ...) serves them all; one stage's module never imports another's, so editing
# a stage reruns that stage and its downstream only.
STAGE_MODULES = {"kws/synthetic", "kws/dataset.py", "kws/features.py", "kws/train.py", "kws/export.py",
                 "kws/bins.py", "kws/hls4ml_check.py", "kws/finn_check.py", "kws/real_speech.py"}


@pytest.mark.parametrize("stage_module", sorted(STAGE_MODULES))
def test_no_stage_module_imports_another(stage_module):
    path = REPO / stage_module  # a module, or a subpackage (kws/synthetic/)
    files = sorted(path.glob("*.py")) if path.is_dir() else [REPO / (stage_module.removesuffix(".py") + ".py")]
    runs = set().union(*(kws_modules_run_by(str(f.relative_to(REPO))) for f in files))
    others = {m for m in runs for s in STAGE_MODULES - {stage_module}
              if m in (s, s + ".py") or m.startswith(s + "/")}
    assert not others, f"{stage_module} imports the stage module(s) {sorted(others)}"


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
    # the headline figures only (the rest is in reports/): the table fits a 120-column terminal
    assert max(len(line) for line in shown.splitlines()) <= 120, shown
    for name in ("train", "export", "bins"):
        assert json.loads((tiny_repo / "reports" / f"{name}.json").read_text())


def test_nothing_reruns_when_nothing_changed(tiny_repo):
    result = dvc(tiny_repo, "repro")
    assert stages_run(result.stdout) == []
    assert "up to date" in dvc(tiny_repo, "status").stdout


def test_bins_param_reruns_only_bins(tiny_repo):
    """...and the optional hls4ml and FINN checks of the bins (disabled here: they only write their notes)."""
    set_param(tiny_repo, "bins", "num_bin_files", 10)
    assert stages_run(dvc(tiny_repo, "repro").stdout) == ["bins", "hls4ml", "finn"]
    assert len(list((tiny_repo / "kws_bin_files").glob("tst_*.bin"))) == 10


def test_model_param_reruns_train_export_bins(tiny_repo):
    set_param(tiny_repo, "model", "hidden_layers", [64, 64, 64])
    assert stages_run(dvc(tiny_repo, "repro").stdout) == ["train", "export", "bins", "hls4ml", "finn"]


def test_training_code_edit_retrains_from_scratch(tiny_repo):
    """DVC reruns train after an edit to code it imports, and the checkpoint the old code made is
    not resumed as if it were the new code's result."""
    with open(tiny_repo / "kws" / "augment.py", "a") as f:
        f.write("\n# an edit\n")
    result = dvc(tiny_repo, "repro")
    assert stages_run(result.stdout)[:1] == ["train"]
    assert "starting fresh" in result.stdout + result.stderr
    assert "resuming" not in result.stdout + result.stderr


def test_forced_rerun_in_a_fresh_clone_is_bit_identical(tiny_repo, tmp_path):
    """Same params and seed, another checkout: every out (corpus, features, checkpoints,
    model, bins) has the same bytes. --force with no persisted checkpoint retrains from scratch."""
    assert FIRST_RUN
    again = make_tiny_repo(tmp_path)
    assert stages_run(dvc(again, "repro", "--force").stdout) == ALL_STAGES
    differing = {p for p, md5 in out_hashes(again).items() if FIRST_RUN.get(p) != md5}
    assert not differing, f"outs with other bytes in the second run: {sorted(differing)}"
