"""Determined 0.38.1's own experiment-config schemas (fixture, outside the repo): the master's test
cases through kws.expconf, and the configs kws.train submits, checked the way the master checks
them (sanity, merge over the template, defaults, completeness, AssertCurrent)."""
import copy
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from conftest import REPO, find_det_schemas
from kws import expconf
from kws.engines import determined as D
from kws.common import KwsError
from kws.params import load_params

PARAMS = load_params(REPO / "params.yaml")
TEMPLATE = REPO / "kws_tf_template_finn.yaml"


# Go-only behaviour, outside the schemas (each known, none met by this project's configs):
GO_ONLY = {
    "devices defaults, in string and map forms": "Go parses device strings '/h:/c:r' into objects",
    "minimal valid experiment": "the master adds its built-in log policies (CUDA OOM, ECC errors)",
    "default values": "the master's built-in log policies",
    "root minimal (valid)": "a Go-only runtime default of a test struct",
    "unique devices append when merged": "Go parses device strings into objects",
    "nested hyperparameters are merged recursively": "Go turns shorthand hyperparameters into const ones",
    "only merge if both values are nested hps": "Go turns a null hyperparameter into a const one",
    "legacy log policies merging": "Go rewrites legacy log-policy actions",
}


def _master_cases(*keys: str, known: dict[str, str] | None = None) -> list:
    """(file, case) for the cases of schemas/test_cases/v0/*.yaml with any of `keys`, those in
    `known` expected to fail (strictly, for the reason given); one placeholder when the fixture is missing, so that the test reports the skip (or, under CI,
    the failure)."""
    found = find_det_schemas()
    if found is None:
        return [pytest.param(None, None, id="fixture-missing")]
    cases = []
    for f in sorted((found / "test_cases" / "v0").glob("*.yaml")):
        for case in yaml.safe_load(f.read_text()):
            if any(k in case for k in keys):
                reason = (known or {}).get(case["name"])
                marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
                cases.append(pytest.param(f.name, case, id=f"{f.name}::{case['name']}", marks=marks))
    assert cases, f"{found}: no test cases"
    return cases


@pytest.fixture(scope="module")
def schemas(det_schemas) -> expconf.Schemas:
    return expconf.Schemas(det_schemas)


@pytest.fixture
def schemas_env(det_schemas, monkeypatch):
    """kws.train finds the same schemas the tests use (a CI clone has no ../shared of its own)."""
    monkeypatch.setenv(expconf.ENV_VAR, str(det_schemas))


@pytest.mark.parametrize("file,case", _master_cases("sane_as", "complete_as", "sanity_errors", "completeness_errors"))
def test_master_test_case(schemas, file, case):
    """The master's own cases: sane_as / complete_as must give no error; sanity_errors /
    completeness_errors are regexes each matching one of the rendered errors."""
    for url in case.get("sane_as") or []:
        assert schemas.sanity_errors(case["case"], url) == [], url
    for url in case.get("complete_as") or []:
        assert schemas.completeness_errors(case["case"], url) == [], url
    for kind, check in (("sanity_errors", schemas.sanity_errors), ("completeness_errors", schemas.completeness_errors)):
        for url, expected in (case.get(kind) or {}).items():
            got = check(case["case"], url)
            assert got, f"{kind} expected for {url}"
            for pattern in expected:
                assert any(re.search(pattern, line) for line in got), (url, pattern, got)


def _no_nulls(value):
    """Null means "not given" in these schemas (their README); the Go structs print every field."""
    if isinstance(value, dict):
        return {k: _no_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_no_nulls(v) for v in value]
    return value


def _runtime_stars(got, expected):
    """The cases' '*' stands for a value only the master knows: any non-null value matches."""
    if expected == "*":
        return "*" if got is not None else None
    if isinstance(got, dict) and isinstance(expected, dict):
        return {k: _runtime_stars(v, expected.get(k)) for k, v in got.items()}
    if isinstance(got, list) and isinstance(expected, list):
        return [_runtime_stars(g, e) for g, e in zip(got, expected)] + got[len(expected):]
    return got


@pytest.mark.parametrize("file,case", _master_cases("default_as", "merge_as", known=GO_ONLY))
def test_master_defaults_and_merge_case(schemas, file, case):
    if "default_as" in case:
        url = case["default_as"]
        got = schemas.with_defaults(case["case"], url)
        if url.endswith("environment.json"):
            got = expconf.runtime_defaults({"environment": got})["environment"]
        elif url.endswith("experiment.json"):
            got = expconf.runtime_defaults(got)
        assert _no_nulls(_runtime_stars(got, case["defaulted"])) == _no_nulls(case["defaulted"])
    if "merge_as" in case:
        section = {"bind-mounts.json": "bind_mounts", "checkpoint-storage.json": "checkpoint_storage",
                   "searcher.json": "searcher", "log-policies.json": "log_policies",
                   "hyperparameter.json": "hyperparameters"}[case["merge_as"].rsplit("/", 1)[1]]
        wrap = (lambda v: {"hyperparameters": {"hp": v}}) if section == "hyperparameters" else (lambda v: {section: v})
        merged = schemas.merge(wrap(case["case"]), wrap(case["merge_src"]))
        got = merged["hyperparameters"]["hp"] if section == "hyperparameters" else merged[section]
        assert _no_nulls(got) == _no_nulls(case["merged"])


def test_custom_keywords_survive_a_ref_into_another_file(schemas, det_schemas):
    """experiment.json -> optionalRef -> checkpoint-storage.json (union) -> shared-fs.json (checks):
    the message comes from a custom keyword two files away."""
    cfg = {"checkpoint_storage": {"type": "shared_fs", "host_path": "/mnt/x", "storage_path": "/elsewhere"}}
    assert schemas.sanity_errors(cfg) == [
        "<config>.checkpoint_storage: storage_path must either be a relative directory or a subdirectory of host_path"]
    # the trap: each file's own $schema makes python-jsonschema use plain Draft 7 behind a $ref
    raw = yaml.safe_load((det_schemas / "expconf" / "v0" / "shared-fs.json").read_text())
    from jsonschema import Draft7Validator, validators
    assert validators.validator_for(raw) is Draft7Validator


# --- the configs kws.train submits ------------------------------------------------------------

def _params(searcher: dict, sweep: dict | None = None) -> dict:
    p = copy.deepcopy(PARAMS)
    p["train"]["searcher"] = {**p["train"]["searcher"], **searcher}
    p["train"]["sweep"] = sweep or {}
    return p


SWEEP = {"model.weight_bit_width": [2, 3, 4], "train.lr": [1e-3, 5e-4]}
SUBMITTED = {
    "single": _params({"name": "single"}),
    "grid": _params({"name": "grid"}, SWEEP),
    "random": _params({"name": "random"}, SWEEP),
    "random, max_trials given": _params({"name": "random", "max_trials": 4}, SWEEP),
    "adaptive_asha": _params({"name": "adaptive_asha"}, SWEEP),
    "adaptive_asha, all given": _params({"name": "adaptive_asha", "max_trials": 20, "max_time": 30,
                                         "time_metric": "epochs", "mode": "aggressive"}, SWEEP),
}


@pytest.mark.parametrize("case", SUBMITTED)
def test_submitted_config_passes_determineds_schemas(schemas, case):
    config = D.experiment_config(SUBMITTED[case])
    template = yaml.safe_load(TEMPLATE.read_text())
    errors, full = schemas.submission_errors(config, template)
    assert errors == []
    # merged the master's way: the template's cluster settings, the config's recipe and searcher
    assert full["checkpoint_storage"]["host_path"] == template["checkpoint_storage"]["host_path"]
    assert full["bind_mounts"][0]["container_path"] == D.FEATURES_IN_CONTAINER
    assert full["searcher"]["name"] == config["searcher"]["name"] and full["hyperparameters"] == config["hyperparameters"]
    assert full["environment"]["image"]["cuda"] == template["environment"]["image"]["gpu"]  # the master's migration
    assert full["searcher"]["max_concurrent_trials" if case != "single" else "smaller_is_better"] is not None  # defaults


def test_searcher_requirements_filled_from_params():
    grid_size = 3 * 2
    assert D.experiment_config(SUBMITTED["random"])["searcher"]["max_trials"] == grid_size
    asha = D.experiment_config(SUBMITTED["adaptive_asha"])["searcher"]
    assert (asha["max_trials"], asha["max_time"], asha["time_metric"]) == (grid_size, PARAMS["train"]["epochs"], "epochs")
    given = D.experiment_config(SUBMITTED["adaptive_asha, all given"])["searcher"]
    assert (given["max_trials"], given["max_time"], given["mode"]) == (20, 30, "aggressive")


def test_what_the_schemas_require_of_each_searcher(schemas):
    """Without kws.train's completion, the schemas and the master reject random and
    adaptive_asha configs (the configs generated before this check existed)."""
    template = yaml.safe_load(TEMPLATE.read_text())
    config = D.experiment_config(SUBMITTED["grid"])
    config["searcher"] = {"name": "random", "metric": "val_accuracy"}
    assert schemas.submission_errors(config, template)[0] == ["<config>.searcher: max_trials is a required property"]
    config["searcher"] = {"name": "adaptive_asha", "metric": "val_accuracy", "max_trials": 6}
    assert schemas.submission_errors(config, template)[0] == [
        "<config>.searcher: the `adaptive_asha` searcher requires `max_time` and `time_metric` to be set"]


@pytest.mark.parametrize("searcher,sweep,match", [
    ({"name": "random"}, None, r"^params train\.searcher\.max_trials: the random searcher needs"),
    ({"name": "adaptive_asha"}, None, r"^params train\.searcher\.max_trials: the adaptive_asha searcher needs"),
    ({"name": "adaptive_asha", "time_metric": "batches"}, SWEEP, r"^params train\.searcher\.time_metric: .*'epochs'"),
    ({"name": "grid", "metric": "accuracy"}, SWEEP, r"^params train\.searcher\.metric: the trial reports val_accuracy"),
    ({"name": "single"}, SWEEP, r"^params train\.sweep needs train\.searcher\.name: grid \(or random or adaptive_asha, "
                                r"which sample it train\.searcher\.max_trials times\)"),
])
def test_searcher_params_errors_name_the_param(searcher, sweep, match):
    with pytest.raises(KwsError, match=match):
        D.experiment_config(_params(searcher, sweep))


@pytest.mark.parametrize("searcher,param,message", [
    ({"name": "random", "max_trials": 0}, "params train.searcher.max_trials",
     "<config>.searcher.max_trials: 0 is less than the minimum of 1"),
])
def test_invalid_config_fails_before_contacting_the_master(schemas_env, tmp_path, searcher, param, message):
    experiment_file = tmp_path / "experiment_number.txt"
    # port 9 (discard) has no master: had the check come after contacting it, this would say "unreachable"
    with pytest.raises(KwsError) as info:
        D.submit(_params(searcher, SWEEP), "http://127.0.0.1:9", REPO, TEMPLATE, experiment_file, wait=False)
    assert str(info.value) == f"{param}: Determined 0.38.1's schemas reject the config: {message}"
    assert not experiment_file.exists()


@pytest.mark.parametrize("searcher,line", [
    ({"name": "grid", "max_concurrent_trials": 2}, "params train.searcher.max_concurrent_trials: unknown key"),
    ({"name": "grid", "smaller_is_better": "no"}, "params train.searcher.smaller_is_better: expected true or false"),
])
def test_searcher_keys_and_types_are_the_params_schemas(tmp_path, searcher, line):
    """Keys and types are kws.params' to check (as for a params.yaml), before Determined's schemas."""
    with pytest.raises(KwsError) as info:
        D.submit(_params(searcher, SWEEP), "http://127.0.0.1:9", REPO, TEMPLATE, tmp_path / "e.txt", wait=False)
    assert str(info.value).startswith(line)


def test_template_errors_name_the_template(schemas_env, tmp_path):
    template = yaml.safe_load(TEMPLATE.read_text())
    template["checkpoint_storage"]["storage_path"] = "../outside"
    bad = tmp_path / "template.yaml"
    bad.write_text(yaml.safe_dump(template))
    with pytest.raises(KwsError, match=rf"^{re.escape(str(bad))}: .*<config>\.checkpoint_storage: storage_path must"):
        expconf.check_submission(D.experiment_config(PARAMS), bad)


def test_cli_invalid_searcher_one_line(schemas_env, tmp_path):
    p = _params({"name": "random", "max_trials": 0}, SWEEP)
    p["train"]["det_master"] = "http://127.0.0.1:9"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p))
    env = dict(os.environ, PYTHONPATH=str(REPO))  # this checkout's kws, whichever one the venv installed
    env.pop("DET_MASTER", None)
    r = subprocess.run([sys.executable, str(REPO / "scripts/run_training.py"), "--params", "params.yaml"],
                       cwd=tmp_path, env=env, capture_output=True, text=True)
    assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith("error: params train.searcher.max_trials: Determined 0.38.1's schemas reject")


def test_without_schemas_the_check_says_so_and_leaves_it_to_the_master(tmp_path):
    """A user's clone has no ../shared: the check is skipped with a note (a copy of the package in
    a folder with no fixture above it, as on such a machine)."""
    shutil.copytree(REPO / "kws", tmp_path / "kws", ignore=shutil.ignore_patterns("__pycache__"))
    config = {"name": "x", "searcher": {"name": "random", "metric": "val_accuracy"}}  # invalid, yet unchecked
    code = f"from kws import expconf; expconf.check_submission({config!r}, {str(TEMPLATE)!r}); print('ok')"
    env = {k: v for k, v in os.environ.items() if k != expconf.ENV_VAR}
    env.pop("PYTHONPATH", None)
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout == "ok\n", r.stderr
    assert r.stderr.startswith("note: Determined 0.38.1's config schemas not found") and expconf.ENV_VAR in r.stderr


def test_schema_dir_env_var_must_hold_the_schemas(tmp_path, monkeypatch):
    monkeypatch.setenv(expconf.ENV_VAR, str(tmp_path))
    with pytest.raises(KwsError, match=rf"^{expconf.ENV_VAR}={re.escape(str(tmp_path))}: no expconf/v0/experiment.json"):
        expconf.find_schema_dir()


def test_a_keyword_nobody_implements_is_refused(det_schemas, tmp_path):
    """python-jsonschema ignores unknown keywords: a newer checkout's extension must not pass unseen."""
    shutil.copytree(det_schemas / "expconf", tmp_path / "expconf")
    assert expconf.Schemas(tmp_path).sanity_errors({"searcher": {"name": "single"}}) == []
    target = tmp_path / "expconf" / "v0" / "searcher-single.json"
    schema = json.loads(target.read_text())
    schema["properties"]["metric"]["conditional"] = {"when": {}, "enforce": {}}  # the master's 8th, unused one
    target.write_text(json.dumps(schema))
    with pytest.raises(KwsError, match=rf"^{re.escape(str(target))}: keyword conditional not implemented here"):
        expconf.Schemas(tmp_path)
