"""Fold-in quality and latency: users' queries fitted to their train + validation items
against the frozen item table, beside the queries the model trained for them.

    python -m benchmarks.fold_in --model runs/models/ml1m --data runs/data/ml-1m \\
        --out benchmarks/reports/ml-1m

For a seeded sample of users with test items, test NDCG@20 and Recall@20 are computed twice
with the same masks (their train and validation items): with the user vectors the model
trained, and with queries folded in from their train + validation items alone
(`Model._fold_in_indices`). The item table is the trained one (frozen): it saw these users'
pairs in training, which a user who signed up later would not have contributed. Latency is
`service.recommender.history_answer` per request (one user, k = 20) in this process, after a warm-up.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from benchmarks.report_utils import command_line, write_report
from pools.interactions import InteractionIndex
from service.recommender import history_answer
from trainer.api import Model
from trainer.core.evaluate import ranking_sums
from trainer.core.topk import VectorScorer
from trainer.data.dataset import PreparedData


def _metrics(
    queries: torch.Tensor, items: torch.Tensor, targets: InteractionIndex, masked: InteractionIndex
) -> dict[str, float]:
    sums, n = ranking_sums(VectorScorer(queries, items), targets, [masked], (20,))
    return {k: v / n for k, v in sums.items()}


def compare(model: Model, data: PreparedData, users: int, seed: int) -> dict:
    """Test metrics of the sample with trained and with folded-in queries."""
    test, seen = data.index("test", "cpu"), model.seen
    eligible = torch.nonzero((test.degree > 0) & (seen.degree > 0)).squeeze(1)
    g = torch.Generator().manual_seed(seed)
    sample = eligible[torch.randperm(eligible.numel(), generator=g)[:users]].sort().values
    histories = [seen.rows_of(u.view(1))[1].tolist() for u in sample]
    t0 = time.perf_counter()
    folded = torch.cat(
        [model._fold_in_indices(histories[i : i + 256]) for i in range(0, len(histories), 256)]
    )
    fold_s = time.perf_counter() - t0
    local = torch.arange(sample.numel())

    def restrict(index: InteractionIndex) -> InteractionIndex:
        rows, cols = index.rows_of(sample)
        return InteractionIndex(local[rows], cols, sample.numel(), index.num_items)

    targets, masked = restrict(test), restrict(seen)
    trained = _metrics(model.queries[sample], model.items, targets, masked)
    fold = _metrics(folded, model.items, targets, masked)
    return {"users": int(sample.numel()), "trained": trained, "fold_in": fold, "fold_s": fold_s}


def latency(model: Model, requests: int, seed: int) -> list[float]:
    """Milliseconds per history_answer call for histories drawn from known users."""
    rng = np.random.default_rng(seed)
    users = rng.choice(model.num_users, size=requests + 20)
    times = []
    for n, u in enumerate(users):
        _, cols = model.seen.rows_of(torch.tensor([int(u)]))
        history = [model.item_ids[i] for i in cols.tolist()]
        t0 = time.perf_counter()
        history_answer(model, history, 20)
        if n >= 20:  # warm-up
            times.append((time.perf_counter() - t0) * 1000)
    return times


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model", required=True, help="a run directory trained on --data")
    ap.add_argument("--data", required=True, help="the prepared dataset it was trained on")
    ap.add_argument("--out", required=True)
    ap.add_argument("--users", type=int, default=1000)
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    model, data = Model.load(args.model), PreparedData.load(args.data)
    result = compare(model, data, args.users, args.seed)
    ms = sorted(latency(model, args.requests, args.seed))
    p99 = ms[min(len(ms) - 1, int(0.99 * len(ms)))]
    t, f = result["trained"], result["fold_in"]
    body = [
        f"{result['users']} users with test items (seed {args.seed}), {model.num_items:,} "
        f"items, d = {model.items.shape[1]}, loss {model.config.get('loss')}; "
        f"{args.threads} thread(s).",
        "",
        "| queries | test NDCG@20 | test Recall@20 |",
        "|---|---|---|",
        f"| trained user vectors | {t['ndcg@20']:.4f} | {t['recall@20']:.4f} |",
        f"| folded in from train + validation items | {f['ndcg@20']:.4f} | {f['recall@20']:.4f} |",
        f"| fold-in / trained | {f['ndcg@20'] / t['ndcg@20']:.3f} | "
        f"{f['recall@20'] / t['recall@20']:.3f} |",
        "",
        f"`history_answer` (fold-in + top-20), {len(ms)} requests in this process: "
        f"p50 {statistics.median(ms):.1f} ms, p99 {p99:.1f} ms.",
    ]
    write_report(
        args.out, "fold_in", "Fold-in: new users from their item history", command_line(), body
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
