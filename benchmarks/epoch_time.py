"""Seconds per training epoch on Gowalla-size synthetic data (30k users, 41k items, ~822k train
pairs, batch 4096, d = 32, n = 5), in-process, per sampler.

    python -m benchmarks.epoch_time --device cpu --threads 2 --out benchmarks/results/epoch_time_cpu.md
    python -m benchmarks.epoch_time --device cuda --out benchmarks/results/epoch_time_cuda.md

The first epoch (warm-up, first pool fill) is not counted; the mean of the next --epochs is.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

from trainer.core.config import TrainConfig
from trainer.core.engine import Engine
from trainer.data.dataset import PreparedData
from trainer.data.prepare import PrepareOptions, prepare

GOWALLA_LIKE = "users=29858,items=40988,mean=38,minimum=10,alpha=0.5,zipf=0.6,seed=0"


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", default="runs/data/gowalla-like")
    ap.add_argument("--samplers", default="uniform,adasir-u,adasir-p,adasir-w,dns,pris-p")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument(
        "--optimizers",
        default="adam",
        help="comma list of adam, sparse-adam: each sampler is timed with each",
    )
    ap.add_argument("--out")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if not os.path.isfile(os.path.join(args.data, "manifest.json")):
        t0 = time.perf_counter()
        prepare(args.data, PrepareOptions(kcore=0), synthetic=GOWALLA_LIKE, overwrite=True)
        print(f"generated {args.data} in {time.perf_counter() - t0:.0f}s", flush=True)
    data = PreparedData.load(args.data)
    n_train = len(data.splits["train"].users)
    lines = [
        f"{data.num_users} users, {data.num_items} items, {n_train} train pairs; batch 4096, "
        f"d=32, n=5, |K|=|R|=200; device {args.device}, torch threads {torch.get_num_threads()}; "
        f"mean of {args.epochs} epochs after one warm-up epoch.",
        "",
        "| sampler | optimizer | sample s/epoch | train s/epoch | epoch s |",
        "|---|---|---|---|---|",
    ]
    for optimizer in args.optimizers.split(","):
        for name in args.samplers.split(","):
            cfg = TrainConfig(
                epochs=args.epochs + 1,
                lr=0.01,
                device=args.device,
                optimizer=optimizer,
                sampler={"name": name},
            )
            engine = Engine(cfg, data)
            engine.train_epoch()  # warm-up
            recs = [engine.train_epoch() for _ in range(args.epochs)]
            s = statistics.mean(r["sample_s"] for r in recs)
            t = statistics.mean(r["train_s"] for r in recs)
            lines.append(f"| {name} | {optimizer} | {s:.3f} | {t:.3f} | {s + t:.3f} |")
            print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    if args.out:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "w") as fh:
            fh.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
