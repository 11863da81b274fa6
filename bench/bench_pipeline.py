"""Pipeline wall times on the default profile, in a fresh temporary copy of the repo:
full `dvc repro` (what `make repro` runs after setup), stage by stage, a no-op `dvc repro`,
and a rerun of `bins` alone after a bins param change.

Usage: python bench/bench_pipeline.py [--profile tiny]
"""
import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from pipeline_repo import ALL_STAGES, REPO, dvc, make_tiny_repo, out_hashes, stages_run  # noqa: E402


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=["default", "tiny"], default="default")
    parser.add_argument("--noop_runs", type=int, default=5)
    args = parser.parse_args()
    # next to the repository, not in /tmp: on our machines /tmp creates files 10x slower
    with tempfile.TemporaryDirectory(prefix=".kws-bench-", dir=Path(__file__).resolve().parents[2]) as tmp:
        repo = make_tiny_repo(Path(tmp), tiny=args.profile == "tiny")
        # stage by stage (`--single-item`, in dvc.yaml's order), so each stage's time is known
        stage_times = {}
        for stage in ALL_STAGES:
            stage_times[stage], result = timed(lambda: dvc(repo, "repro", "--single-item", stage))
            assert stages_run(result.stdout) == [stage], result.stdout
        full = sum(stage_times.values())
        # the default profile must reproduce the committed dvc.lock, byte for byte
        differ = None
        if args.profile == "default" and (REPO / "dvc.lock").is_file():
            committed = out_hashes(REPO)
            differ = [k for k, v in out_hashes(repo).items() if committed.get(k) != v]
        noop = [timed(lambda: dvc(repo, "repro"))[0] for _ in range(args.noop_runs)]
        params = yaml.safe_load((repo / "params.yaml").read_text())
        params["bins"]["num_bin_files"] = max(1, params["bins"]["num_bin_files"] // 2)
        (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        bins_only, rerun = timed(lambda: dvc(repo, "repro"))
        assert stages_run(rerun.stdout) == ["bins", "hls4ml"], rerun.stdout
    print(f"### Pipeline ({args.profile} profile, 2 cores)\n")
    print("| measurement | seconds | target |\n|---|---|---|")
    for stage, seconds in stage_times.items():
        print(f"| stage `{stage}` | {seconds:.1f} | |")
    print(f"| full `dvc repro`, the stages above | {full:.1f} | <= 900 |")
    print(f"| no-op `dvc repro` (median of {args.noop_runs}) | {statistics.median(noop):.2f} | <= 2 |")
    print(f"| rerun of `bins` (+ the disabled hls4ml check) after a bins param change | {bins_only:.1f} | |")
    if differ is not None:
        print(f"\nouts equal to the committed dvc.lock: {'all' if not differ else 'NOT ' + ', '.join(differ)}")


if __name__ == "__main__":
    main()
