"""Stage features: data/dataset/{split}.npz -> data/features/{split}.npz (MLPerf Tiny KWS preprocessing)."""
import argparse
import json

from kws.common import HelpFormatter, run_cli
from kws.params import load_params
from kws.features import FeatureConfig, make_features


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--params", default="params.yaml", help="the pipeline's params (sections seed, features)")
    ap.add_argument("--dataset", default="data/dataset", help="folder with {train,validation,test}.npz and background_noise.npz")
    ap.add_argument("--out", default="data/features", help="folder to write {train,validation,test}.npz")
    ap.add_argument("--feature_type", default=None, help="mfcc | lfbe | td_samples (default: params features.feature_type)")
    args = ap.parse_args(argv)
    params = load_params(args.params)
    cfg = FeatureConfig.from_params(params, args.feature_type)
    summary = make_features(args.dataset, args.out, cfg, seed=int(params.get("seed", 0)))
    print(json.dumps({"feature_type": cfg.feature_type, **summary}))


if __name__ == "__main__":
    run_cli(main)
