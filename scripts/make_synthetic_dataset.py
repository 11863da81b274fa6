"""Stage synthetic_corpus: an offline Speech Commands v2 look-alike spoken by TTS engines
(espeak-ng, flite, festival, MBROLA, pico, RHVoice, Piper; params synthetic.engines)."""
import argparse
import json
import time

from kws.common import HelpFormatter, run_cli
from kws.params import load_params
from kws.synthetic import build_corpus, write_unused


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--params", default="params.yaml", help="the pipeline's params (sections seed, synthetic, dataset.source)")
    ap.add_argument("--out", default="data/synthetic_corpus", help="folder to write the two archives and README.txt")
    ap.add_argument("--workers", type=int, default=2, help="TTS processes in parallel (the bytes do not depend on it)")
    args = ap.parse_args()
    params = load_params(args.params)
    source = params.get("dataset", {}).get("source")
    if source != "synthetic":  # keep the DVC out, spend no minutes
        write_unused(args.out, source)
        print(f"dataset.source is {source!r}: wrote {args.out}/README.txt only")
        return
    t0 = time.time()
    summary = build_corpus(args.out, params.get("synthetic") or {}, int(params.get("seed", 0)), args.workers)
    print(json.dumps({**summary, "seconds": round(time.time() - t0, 1)}))


if __name__ == "__main__":
    run_cli(main)
