"""Seconds per training epoch, in-process, per sampler (batch 4096, d = 32, n = 5,
|K| = |R| = 200: the paper's Gowalla settings).

    python -m benchmarks.epoch_time --device cpu --threads 2 --out benchmarks/results/epoch_time_cpu.md
    python -m benchmarks.epoch_time --data runs/data/gowalla-lightgcn --threads 2 --epochs 4 \\
        --rounds 3 --out benchmarks/reports/gowalla-lightgcn/epoch_time_cpu.md

Without --data's manifest, Gowalla-size synthetic data (30k users, 41k items) is generated
there. The first epoch (warm-up, first pool fill) is not counted; a round's figure is the
mean of the next --epochs. With --rounds R every sampler is timed R times in interleaved
rounds (sampler A, B, …, then A, B, … again), so a drift of the machine spreads over all of
them; the table gives the median round and the range.
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


def time_sampler(data, name: str, optimizer: str, epochs: int, device: str) -> tuple[float, float]:
    """(sample s, train s) per epoch: the mean of `epochs` after one warm-up epoch."""
    cfg = TrainConfig(
        epochs=epochs + 1, lr=0.01, device=device, optimizer=optimizer, sampler={"name": name}
    )
    engine = Engine(cfg, data)
    engine.train_epoch()  # warm-up
    recs = [engine.train_epoch() for _ in range(epochs)]
    return statistics.mean(r["sample_s"] for r in recs), statistics.mean(r["train_s"] for r in recs)


def _cell(values: list[float]) -> str:
    mid = statistics.median(values)
    return f"{mid:.3f}" if len(values) == 1 else f"{mid:.3f} ({min(values):.3f}–{max(values):.3f})"


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", default="runs/data/gowalla-like")
    ap.add_argument("--samplers", default="uniform,adasir-u,adasir-p,adasir-w,dns,pris-p")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=1, help="interleaved rounds per sampler")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument(
        "--optimizers",
        default="adam",
        help="comma list of adam, sparse-adam: each sampler is timed with each",
    )
    ap.add_argument("--out")
    args = ap.parse_args()
    if args.rounds < 1 or args.epochs < 1:
        ap.error("--rounds and --epochs must be at least 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    if not os.path.isfile(os.path.join(args.data, "manifest.json")):
        t0 = time.perf_counter()
        prepare(args.data, PrepareOptions(kcore=0), synthetic=GOWALLA_LIKE, overwrite=True)
        print(f"generated {args.data} in {time.perf_counter() - t0:.0f}s", flush=True)
    data = PreparedData.load(args.data)
    n_train = len(data.splits["train"].users)
    runs = [(o, s) for o in args.optimizers.split(",") for s in args.samplers.split(",")]
    timings: dict[tuple[str, str], list[tuple[float, float]]] = {run: [] for run in runs}
    for r in range(args.rounds):
        for optimizer, name in runs:
            timings[optimizer, name].append(
                time_sampler(data, name, optimizer, args.epochs, args.device)
            )
            s, t = timings[optimizer, name][-1]
            print(f"round {r + 1}: {name} {optimizer} sample {s:.3f} train {t:.3f}", flush=True)
    rounds = f"median (range) of {args.rounds} interleaved rounds, " if args.rounds > 1 else ""
    lines = [
        f"{data.num_users} users, {data.num_items} items, {n_train} train pairs; batch 4096, "
        f"d=32, n=5, |K|=|R|=200; device {args.device}, torch threads {torch.get_num_threads()}; "
        f"{rounds}each the mean of {args.epochs} epochs after one warm-up epoch.",
        "",
        "| sampler | optimizer | sample s/epoch | train s/epoch | epoch s |",
        "|---|---|---|---|---|",
    ]
    for optimizer, name in runs:
        rows = timings[optimizer, name]
        sample, train = [s for s, _ in rows], [t for _, t in rows]
        epoch = [s + t for s, t in rows]
        lines.append(
            f"| {name} | {optimizer} | {_cell(sample)} | {_cell(train)} | **{_cell(epoch)}** |"
        )
    text = "\n".join(lines) + "\n"
    if args.out:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "w") as fh:
            fh.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
