"""IRGAN's generator over training: validation NDCG@50 of the recommender next to the entropy of
the generator's distribution, to show when (and whether) the generator collapses.

    python -m benchmarks.irgan_diagnostic --data runs/data/ml-1m --out benchmarks/reports/ml-1m \\
        --epochs 8 --l2 0.01

The entropy and top-10 mass are means over every 60th user of softmax(G's scores) with the
user's train items masked, as the sampler draws; log N is the entropy of uniform draws.
"""

from __future__ import annotations

import argparse
import math
import os
import sys

import matplotlib.pyplot as plt
import torch

from benchmarks.report_utils import command_line, save_figure, write_report
from trainer.core.config import TrainConfig
from trainer.core.engine import Engine
from trainer.data.dataset import PreparedData


@torch.no_grad()
def generator_spread(sampler, every: int = 60) -> tuple[float, float]:
    """(mean entropy, mean top-10 mass) of the distribution the sampler draws from, over every
    `every`-th user."""
    p = sampler.generator_probs(torch.arange(0, sampler.num_users, every, device=sampler.device))
    entropy = -(p * torch.log(p.clamp_min(1e-30))).sum(1)
    top = p.topk(min(10, p.shape[1]), dim=1).values.sum(1)
    return float(entropy.mean()), float(top.mean())


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--l2", type=float, default=0.01)
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = PreparedData.load(args.data)
    engine = Engine(
        TrainConfig(
            preset="paper",
            epochs=args.epochs,
            eval_every=1,
            lr=args.lr,
            l2=args.l2,
            batch_size=args.batch_size,
            seed=args.seed,
            sampler={"name": "irgan"},
        ),
        data,
    )
    rows = []
    for _ in range(args.epochs):
        engine.train_epoch()
        entropy, top10 = generator_spread(engine.sampler)
        rows.append((engine.epoch, engine.evaluate("valid")["ndcg@50"], entropy, top10))
    uniform_entropy = math.log(data.num_items)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot([r[0] for r in rows], [r[1] for r in rows], "o-", label="valid NDCG@50")
    ax.set_xlabel("epoch")
    ax.set_ylabel("valid NDCG@50")
    twin = ax.twinx()
    twin.plot([r[0] for r in rows], [r[2] for r in rows], "s--", color="tab:red", label="G entropy")
    twin.axhline(uniform_entropy, color="tab:red", lw=0.8, ls=":")
    twin.set_ylabel("generator entropy (nats); dotted: uniform")
    fig.legend(loc="lower left")
    ax.set_title("IRGAN: recommender quality vs generator entropy")
    save_figure(fig, args.out, "irgan_diagnostic")
    body = [
        f"Data `{os.path.basename(data.path)}`, MF, lr {args.lr}, L2 {args.l2}, batch "
        f"{args.batch_size}, seed {args.seed}. Uniform draws have entropy log N = "
        f"{uniform_entropy:.2f}.",
        "",
        "| epoch | valid NDCG@50 | G entropy | G top-10 mass |",
        "|---|---|---|---|",
    ]
    body += [f"| {e} | {n:.4f} | {h:.2f} | {t:.3f} |" for e, n, h, t in rows]
    body += ["", "![IRGAN diagnostic](irgan_diagnostic.png)"]
    write_report(
        args.out, "irgan_diagnostic", "IRGAN: does the generator collapse?", command_line(), body
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
