"""The submission's command, run from the repo root:
`python make_bin_files.py --bin_file_path=kws_bin_files --feature_type=mfcc`.

Runs scripts/make_bin_files.py exactly as the DVC bins stage does (same options, same defaults),
so the two entry points cannot drift apart."""
import runpy

if __name__ == "__main__":
    runpy.run_module("scripts.make_bin_files", run_name="__main__", alter_sys=True)
