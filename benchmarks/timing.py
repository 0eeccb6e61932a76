"""Table 3 / Fig. 1: seconds per epoch spent sampling vs training, per sampler.

    python -m benchmarks.timing --data runs/data/ml-1m --out benchmarks/reports/ml-1m --epochs 2

Sampling = pool refresh + drawing negatives (scoring candidates included); training =
forward, backward and the optimizer. One warm-up epoch is not counted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

import matplotlib.pyplot as plt
import torch

from benchmarks.report_utils import command_line, save_figure, write_report
from pools import SAMPLER_NAMES
from trainer.core.config import TrainConfig
from trainer.core.engine import Engine
from trainer.data.dataset import PreparedData


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--samplers", default=",".join(SAMPLER_NAMES))
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = PreparedData.load(args.data)
    rows = []
    for name in args.samplers.split(","):
        cfg = TrainConfig(
            preset="paper",
            epochs=args.epochs + 1,
            lr=0.01,
            batch_size=args.batch_size,
            device=args.device,
            sampler={"name": name},
        )
        engine = Engine(cfg, data)
        engine.train_epoch()
        recs = [engine.train_epoch() for _ in range(args.epochs)]
        rows.append(
            (
                name,
                statistics.mean(r["sample_s"] for r in recs),
                statistics.mean(r["train_s"] for r in recs),
            )
        )
        print(name, rows[-1][1:], flush=True)
    base = next((s + t for n, s, t in rows if n == "uniform"), None)
    body = [
        f"Data `{os.path.basename(data.path)}` ({len(data.splits['train'].users)} train pairs), "
        f"batch {args.batch_size}, device {args.device}, torch threads {torch.get_num_threads()}, "
        f"mean of {args.epochs} epochs after a warm-up epoch.",
        "",
        "| sampler | sample s/epoch | train s/epoch | epoch s | ÷ uniform |",
        "|---|---|---|---|---|",
    ]
    body += [
        f"| {n} | {s:.3f} | {t:.3f} | {s + t:.3f} | {(s + t) / base:.2f} |"
        if base
        else f"| {n} | {s:.3f} | {t:.3f} | {s + t:.3f} | – |"
        for n, s, t in rows
    ]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    names = [r[0] for r in rows]
    ax.bar(names, [r[1] for r in rows], label="sampling")
    ax.bar(names, [r[2] for r in rows], bottom=[r[1] for r in rows], label="training")
    ax.set_ylabel("seconds per epoch")
    ax.tick_params(axis="x", rotation=45)
    ax.legend()
    save_figure(fig, args.out, "timing")
    body += ["", "![sampling vs training time](timing.png)"]
    write_report(
        args.out,
        "timing",
        "Table 3 / Fig. 1: sampling vs training time per epoch",
        command_line(),
        body,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
