"""AdaSIR's options measured: the Eq. (1) weighting (paper r − log w, the authors' code's
r + log w, or none) × excluding the user's train positives from the pools (on/off).

    python -m benchmarks.ablation --data runs/data/ml-1m --out benchmarks/reports/ml-1m
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys

import matplotlib.pyplot as plt

from benchmarks.report_utils import command_line, mean_sd, save_figure, training_curve, write_report
from trainer.core.config import TrainConfig
from trainer.data.dataset import PreparedData


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--name", default="ablation", help="report file name (one per dataset)")
    ap.add_argument("--sampler", default="adasir-u")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--l2", type=float, default=0.01)
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--seeds", default="0,1")
    args = ap.parse_args()
    data = PreparedData.load(args.data)
    seeds = [int(s) for s in args.seeds.split(",")]
    body = [
        f"Data `{os.path.basename(data.path)}`; {args.sampler}, {args.epochs} epochs, lr {args.lr}, "
        f"L2 {args.l2}, batch {args.batch_size}; test metrics, mean ± std over seeds {args.seeds}.",
        "",
        "| weighting | exclude positives | test NDCG@50 | test Recall@50 |",
        "|---|---|---|---|",
    ]
    labels, means, stds = [], [], []
    for weighting, exclude in itertools.product(("paper", "reference", "none"), (True, False)):
        runs = [
            training_curve(
                data,
                TrainConfig(
                    preset="paper",
                    epochs=args.epochs,
                    eval_every=args.epochs,
                    lr=args.lr,
                    l2=args.l2,
                    seed=s,
                    batch_size=args.batch_size,
                    sampler={
                        "name": args.sampler,
                        "weighting": weighting,
                        "exclude_positives": exclude,
                    },
                ),
            )
            for s in seeds
        ]
        ndcg = [r["test"]["ndcg@50"] for r in runs]
        recall = [r["test"]["recall@50"] for r in runs]
        body.append(
            f"| {weighting} | {'on' if exclude else 'off'} | {mean_sd(ndcg)} | {mean_sd(recall)} |"
        )
        labels.append(f"{weighting}\n{'excl' if exclude else 'keep'}")
        means.append(statistics.mean(ndcg))
        stds.append(statistics.stdev(ndcg) if len(ndcg) > 1 else 0.0)
        print(body[-1], flush=True)
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.bar(labels, means, yerr=stds, capsize=3)
    ax.set_ylim(min(means) * 0.95, max(means) * 1.03)
    ax.set_ylabel("test NDCG@50")
    save_figure(fig, args.out, args.name)
    body += ["", f"![ablation]({args.name}.png)"]
    write_report(
        args.out,
        args.name,
        f"{args.sampler}: Eq. (1) weighting × excluding train positives",
        command_line(),
        body,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
