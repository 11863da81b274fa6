"""DVC remotes: a real S3-protocol server (moto) on 127.0.0.1, and failures that leave the workspace alone."""
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline_repo import dvc, out_hashes, stage_outs

OUTS = ["training_checkpoint/QONNX_model.onnx", "kws_bin_files", "data/features"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def s3_server(monkeypatch):
    port = free_port()
    server = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.time() > deadline or server.poll() is not None:
                server.kill()
                pytest.fail("moto_server did not start")
            time.sleep(0.2)
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    import boto3

    boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}").create_bucket(Bucket="kws")
    yield f"http://127.0.0.1:{port}"
    server.terminate()
    server.wait(timeout=10)


def snapshot(repo: Path) -> dict[str, bytes]:
    """Bytes of every file that exists under OUTS."""
    files = {}
    for out in OUTS:
        path = repo / out
        for f in [path] if path.is_file() else sorted(path.rglob("*")):
            if f.is_file():
                files[str(f.relative_to(repo))] = f.read_bytes()
    return files


def test_push_and_pull_through_s3(tiny_repo, s3_server):
    dvc(tiny_repo, "remote", "add", "-f", "s3test", "s3://kws/store")
    dvc(tiny_repo, "remote", "modify", "s3test", "endpointurl", s3_server)
    dvc(tiny_repo, "push", "-r", "s3test")
    before = snapshot(tiny_repo)
    shutil.rmtree(tiny_repo / ".dvc" / "cache")
    cached = {p for outs in stage_outs(tiny_repo).values() for p, is_cached in outs.items() if is_cached}
    for out in out_hashes(tiny_repo):
        if out not in cached:
            continue  # cache: false: metrics and plots are git's, data and checkpoint `dvc repro`'s
        path = tiny_repo / out
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    dvc(tiny_repo, "pull", "-r", "s3test")
    assert snapshot(tiny_repo) == before
    assert "up to date" in dvc(tiny_repo, "status").stdout


@pytest.mark.parametrize("kind", ["missing folder", "unreachable server"])
def test_pull_from_a_bad_remote_fails_clearly_and_touches_nothing(tiny_repo, kind, monkeypatch):
    if kind == "missing folder":
        dvc(tiny_repo, "remote", "add", "-f", "bad", str(tiny_repo.parent / "no-such-remote"))
    else:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        dvc(tiny_repo, "remote", "add", "-f", "bad", "s3://kws/store")
        dvc(tiny_repo, "remote", "modify", "bad", "endpointurl", f"http://127.0.0.1:{free_port()}")
        dvc(tiny_repo, "remote", "modify", "bad", "connect_timeout", "2")
    model = tiny_repo / "training_checkpoint" / "QONNX_model.onnx"
    cache, kept = tiny_repo / ".dvc" / "cache", tiny_repo / "cache-aside"
    cache.rename(kept)  # an empty cache and one missing out, so pull must reach the remote
    model.unlink()
    before = snapshot(tiny_repo)
    try:
        result = dvc(tiny_repo, "pull", "-r", "bad", check=False)
        assert result.returncode != 0
        assert "ERROR" in result.stderr + result.stdout
        assert snapshot(tiny_repo) == before
    finally:
        shutil.rmtree(cache, ignore_errors=True)
        kept.rename(cache)
        dvc(tiny_repo, "checkout", str(model.relative_to(tiny_repo)))
