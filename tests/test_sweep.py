"""Sweeps: `make sweep` (dvc exp run --queue, dvc queue start, compare_experiments.py --wait) with
real DVC queue workers, and waits that cannot hang."""
import os
import re
import subprocess
import time

import pytest

from pipeline_repo import REPO, VENV_BIN, dvc, make, make_tiny_repo, run

COMPARE = str(REPO / "scripts" / "compare_experiments.py")


def workers(repo) -> int:
    active, idle = re.search(r"Worker status: (\d+) active, (\d+) idle", dvc(repo, "queue", "status").stdout).groups()
    return int(active) + int(idle)


def workers_are(repo, wanted, timeout=60):
    """Wait until `repo`'s DVC queue has `wanted` workers (0: none left behind by a test)."""
    deadline = time.time() + timeout
    while (now := workers(repo)) != wanted:
        assert time.time() < deadline, f"{repo}: {now} queue workers, not {wanted}"
        time.sleep(1)


def workers_stopped(repo):
    workers_are(repo, 0)


def test_make_sweep_runs_a_short_grid_and_compares(tiny_repo):
    """epochs=2 with the default's warm-up of 10 needs no second override (the warm-up is capped)."""
    run(["git", "add", "-A"], tiny_repo)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@e", "commit", "-qm", "before sweep", "--allow-empty"], tiny_repo)
    sweep = "SWEEP=-S model.weight_bit_width=2,4 -S train.epochs=2 -S train.warmup_epochs=10"
    try:
        table = make(tiny_repo, "sweep", sweep, timeout=900).stdout
    finally:
        workers_stopped(tiny_repo)
    assert dvc(tiny_repo, "queue", "status").stdout.count("Success") == 2
    lines = [line for line in table.splitlines() if line.startswith("| ") and "experiment" not in line]
    bits = sorted(line.split("|")[2].strip() for line in lines)
    assert bits == ["2", "3", "4"], table  # the baseline (3) and the two grid points
    accuracies = [line.split("|")[-2].strip() for line in lines]
    assert all(a != "-" for a in accuracies), table


def start_queue(repo):
    """`dvc queue start` without a pipe: its detached worker would inherit one, and a captured run
    would then return only once the worker exits (after the whole queue)."""
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run(["dvc", "queue", "start"], cwd=repo, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.fixture
def queue_repo(tmp_path):
    """A tiny repo whose queue holds one experiment; the workers are stopped afterwards."""
    repo = make_tiny_repo(tmp_path)
    yield repo
    dvc(repo, "queue", "stop", "--kill", check=False)
    workers_stopped(repo)


def wait(repo, *args):
    start = time.monotonic()
    result = run(["python", COMPARE, "--wait", *args], repo, check=False, timeout=120)
    return result, time.monotonic() - start


def test_wait_fails_fast_on_a_stopped_queue(queue_repo):
    """`dvc queue stop`, then an experiment queued: no worker will ever run it."""
    start_queue(queue_repo)
    workers_are(queue_repo, 1)  # up, so that the stop reaches it
    dvc(queue_repo, "queue", "stop")
    workers_stopped(queue_repo)
    dvc(queue_repo, "exp", "run", "--queue", "-S", "train.epochs=2")
    result, seconds = wait(queue_repo, "--timeout", "600", "--worker_grace", "10")
    assert result.returncode == 1, result
    assert result.stderr.strip().splitlines() == [result.stderr.strip()], result.stderr  # one line
    assert "no queue worker" in result.stderr and "dvc queue start" in result.stderr, result.stderr
    assert seconds < 45, seconds
    assert "Queued" in dvc(queue_repo, "queue", "status").stdout  # untouched


def test_wait_times_out_while_an_experiment_runs(queue_repo):
    """A worker busy beyond --timeout: the wait gives up with one line (the experiment goes on)."""
    dvc(queue_repo, "exp", "run", "--queue", "-S", "train.epochs=2")  # the whole tiny pipeline: minutes
    start_queue(queue_repo)
    result, seconds = wait(queue_repo, "--timeout", "15")
    assert result.returncode == 1, result
    assert result.stderr.strip().splitlines() == [result.stderr.strip()], result.stderr
    assert "--timeout 15 s" in result.stderr, result.stderr
    assert 15 <= seconds < 45, seconds


def test_make_sweep_with_finn_shows_its_estimates_and_the_pareto_plot(tiny_repo, finn_fixture):
    """`make sweep`'s default turns the finn stage on: each experiment gets FINN's estimates in
    the table and a point in the accuracy-against-LUT plot; with the FINN fixture found, its
    accuracy on the 200 real dev clips too (its model read from DVC's cache at its commit)."""
    from kws import finn_check
    from kws.common import KwsError

    try:
        env = {"FINN_ROOT": str(finn_check.find_finn_root()), "FINN_PYTHON": str(finn_check.find_finn_python()),
               "KWS_FINN_FIXTURE": str(finn_fixture)}
    except KwsError as e:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{e} (required under CI)")
        pytest.skip(str(e))
    run(["git", "add", "-A"], tiny_repo)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@e", "commit", "-qm", "before sweep", "--allow-empty"], tiny_repo)
    sweep = "SWEEP=-S model.weight_bit_width=2,4 -S train.epochs=2 -S finn.enabled=true"
    try:
        table = make(tiny_repo, "sweep", sweep, timeout=900, env=env).stdout
    finally:
        workers_stopped(tiny_repo)
    header = next(line for line in table.splitlines() if line.startswith("| experiment"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    assert columns[-5:] == ["FINN LUT", "FINN BRAM_18K", "FINN frames/s", "bins acc", "real dev acc"], header
    rows = {line.split("|")[2].strip(): [c.strip() for c in line.strip("|").split("|")]
            for line in table.splitlines() if line.startswith("| ") and line != header}
    luts = {bits: float(row[columns.index("FINN LUT")]) for bits, row in rows.items() if bits in ("2", "4")}
    assert luts["2"] < luts["4"], table  # wider weights cost more LUTs
    real = [float(row[columns.index("real dev acc")]) for bits, row in rows.items() if bits in ("2", "4")]
    assert len(real) == 2 and all(0 <= a <= 1 for a in real), table
    assert (tiny_repo / "plots" / "sweep_pareto.png").read_bytes()[:4] == b"\x89PNG"
