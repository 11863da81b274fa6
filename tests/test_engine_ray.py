"""The Ray engine with real processes: a Ray head on 127.0.0.1 and a separate worker node (`ray
start`), the train stage's and the sweep's CLIs against them, the tiny profile (test_train's blobs).
The cluster lives in its own temp dir and ports; teardown stops exactly its processes (found by
that dir), never other Ray instances on the machine (`ray stop` would stop them all)."""
import copy
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from test_train import make_blobs, tiny_params

psutil = pytest.importorskip("psutil")
pytest.importorskip("ray")

REPO = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).parent / "ray")
CPUS_PER_NODE = 1  # one trial (train.ray.cpus_per_trial: 1) per node: a 2-point grid uses both nodes
EPOCHS = 6


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


HOME = tempfile.mkdtemp(prefix="kws-ray-home-")


@pytest.fixture(scope="module", autouse=True)
def _remove_home():
    yield
    shutil.rmtree(HOME, ignore_errors=True)


def ray_env() -> dict:
    # a cluster on 127.0.0.1 only: no token auth (with it, a new local Ray writes a token into
    # ~/.ray, and `ray start --address` must be handed it); HOME: nothing lands in the user's
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled", HOME=HOME, PYTHONPATH=str(REPO))
    env.pop("RAY_ADDRESS", None)
    return env


def cluster_processes(temp_dir: str) -> list:
    """Our cluster's processes: those naming its temp dir, and their descendants (the workers)."""
    roots = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any(temp_dir in part for part in p.info["cmdline"] or []):
                roots.append(p)
        except psutil.Error:
            continue
    found = {p.pid: p for p in roots}
    for p in roots:
        try:
            found.update({c.pid: c for c in p.children(recursive=True)})
        except psutil.Error:
            continue
    return list(found.values())


def stop_cluster(temp_dir: str) -> None:
    procs = cluster_processes(temp_dir)
    for p in procs:
        try:
            p.kill()  # as `ray stop --force` does, but only these
        except psutil.Error:
            pass
    psutil.wait_procs(procs, timeout=10)


@pytest.fixture(scope="module")
def cluster():
    # short: Ray's unix sockets live under it (a socket path is limited to 107 bytes)
    temp_dir = tempfile.mkdtemp(prefix="kwsray", dir="/tmp")
    port = free_port()
    address = f"127.0.0.1:{port}"
    common = ["--node-ip-address", "127.0.0.1", "--num-cpus", str(CPUS_PER_NODE), "--disable-usage-stats"]
    try:
        subprocess.run([RAY, "start", "--head", "--port", str(port), *common, "--include-dashboard", "false",
                        "--temp-dir", temp_dir, "--ray-client-server-port", str(free_port()),
                        "--dashboard-agent-listen-port", str(free_port()), "--metrics-export-port", str(free_port())],
                       env=ray_env(), check=True, capture_output=True, text=True, timeout=120)
        subprocess.run([RAY, "start", "--address", address, *common, "--temp-dir", temp_dir,
                        "--dashboard-agent-listen-port", str(free_port()), "--metrics-export-port", str(free_port())],
                       env=ray_env(), check=True, capture_output=True, text=True, timeout=120)
        yield {"address": address, "temp_dir": temp_dir}
    except subprocess.CalledProcessError as e:
        pytest.fail(f"ray start failed: {e.stderr.strip().splitlines()[-1:]}")
    finally:
        stop_cluster(temp_dir)
        leftover = cluster_processes(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)
        assert not leftover, f"cluster processes left running: {[p.pid for p in leftover]}"


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """Features, the params (engine ray, storage in the temp dir) and a local run of them."""
    base = tmp_path_factory.mktemp("ray_work")
    features = make_blobs(base / "features")
    params = tiny_params(epochs=EPOCHS, engine="ray")
    params["train"]["ray"] = dict(params["train"]["ray"], storage_path=str(base / "ray_results"))
    params_file = base / "params.yaml"
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    local = copy.deepcopy(params)
    local["train"]["engine"] = "local"
    (base / "local_params.yaml").write_text(yaml.safe_dump(local, sort_keys=False))
    # the train stage's CLI (it caps the CPU kernels before torch loads; pytest's process does not),
    # started now so that it runs while the cluster starts
    local = subprocess.Popen(training_cmd(base / "local_params.yaml", features, base / "local"), cwd=REPO,
                             env=ray_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    yield {"base": base, "features": features, "params": params_file, "local": base / "local", "local_run": local}
    local.kill()
    local.communicate()


def local_run(work) -> Path:
    """The local run's output folder, once it has finished."""
    _, stderr = work["local_run"].communicate(timeout=300)
    assert work["local_run"].returncode == 0, stderr[-3000:]
    return work["local"]


def training_cmd(params_file, features, out: Path) -> list[str]:
    return [sys.executable, "-m", "scripts.run_training", "--params", str(params_file), "--features", str(features),
            "--checkpoints", str(out / "checkpoints"), "--metrics", str(out / "metrics/train.json"),
            "--plots", str(out / "plots/train.csv"), "--report", str(out / "reports/train.json")]


def run_training(params_file, features, out: Path, env, **kw):
    return subprocess.run(training_cmd(params_file, features, out), cwd=REPO, env=env, capture_output=True,
                          text=True, **kw)


def outputs(folder: Path) -> dict:
    """Every file of a run (checkpoint folder, metrics, plots) by relative path -> bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_ray_sweep_two_point_grid_across_both_nodes_one_trial_equals_local(work, cluster, tmp_path):
    csv = tmp_path / "ray_sweep.csv"
    r = subprocess.run(
        [sys.executable, "-m", "scripts.ray_sweep", "--params", str(work["params"]), "--features",
         str(work["features"]), "--csv", str(csv), "--address", cluster["address"], "--quiet",
         "-S", "model.weight_bit_width=2,3"],
        cwd=REPO, env=ray_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    table = [line for line in r.stdout.splitlines() if line.startswith("| ray:")]
    assert len(table) == 2 and "-S model.weight_bit_width=2" in table[0] and "| 2 | 3 |" in table[0]
    rows = csv.read_text().splitlines()
    assert rows[0].startswith("point,overrides,weight_bit_width") and len(rows) == 3
    assert all(row.endswith(",completed") for row in rows[1:])
    # point 1 (weight_bit_width 3) is the params as they are: the local run's checkpoint, byte for byte
    ckpt = Path(re.search(r"ray:1: ok; checkpoint (\S+)", r.stderr).group(1))
    local_ckpt = local_run(work) / "checkpoints" / f"epoch-{EPOCHS:04d}"
    assert (ckpt / "state.pt").read_bytes() == (local_ckpt / "state.pt").read_bytes()
    assert (ckpt / "metadata.json").read_bytes() == (local_ckpt / "metadata.json").read_bytes()
    local_metrics = json.loads((work["local"] / "reports/train.json").read_text())
    assert f"{local_metrics['val_accuracy']:.6g}" in rows[2] and local_metrics["fingerprint"] in rows[2]
    # the two trials ran at once, one per node (each node has room for one)
    nodes = [json.loads(line)["node_id"] for p in sorted(Path(work["base"], "ray_results").glob("kws-sweep-*/trial-*"))
             for line in (p / "result.json").read_text().splitlines()[-1:]]
    assert len(nodes) == 2 and len(set(nodes)) == 2


def _trial_pid(storage: Path, temp_dir: str) -> int | None:
    """The pid of the Ray worker running the train stage's trial, once it has checkpointed twice."""
    for trial in storage.glob("kws-train-*/trial-*"):
        if any(int(c.name.split("_")[1]) >= 1 for c in trial.glob("checkpoint_*")):
            lines = (trial / "result.json").read_text().splitlines() if (trial / "result.json").exists() else []
            if lines:
                pid = json.loads(lines[-1])["pid"]
                # only ever a process of our own cluster
                assert pid in {p.pid for p in cluster_processes(temp_dir)}
                return pid
    return None


def test_ray_train_stage_with_a_worker_killed_resumes_to_the_local_bytes(work, cluster, tmp_path):
    env = dict(ray_env(), RAY_ADDRESS=cluster["address"])
    out = tmp_path / "ray"
    proc = subprocess.Popen(training_cmd(work["params"], work["features"], out), cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    storage = Path(work["base"], "ray_results")
    killed = None
    deadline = time.monotonic() + 180
    while killed is None and proc.poll() is None and time.monotonic() < deadline:
        pid = _trial_pid(storage, cluster["temp_dir"])
        if pid is not None:
            os.kill(pid, signal.SIGKILL)  # the worker process of the trial, mid-trial
            killed = pid
        time.sleep(0.02)
    stdout, stderr = proc.communicate(timeout=300)
    assert killed is not None, "the trial ended before it could be killed"
    assert proc.returncode == 0, stderr[-3000:]
    assert re.search(r"resuming from checkpoint \S+ after epoch [1-9]", stderr)
    # same final metrics, per-epoch history and checkpoint bytes as the uninterrupted local run
    assert outputs(out) == outputs(local_run(work))


def test_ray_unreachable_head_is_one_line_and_a_nonzero_exit(work, tmp_path):
    closed = free_port()  # nothing listens there
    env = dict(ray_env(), RAY_ADDRESS=f"127.0.0.1:{closed}")
    start = time.monotonic()
    r = run_training(work["params"], work["features"], tmp_path / "run", env=env, timeout=120)
    elapsed = time.monotonic() - start
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        f"error: Ray head 127.0.0.1:{closed} is unreachable (Connection refused); check RAY_ADDRESS or params "
        "train.ray.address, or set train.engine: local"]
    assert elapsed < 30  # at once: no minute of ray.init retries
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_ray_engine_param_determined_without_a_master_is_one_line(work, tmp_path):
    params = yaml.safe_load(work["params"].read_text())
    params["train"]["engine"] = "determined"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = ray_env()
    env.pop("DET_MASTER", None)
    r = run_training(tmp_path / "params.yaml", work["features"], tmp_path / "run", env=env, timeout=120)
    assert r.returncode == 1
    assert r.stderr.strip() == "error: params train.engine: determined needs DET_MASTER or params train.det_master"
