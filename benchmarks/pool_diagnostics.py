"""Why AdaSIR loses to DNS: per-epoch diagnostics of each sampler's negatives.

    python -m benchmarks.pool_diagnostics --data runs/data/ml-1m --out benchmarks/reports/ml-1m

Trains each configuration with `diagnostics=True` (trainer/core/diagnostics.py) and tabulates, at
the end of every epoch: mean scores of the positives, of the sampler's negatives, of fresh
uniform non-positives and of DNS picks; the false-negative rate (negatives that are held-out
positives) against its chance level; and AdaSIR's pool statistics — distinct entries ÷ |R|,
ESS of the resampling weights ÷ |K|, staleness (score at resampling − score now).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import matplotlib.pyplot as plt

from benchmarks.report_utils import command_line, save_figure, write_report
from trainer.core.config import TrainConfig
from trainer.core.engine import Engine
from trainer.data.dataset import PreparedData

CONFIGS = {
    "uniform": {"name": "uniform"},
    "adasir-u": {"name": "adasir-u"},
    "adasir-p": {"name": "adasir-p"},
    "dns": {"name": "dns"},
    "adasir-u+max4": {"name": "adasir-u", "pool_pick": "max", "pool_pick_candidates": 4},
    "adasir-u τ=0.25": {"name": "adasir-u", "temperature": 0.25},
}
COLUMNS = [
    "pos_score",
    "neg_score",
    "uniform_score",
    "dns_score",
    "false_negative_rate",
    "uniform_false_negative_rate",
    "pool_distinct_frac",
    "ess_frac",
    "staleness",
]


def run(data, sampler: dict, args) -> dict:
    cfg = TrainConfig(
        preset="paper",
        epochs=args.epochs,
        eval_every=args.eval_every or args.epochs,
        lr=args.lr,
        l2=args.l2,
        seed=0,
        diagnostics=True,
        sampler=sampler,
    )
    return Engine(cfg, data).fit()


def _section(name: str, test: dict, epochs: list[dict]) -> list[str]:
    """A config's table: a row per epoch, its validation NDCG@50 (where it validated) and the
    negatives' statistics."""
    lines = [
        "",
        f"## {name}: test NDCG@50 {test['ndcg@50']:.4f}",
        "",
        "| epoch | valid ndcg@50 | " + " | ".join(COLUMNS) + " |",
        "|---" * (len(COLUMNS) + 2) + "|",
    ]
    for e in epochs:
        d, valid = e["negatives"], e.get("valid", {}).get("ndcg@50")
        cells = " | ".join(f"{d[c]:.3f}" if c in d else "–" for c in COLUMNS)
        lines.append(f"| {e['epoch']} | {'–' if valid is None else f'{valid:.4f}'} | {cells} |")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--l2", type=float, default=0.01)
    ap.add_argument("--configs", default="adasir-u,dns,adasir-u+max4,adasir-u τ=0.25")
    ap.add_argument(
        "--eval-every",
        type=int,
        default=0,
        help="validate every N epochs (a column of the tables); 0: at the end only",
    )
    args = ap.parse_args()
    data = PreparedData.load(args.data)
    body = [
        f"`{os.path.basename(data.path)}`: {data.num_users} users, {data.num_items} items. "
        f"MF, {args.epochs} epochs, lr {args.lr}, L2 {args.l2}, seed 0, |K| = |R| = 200, n = 5. "
        "Measured at the end of each epoch on 2,048 train pairs (a fixed sample); scores are "
        "the current model's. Staleness is an entry's score at its resampling minus its "
        "score now, so the end of an epoch is the pools' stalest point."
    ]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    results = {}
    for name in args.configs.split(","):
        result = run(data, CONFIGS[name], args)
        results[name] = result
        epochs = [e for e in result["epochs"] if e.get("negatives")]
        body += _section(name, result["test"], epochs)
        x = [e["epoch"] for e in epochs]
        axes[0].plot(
            x,
            [e["negatives"]["neg_score"] - e["negatives"]["uniform_score"] for e in epochs],
            label=name,
        )
        axes[1].plot(x, [e["negatives"]["false_negative_rate"] for e in epochs], label=name)
        if "staleness" in epochs[0]["negatives"]:
            axes[2].plot(x, [e["negatives"]["staleness"] for e in epochs], label=name)
    axes[0].set_title("negatives' mean score − uniform items' (hardness)")
    axes[1].set_title("false-negative rate (held-out positives drawn)")
    axes[2].set_title("pool staleness (score then − score now)")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.legend(fontsize=8)
    name = "pool_diagnostics"
    save_figure(fig, args.out, name)
    with open(os.path.join(args.out, f"{name}.json"), "w") as fh:
        json.dump(results, fh)
    body += ["", f"![diagnostics]({name}.png)"]
    write_report(
        args.out,
        name,
        "Why AdaSIR loses: what its negatives look like, epoch by epoch",
        command_line(),
        body,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
