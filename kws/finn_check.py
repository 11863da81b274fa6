"""FINN check: FINN's own front end (its latest release, v0.10.1) on the exported QONNX model.

FINN runs in its own venv (.venv-finn, FINN's release pins: qonnx 0.4.0, onnx 1.13.0,
onnxruntime 1.16.1, numpy 1.24; they conflict with this project's venv) from a FINN checkout
(FINN_ROOT: FINN is run from a checkout, not installed from PyPI). finn_side/run_finn.py runs
there: FINN's build steps step_qonnx_to_finn .. step_generate_estimate_reports (board, part,
clock and target_fps from params `finn`) and every resulting graph that executes without Vitis
HLS, on the BIN files. This side compares those logits with qonnx's on the original model here,
and turns FINN's analytical estimates into metrics. No Vivado or Vitis is needed; the steps from
step_hw_codegen on (HLS synthesis, IP stitching, bitfile) are the user's, from the saved
intermediate models (docs/finn.md).
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np

from kws import params
from kws.common import KwsError, atomic_path
from kws.scoring import is_tie

REPO = Path(__file__).resolve().parents[1]
RUNNER = REPO / "finn_side" / "run_finn.py"
FINN_VENV_PYTHON = REPO / ".venv-finn" / "bin" / "python"
FIXTURE_SUBDIR = Path("shared") / "fixtures" / "finn_v0.10.1"
BUILDER = Path("src") / "finn" / "builder" / "build_dataflow_steps.py"
def check_params(p: "params.Finn | dict | None") -> dict:
    """The `finn:` section as a dict, checked by kws.params (defaults from the schema)."""
    return params.section(params.Finn, p, "finn").model_dump()


def _search_roots() -> list[Path]:
    """This checkout and, for a clone of a local checkout (as CI makes), the one it came from."""
    roots = [REPO]
    origin = subprocess.run(["git", "-C", str(REPO), "config", "remote.origin.url"],
                            capture_output=True, text=True).stdout.strip()
    if origin and Path(origin.removeprefix("file://")).is_dir():
        roots.append(Path(origin.removeprefix("file://")).resolve())
    return roots


def find_finn_root(setting: str | os.PathLike | None = None) -> Path:
    """The FINN checkout: `setting` (--finn_root, make FINN_ROOT=...), else env FINN_ROOT, else
    ../shared/fixtures/finn_v0.10.1 next to this checkout or the one it was cloned from."""
    setting = setting or os.environ.get("FINN_ROOT")
    if setting:
        root = Path(setting).expanduser().resolve()
        if not (root / BUILDER).is_file():
            raise KwsError(f"FINN_ROOT {setting}: not a FINN checkout ({BUILDER} missing)")
        return root
    for root in _search_roots():
        for parent in root.parents:
            if (parent / FIXTURE_SUBDIR / BUILDER).is_file():
                return parent / FIXTURE_SUBDIR
    raise KwsError(f"no FINN checkout: set FINN_ROOT to one (FINN v0.10.1), default ../{FIXTURE_SUBDIR}")


def find_finn_python(setting: str | os.PathLike | None = None) -> Path:
    python = Path(setting or os.environ.get("FINN_PYTHON") or FINN_VENV_PYTHON)
    if not os.access(python, os.X_OK):
        raise KwsError(f"{python}: FINN venv not built (run `make finn-venv`)")
    return python


# Logits within this of each other are a tie to float32 arithmetic: FINN's float graphs (before
# streamlining) compute the same sums in another order, so a top two that close can swap (seen:
# 1.8e-7 apart on a 2-epoch model, where the integer graphs then tie exactly).
FLOAT_TIE = 1e-6


def compare(reference: np.ndarray, logits: np.ndarray) -> dict:
    """Agreement of one graph's predictions with the reference (qonnx here, original model).
    Low-bit logits tie exactly, and float rounding then decides the argmax: a different
    prediction counts as a tie, not a disagreement, when either side's pick is also a maximum of
    the other side's logits, to within FLOAT_TIE (FINN's integer graphs tie exactly where the
    original's top two differ by ~1e-7)."""
    rows = np.arange(len(reference))
    pick_ref, pick = reference.argmax(1), logits.argmax(1)
    differ = pick_ref != pick
    tied = ((logits.max(1) - logits[rows, pick_ref] <= FLOAT_TIE)
            | (reference.max(1) - reference[rows, pick] <= FLOAT_TIE))
    disagree = differ & ~tied
    return {"agree": int((~differ).sum()), "ties": int((is_tie(reference) | is_tie(logits)).sum()),
            "ties_deciding": int((differ & tied).sum()), "disagree_without_tie": int(disagree.sum()),
            "disagreeing": [int(i) for i in np.flatnonzero(disagree)],
            "max_abs_logit_diff": float(np.abs(reference - logits).max())}


def run_finn_side(model_path: Path, x: np.ndarray, cfg: dict, out_dir: Path, finn_root: Path,
                  finn_python: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """finn_side/run_finn.py in the FINN venv; (its result.json, logits per graph)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    np.save(out_dir / "inputs.npy", np.ascontiguousarray(x, dtype=np.float32))
    cmd = [os.fspath(finn_python), os.fspath(RUNNER), "--model", os.fspath(Path(model_path).resolve()),
           "--inputs", os.fspath(out_dir / "inputs.npy"), "--out", os.fspath(out_dir),
           "--board", cfg["board"], "--fpga_part", cfg["fpga_part"],
           "--clk_ns", repr(cfg["synth_clk_period_ns"]), "--target_fps", str(cfg["target_fps"])]
    # only FINN on the path: nothing of this venv may leak into the FINN venv's imports
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(PYTHONPATH=os.fspath(finn_root / "src"), PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    run = subprocess.run(cmd, env=env, capture_output=True, text=True)
    (out_dir / "finn.log").write_text(run.stdout + run.stderr)
    if run.returncode != 0:
        lines = run.stderr.strip().splitlines() or ["(no output)"]
        error = next((ln for ln in reversed(lines) if ln.startswith("error: ")), None)
        raise KwsError(error.removeprefix("error: ") if error else
                       f"FINN run failed (exit {run.returncode}): {lines[-1]}")
    result = json.loads((out_dir / "result.json").read_text())
    with np.load(out_dir / "logits.npz") as f:
        logits = {k: f[k] for k in f.files}
    return result, logits


def check(model_path, bin_dir, cfg: dict, out_dir, finn_root: Path, finn_python: Path,
          feature_type: str = "mfcc") -> tuple[dict, dict]:
    """Run FINN on the model and the BIN files; (metrics, per-layer and per-graph detail).
    `passed` is true when every executed graph predicts what qonnx predicts here on the original
    model on every file, except where an exact tie decides (see compare)."""
    from kws.files import read_bin_folder
    from kws.qonnx_model import check_runtime_compatible, input_quant, input_shape, load_model, run_batch

    bin_dir = Path(bin_dir)
    model = load_model(model_path)
    check_runtime_compatible(model_path)  # one clear line instead of onnxruntime's inside FINN
    files, labels, x = read_bin_folder(bin_dir, input_quant(model), input_shape(model), feature_type)
    reference = run_batch(model, x).astype(np.float64)
    result, logits = run_finn_side(Path(model_path), x, cfg, Path(out_dir), finn_root, finn_python)

    graphs = {name: compare(reference, y) for name, y in logits.items()}
    for name, g in graphs.items():
        g["disagreeing"] = [files[i] for i in g["disagreeing"]]
        g["accuracy"] = float((logits[name].argmax(1) == labels).mean())
    reports = result["reports"]
    resources = reports["estimate_layer_resources"]
    perf = reports["estimate_network_performance"]
    cycles = reports["estimate_layer_cycles"]
    finn_graphs = [g for name, g in graphs.items() if name != "original"]
    metrics = {
        "enabled": True,
        "board": cfg["board"], "fpga_part": cfg["fpga_part"],
        "synth_clk_period_ns": cfg["synth_clk_period_ns"], "target_fps": cfg["target_fps"],
        **{k: resources["total"][k] for k in ("LUT", "BRAM_18K", "URAM", "DSP")},
        "max_cycles": perf["max_cycles"], "max_cycles_layer": perf["max_cycles_node_name"],
        "critical_path_cycles": perf["critical_path_cycles"],
        "estimated_throughput_fps": perf["estimated_throughput_fps"],
        "estimated_latency_ns": perf["estimated_latency_ns"],
        "bin_files": len(files),
        "graphs_executed": len(finn_graphs),
        # the original model under FINN's release runtime (qonnx 0.4.0, onnxruntime 1.16.1) vs here
        "release_runtime_agree": graphs["original"]["agree"],
        "finn_agree": min(g["agree"] for g in finn_graphs),
        "finn_ties": max(g["ties"] for g in finn_graphs),  # files with an exact tie on either side
        "finn_ties_deciding": max(g["ties_deciding"] for g in finn_graphs),  # ...that changed the prediction
        "disagree_without_tie": sum(g["disagree_without_tie"] for g in graphs.values()),
        "passed": all(g["disagree_without_tie"] == 0 for g in graphs.values()),
    }
    layers = {name: {"cycles": cycles.get(name), **resources[name]} for name in resources if name != "total"}
    detail = {"enabled": True, "versions": result["versions"], "steps": result["steps"], "graphs": graphs,
              "layers": layers, "network": perf, "op_and_param_counts": reports.get("op_and_param_counts")}
    return metrics, detail


# For the sweep table (scripts/compare_experiments.py): column -> metrics/finn.json key
SWEEP_COLUMNS = {"FINN LUT": "LUT", "FINN BRAM_18K": "BRAM_18K", "FINN frames/s": "estimated_throughput_fps"}


def estimates(data) -> dict | None:
    """{column: value} of SWEEP_COLUMNS from the content of a metrics/finn.json (as `dvc exp show
    --json` gives it, or loaded from the file); None when the check was off or is missing (an
    experiment run before the FINN stage existed, or with finn.enabled false)."""
    if not isinstance(data, dict) or not data.get("enabled"):
        return None
    return {column: data.get(key) for column, key in SWEEP_COLUMNS.items()}


def read_estimates(metrics_path) -> dict | None:
    """estimates() of a metrics/finn.json file; None if it is missing or unreadable."""
    try:
        return estimates(json.loads(Path(metrics_path).read_text()))
    except (OSError, ValueError):
        return None


def pareto_front(luts, accuracies) -> list[int]:
    """Indices of the points no other point beats: none has fewer or equal LUTs and a higher or
    equal accuracy with at least one strictly better. Sorted by LUTs."""
    points = list(zip(luts, accuracies))
    front = [i for i, (lut, acc) in enumerate(points)
             if not any(l2 <= lut and a2 >= acc and (l2, a2) != (lut, acc) for l2, a2 in points)]
    return sorted(front, key=lambda i: points[i])


def plot_pareto(names, luts, accuracies, path, accuracy_label: str = "accuracy on the BIN files") -> None:
    """PNG of accuracy against FINN's estimated LUTs, one labelled point per experiment, the
    Pareto front joined. Points without an estimate (None) are left out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kept = [(n, lut, a) for n, lut, a in zip(names, luts, accuracies) if lut is not None and a is not None]
    if not kept:
        raise KwsError(f"{path}: no experiment has both FINN's LUT estimate and an accuracy (finn.enabled?)")
    names, luts, accuracies = zip(*kept)
    front = pareto_front(luts, accuracies)
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    ax.scatter(luts, accuracies, color="tab:gray", zorder=2)
    ax.plot([luts[i] for i in front], [accuracies[i] for i in front], "o-", color="tab:blue",
            label="Pareto front", zorder=3)
    for name, lut, acc in kept:
        ax.annotate(name, (lut, acc), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel("FINN estimated LUTs (Pynq-Z2)")
    ax.set_ylabel(accuracy_label)
    ax.margins(x=0.12, y=0.08)  # room for the labels
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, metadata={"Software": None})
    plt.close(fig)
