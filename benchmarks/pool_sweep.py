"""Fig. 4: pool size |K| = |R| against test NDCG@50, Recall@50 and epoch time.

python -m benchmarks.pool_sweep --data runs/data/ml-1m --out benchmarks/reports/ml-1m
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

import matplotlib.pyplot as plt

from benchmarks.report_utils import command_line, save_figure, training_curve, write_report
from trainer.core.config import TrainConfig
from trainer.data.dataset import PreparedData


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--samplers", default="adasir-u,adasir-p,adasir-w")
    ap.add_argument("--sizes", default="100,200,400,1000,2000")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--l2", type=float, default=0.01)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument(
        "--cap",
        action="append",
        default=[],
        metavar="SAMPLER=SIZE",
        help="largest size to run for a sampler (AdaSIR-W's rank estimate costs "
        "O(|K|) per pair); repeatable",
    )
    args = ap.parse_args()
    caps = {k: int(v) for k, v in (c.split("=") for c in args.cap)}
    data = PreparedData.load(args.data)
    sizes = [int(s) for s in args.sizes.split(",")]
    cache_path = os.path.join(args.out, "pool_sweep.jsonl")
    os.makedirs(args.out, exist_ok=True)
    cache = {}
    if os.path.exists(cache_path):
        cache = {(r["sampler"], r["size"]): r for r in map(json.loads, open(cache_path))}
    results = {}
    for name in args.samplers.split(","):
        for size in sizes:
            if size > caps.get(name, size):
                continue
            if (name, size) not in cache:
                cfg = TrainConfig(
                    preset="paper",
                    epochs=args.epochs,
                    eval_every=args.epochs,
                    lr=args.lr,
                    l2=args.l2,
                    seed=args.seed,
                    device=args.device,
                    sampler={"name": name, "num_candidates": size, "pool_size": size},
                )
                run = training_curve(data, cfg)
                rec = {
                    "sampler": name,
                    "size": size,
                    "test": run["test"],
                    "epoch_s": statistics.mean(e["sample_s"] + e["train_s"] for e in run["epochs"]),
                }
                with open(cache_path, "a") as fh:
                    fh.write(json.dumps(rec) + "\n")
                cache[(name, size)] = rec
                print(name, size, rec["test"]["ndcg@50"], f"{rec['epoch_s']:.2f}s", flush=True)
            results[(name, size)] = cache[(name, size)]
    capped = "; ".join(f"{k} only up to {v}" for k, v in caps.items())
    body = [
        f"{args.epochs} epochs, lr {args.lr}, L2 {args.l2}, seed {args.seed}, |K| = |R|"
        f"{'; ' + capped if capped else ''}.",
        "",
        "| sampler | size | test NDCG@50 | test Recall@50 | s/epoch |",
        "|---|---|---|---|---|",
    ]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for name in args.samplers.split(","):
        recs = [results[(name, s)] for s in sizes if (name, s) in results]
        ran = [r["size"] for r in recs]
        body += [
            f"| {name} | {r['size']} | {r['test']['ndcg@50']:.4f} | {r['test']['recall@50']:.4f} | "
            f"{r['epoch_s']:.2f} |"
            for r in recs
        ]
        for ax, values in zip(
            axes,
            (
                [r["test"]["ndcg@50"] for r in recs],
                [r["test"]["recall@50"] for r in recs],
                [r["epoch_s"] for r in recs],
            ),
        ):
            ax.plot(ran, values, marker="o", label=name)
    for ax, label in zip(axes, ("test NDCG@50", "test Recall@50", "seconds per epoch")):
        ax.set_xscale("log")
        ax.set_xlabel("pool size |K| = |R|")
        ax.set_ylabel(label)
        ax.legend()
    save_figure(fig, args.out, "pool_sweep")
    body += ["", "![pool size sweep](pool_sweep.png)"]
    write_report(args.out, "pool_sweep", "Fig. 4: pool size", command_line(), body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
