"""A 2-point bit-width grid queued with `dvc exp run --queue` and run with `dvc queue start`."""
from pipeline_repo import REPO, dvc, run


def test_queued_grid_runs_and_compares(tiny_repo):
    run(["git", "add", "-A"], tiny_repo)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@e", "commit", "-qm", "before sweep", "--allow-empty"], tiny_repo)
    dvc(tiny_repo, "exp", "run", "--queue", "-S", "model.weight_bit_width=2,4")
    dvc(tiny_repo, "queue", "start")
    table = run(["python", str(REPO / "scripts" / "compare_experiments.py"), "--wait"], tiny_repo, timeout=900).stdout
    assert dvc(tiny_repo, "queue", "status").stdout.count("Success") == 2
    lines = [line for line in table.splitlines() if line.startswith("| ") and "experiment" not in line]
    bits = sorted(line.split("|")[2].strip() for line in lines)
    assert bits == ["2", "3", "4"], table  # the baseline (3) and the two grid points
    accuracies = [line.split("|")[-2].strip() for line in lines]
    assert all(a != "-" for a in accuracies), table
