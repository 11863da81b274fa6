"""Training wall time per epoch at the real corpus size: the project's path (kws.train.train through
Determined's Core API, checkpoint every epoch, tqdm) next to a bare PyTorch loop over the same
Brevitas model and tensors. Both validate once per epoch. Run: python bench/bench_train.py"""
import argparse
import statistics
import tempfile
import time

import numpy as np
import torch
from torch import nn

from kws import train as T
from kws.common import load_params
from kws.model import build_model, config_from_params, to_model_input

SIZES = {"train": 85_511, "validation": 10_102, "test": 4_890}  # Speech Commands v2, MLPerf Tiny splits


def random_splits(seed=0) -> T.Splits:
    rng = np.random.default_rng(seed)
    x, y = {}, {}
    for split, n in SIZES.items():
        x[split] = torch.from_numpy(to_model_input(rng.normal(0, 10, (n, 49, 10)).astype(np.float32)))
        y[split] = torch.from_numpy(rng.integers(0, 12, n))
    return T.Splits(x=x, y=y, digest="bench")


def project_epochs(params, data, epochs) -> list[float]:
    marks = []
    hp = T.recipe(params)
    hp["train"]["epochs"] = epochs + 1  # the first epoch also holds setup (percentiles, model build)
    with tempfile.TemporaryDirectory() as ckpt, T.local_context(ckpt) as ctx:
        marks.append(time.perf_counter())
        T.train(ctx, hp, data, epoch_end=lambda e: marks.append(time.perf_counter()))
    return [b - a for a, b in zip(marks[1:], marks[2:])]


def bare_epochs(params, data, epochs) -> list[float]:
    mp, tp = params["model"], T.check_train_params(params["train"])
    lo, hi, scale = T.input_range(data.x["train"], mp["input_clip_percentiles"], mp["input_bit_width"])
    torch.manual_seed(0)
    model = build_model(config_from_params(mp, tuple(data.x["train"].shape[1:]), scale))
    opt = torch.optim.Adam(model.parameters(), lr=tp["lr"])
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs, eta_min=tp["eta_min"])
    crit = nn.CrossEntropyLoss(weight=T.class_weights(data.y["train"], tp["unknown_weight_divisor"]))
    gen = torch.Generator().manual_seed(0)
    x, y, bs = data.x["train"], data.y["train"], tp["batch_size"]
    times = []
    for _ in range(epochs):
        t0 = time.perf_counter()
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
            logits = torch.cat([model(data.x["validation"][i:i + 8192]) for i in range(0, len(data.x["validation"]), 8192)])
            float(crit(logits, data.y["validation"]))
        times.append(time.perf_counter() - t0)
    return times


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--epochs", type=int, default=3)
    args = ap.parse_args()
    params = load_params(args.params)
    torch.use_deterministic_algorithms(True)
    data = random_splits()
    bare = bare_epochs(params, data, args.epochs)
    project = project_epochs(params, data, args.epochs)
    mb, mp = statistics.median(bare), statistics.median(project)
    print(f"threads {torch.get_num_threads()}, train samples {SIZES['train']}, batch {params['train']['batch_size']}")
    print(f"bare PyTorch loop  s/epoch: {' '.join(f'{t:.2f}' for t in bare)}  median {mb:.2f}")
    print(f"project (Determined) s/epoch: {' '.join(f'{t:.2f}' for t in project)}  median {mp:.2f}")
    print(f"ratio project/bare: {mp / mb:.3f} (target <= 1.2)")


if __name__ == "__main__":
    main()
