"""Stage dataset: read the configured source (params dataset.source) into the contract's npz files."""
import argparse
import json

from kws.common import HelpFormatter, KwsError, run_cli
from kws.params import load_params
from kws.dataset import make_dataset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--params", default="params.yaml", help="the pipeline's params (section dataset)")
    ap.add_argument("--corpus", default="data/synthetic_corpus", help="read when dataset.source is synthetic")
    ap.add_argument("--out", default="data/dataset", help="folder to write {train,validation,test}.npz, background_noise.npz, summary.json")
    args = ap.parse_args()
    cfg = load_params(args.params).get("dataset")
    if not isinstance(cfg, dict):
        raise KwsError(f"{args.params}: no dataset section")
    summary = make_dataset(cfg, args.out, args.corpus)
    print(json.dumps({"source": summary["source"], "seconds": summary["seconds"],
                      **{s: c["total"] for s, c in summary["counts"].items()}}))


if __name__ == "__main__":
    run_cli(main)
