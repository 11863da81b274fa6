"""Determined 0.38.1's own experiment-config JSON schemas, applied offline the way its master does.

The master (Go, not installable anywhere any more) validates a submitted config in this order:
sanity check of the raw config, merge over the template, merge in the master's checkpoint storage
(not done here: this project's template sets its own), fill defaults, completeness check, then
`SearcherConfig.AssertCurrent()`. The `determined` wheel ships none of the schemas; they come from a
Determined checkout (`schemas/` at tag v0.38.1) or the test fixture. The schemas use seven keywords of Determined's own (meaning: the schemas' README and
master/pkg/schemas/extensions/*.go); they are implemented here on python-jsonschema's Draft 7.

Sanity uses union, checks, compareProperties, disallowProperties and optionalRef; completeness adds
eventuallyRequired and eventually. Errors read like the master's: `<config>.path: message`, one per
leaf of the error tree, sorted.
"""
from __future__ import annotations

import copy
import json
import os
import posixpath
import sys
from pathlib import Path

import yaml
from jsonschema import Draft7Validator, ValidationError, validators
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

from kws.common import KwsError

ENV_VAR = "KWS_DET_SCHEMAS"
VERSION = "0.38.1"
FIXTURE_SUBDIR = Path("shared") / "fixtures" / f"determined_expconf_v{VERSION}" / "schemas"
BASE = "http://determined.ai/schemas/expconf/v0/"
EXPERIMENT = BASE + "experiment.json"
DRAFT7_URI = "http://json-schema.org/draft-07/schema#"


def find_schema_dir() -> Path | None:
    """$KWS_DET_SCHEMAS (a Determined checkout, its schemas/ folder, or the fixture), else the
    fixture next to this checkout (../shared/...); None when neither exists."""
    if os.environ.get(ENV_VAR):
        given = Path(os.environ[ENV_VAR]).expanduser()
        for cand in (given, given / "schemas"):
            if (cand / "expconf" / "v0" / "experiment.json").is_file():
                return cand
        raise KwsError(f"{ENV_VAR}={given}: no expconf/v0/experiment.json under it or under its schemas/")
    # Only the checkout's own sibling: walking further up would pick up an unrelated shared/
    # folder (say /tmp/shared) for a copy that has none next to it.
    cand = Path(__file__).resolve().parents[1].parent / FIXTURE_SUBDIR
    return cand if (cand / "expconf" / "v0" / "experiment.json").is_file() else None


# --- the custom keywords -------------------------------------------------------------------

def _union_key(key: str, instance) -> bool:
    """Which union member's errors the user should see (Determined's unionKey mini-language)."""
    if key == "always":
        return True
    if key == "never":
        return False
    if key.startswith("not:"):
        return not _union_key(key[4:], instance)
    if key.startswith("const:"):
        name, _, value = key[6:].partition("=")
        return isinstance(instance, dict) and instance.get(name) == value
    if key.startswith("singleproperty:"):
        return isinstance(instance, dict) and list(instance) == [key[15:]]
    if key.startswith("type:"):
        return isinstance(instance, {"array": list, "object": dict}[key[5:]])
    if key.startswith("hasattr:"):
        return isinstance(instance, dict) and key[8:] in instance
    raise ValueError(f"invalid unionKey {key!r}")


def _union(validator, union, instance, schema):
    """Exactly one member must match; otherwise show the errors of the member the instance
    evidently meant (its unionKey), or the union's own message."""
    matched, shown = 0, None
    for item in union["items"]:
        errors = list(validator.descend(instance, item))
        if not errors:
            matched += 1
        elif shown is None and _union_key(item["unionKey"], instance):
            shown = errors
    if matched == 1:
        return
    if matched > 1:
        yield ValidationError(f"bug in the schema: {matched} union members matched")
        return
    yield ValidationError(union.get("defaultMessage", "union failed to validate"), context=shown or [])


def _checks(validator, checks, instance, schema):
    """Each key is the message shown when its subschema fails (the subschema's errors are not)."""
    for message, subschema in checks.items():
        if next(iter(validator.descend(instance, subschema)), None) is not None:
            yield ValidationError(message)


def _dotted(instance, dotted: str):
    for key in dotted.split("."):
        instance = instance[key]
    return instance


def _compare_properties(validator, cmp, instance, schema):
    """Compare two properties; absent or mistyped ones are left to the other keywords."""
    try:
        a, b = _dotted(instance, cmp["a"]), _dotted(instance, cmp["b"])
    except (KeyError, TypeError):
        return
    kind = cmp["type"]
    if kind in ("a<b", "a<=b"):
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b))
        if numbers and (a >= b if kind == "a<b" else a > b):
            yield ValidationError(f"{cmp['a']} must be less than {cmp['b']}")
    elif kind == "a_is_subdir_of_b":
        if not (isinstance(a, str) and isinstance(b, str)):
            return
        a, b = posixpath.normpath(a), posixpath.normpath(b)
        # the master's test is a string prefix of the cleaned paths; kept as is
        outside = not a.startswith(b) if posixpath.isabs(a) else a.startswith("..")
        if outside:
            yield ValidationError(f"{cmp['a']} must be a subdirectory of {cmp['b']}")
    else:
        raise ValueError(f"compareProperties: unknown type {kind!r}")


def _disallow_properties(validator, disallowed, instance, schema):
    if isinstance(instance, dict):
        for prop, message in disallowed.items():
            if prop in instance:
                yield ValidationError(message)


def _optional_ref(validator, ref, instance, schema):
    """$ref that lets null through (null means "not given" throughout these schemas)."""
    if instance is not None:
        yield from validator.descend(instance, {"$ref": ref})


def _eventually_required(validator, required, instance, schema):
    if isinstance(instance, dict):
        for prop in required:
            if instance.get(prop) is None:
                yield ValidationError(f"{prop} is a required property")


def _eventually(validator, subschema, instance, schema):
    yield from validator.descend(instance, subschema)


_SANITY = {"union": _union, "checks": _checks, "compareProperties": _compare_properties,
           "disallowProperties": _disallow_properties, "optionalRef": _optional_ref}
_COMPLETENESS = {**_SANITY, "eventuallyRequired": _eventually_required, "eventually": _eventually}
# Extended classes are not registered for any $schema URI: Draft 7 elsewhere stays untouched.
SanityValidator = validators.extend(Draft7Validator, _SANITY)
CompletenessValidator = validators.extend(Draft7Validator, _COMPLETENESS)


# Keywords that only annotate, and where subschemas sit (to find keywords nobody implements:
# python-jsonschema ignores unknown keywords, so a newer schema's keyword would pass unseen).
_ANNOTATIONS = {"$schema", "$id", "title", "description", "default", "$comment", "examples", "definitions",
                "readOnly", "writeOnly", "then", "else", "unionKey"}
_KNOWN = set(Draft7Validator.VALIDATORS) | set(_COMPLETENESS) | _ANNOTATIONS
_ONE_SCHEMA = {"not", "if", "then", "else", "additionalProperties", "additionalItems", "contains",
               "propertyNames", "eventually", "items"}
_SCHEMA_LISTS = {"allOf", "anyOf", "oneOf", "items"}
_SCHEMA_MAPS = {"properties", "patternProperties", "definitions", "checks", "dependencies"}


def _unknown_keywords(schema) -> set[str]:
    if not isinstance(schema, dict):
        return set()
    found = set(schema) - _KNOWN
    subschemas = []
    for key, value in schema.items():
        if key in _ONE_SCHEMA and isinstance(value, dict):
            subschemas.append(value)
        elif key in _SCHEMA_LISTS and isinstance(value, list):
            subschemas += value
        elif key in _SCHEMA_MAPS and isinstance(value, dict):
            subschemas += value.values()
        elif key == "union":
            subschemas += value.get("items", [])
    for sub in subschemas:
        found |= _unknown_keywords(sub)
    return found


def _render(error: ValidationError) -> list[str]:
    """The leaves of an error tree as `<config>.a.b[2]: message` (the master's rendering)."""
    if error.context:
        return [line for sub in error.context for line in _render(sub)]
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
    return [f"<config>{path}: {error.message}"]


# --- merging and defaults (what the master does between the two checks) ----------------------

# union-typed sections and their discriminators: a template's section of another kind gives only
# the fields common to all kinds (the master's UnionMerge)
_UNION_SECTIONS = {"checkpoint_storage": ("checkpoint-storage.json", "type"),
                   "tensorboard_storage": ("tensorboard-storage.json", "type"),
                   "searcher": ("searcher.json", "name")}


def _is_hp_leaf(value) -> bool:
    return not isinstance(value, dict) or "type" in value


def _merge_hps(config: dict, template: dict) -> dict:
    """Nested hyperparameter groups merge key by key; a single hyperparameter is atomic."""
    out = dict(config)
    for key, tval in template.items():
        cval = out.get(key)
        if cval is None:
            out[key] = copy.deepcopy(tval)
        elif not _is_hp_leaf(cval) and not _is_hp_leaf(tval):
            out[key] = _merge_hps(cval, tval)
    return out


def _merge_dicts(config: dict, template: dict, only: set[str] | None = None) -> dict:
    out = dict(config)
    for key, tval in template.items():
        if only is not None and key not in only:
            continue
        cval = out.get(key)
        if cval is None:
            out[key] = copy.deepcopy(tval)
        elif isinstance(cval, dict) and isinstance(tval, dict):
            out[key] = _merge_dicts(cval, tval)
    return out


def _policy_key(policy) -> str:
    """A log policy's identity when merging: its name, or for an unnamed one its pattern and action."""
    if isinstance(policy, dict) and policy.get("name") is not None:
        return json.dumps(["name", policy["name"]])
    return json.dumps(["unnamed", policy], sort_keys=True)


def merge(config: dict, template: dict, common: dict[str, set[str]] | None = None) -> dict:
    """The config over the template: the template fills only what the config leaves out (null
    counts as left out). Follows the master's rules for the sections that have their own: bind
    mounts append the template's for other container paths, log policies those of other names;
    for a union section of another kind (say s3 storage over shared_fs) only `common[section]`
    fields come in; single hyperparameters are atomic. Other lists are atomic (the config's wins)."""
    common = common or {}
    out = copy.deepcopy(config)
    for key, tval in template.items():
        cval = out.get(key)
        if cval is None:
            out[key] = copy.deepcopy(tval)
        elif key == "bind_mounts" and isinstance(cval, list) and isinstance(tval, list):
            taken = {m.get("container_path") for m in cval if isinstance(m, dict)}
            out[key] = cval + [copy.deepcopy(m) for m in tval
                               if not (isinstance(m, dict) and m.get("container_path") in taken)]
        elif key == "log_policies" and isinstance(cval, list) and isinstance(tval, list):
            taken = {_policy_key(p) for p in cval}
            out[key] = cval + [copy.deepcopy(p) for p in tval if _policy_key(p) not in taken]
        elif key == "hyperparameters" and isinstance(cval, dict) and isinstance(tval, dict):
            out[key] = _merge_hps(cval, tval)
        elif isinstance(cval, dict) and isinstance(tval, dict):
            disc = _UNION_SECTIONS.get(key, (None, None))[1]
            other_kind = disc and None not in (cval.get(disc), tval.get(disc)) and cval[disc] != tval[disc]
            out[key] = _merge_dicts(cval, tval, only=common.get(key, set()) if other_kind else None)
    return out


# Values only the master knows at submission, filled by its Go code (test cases mark them '*'):
# images from its defaults, a time-based seed. Placeholders of the right type stand in for them.
RUNTIME_IMAGE = "<the master's default image>"
RUNTIME_SEED = 0
RUNTIME_NAME = "<the name the master makes up>"


def runtime_defaults(config: dict) -> dict:
    """The master's run-time defaults, in place: images and environment variables per device
    type (`gpu` is the old name of `cuda`), the experiment seed and name."""
    env = config.get("environment")
    if isinstance(env, dict):
        image = env.get("image")
        if isinstance(image, str):
            env["image"] = {k: image for k in ("cpu", "cuda", "rocm")}
        elif isinstance(image, dict):
            image["cuda"] = image.get("cuda") or image.pop("gpu", None)
            image.pop("gpu", None)
            for k in ("cpu", "cuda", "rocm"):
                image[k] = image.get(k) or RUNTIME_IMAGE
        variables = env.get("environment_variables")
        if isinstance(variables, list):
            env["environment_variables"] = {k: list(variables) for k in ("cpu", "cuda", "rocm")}
        elif isinstance(variables, dict):
            variables["cuda"] = variables.get("cuda") or variables.pop("gpu", None) or []
            variables.pop("gpu", None)
            for k in ("cpu", "rocm"):
                variables[k] = variables.get(k) or []
    if config.get("name") is None:
        config["name"] = RUNTIME_NAME
    repro = config.get("reproducibility")
    if isinstance(repro, dict) and repro.get("experiment_seed") is None:
        repro["experiment_seed"] = RUNTIME_SEED
    return config


class Schemas:
    """The experiment-config schemas of one folder (`expconf/v0/*.json`), with a sanity and a
    completeness check, the master's defaults, and its checks of a submitted config."""

    def __init__(self, schema_dir: str | os.PathLike):
        self.dir = Path(schema_dir)
        files = sorted((self.dir / "expconf" / "v0").glob("*.json"))
        if not files:
            raise KwsError(f"{self.dir}: no expconf/v0/*.json schemas")
        self.by_id: dict[str, dict] = {}
        for f in files:
            try:
                schema = json.loads(f.read_text())
            except (OSError, ValueError) as e:
                raise KwsError(f"{f}: not a JSON schema ({type(e).__name__}: {e})") from None
            if schema.get("$schema") != DRAFT7_URI or "$id" not in schema:
                raise KwsError(f"{f}: expected a draft-07 schema with an $id")
            unknown = _unknown_keywords(schema)
            if unknown:
                raise KwsError(f"{f}: keyword {', '.join(sorted(unknown))} not implemented here "
                               f"(written for Determined {VERSION}'s schemas)")
            # python-jsonschema picks the validator class from each resource's $schema, also when
            # a $ref enters another file: a draft-07 $schema there would switch to plain Draft 7
            # and silently drop the custom keywords. Without it, the referring class is kept.
            schema = {k: v for k, v in schema.items() if k != "$schema"}
            self.by_id[schema["$id"]] = schema
        self.registry = Registry().with_resources(
            (sid, Resource(contents=s, specification=DRAFT7)) for sid, s in self.by_id.items())

    def merge(self, config: dict, template: dict) -> dict:
        """`merge` with each union section's common fields read from its schema (the fields with
        a schema of their own, not just `true`)."""
        common = {key: {k for k, v in self._schema(BASE + name).get("properties", {}).items() if v is not True}
                  for key, (name, _) in _UNION_SECTIONS.items()}
        return merge(config, template, common)

    def _schema(self, url: str) -> dict:
        try:
            return self.by_id[url]
        except KeyError:
            raise KwsError(f"{self.dir}: no schema {url}") from None

    def sanity_errors(self, instance, url: str = EXPERIMENT) -> list[str]:
        return self._errors(SanityValidator, instance, url)

    def completeness_errors(self, instance, url: str = EXPERIMENT) -> list[str]:
        return self._errors(CompletenessValidator, instance, url)

    def _errors(self, cls, instance, url: str) -> list[str]:
        validator = cls(self._schema(url), registry=self.registry)
        return sorted({line for e in validator.iter_errors(instance) for line in _render(e)})

    def _sane(self, instance, schema) -> bool:
        return SanityValidator(schema, registry=self.registry).is_valid(instance)

    def with_defaults(self, instance, url: str = EXPERIMENT):
        """Schema defaults filled wherever a value is absent or null (the master's WithDefaults,
        without its runtime defaults)."""
        return self._fill(copy.deepcopy(instance), self._schema(url))

    def _fill(self, instance, schema):
        if instance is None or not isinstance(schema, dict):
            return instance
        if "$ref" in schema:
            return self._fill(instance, self._schema(schema["$ref"]))
        if "optionalRef" in schema:
            instance = self._fill(instance, self._schema(schema["optionalRef"]))
        if "union" in schema:
            members = [m for m in schema["union"]["items"] if self._sane(instance, m)]
            if len(members) == 1:
                instance = self._fill(instance, members[0])
        if "then" in schema and self._sane(instance, schema.get("if", True)):
            instance = self._fill(instance, schema["then"])
        if isinstance(instance, dict):
            props = schema.get("properties", {})
            for key, sub in props.items():
                if instance.get(key) is None and isinstance(sub, dict) and sub.get("default") is not None:
                    instance[key] = copy.deepcopy(sub["default"])
                if key in instance:
                    instance[key] = self._fill(instance[key], sub)
            extra = schema.get("additionalProperties")
            if isinstance(extra, dict):
                for key in instance:
                    if key not in props:
                        instance[key] = self._fill(instance[key], extra)
        elif isinstance(instance, list) and isinstance(schema.get("items"), dict):
            instance = [self._fill(v, schema["items"]) for v in instance]
        return instance

    def submission_errors(self, config: dict, template: dict | None = None) -> tuple[list[str], dict]:
        """The master's checks of a config submitted over a template, in its order. Returns the
        errors of the first failing step ([] if none) and the config as the master would run it."""
        errors = self.sanity_errors(config)
        if errors:
            return errors, config
        if template is not None:
            errors = self.sanity_errors(template)
            if errors:
                return [f"template: {e}" for e in errors], config
            config = self.merge(config, template)
        full = runtime_defaults(self.with_defaults(config))
        errors = self.completeness_errors(full)
        if errors:
            return errors, full
        return assert_current(full.get("searcher") or {}), full


def assert_current(searcher: dict) -> list[str]:
    """The master's SearcherConfig.AssertCurrent() (Go code, not in the schemas): configs it can
    still parse but no longer runs."""
    name = searcher.get("name")
    if name in ("adaptive_asha", "async_halving") and (searcher.get("max_time") is None
                                                       or searcher.get("time_metric") is None):
        return [f"<config>.searcher: the `{name}` searcher requires `max_time` and `time_metric` to be set"]
    if name in ("sync_halving", "adaptive", "adaptive_simple", "custom"):
        return [f"<config>.searcher: the '{name}' searcher has been removed and is not valid for new experiments"]
    return []


# --- this project's use: the config kws.train submits, over kws_tf_template_finn.yaml ----------

def _origin(error: str, template: Path) -> str:
    """Where the value behind an error comes from: a param, the template, or kws.train."""
    if error.startswith("template: "):
        return str(template)
    path, _, message = error.partition(": ")
    keys = path.removeprefix("<config>").lstrip(".").split(".")
    if keys == [""] and message.endswith(" is a required property"):
        keys = [message.split()[0]]
    if keys[0] == "searcher":
        return "params train.searcher" + "".join(f".{k}" for k in keys[1:2])
    if keys[0] == "hyperparameters":
        return "params " + ".".join(k.split("[")[0] for k in keys[1:]) if keys[1:] else "params"
    if keys[0] in ("name", "entrypoint"):
        return "kws.train.experiment_config"
    return str(template)


def check_submission(config: dict, template: str | os.PathLike) -> None:
    """`config` over `template`, checked as Determined's master checks a submission: KwsError with
    one line naming the param (or the template) and the schema's messages. Without the schemas
    (a user's machine has no fixture) this says so on stderr and leaves the check to the master."""
    template = Path(template)
    schema_dir = find_schema_dir()
    if schema_dir is None:
        print(f"note: Determined {VERSION}'s config schemas not found, so only the master will check the "
              f"config; set {ENV_VAR} to a Determined checkout (tag v{VERSION}) to check it before submitting",
              file=sys.stderr)
        return
    try:
        tmpl = yaml.safe_load(template.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise KwsError(f"{template}: not a readable YAML config template ({type(e).__name__})") from None
    if not isinstance(tmpl, dict):
        raise KwsError(f"{template}: expected a mapping of experiment-config keys")
    errors, _ = Schemas(schema_dir).submission_errors(config, tmpl)
    if errors:
        raise KwsError(f"{_origin(errors[0], template)}: Determined {VERSION}'s schemas reject the config: "
                       + "; ".join(e.removeprefix("template: ") for e in errors))
