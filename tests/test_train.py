import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from brevitas.nn import QuantLinear

from kws import checkpoints as C

from kws.engines import local as L

from kws.engines import determined as D

from kws import train as T
from kws.common import KwsError
from kws.params import load_params
from kws.kernels import KERNEL_CAPS

REPO = Path(__file__).resolve().parents[1]
PARAMS = load_params(REPO / "params.yaml")


def make_blobs(folder: Path, n_train=1200, n_eval=360, seed=0) -> Path:
    """Learnable stand-in features: one Gaussian blob per class in (N, 49, 10). The centers are
    ~|N(0, 3^2)| apart in each of 490 dims (distance ~94) against noise of std 6 per dim, so the
    classes are almost linearly separable and a few epochs get far above chance (1/12)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 3, (12, 49, 10)).astype(np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("validation", n_eval), ("test", n_eval)):
        y = rng.integers(0, 12, n)
        x = (centers[y] + rng.normal(0, 6, (n, 49, 10))).astype(np.float32)
        np.savez(folder / f"{split}.npz", x=x, y=y, feature_type="mfcc")
    return folder


def tiny_params(**train):
    p = copy.deepcopy(PARAMS)
    # blobs have no time structure for the default time-shift augmentation to respect
    p["train"].update({"epochs": 4, "batch_size": 128, "lr": 2e-3, "augment": {"enabled": False},
                       "warmup_epochs": 1}, **train)
    return p


@pytest.fixture(scope="module")
def blobs(tmp_path_factory):
    return make_blobs(tmp_path_factory.mktemp("features"))


def test_trains_well_above_chance_and_writes_outputs(blobs, tmp_path, monkeypatch):
    # Determined must write nothing to the user's data dirs
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "data"))
    out = tmp_path / "run"
    m = L.run_local(tiny_params(), blobs, out / "checkpoints", out / "metrics/train.json", out / "plots/train.csv",
                    progress=False, report_path=out / "reports/train.json")
    assert not home.exists()
    assert m["test_accuracy"] > 0.5 and m["val_accuracy"] > 0.5  # chance is 1/12
    # the headline figures are the DVC metric; all of them go to the report
    headline = json.loads((out / "metrics/train.json").read_text())
    assert headline == {k: m[k] for k in ("val_accuracy", "test_accuracy", "weight_kib")}
    saved = json.loads((out / "reports/train.json").read_text())
    assert saved == m and saved["num_weights"] == 259584
    x = np.load(blobs / "train.npz")["x"]
    lo, hi = np.percentile(x, [1, 99])
    assert saved["input_scale"] == pytest.approx(max(abs(lo), abs(hi)) / 127)
    rows = (out / "plots/train.csv").read_text().splitlines()
    assert rows[0] == "epoch,train_loss,val_loss,val_accuracy,lr" and len(rows) == 5
    ckpts = C.list_local_checkpoints(out / "checkpoints")
    assert [c[0] for c in ckpts] == [4]  # only the last checkpoint is kept
    # what a cluster run reports from its best checkpoint is what the local run reported
    state = torch.load(out / "checkpoints" / ckpts[0][1] / C.STATE_FILE, weights_only=False)
    metrics, history = T.outputs_from_state(state, T.load_features(blobs))
    assert metrics == m and len(history) == 4


class Interrupt(Exception):
    pass


def _run(blobs_data, folder, params, stop_at=None):
    def epoch_end(epoch):
        if epoch == stop_at:
            raise Interrupt

    with C.local_context(folder) as ctx:
        return T.train(ctx, T.recipe(params), blobs_data, local_dir=folder, epoch_end=epoch_end, progress=False)


# (warm-up epochs, interrupted after epoch, Unknown share): plain, within the warm-up, at its end;
# all Unknown clips every epoch, or a fresh draw of them
@pytest.mark.parametrize("warmup,stop_at,share", [(0, 2, 1.0), (0, 2, 0.3), (2, 1, 0.3), (2, 2, 1.0)])
def test_resume_after_interruption_is_bit_identical(blobs, tmp_path, warmup, stop_at, share):
    data = T.load_features(blobs)
    params = tiny_params(epochs=3, warmup_epochs=warmup, unknown_share=share)
    params["model"]["hidden_layers"] = [64, 64]
    ref_model, ref_metrics, ref_hist = _run(data, tmp_path / "a", params)
    with pytest.raises(Interrupt):
        _run(data, tmp_path / "b", params, stop_at=stop_at)
    assert [c[0] for c in C.list_local_checkpoints(tmp_path / "b")] == [stop_at]
    torch.manual_seed(123)  # resuming must not depend on the process's RNG state
    model, metrics, hist = _run(data, tmp_path / "b", params)
    assert hist == ref_hist and metrics == ref_metrics
    for (k, a), (_, b) in zip(ref_model.state_dict().items(), model.state_dict().items()):
        assert torch.equal(a, b), k
    path_a, path_b = next((tmp_path / "a").glob("*/state.pt")), next((tmp_path / "b").glob("*/state.pt"))
    sa, sb = torch.load(path_a, weights_only=False), torch.load(path_b, weights_only=False)
    for k in sa["optimizer"]["state"]:
        for name in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(sa["optimizer"]["state"][k][name], sb["optimizer"]["state"][k][name])
    assert sa["scheduler"] == sb["scheduler"]
    # the file too: torch.save writes a string it has seen as a back-reference, and the resumed
    # history's keys came from the unpickler, not the code's literals (other bytes, same values)
    assert path_a.read_bytes() == path_b.read_bytes()


def test_warmup_trains_at_its_bit_width_then_at_the_models(blobs, tmp_path):
    data = T.load_features(blobs)
    params = tiny_params(epochs=3, warmup_epochs=2, warmup_bit_width=6)
    params["model"]["hidden_layers"] = [64, 64]
    stored = []

    def epoch_end(epoch):
        state, _ = C.latest_local_state(tmp_path / "warm")
        cfg = state["model_config"]
        stored.append((cfg["weight_bit_width"], cfg["act_bit_width"], cfg["output_bit_width"], cfg["input_bit_width"]))

    with C.local_context(tmp_path / "warm") as ctx:
        model, metrics, _ = T.train(ctx, T.recipe(params), data, local_dir=tmp_path / "warm", epoch_end=epoch_end,
                                    progress=False)
    # the checkpoints say which bit widths their weights were trained at (export refuses the warm ones)
    assert stored == [(6, 6, 6, 8), (6, 6, 6, 8), (3, 3, 3, 8)]
    assert [int(m.quant_weight().bit_width) for m in model.modules() if isinstance(m, QuantLinear)] == [3, 3, 3]
    plain, _, _ = _run(data, tmp_path / "plain", tiny_params(epochs=3, warmup_epochs=0) | {"model": params["model"]})
    assert not torch.equal(model.state_dict()["features.3.weight"], plain.state_dict()["features.3.weight"])
    assert metrics["test_accuracy"] > 0.5  # chance is 1/12


def test_trained_bytes_do_not_depend_on_the_callers_thread_count(blobs, tmp_path):
    # big enough batches that BatchNorm's and the loss's reductions run multi-threaded
    data = T.load_features(blobs)
    params = tiny_params(epochs=2, batch_size=1200)
    before = torch.get_num_threads()
    try:
        states = []
        for threads in (1, 3):
            torch.set_num_threads(threads)
            model, _, _ = _run(data, tmp_path / str(threads), params)
            states.append(model.state_dict())
    finally:
        torch.set_num_threads(before)
    for k, a in states[0].items():
        assert torch.equal(a, states[1][k]), k


def test_checkpoint_of_other_params_is_not_resumed(blobs, tmp_path, capsys):
    data = T.load_features(blobs)
    params = tiny_params(epochs=2)
    params["model"]["hidden_layers"] = [32]
    _run(data, tmp_path, params)
    params["train"]["lr"] = 1e-3
    _, _, hist = _run(data, tmp_path, params)
    assert "starting fresh" in capsys.readouterr().err
    assert [r["epoch"] for r in hist] == [1, 2]
    assert len(C.list_local_checkpoints(tmp_path)) == 1


@pytest.mark.parametrize("key,value", [("epochs", 0), ("batch_size", -5), ("lr", -1e-3), ("lr", "fast"),
                                       ("unknown_weight_divisor", 0), ("eta_min", -1.0),
                                       ("label_smoothing", 1.0), ("label_smoothing", -0.1),
                                       ("warmup_epochs", "10"), ("warmup_epochs", -1), ("warmup_epochs", 1.5),
                                       ("warmup_bit_width", 0), ("warmup_bit_width", 9),
                                       ("unknown_share", 0), ("unknown_share", 1.5), ("unknown_share", True)])
def test_bad_train_params_name_the_key(key, value):
    with pytest.raises(KwsError, match=f"train.{key}"):
        T.train_params({"epochs": 40, key: value})


@pytest.mark.parametrize("epochs,warmup,used", [(70, 10, 10), (11, 10, 10), (10, 10, 9), (2, 10, 1), (1, 10, 0),
                                                 (3, 0, 0)])
def test_warmup_is_capped_below_epochs(epochs, warmup, used):
    """A short sweep (-S train.epochs=2) keeps the default warm-up and still ends at the model's bits;
    warm-ups below epochs, the default's among them, are unchanged."""
    assert T.train_params({"epochs": epochs, "warmup_epochs": warmup}).warmup_epochs == used


def test_bad_percentiles(blobs, tmp_path):
    """Checked by the schema before the slow percentile: the run fails before its first epoch."""
    params = tiny_params()
    params["model"]["input_clip_percentiles"] = [99, 1]
    with pytest.raises(KwsError, match="model.input_clip_percentiles"):
        L.run_local(params, blobs, tmp_path / "c", tmp_path / "m.json", tmp_path / "p.csv", progress=False)
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").iterdir())


def test_features_reach_training_in_the_model_layout(blobs):
    data = T.load_features(blobs)
    x = np.load(blobs / "train.npz")["x"]
    assert data.x["train"].shape == (len(x), 1, 10, 49)
    assert torch.equal(data.x["train"][:, 0], torch.from_numpy(x).transpose(1, 2))


def test_class_weights_follow_the_recipe():
    y = torch.tensor([11] * 6 + [0] * 2 + [1] * 2 + list(range(2, 11)))
    w = T.class_weights(y, 3.6)
    freq = torch.bincount(y, minlength=12).double() / len(y)
    raw = 1 - freq
    raw[11] /= 3.6
    assert torch.allclose(w.double(), raw / raw.sum(), atol=1e-7) and w[11] < w[0] < w[2]


def test_each_epoch_trains_every_other_clip_and_a_fresh_share_of_unknown():
    y = torch.tensor([11] * 100 + list(range(11)) * 3)
    gen = torch.Generator().manual_seed(0)
    assert sorted(T.epoch_order(y, 1.0, gen).tolist()) == list(range(len(y)))
    first, second = T.epoch_order(y, 0.3, gen), T.epoch_order(y, 0.3, gen)
    for order in (first, second):
        assert len(set(order.tolist())) == len(order) == 33 + 30
        assert sorted(y[order][y[order] != 11].tolist()) == sorted(list(range(11)) * 3)
    assert set(first[y[first] == 11].tolist()) != set(second[y[second] == 11].tolist())
    again = torch.Generator().manual_seed(0)
    T.epoch_order(y, 1.0, again)
    assert torch.equal(T.epoch_order(y, 0.3, again), first)  # the seed decides the draw


def test_unknown_share_keeps_the_objective():
    """Fewer Unknown clips per epoch, each weighing 1/share as much: the same expected loss."""
    y = torch.tensor([11] * 6 + list(range(11)))
    tp = T.train_params({"unknown_share": 0.25})
    full, sample = T.loss_function(y, tp), T.loss_function(y, tp, epoch_sample=True)
    assert torch.allclose(sample.weight[11], full.weight[11] / 0.25)
    assert torch.equal(sample.weight[:11], full.weight[:11])


def test_label_smoothing_reaches_the_loss():
    y = torch.tensor([11] * 6 + list(range(11)))
    confident = 50.0 * torch.nn.functional.one_hot(y, 12).float()  # right, and sure of it
    plain = T.loss_function(y, T.train_params({"label_smoothing": 0.0}))
    smoothed = T.loss_function(y, T.train_params({"label_smoothing": 0.1}))
    assert float(plain(confident, y)) < 1e-6
    # 0.1 of the target mass goes to the other classes, at log-probability about -50
    assert float(smoothed(confident, y)) > 1.0


def _sample(hp):
    """The values a trial sees: const -> val, categorical -> each of its vals (first here)."""
    if "type" in hp:
        return hp["val"] if hp["type"] == "const" else hp["vals"][0]
    return {k: _sample(v) for k, v in hp.items()}


def test_experiment_config_is_generated_from_params():
    cfg = D.experiment_config(PARAMS)
    hp = _sample(cfg["hyperparameters"])
    assert hp == T.recipe(PARAMS)
    assert hp["model"] == PARAMS["model"] and hp["train"]["epochs"] == PARAMS["train"]["epochs"]
    assert "det_master" not in hp["train"] and "sweep" not in hp["train"]
    # what the trial receives passes the same validation as a local run
    T.train_params(hp["train"])
    assert cfg["searcher"]["metric"] == "val_accuracy" and cfg["searcher"]["smaller_is_better"] is False
    assert D.FEATURES_IN_CONTAINER in cfg["entrypoint"]
    template = yaml.safe_load((REPO / "kws_tf_template_finn.yaml").read_text())
    assert template["bind_mounts"][0]["container_path"] == D.FEATURES_IN_CONTAINER
    assert template["checkpoint_storage"]["type"] and template["max_restarts"] >= 1 and template["environment"]["image"]
    assert not set(cfg) & set(template)  # the template holds the cluster, the config the recipe


def test_experiment_config_sweep():
    p = copy.deepcopy(PARAMS)
    p["train"]["searcher"] = {"name": "grid"}
    p["train"]["sweep"] = {"model.weight_bit_width": [2, 3, 4], "train.lr": [1e-3, 5e-4]}
    cfg = D.experiment_config(p)
    assert cfg["hyperparameters"]["model"]["weight_bit_width"] == {"type": "categorical", "vals": [2, 3, 4]}
    assert cfg["hyperparameters"]["train"]["lr"]["vals"] == [1e-3, 5e-4]
    assert cfg["searcher"]["name"] == "grid" and cfg["searcher"]["metric"] == "val_accuracy"
    p["train"]["sweep"] = {"model.nope": [1]}
    with pytest.raises(KwsError, match="train.sweep"):
        D.experiment_config(p)
    p["train"]["sweep"] = {"model.dropout": [0.1]}
    p["train"]["searcher"] = {"name": "single"}
    with pytest.raises(KwsError, match="grid"):
        D.experiment_config(p)


def test_unreachable_master_fails_fast_with_one_line(tmp_path):
    env = dict(os.environ, DET_MASTER="http://127.0.0.1:9", PYTHONPATH=str(REPO))  # this checkout's kws
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, str(REPO / "scripts/run_training.py"), "--params", str(REPO / "params.yaml"),
                        "--experiment-file", str(tmp_path / "experiment_number.txt")],
                       cwd=tmp_path, env=env, capture_output=True, text=True)
    assert r.returncode == 1 and time.monotonic() - t0 < 30
    *notes, last = r.stderr.splitlines()  # a note when Determined's schemas are not found here
    assert last.startswith("error: Determined master") and "unreachable" in last
    assert all(line.startswith("note: Determined 0.38.1's config schemas not found") for line in notes)
    assert not (tmp_path / "experiment_number.txt").exists()


def test_cli_missing_features_one_line(tmp_path):
    r = subprocess.run([sys.executable, str(REPO / "scripts/run_training.py"), "--params", str(REPO / "params.yaml"),
                        "--features", str(tmp_path / "none")], cwd=tmp_path, capture_output=True, text=True,
                       env={**{k: v for k, v in os.environ.items() if k != "DET_MASTER"}, "PYTHONPATH": str(REPO)})
    assert r.returncode == 1 and r.stderr.strip().count("\n") == 0 and "train.npz" in r.stderr
    assert not (tmp_path / "metrics").exists() and not (tmp_path / "checkpoints").exists()


def test_fingerprinted_code_is_the_train_stage_code():
    """The modules whose edit retrains from scratch are the kws modules dvc.yaml reruns train for."""
    deps = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["train"]["deps"]
    # not fingerprinted: kws/params.py reaches training only through the values it checks and
    # fills in, which the fingerprint hashes (the hp); kws/expconf.py only checks cluster configs
    # kws/engines/ only decide where train() runs, kws/engines/ray_context.py is the Core API on Ray (the
    # checkpoint bytes are kws.checkpoints')
    not_training = {"kws/params.py", "kws/expconf.py", "kws/engines/__init__.py", "kws/engines/local.py",
                    "kws/engines/determined.py", "kws/engines/ray.py", "kws/engines/ray_context.py"}
    assert {m.replace(".", "/") + ".py" for m in T.TRAINING_CODE} == {d for d in deps if d.startswith("kws/")} - not_training


def test_another_cpu_kernel_cap_is_another_fingerprint(monkeypatch):
    """A checkpoint trained under other kernel caps rounds differently: it must not be resumed."""
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    capped = T.code_digest()
    assert T.code_digest() == capped
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx512")
    assert T.code_digest() != capped


def test_run_training_caps_the_kernels_before_torch_loads():
    keys = [key for key, _ in KERNEL_CAPS]
    code = ("import os, runpy, sys; sys.argv = ['run_training', '--help']\n"
            "try:\n    runpy.run_module('scripts.run_training', run_name='__main__')\nexcept SystemExit:\n    pass\n"
            f"print(*[os.environ.get(k) for k in {keys!r}], 'torch' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k not in keys}
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[-len(keys) - 1:] == [value for _, value in KERNEL_CAPS] + ["False"]


_FAULTS = """
import resource, sys, torch
from kws.kernels import keep_freed_memory
if sys.argv[1] == "keep":
    keep_freed_memory()
x = torch.ones(512, 490)  # a training batch's activations: 1 MB


def step():  # 8 MB alive at once, then freed, as in a training step
    ys = [x * k for k in range(8)]
    return sum(float(y[0, 0]) for y in ys)


for _ in range(5):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(50):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_keep_freed_memory_reuses_pages():
    """Training calls keep_freed_memory: without it glibc hands the freed megabytes of each step
    back to the kernel, and every step faults fresh pages in (fresh processes: the allocator's
    state is per process)."""
    def faults(mode):
        r = subprocess.run([sys.executable, "-c", _FAULTS, mode], cwd=REPO, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        return int(r.stdout.split()[-1])
    # 50 steps x 8 MB of fresh pages would be 100k faults; glibc's own threshold sometimes adapts
    # and leaves 5-6k; kept, 0-250 (a megabyte of other first touches)
    assert faults("default") > 2000
    assert faults("keep") < 1000


def _cli_train(features: Path, out: Path, params: dict, env: dict | None = None, one_cpu: bool = False,
               **popen) -> subprocess.Popen:
    """scripts/run_training.py as the train stage runs it, in a fresh process (OpenMP reads its
    variables when torch loads); one_cpu: bound to the first CPU it may use."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "params.yaml").write_text(yaml.safe_dump(params))
    cpu = min(os.sched_getaffinity(0)) if one_cpu else None

    def child_setup():
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # a shell's background job starts with SIGINT ignored
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})

    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "MKL_", "GOMP_")) and k != "DET_MASTER"}
    return subprocess.Popen(
        [sys.executable, str(REPO / "scripts/run_training.py"), "--params", str(out / "params.yaml"),
         "--features", str(features), "--checkpoints", str(out / "checkpoints"),
         "--metrics", str(out / "metrics.json"), "--plots", str(out / "train.csv")],
        cwd=out, env={**clean, "PYTHONPATH": str(REPO), **(env or {})}, preexec_fn=child_setup, text=True, **popen)


def _outputs(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name != "params.yaml"}


CLI_PARAMS = tiny_params(epochs=2, batch_size=512)  # the recipe's batch: big enough for multi-threaded reductions


def _cli_outputs(features: Path, out: Path, **kw) -> dict[str, bytes]:
    proc = _cli_train(features, out, CLI_PARAMS, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return _outputs(out)


@pytest.fixture(scope="module")
def plain_cli_outputs(blobs, tmp_path_factory):
    return _cli_outputs(blobs, tmp_path_factory.mktemp("plain"))


# OMP_DYNAMIC=true: libgomp gives each parallel region (CPUs it may use - 15-minute load average)
# threads, so a busy machine, or here deterministically a process bound to one CPU, trained on one
# thread when two were pinned (the pin is one thread now; the test keeps any pin honest).
# OMP_THREAD_LIMIT=1 caps the threads the same way.
@pytest.mark.parametrize("env,one_cpu", [({"OMP_DYNAMIC": "true"}, True), ({"OMP_THREAD_LIMIT": "1"}, False)],
                         ids=["omp_dynamic_one_cpu", "omp_thread_limit_1"])
def test_cli_training_is_bit_identical_whatever_openmp_is_told(blobs, tmp_path, plain_cli_outputs, env, one_cpu):
    told = _cli_outputs(blobs, tmp_path, env=env, one_cpu=one_cpu)
    assert list(told) == list(plain_cli_outputs)
    differing = [name for name in told if told[name] != plain_cli_outputs[name]]
    assert not differing, f"{env}{' on one CPU' if one_cpu else ''}: other bytes in {differing}"


def test_ctrl_c_says_which_epoch_is_kept_in_one_line_and_a_rerun_resumes(blobs, tmp_path):
    params = tiny_params(epochs=400, warmup_epochs=0)  # far longer than the test waits
    params["model"]["hidden_layers"] = [32]
    out = tmp_path / "run"
    proc = _cli_train(blobs, out, params, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not C.list_local_checkpoints(out / "checkpoints"):
        assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint made"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1].split("\r")[-1]  # after the progress bar's redraws
    kept = C.list_local_checkpoints(out / "checkpoints")
    assert len(kept) == 1 and last == f"interrupted after epoch {kept[0][0]}; rerun to resume", err
    assert not (out / "metrics.json").exists()
    # what it says: the rerun resumes there (and is interrupted again, to keep the test short)
    proc = _cli_train(blobs, out, params, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    while "resuming" not in (line := proc.stderr.readline()):
        assert line, "the rerun ended without resuming"
    assert f"resuming from checkpoint epoch-{kept[0][0]:04d} after epoch {kept[0][0]}" in line
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err
