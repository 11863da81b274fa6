"""Training wall time per epoch at the real corpus size: the project's path (kws.train.train through
Determined's Core API, checkpoint every epoch, tqdm) next to a bare PyTorch loop over the same
Brevitas model and tensors. Both validate once per epoch. Run: python bench/bench_train.py"""
import argparse
import statistics
import tempfile
import time

import numpy as np
import torch

from kws import checkpoints as C

from kws import train as T
from kws.params import load_params
from kws.files import to_model_layout
from kws.model import build_model, config_from_params

SIZES = {"train": 85_511, "validation": 10_102, "test": 4_890}  # Speech Commands v2, MLPerf Tiny splits


def random_splits(seed=0) -> T.Splits:
    rng = np.random.default_rng(seed)
    x, y = {}, {}
    for split, n in SIZES.items():
        x[split] = torch.from_numpy(to_model_layout(rng.normal(0, 10, (n, 49, 10)).astype(np.float32), (n, 1, 10, 49)))
        y[split] = torch.from_numpy(rng.integers(0, 12, n))
    return T.Splits(x=x, y=y, digest="bench")


def bare_loop(params, data):
    """A plain PyTorch loop over the same model, recipe and tensors; yields once per epoch."""
    mp, tp = params["model"], T.train_params(params["train"])
    lo, hi, scale = T.input_range(data.x["train"], mp["input_clip_percentiles"], mp["input_bit_width"])
    torch.manual_seed(0)
    model = build_model(config_from_params(mp, tuple(data.x["train"].shape[1:]), scale))
    opt = torch.optim.Adam(model.parameters(), lr=tp.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=tp.epochs, eta_min=tp.eta_min)
    crit = T.loss_function(data.y["train"], tp)  # the recipe's loss, as the project path uses
    gen = torch.Generator().manual_seed(0)
    x, y, bs = data.x["train"], data.y["train"], tp.batch_size
    xv, yv = data.x["validation"], data.y["validation"]
    while True:
        model.train()
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), bs):
            idx = perm[i:i + bs]
            opt.zero_grad(set_to_none=True)
            loss = crit(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
        sched.step()
        model.eval()
        with torch.no_grad():
            float(crit(torch.cat([model(xv[i:i + 8192]) for i in range(0, len(xv), 8192)]), yv))
        yield


def interleaved(params, data, epochs):
    """Project epoch k+1 runs right after bare epoch k, so both see the same machine load (the
    2 cores are shared). Project epoch 1 (setup: percentiles, model build) is not counted.
    Returns {"wall"|"cpu": (project seconds, bare seconds)}; cpu = this process's CPU time, which
    other tenants' load disturbs much less than wall time."""
    hp = T.recipe(params)
    hp["train"]["epochs"] = epochs + 1
    hp["train"]["warmup_epochs"] = 0  # the bare loop has no warm-up (its epochs cost the same)
    hp["train"]["unknown_share"] = 1.0  # and trains every clip each epoch
    bare = bare_loop(params, data)
    clocks = {"wall": time.perf_counter, "cpu": time.process_time}
    out = {k: ([], []) for k in clocks}
    resumed = {}

    def epoch_end(epoch):
        now = {k: c() for k, c in clocks.items()}
        for k in clocks:
            if k in resumed:
                out[k][0].append(now[k] - resumed[k])
        if epoch <= epochs:
            next(bare)
            for k, c in clocks.items():
                out[k][1].append(c() - now[k])
        resumed.update({k: c() for k, c in clocks.items()})

    with tempfile.TemporaryDirectory() as ckpt, C.local_context(ckpt) as ctx:
        T.train(ctx, hp, data, local_dir=ckpt, epoch_end=epoch_end)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--epochs", type=int, default=3)
    args = ap.parse_args()
    params = load_params(args.params)
    torch.use_deterministic_algorithms(True)
    data = random_splits()
    res = interleaved(params, data, args.epochs)
    print(f"threads {torch.get_num_threads()}, train samples {SIZES['train']}, batch {params['train']['batch_size']}, "
          f"{args.epochs} epochs each, interleaved")
    # min next to median: on a shared VM an epoch can take 20x longer when the host is busy
    for clock, (project, bare) in res.items():
        for name, ts in (("bare PyTorch loop   ", bare), ("project (Determined)", project)):
            print(f"[{clock}] {name} s/epoch: {' '.join(f'{t:.2f}' for t in ts)}  "
                  f"median {statistics.median(ts):.2f}  min {min(ts):.2f}")
        print(f"[{clock}] ratio project/bare: median {statistics.median(project) / statistics.median(bare):.3f}, "
              f"min {min(project) / min(bare):.3f} (target <= 1.2)")

if __name__ == "__main__":
    main()
