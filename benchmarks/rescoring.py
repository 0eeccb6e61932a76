"""Post-hoc changes to a trained model's tables, scored on validation: would anything that still
serves as user and item tables (so serving, fold-in and ANN work unchanged) rank better than
the tables training left?

    python -m benchmarks.rescoring --model runs/q/lr0005 --data runs/data/gowalla-lightgcn \\
        --threads 2 --out benchmarks/reports/gowalla-lightgcn

The model must be a validated one (trained with `--no-refit`: a refit has seen the
validation pairs). Variants, each over the model's unit query and item vectors u, i:

- `user+β`: u + β·mean of the user's train items' vectors (one propagation step, LightGCN-like);
- `item+β`: i + β·mean of the item's train users' vectors;
- `popularity β`: the score plus β·log(train count of the item);
- `item norm β`: the score plus β·log‖item embedding‖ (the norm cosine scores discard).

Every variant is a dot product of d + 1 (or d) columns, so it is a pair of tables.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
import torch.nn.functional as F

from benchmarks.report_utils import command_line, write_report
from trainer.core.evaluate import evaluate
from trainer.core.topk import VectorScorer
from trainer.data.dataset import PreparedData
from trainer.outputs.checkpoint import CheckpointError, checkpoint_dir, load_checkpoint


def neighbour_means(data: PreparedData, users: torch.Tensor, items: torch.Tensor):
    """(each user's mean train-item vector [U, d], each item's mean train-user vector [N, d])."""
    train = data.splits["train"]
    u, i = torch.as_tensor(train.users), torch.as_tensor(train.items)
    by_user = torch.zeros_like(users).index_add_(0, u, items.index_select(0, i))
    by_item = torch.zeros_like(items).index_add_(0, i, users.index_select(0, u))
    deg_u = torch.bincount(u, minlength=users.shape[0]).clamp_(min=1).unsqueeze(1)
    deg_i = torch.bincount(i, minlength=items.shape[0]).clamp_(min=1).unsqueeze(1)
    return by_user / deg_u, by_item / deg_i


def variants(data: PreparedData, state: dict, betas: dict[str, list[float]]):
    """(name, queries, items) for the base tables and each variant."""
    users = F.normalize(state["user_emb"].float(), dim=1)
    items = F.normalize(state["item_emb"].float(), dim=1)
    yield "base (the trained tables)", users, items
    user_mean, item_mean = neighbour_means(data, users, items)
    ones = torch.ones(users.shape[0], 1)
    counts = torch.as_tensor(data.item_counts()).float().clamp_(min=1).log_().unsqueeze(1)
    norms = state["item_emb"].float().norm(dim=1, keepdim=True).clamp_(min=1e-12).log_()
    for b in betas["user"]:
        yield f"user+{b:g}", F.normalize(users + b * user_mean, dim=1), items
    for b in betas["item"]:
        yield f"item+{b:g}", users, F.normalize(items + b * item_mean, dim=1)
    for b in betas["popularity"]:
        yield f"popularity {b:g}", torch.cat([users, ones], 1), torch.cat([items, b * counts], 1)
    for b in betas["norm"]:
        yield f"item norm {b:g}", torch.cat([users, ones], 1), torch.cat([items, b * norms], 1)


def floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x]


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model", required=True, help="a validated run (trained with --no-refit)")
    ap.add_argument("--data", required=True)
    ap.add_argument("--user", type=floats, default=[0.1, 0.2, 0.4])
    ap.add_argument("--item", type=floats, default=[0.1, 0.2, 0.4])
    ap.add_argument("--popularity", type=floats, default=[-0.02, 0.01, 0.02, 0.04])
    ap.add_argument("--norm", type=floats, default=[-0.05, 0.05, 0.1])
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        ckpt = load_checkpoint(checkpoint_dir(args.model))
    except (CheckpointError, OSError) as exc:
        ap.error(str(exc))
    if ckpt["config"].get("train", {}).get("refit"):
        ap.error(f"--model {args.model}: a refit has trained on the validation pairs")
    data = PreparedData.load(args.data)
    valid, train = data.index("valid", "cpu"), data.index("train", "cpu")
    betas = {k: getattr(args, k) for k in ("user", "item", "popularity", "norm")}
    body = ["| variant | valid Recall@20 | valid NDCG@20 |", "|---|---|---|"]
    for name, queries, items in variants(data, ckpt["state"], betas):
        m = evaluate(VectorScorer(queries, items), valid, [train], ks=(20,))
        body.append(f"| {name} | {m['recall@20']:.4f} | {m['ndcg@20']:.4f} |")
        print(body[-1], flush=True)
    title = f"Post-hoc rescoring of {os.path.basename(os.path.normpath(args.model))} (validation)"
    write_report(args.out, "rescoring", title, command_line(), body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
