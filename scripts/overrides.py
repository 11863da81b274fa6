"""Print a recipe file's values as `dvc exp run` options (-S key=value), after checking that
params.yaml with them applied is valid: `dvc exp run $(python -m scripts.overrides recipes/real_corpus.yaml)`."""
import argparse

import yaml

from kws.common import KwsError, run_cli
from kws.params import load_params, validate


def flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def merged(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        out[key] = merged(base.get(key) or {}, value) if isinstance(value, dict) else value
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("recipe", help="yaml file of params to override, in params.yaml's layout")
    ap.add_argument("--params", default="params.yaml", help="the params they apply to (default: %(default)s)")
    args = ap.parse_args()
    try:
        recipe = yaml.safe_load(open(args.recipe)) or {}
    except OSError as e:
        raise KwsError(f"{args.recipe}: cannot read ({e.strerror})") from None
    if not isinstance(recipe, dict):
        raise KwsError(f"{args.recipe}: expected a mapping of params")
    validate(merged(load_params(args.params), recipe), args.recipe)
    # yaml.safe_dump of one value: true/1.0/null as DVC's -S parses them back
    print(" ".join(f"-S {key}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}"
                   for key, value in flatten(recipe).items()))


if __name__ == "__main__":
    run_cli(main)
