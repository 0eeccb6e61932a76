"""Ratings as confidence (TrainConfig.confidence) against dropping the low ratings: which way
of using a rated dataset recommends the liked items best.

    python -m benchmarks.interaction_weights --input ../shared/data/ml-1m/ml-1m.inter.gz \\
        --out benchmarks/reports/interaction-weights --seeds 0,1,2 --threads 1

The dataset is the whole file (every rating, 1–5), split once as `adasir prepare` splits it.
Validation and test keep only the liked pairs (rating ≥ --liked): every contender is chosen
and judged on recommending what a user rated highly. The contenders differ only in what they
train on: the liked train pairs alone (what `--min-rating 4` gives), every train pair
unweighted, or every train pair weighted by its rating. Every contender ranks with the same
items masked: all of a user's train pairs, whatever their rating (and for the test all of
their validation pairs), so an item rated low in train is never recommended back, in the
liked-only runs too. The default recipe (no refit) trains each, validated every 2 epochs on
Recall@20; training seconds exclude evaluation. Runs are cached in OUT/runs.jsonl, so an
interrupted report resumes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics

import numpy as np
import torch

from benchmarks.report_utils import command_line, mean_sd, write_report
from trainer.core.engine import Engine
from trainer.core.presets import build_config, fit_to_data
from trainer.data.dataset import PreparedData, Split
from trainer.data.prepare import PrepareOptions, prepare

METRICS = ("recall@20", "ndcg@20", "recall@50", "ndcg@50")

# name → (train on the liked pairs only, TrainConfig fields)
CONTENDERS = {
    "liked only": (True, {}),
    "liked, weighted (linear)": (True, {"confidence": "linear"}),
    "all, unweighted": (False, {}),
    "all, weighted (linear)": (False, {"confidence": "linear"}),
    "all, weighted (log)": (False, {"confidence": "log"}),
    "all, weighted (linear, α 3)": (False, {"confidence": "linear", "confidence_alpha": 3.0}),
}


def _keep(split: Split, keep: np.ndarray) -> Split:
    return Split(split.users[keep], split.items[keep], split.ratings[keep])


def variant(data: PreparedData, liked: float, liked_train_only: bool) -> PreparedData:
    """The dataset with validation and test cut to the liked pairs (and train too, with
    `liked_train_only`)."""
    splits = dict(data.splits)
    for name in ("valid", "test") + (("train",) if liked_train_only else ()):
        splits[name] = _keep(splits[name], splits[name].ratings >= liked)
    return dataclasses.replace(data, splits=splits)


class SameMasks(Engine):
    """An Engine whose evaluation masks every pair of the whole dataset's train split (and
    for the test its validation split), not only the pairs it trains on."""

    def __init__(self, cfg, data: PreparedData, whole: PreparedData):
        super().__init__(cfg, data)
        self.seen = {s: whole.index(s, self.device) for s in ("train", "valid")}

    def masked_for(self, split):
        return [self.seen["train"]] + ([self.seen["valid"]] if split == "test" else [])


def run(data: PreparedData, whole: PreparedData, fields: dict, seed: int, epochs: int) -> dict:
    given = {"refit": False, "eval_every": 2, "seed": seed, **fields}
    if epochs:
        given["epochs"] = epochs
    cfg = fit_to_data(build_config("recommended", given), data.num_items, given)
    result = SameMasks(cfg, data, whole).fit()
    epochs = result["epochs"]
    best = result["early_stopping"]["best_epoch"]
    return {
        "valid": max(e["valid"]["recall@20"] for e in epochs if "valid" in e),
        "test": result["test"],
        "best_epoch": best,
        "train_s": sum(e["sample_s"] + e["train_s"] for e in epochs[:best]),
    }


def cached_runs(data, liked, seeds, path, epochs=0):
    done = {}
    if os.path.exists(path):
        with open(path) as fh:
            for line in fh:
                rec = json.loads(line)
                done[(rec["name"], rec["seed"])] = rec
    for name, (liked_only, fields) in CONTENDERS.items():
        for seed in seeds:
            if (name, seed) in done:
                continue
            rec = {
                "name": name,
                "seed": seed,
                **run(variant(data, liked, liked_only), data, fields, seed, epochs),
            }
            with open(path, "a") as fh:
                fh.write(json.dumps(rec) + "\n")
            done[(name, seed)] = rec
            print(f"{name} seed {seed}: test recall@20 {rec['test']['recall@20']:.4f}", flush=True)
    return done


def table(done, seeds) -> list[str]:
    lines = [
        "| trained on | valid Recall@20 | "
        + " | ".join(f"test {m}" for m in METRICS)
        + " | best epoch | training s to it |",
        "|---|---|" + "---|" * len(METRICS) + "---|---|",
    ]
    for name in CONTENDERS:
        recs = [done[(name, s)] for s in seeds]
        cells = [mean_sd([r["valid"] for r in recs])]
        cells += [mean_sd([r["test"][m] for r in recs]) for m in METRICS]
        cells.append(f"{statistics.mean(r['best_epoch'] for r in recs):.1f}")
        cells.append(f"{statistics.mean(r['train_s'] for r in recs):.0f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--input", required=True, help="interactions with a rating column")
    ap.add_argument("--out", required=True)
    ap.add_argument("--work", default="runs/interaction-weights", help="the prepared dataset")
    ap.add_argument("--liked", type=float, default=4.0, help="a liked pair's least rating")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=0, help="epoch cap (0: the default's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data_dir = os.path.join(args.work, "data")
    if not os.path.isdir(data_dir):
        prepare(data_dir, PrepareOptions(), input_path=args.input)
    data = PreparedData.load(data_dir)
    if not data.has_ratings:
        raise SystemExit(f"{args.input}: no rating column to weigh pairs by")
    seeds = [int(s) for s in args.seeds.split(",")]
    os.makedirs(args.out, exist_ok=True)
    done = cached_runs(data, args.liked, seeds, os.path.join(args.out, "runs.jsonl"), args.epochs)
    counts = {n: int((s.ratings >= args.liked).sum()) for n, s in data.splits.items()}
    body = [
        f"`{os.path.basename(args.input)}`, every rating: {data.num_users} users, "
        f"{data.num_items} items; train {data.splits['train'].users.size} pairs "
        f"({counts['train']} liked, rating ≥ {args.liked:g}); validation and test cut to their "
        f"{counts['valid']} and {counts['test']} liked pairs. Default recipe, no refit, seeds "
        f"{args.seeds} (mean ± sd); the epoch chosen on validation Recall@20.",
        "",
        *table(done, seeds),
    ]
    write_report(args.out, "interaction_weights", "Ratings as confidence", command_line(), body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
