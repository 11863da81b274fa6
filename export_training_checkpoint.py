"""The submission's command, run from the repo root: `python export_training_checkpoint.py`.

Runs scripts/export_training_checkpoint.py exactly as the DVC export stage does (same options,
same defaults), so the two entry points cannot drift apart."""
import runpy

if __name__ == "__main__":
    runpy.run_module("scripts.export_training_checkpoint", run_name="__main__", alter_sys=True)
