"""Fold-in over HTTP: POST /recommend with a new user's item history, against a trained run.

    apt-get install -y wrk
    python -m benchmarks.serve_fold_in --model runs/models/gowalla-s0 --concurrency 1,8 \\
        --max-seconds 15 --out benchmarks/results

One uvicorn process (1 torch thread) serves the run; each request is the train history of
one of 2,000 of the run's users (seeded), sent as `items` with no `user`, as a user the model
never saw: the query is folded in (trainer/core/fold_in.py), then ranked with the history
excluded. wrk sends them from each --concurrency level's connections for --max-seconds;
client and server share this machine's cores.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys

import httpx
import torch

from benchmarks.report_utils import command_line, write_report
from benchmarks.serve_load import CONNECTIONS_TABLE, connection_rows, quiet_server
from trainer.api import Model


def history_bodies(model: Model, model_id: str, k: int, users: int = 2000) -> list[str]:
    """JSON bodies of fold-in requests: the train items of `users` seeded users."""
    rng = random.Random(0)
    bodies = []
    for _ in range(users):
        row = rng.randrange(model.num_users)
        _, cols = model.seen.rows_of(torch.tensor([row]))
        items = [model.item_ids[i] for i in cols.tolist()]
        bodies.append(json.dumps({"model": model_id, "items": items, "k": k}))
    return bodies


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model", required=True, help="a run directory (RUN/checkpoint)")
    ap.add_argument("--concurrency", default="1,8", help="comma-separated connection counts")
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--max-seconds", type=float, default=15)
    ap.add_argument("--out", required=True, help="report folder (serve_fold_in.md)")
    args = ap.parse_args(argv)
    run = os.path.abspath(args.model)
    root, model_id = os.path.dirname(run), os.path.basename(run)
    model = Model.load(run)
    bodies = history_bodies(model, model_id, args.k)
    sizes = [len(json.loads(b)["items"]) for b in bodies]
    with quiet_server(root) as base:
        first = httpx.post(base + "/recommend", json=json.loads(bodies[0]), timeout=300)
        first.raise_for_status()  # loads the model before measuring
        assert first.json()["fold_in"]["items_used"] > 0
        rows = connection_rows(base, bodies, args.concurrency, args.max_seconds)
    body = [
        f"Model `{model_id}`: {model.num_users:,} users × {model.num_items:,} items, "
        f"d = {model.items.shape[1]}, loss {model.config.get('loss')}; histories of "
        f"{min(sizes)}–{max(sizes)} items (median {sorted(sizes)[len(sizes) // 2]}), "
        f"k = {args.k}; one uvicorn process, 1 torch thread, wrk on the same 2 cores.",
        "",
        *CONNECTIONS_TABLE,
        *rows,
    ]
    write_report(args.out, "serve_fold_in", "Fold-in over HTTP", command_line(), body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
