"""Variants of the `recommended` recipe, each changing one thing, scored on validation only.

    python -m benchmarks.recipe_sweep --data runs/data/gowalla-lightgcn:64,runs/data/ml-1m:32 \
        --device cuda --workers 12 --budget-s 240 --out benchmarks/reports/recipe_sweep

Every variant trains as the preset does (early stopping on validation Recall@20, lr halved
on a plateau) with no refit, in its own process; the processes share the device (a CPU run:
use --workers 2 --threads 1). A run still going when the budget is spent validates once more
and stops there (its row says so). Rows: best validation Recall@20 and NDCG@50 and the epoch,
the run's wall seconds, and the test metrics of the chosen epoch, which are recorded but
never used to choose. Results go to OUT/sweep.jsonl as runs finish, then OUT/sweep.md.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time

from benchmarks.report_utils import command_line, save_figure, write_report
from trainer.core.callbacks import Callback

# name: TrainConfig fields over the preset (sampler fields under "sampler").
VARIANTS: dict[str, dict] = {
    "base": {},
    "neg500": {"sampler": {"num_negatives": 500}},
    "neg2000": {"sampler": {"num_negatives": 2000}},
    "neg4000": {"sampler": {"num_negatives": 4000}},
    "per-pair800": {"sampler": {"num_negatives": 800, "shared_negatives": False}},
    "batch512": {"batch_size": 512},
    "batch2048": {"batch_size": 2048},
    "lr0.005": {"lr": 0.005},
    "lr0.02": {"lr": 0.02},
    "T0.09": {"loss_temperature": 0.09, "positive_temperature": 0.1098},
    "T+1.4": {"positive_temperature": 0.112},
    "patience5": {"early_stopping_patience": 5},
    "eval1-patience8": {"eval_every": 1, "early_stopping_patience": 8},
    # The published BSL run's regime, one knob at a time (TrainConfig.init, user_dropout,
    # positive_pooling). The xavier rows are ~13× shorter than N(0, 0.1²)'s at d = 64, so
    # with lr 0.001 Adam's angular step (≈ lr·√d/‖e‖) stays near the default's.
    "dropout0.1": {"user_dropout": 0.1},
    "pool-user": {"positive_pooling": "user"},
    "xavier-lr0.001": {"init": "xavier", "lr": 0.001},
    "xavier": {"init": "xavier"},
    # The published run's combination: xavier, dense Adam at a constant 1e-4, dropout 0.1,
    # a long patience (30 validations of 5 epochs; theirs is 50 epochs), a 1,000-epoch cap.
    "published": {
        "init": "xavier",
        "optimizer": "adam",
        "lr": 0.0001,
        "lr_decay_on_plateau": 1.0,
        "user_dropout": 0.1,
        "epochs": 1000,
        "eval_every": 5,
        "early_stopping_patience": 30,
    },
    # The same init and a constant lr on the default's lazy Adam (the fused step): the angular
    # step of xavier-lr0.001, with the patience to train long.
    "xavier-lr0.001-long": {
        "init": "xavier",
        "lr": 0.001,
        "lr_decay_on_plateau": 1.0,
        "epochs": 1000,
        "eval_every": 5,
        "early_stopping_patience": 10,
    },
    "bsl+adasir-b": {
        "sampler": {
            "name": "adasir-b",
            "num_negatives": 50,
            "num_candidates": 1000,
            "temperature": 0.08,
        }
    },
}


class Deadline(Callback):
    """Ends the run after the epoch during which `at` (time.time()) passed: the engine then
    validates, restores the best epoch and tests, as at a normal end."""

    def __init__(self, at: float):
        self.at, self.hit = at, False

    def on_epoch_trained(self, engine, record) -> None:
        if time.time() >= self.at and engine.epoch < engine.config.epochs:
            engine.stop_requested = self.hit = True


def run_one(job: dict) -> dict:
    """Train one (variant, dataset, seed) job in this process; its result row."""
    import torch

    from trainer.core.engine import Engine
    from trainer.core.presets import build_config, fit_to_data
    from trainer.data.dataset import PreparedData

    if time.time() >= job["deadline"]:
        return {}  # the budget was spent before this job's turn
    torch.set_num_threads(job["threads"])
    given = {**VARIANTS[job["variant"]], "dim": job["dim"], "seed": job["seed"]}
    given.update(device=job["device"], refit=False)
    data = PreparedData.load(job["data"])
    config = fit_to_data(build_config("recommended", given), data.num_items, given)
    start = time.time()
    deadline = Deadline(job["deadline"])
    result = Engine(config, data).fit([deadline])
    best = result["early_stopping"]
    chosen = next(r for r in result["epochs"] if r["epoch"] == best["best_epoch"])
    return {
        **{k: job[k] for k in ("variant", "data", "dim", "seed")},
        "best_epoch": best["best_epoch"],
        "epochs": len(result["epochs"]),
        "valid": chosen["valid"],
        "test": result["test"],
        "seconds": round(time.time() - start, 1),
        "epoch_s": round(
            sum(r["sample_s"] + r["train_s"] for r in result["epochs"]) / len(result["epochs"]),
            3,
        ),
        "cut_by_budget": deadline.hit,
        "curve": _curve(result["epochs"]),
    }


def _curve(records: list[dict]) -> list[tuple[int, float, float]]:
    """(epoch, validation Recall@20, seconds of training and validation so far) at each
    validated epoch."""
    out, seconds = [], 0.0
    for r in records:
        seconds += r["sample_s"] + r["train_s"] + r.get("eval_s", 0.0)
        if "valid" in r:
            out.append((r["epoch"], round(r["valid"]["recall@20"], 4), round(seconds, 1)))
    return out


def jobs(args) -> list[dict]:
    """Every (seed, dataset, variant) job in the order they are started."""
    deadline = time.time() + args.budget_s
    out = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        for spec in args.data.split(","):
            path, dim = spec.rsplit(":", 1)
            for variant in args.variants.split(","):
                out.append(
                    dict(variant=variant, data=path, dim=int(dim), seed=seed, device=args.device)
                    | dict(threads=args.threads, deadline=deadline)
                )
    return out


def table(rows: list[dict]) -> list[str]:
    lines = [
        "| data | variant | seed | valid Recall@20 | valid NDCG@50 | best epoch | epochs "
        "| s/epoch (sample + train) | wall s | test Recall@20 | test NDCG@20 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: (r["data"], r["seed"], -r["valid"]["recall@20"])):
        cut = " (budget)" if r["cut_by_budget"] else ""
        lines.append(
            f"| {os.path.basename(r['data'])} | {r['variant']} | {r['seed']} "
            f"| {r['valid']['recall@20']:.4f} | {r['valid']['ndcg@50']:.4f} | {r['best_epoch']} "
            f"| {r['epochs']}{cut} | {r['epoch_s']:.2f} | {r['seconds']:.0f} "
            f"| {r['test']['recall@20']:.4f} | {r['test']['ndcg@20']:.4f} |"
        )
    return lines


def _curves_plot(rows: list[dict], out: str) -> bool:
    """OUT/sweep.png: each run's validation Recall@20 against its seconds; False when no row
    has seconds in its curve (rows written before they were recorded)."""
    import matplotlib.pyplot as plt

    timed = [r for r in rows if r["curve"] and len(r["curve"][0]) == 3]
    if not timed:
        return False
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for r in timed:
        label = f"{os.path.basename(r['data'])} {r['variant']} seed {r['seed']}"
        ax.plot([c[2] for c in r["curve"]], [c[1] for c in r["curve"]], marker=".", label=label)
    ax.set_xlabel("seconds (training + validation)")
    ax.set_ylabel("validation Recall@20")
    ax.legend(fontsize=8)
    save_figure(fig, out, "sweep")
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", required=True, help="comma list of PATH:DIM")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    ap.add_argument("--budget-s", type=float, default=3600.0)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    unknown = sorted(set(args.variants.split(",")) - set(VARIANTS))
    if unknown:
        ap.error(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    os.makedirs(args.out, exist_ok=True)
    rows = []
    context = multiprocessing.get_context("spawn")  # CUDA cannot be forked
    with context.Pool(args.workers) as pool, open(os.path.join(args.out, "sweep.jsonl"), "a") as fh:
        for row in filter(None, pool.imap_unordered(run_one, jobs(args))):
            rows.append(row)
            fh.write(json.dumps(row) + "\n")
            fh.flush()
            print(table([row])[-1], flush=True)
    about = [
        f"Device {args.device}, {args.workers} runs at a time, {args.threads} torch thread(s) "
        f"each: the seconds are for comparing variants with each other in this run only.",
        "",
        "Variants (over `recommended`, with `--dim` as given and no refit): "
        + "; ".join(f"`{k}` {json.dumps(VARIANTS[k])}" for k in args.variants.split(",")),
        "",
    ]
    plot = ["", "![validation against seconds](sweep.png)"] if _curves_plot(rows, args.out) else []
    write_report(
        args.out, "sweep", "Recipe sweep on validation", command_line(), about + table(rows) + plot
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
