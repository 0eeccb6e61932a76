"""Warm start against a cold run on grown data: the time a model started from the earlier
model (`--init-from`) takes to reach the validation quality a fresh one reaches.

    python -m benchmarks.warm_start --input ../shared/data/ml-1m/ml-1m.inter.gz \
        --min-rating 4 --out benchmarks/reports/warm-start --seeds 0,1 --threads 2

The grown dataset is the whole file, split as `adasir prepare` splits it. The earlier one is
the grown dataset's train pairs up to the --earlier quantile of their timestamps, split again
for its own early stopping: so the earlier model never saw a pair of the grown dataset's
validation or test splits. The earlier model, then a cold and a warm model on the grown data
per seed, train with the default recipe (no refit), validated every epoch; training seconds
exclude evaluation.
"""

from __future__ import annotations

import argparse
import os
import statistics

import numpy as np
import pandas as pd
import torch

from benchmarks.report_utils import command_line, mean_sd, save_figure, write_report
from trainer.core.config import TrainConfig
from trainer.core.presets import fit_to_data
from trainer.core.training import train_in_process
from trainer.data.dataset import PreparedData
from trainer.data.prepare import PrepareOptions, prepare

METRIC = "recall@20"


def earlier_input(grown: PreparedData, source: str, quantile: float, path: str) -> int:
    """Write the grown dataset's train pairs up to the timestamp quantile as an .inter file;
    returns how many pairs."""
    raw = pd.read_csv(source, sep="\t")
    raw.columns = [c.split(":")[0] for c in raw.columns]
    users, items = np.asarray(grown.ids("users")), np.asarray(grown.ids("items"))
    train = grown.splits["train"]
    pairs = pd.DataFrame({"user_id": users[train.users], "item_id": items[train.items]})
    stamped = pairs.merge(
        raw[["user_id", "item_id", "timestamp"]].astype({"user_id": str, "item_id": str}),
        on=["user_id", "item_id"],
    ).drop_duplicates(["user_id", "item_id"])
    early = stamped[stamped.timestamp <= stamped.timestamp.quantile(quantile)]
    early.columns = ["user_id:token", "item_id:token", "timestamp:float"]
    early.to_csv(path, sep="\t", index=False)
    return len(early)


def train(
    data: PreparedData, out: str, seed: int, epochs: int, init_from: str | None = None
) -> dict:
    config = TrainConfig(
        refit=False,
        eval_every=1,
        seed=seed,
        init_from=init_from,
        **({"epochs": epochs} if epochs else {}),
    )
    config = fit_to_data(config, data.num_items, {})
    return train_in_process(config, data, out, log=lambda line: None)


def curve(metrics: dict) -> tuple[list[float], list[float]]:
    """(cumulative training seconds, validation METRIC) per epoch."""
    seconds, values, total = [], [], 0.0
    for record in metrics["epochs"]:
        total += record["sample_s"] + record["train_s"]
        seconds.append(total)
        values.append(record["valid"][METRIC])
    return seconds, values


def time_to(metrics: dict, target: float) -> tuple[int | None, float | None]:
    """The first epoch (and its training seconds) whose validation reaches `target`."""
    seconds, values = curve(metrics)
    for epoch, (s, v) in enumerate(zip(seconds, values, strict=True), start=1):
        if v >= target:
            return epoch, s
    return None, None


def row(name: str, runs: list[dict], target: list[float]) -> str:
    best = [max(curve(m)[1]) for m in runs]
    epochs = [m["early_stopping"]["best_epoch"] for m in runs]
    seconds = [curve(m)[0][e - 1] for m, e in zip(runs, epochs, strict=True)]
    test = [m["test"][METRIC] for m in runs]
    return (
        f"| {name} | {mean_sd(best)} | {statistics.mean(epochs):.1f} | "
        f"{statistics.mean(seconds):.1f} | {_reach(runs, target)} | "
        f"{_reach(runs, [0.99 * t for t in target])} | {mean_sd(test)} |"
    )


def _reach(runs: list[dict], target: list[float]) -> str:
    """Mean epoch / training seconds at which each run first reached its seed's target."""
    reach = [time_to(m, t) for m, t in zip(runs, target, strict=True)]
    reached = [r for r in reach if r[0] is not None and r[1] is not None]
    if len(reached) < len(reach):
        return f"not reached ({len(reached)} of {len(reach)} seeds did)"
    return f"{statistics.mean(r[0] for r in reached):.1f} / {statistics.mean(r[1] for r in reached):.1f}"


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--input", required=True, help="an .inter file with timestamps")
    ap.add_argument("--min-rating", type=float)
    ap.add_argument("--earlier", type=float, default=0.8, help="timestamp quantile")
    ap.add_argument("--out", required=True)
    ap.add_argument(
        "--work", default="runs/warm-start", help="the datasets and runs (kept out of --out)"
    )
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=0, help="epoch cap (0: the default's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    work = args.work
    opts = PrepareOptions(min_rating=args.min_rating)
    grown_dir = os.path.join(work, "grown")
    if not os.path.isdir(grown_dir):
        prepare(grown_dir, opts, input_path=args.input)
    grown = PreparedData.load(grown_dir)
    earlier_dir = os.path.join(work, "earlier")
    if not os.path.isdir(earlier_dir):
        path = os.path.join(work, "earlier.inter")
        earlier_input(grown, args.input, args.earlier, path)
        prepare(earlier_dir, PrepareOptions(kcore=0, test_ratio=0.0), input_path=path)
    earlier = PreparedData.load(earlier_dir)
    seeds = [int(s) for s in args.seeds.split(",")]
    model_dir = os.path.join(work, "earlier-model")
    first = train(earlier, model_dir, seeds[0], args.epochs)
    cold = [train(grown, os.path.join(work, f"cold-{s}"), s, args.epochs) for s in seeds]
    warm = [train(grown, os.path.join(work, f"warm-{s}"), s, args.epochs, model_dir) for s in seeds]
    target = [max(curve(m)[1]) for m in cold]
    fig_path = _plot(cold, warm, args.out)
    body = _body(grown, earlier, first, cold, warm, target, seeds, fig_path, args)
    write_report(args.out, "warm_start", "Warm start on grown data", command_line(), body)
    return 0


def _body(grown, earlier, first, cold, warm, target, seeds, fig_path, args) -> list[str]:
    def size(d: PreparedData) -> str:
        return f"{d.num_users:,} users, {d.num_items:,} items, {d.splits['train'].users.size:,} train pairs"

    return [
        f"Grown dataset: {size(grown)}. Earlier dataset (train pairs up to the "
        f"{args.earlier:.0%} timestamp quantile): {size(earlier)}; its model reached "
        f"valid {METRIC} {max(curve(first)[1]):.4f} at epoch "
        f"{first['early_stopping']['best_epoch']}. The default recipe, no refit, validated "
        f"every epoch; seeds {seeds}; {torch.get_num_threads()} torch threads, 2-core x86 VM.",
        "",
        f"| run | best valid {METRIC} | best epoch | its training s | epoch / s to the cold "
        f"run's best | to 99% of it | test {METRIC} at the best epoch |",
        "|---|---|---|---|---|---|---|",
        row("cold", cold, target),
        row("warm (`--init-from`)", warm, target),
        "",
        f"![validation curves]({os.path.basename(fig_path)})",
    ]


def _plot(cold: list[dict], warm: list[dict], out: str) -> str:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for runs, label, colour in ((cold, "cold", "tab:blue"), (warm, "warm", "tab:orange")):
        for i, m in enumerate(runs):
            seconds, values = curve(m)
            ax.plot(seconds, values, color=colour, label=label if i == 0 else None)
    ax.set_xlabel("training seconds")
    ax.set_ylabel(f"valid {METRIC}")
    ax.legend()
    return save_figure(fig, out, "warm_start")


if __name__ == "__main__":
    raise SystemExit(main())
