"""Convergence: validation NDCG@50 against training seconds, per sampler — time to quality.

    python -m benchmarks.convergence --data runs/data/ml-1m --out benchmarks/reports/ml-1m

Seconds are sampling + training (evaluation excluded). "Time to uniform's best" is when a
sampler's validation NDCG@50 first reaches the best value uniform reaches in the run.
"""

from __future__ import annotations

import argparse
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
    ap.add_argument("--samplers", default="uniform,adasir-u,adasir-p,dns,pris-p")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--l2", type=float, default=0.01)
    ap.add_argument("--eval-every", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    data = PreparedData.load(args.data)
    curves = {}
    for name in args.samplers.split(","):
        cfg = TrainConfig(
            preset="paper",
            epochs=args.epochs,
            eval_every=args.eval_every,
            lr=args.lr,
            l2=args.l2,
            seed=args.seed,
            device=args.device,
            sampler={"name": name},
        )
        curves[name] = training_curve(data, cfg)
        print(name, curves[name]["points"][-1], flush=True)
    target = max(p[2] for p in curves["uniform"]["points"]) if "uniform" in curves else None
    body = [
        f"{args.epochs} epochs, lr {args.lr}, L2 {args.l2}, seed {args.seed}; validation every "
        f"{args.eval_every} epoch(s).",
        "",
        "| sampler | best valid NDCG@50 | training s | s to uniform's best |",
        "|---|---|---|---|",
    ]
    fig, ax = plt.subplots(figsize=(8, 5))
    for name, run in curves.items():
        pts = run["points"]
        ax.plot([p[0] for p in pts], [p[2] for p in pts], marker=".", label=name)
        reach = next((p[0] for p in pts if target is not None and p[2] >= target), None)
        body.append(
            f"| {name} | {max(p[2] for p in pts):.4f} | {run['seconds']:.1f} | "
            f"{'–' if reach is None else f'{reach:.1f}'} |"
        )
    ax.set_xlabel("sampling + training seconds")
    ax.set_ylabel("validation NDCG@50")
    ax.legend()
    save_figure(fig, args.out, "convergence")
    body += ["", "![convergence](convergence.png)"]
    write_report(
        args.out,
        "convergence",
        "Convergence: quality against wall-clock time",
        command_line(),
        body,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
