"""Runs inside the FINN venv (.venv-finn: FINN's release pins, no torch): FINN's build steps from
step_qonnx_to_finn to step_generate_estimate_reports on a QONNX model, and every graph that runs
without Vitis HLS on the given inputs. Driven by kws/finn_check.py, which compares the logits.

  .venv-finn/bin/python finn_side/run_finn.py --model M.onnx --inputs x.npy --out DIR \\
      --board Pynq-Z2 --fpga_part xc7z020clg400-1 --clk_ns 10 --target_fps 100000

FINN itself comes from PYTHONPATH (a FINN checkout's src/). Writes to DIR:
  result.json        versions, per step whether its graph was executed; FINN's reports
  logits.npz         logits per executed graph, plus `original` (the input model under qonnx here)
  intermediate_models/<step>.onnx   each step's output, where FINN's build_dataflow looks for them
                     (start_step="step_hw_codegen" with output_dir=DIR continues the build)
A step FINN fails at: one line `FINN <step> failed at node <name> (<op>): <why>` on stderr, exit 2.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from importlib.metadata import version
from pathlib import Path

import standins

standins.install()  # before any finn import

import numpy as np  # noqa: E402
import onnx  # noqa: E402
from qonnx.core.modelwrapper import ModelWrapper  # noqa: E402
from qonnx.transformation.change_batchsize import ChangeBatchSize  # noqa: E402
from qonnx.transformation.infer_shapes import InferShapes  # noqa: E402

import fast_exec  # noqa: E402
import conv_exec  # noqa: E402

fast_exec.install()  # before finn imports qonnx's functions by name
conv_exec.install()

# FINN's front end and analytical estimates: everything before step_hw_codegen (which needs Vitis HLS)
STEPS = [
    "step_qonnx_to_finn",
    "step_tidy_up",
    "step_streamline",
    "step_convert_to_hw",
    "step_create_dataflow_partition",
    "step_specialize_layers",
    "step_target_fps_parallelization",
    "step_apply_folding_config",
    "step_minimize_bit_width",
    "step_generate_estimate_reports",
]


class StepFailed(Exception):
    pass


def failing_node(tb) -> str:
    """The innermost ONNX node a FINN transformation was working on when it raised: FINN's
    assertions rarely say which node broke, but the loop variable in the failing frame does."""
    found = None
    for frame, _ in traceback.walk_tb(tb):
        for value in frame.f_locals.values():
            if isinstance(value, onnx.NodeProto):
                found = value
    if found is None:
        return "no single node"
    return f"node {found.name or '<unnamed>'} ({found.op_type})"


def needs_hls(model: ModelWrapper) -> str | None:
    """The first node (also inside dataflow partitions) that only Vitis HLS/RTL simulation can
    execute: a layer specialized to an HLS or RTL implementation."""
    from qonnx.custom_op.registry import getCustomOp

    from finn.custom_op.fpgadataflow.hlsbackend import HLSBackend
    from finn.custom_op.fpgadataflow.rtlbackend import RTLBackend

    for node in model.graph.node:
        if node.op_type == "StreamingDataflowPartition":
            inner = needs_hls(ModelWrapper(getCustomOp(node).get_nodeattr("model")))
            if inner:
                return inner
        elif node.domain.startswith("finn.custom_op.fpgadataflow"):
            if isinstance(getCustomOp(node), (HLSBackend, RTLBackend)):
                return f"{node.name or '<unnamed>'} ({node.op_type})"
    return None


def batched(model: ModelWrapper, n: int, tmp_dir: Path) -> ModelWrapper:
    """A copy of `model` that executes `n` samples at once. FINN's layers size their outputs by
    the numInputVectors attribute (its first entry is the batch); dataflow partitions are batched
    recursively into tmp_dir. One call on all samples instead of one per sample: qonnx starts an
    onnxruntime session per standard node and call, which dominates per-sample execution."""
    from qonnx.custom_op.registry import getCustomOp

    model = ModelWrapper(onnx.ModelProto.FromString(model.model.SerializeToString()))
    for node in model.graph.node:
        if node.op_type == "StreamingDataflowPartition":
            inst = getCustomOp(node)
            child = batched(ModelWrapper(inst.get_nodeattr("model")), n, tmp_dir)
            path = tmp_dir / f"{len(list(tmp_dir.iterdir()))}_{node.name}.onnx"
            child.save(os.fspath(path))
            inst.set_nodeattr("model", os.fspath(path))
        elif node.domain.startswith("finn.custom_op.fpgadataflow"):
            inst = getCustomOp(node)
            if "numInputVectors" in inst.get_nodeattr_types():
                vectors = list(inst.get_nodeattr("numInputVectors"))
                inst.set_nodeattr("numInputVectors", [n] + vectors[1:])
    if not any(node.op_type in BATCH_ONE_SHAPES for node in model.graph.node):
        return model.transform(ChangeBatchSize(n)).transform(InferShapes())
    # shape inference would put a batch of 1 back: batch the recorded shapes instead (every
    # non-constant tensor has the batch first; executing these nodes takes any batch)
    constants = {init.name for init in model.graph.initializer}
    for vi in [*model.graph.input, *model.graph.output, *model.graph.value_info]:
        dims = vi.type.tensor_type.shape.dim
        if vi.name not in constants and dims and dims[0].dim_value == 1:
            dims[0].dim_value = n
    return model


# Nodes whose shape inference gives a batch of 1 whatever their input's: FINN has none for
# partition nodes, and qonnx 0.4.0's Im2Col (the lowered convolutions of model.arch cnn) and FINN's
# ConvolutionInputGenerator write a batch of 1 into their output shape
BATCH_ONE_SHAPES = ("StreamingDataflowPartition", "Im2Col", "ConvolutionInputGenerator")


def with_partition(parent: ModelWrapper, child_path: Path) -> ModelWrapper:
    """FINN's parent graph (the layers left outside the accelerator, e.g. the input quantizer and
    the output scale) around a dataflow partition: from step_create_dataflow_partition on, the
    steps transform only the partition, which alone cannot take the model's inputs."""
    from qonnx.custom_op.registry import getCustomOp

    parent = ModelWrapper(onnx.ModelProto.FromString(parent.model.SerializeToString()))
    partitions = parent.get_nodes_by_op_type("StreamingDataflowPartition")
    if len(partitions) != 1:
        raise StepFailed(f"FINN's parent graph has {len(partitions)} dataflow partitions, expected one")
    getCustomOp(partitions[0]).set_nodeattr("model", os.fspath(child_path))
    return parent


def run_graph(model: ModelWrapper, x: np.ndarray, tmp_dir: Path) -> np.ndarray:
    from finn.core.onnx_exec import execute_onnx

    m = batched(model, len(x), tmp_dir)
    in_shape = m.get_tensor_shape(m.graph.input[0].name)
    out = execute_onnx(m, {m.graph.input[0].name: x.reshape(in_shape).astype(np.float32)})
    return np.asarray(out[m.graph.output[0].name], dtype=np.float64).reshape(len(x), -1)


def build_config(args, out_dir: Path):
    from finn.builder.build_dataflow_config import DataflowBuildConfig, DataflowOutputType, ShellFlowType
    from finn.util.basic import pynq_part_map

    if args.board not in pynq_part_map:
        raise StepFailed(f"board {args.board!r} is not one of FINN's Zynq boards ({', '.join(pynq_part_map)})")
    if pynq_part_map[args.board] != args.fpga_part:
        raise StepFailed(f"board {args.board} has part {pynq_part_map[args.board]}, not {args.fpga_part}")
    return DataflowBuildConfig(
        output_dir=os.fspath(out_dir),
        synth_clk_period_ns=args.clk_ns,
        target_fps=args.target_fps,
        board=args.board,
        fpga_part=args.fpga_part,
        shell_flow_type=ShellFlowType.VIVADO_ZYNQ,
        generate_outputs=[DataflowOutputType.ESTIMATE_REPORTS],
        steps=STEPS,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--inputs", required=True, help=".npy float32 inputs, one row per sample")
    ap.add_argument("--out", required=True)
    ap.add_argument("--board", required=True)
    ap.add_argument("--fpga_part", required=True)
    ap.add_argument("--clk_ns", type=float, required=True)
    ap.add_argument("--target_fps", type=int, required=True)
    args = ap.parse_args()

    out = Path(args.out)
    (out / "intermediate_models").mkdir(parents=True, exist_ok=True)
    (out / "batched").mkdir(exist_ok=True)
    # FINN writes its temporary files (dataflow partitions) under FINN_BUILD_DIR
    os.environ["FINN_BUILD_DIR"] = os.fspath(out / "finn_build_dir")
    Path(os.environ["FINN_BUILD_DIR"]).mkdir(exist_ok=True)

    from qonnx.util.cleanup import cleanup_model

    import finn.builder.build_dataflow_steps as finn_steps

    cfg = build_config(args, out)
    x = np.load(args.inputs)
    model = ModelWrapper(args.model)
    try:  # the model as written, under FINN's release runtime
        logits = {"original": run_graph(cleanup_model(model), x, out / "batched")}
    except Exception as e:
        why = " ".join(f"{type(e).__name__}: {e}".split())
        raise StepFailed(f"{args.model}: qonnx {version('qonnx')} cannot execute it at "
                         f"{failing_node(e.__traceback__)}: {why}") from None
    steps, parent = [], None
    for name in STEPS:
        try:
            model = getattr(finn_steps, name)(model, cfg)
        except Exception as e:
            why = " ".join(f"{type(e).__name__}: {e}".split())
            raise StepFailed(f"FINN {name} failed at {failing_node(e.__traceback__)}: {why}") from None
        step_path = out / "intermediate_models" / f"{name}.onnx"
        model.save(os.fspath(step_path))
        if name == "step_create_dataflow_partition":  # FINN saves the parent graph there
            parent = ModelWrapper(os.fspath(out / "intermediate_models" / "dataflow_parent.onnx"))
        whole = model if parent is None else with_partition(parent, step_path)
        blocker = needs_hls(whole)
        if blocker is None:
            try:
                logits[name] = run_graph(whole, x, out / "batched")
            except Exception as e:
                why = " ".join(f"{type(e).__name__}: {e}".split())
                raise StepFailed(f"FINN graph after {name} failed to execute at {failing_node(e.__traceback__)}: "
                                 f"{why}") from None
        steps.append({"step": name, "executed": blocker is None,
                      **({"needs_vitis_hls": blocker} if blocker else {})})

    reports = {f.stem: json.loads(f.read_text()) for f in sorted((out / "report").glob("*.json"))}
    versions = {pkg: version(pkg) for pkg in ("qonnx", "onnx", "onnxruntime", "numpy")}
    versions["python"] = sys.version.split()[0]
    np.savez(out / "logits.npz", **logits)
    (out / "result.json").write_text(json.dumps({"versions": versions, "steps": steps, "reports": reports},
                                                indent=2) + "\n")


if __name__ == "__main__":
    try:
        main()
    except StepFailed as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
