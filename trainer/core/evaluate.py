"""Full-ranking evaluation: NDCG@k and Recall@k over all items, seen items masked.

Every item is ranked for every evaluated user; memory stays bounded at any catalogue size
because users go in chunks and items in blocks (a running top-k). Above FULL_RANKING_LIMIT
user × item scores, a seeded sample of users is evaluated by default and reported with its
95% confidence interval (`eval_users`, trainer/core/config.py).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from pools.interactions import InteractionIndex
from trainer.core.topk import ITEM_BLOCK, ReusingScorer, top_k

FULL_RANKING_LIMIT = 2 * 10**10
"""users × items above which `eval_users=None` samples DEFAULT_EVAL_USERS users."""

DEFAULT_EVAL_USERS = 10_000


def sample_users(num_users: int, n: int, seed: int) -> np.ndarray:
    """A fixed, seeded sample of n global user ids (sorted): the same on every worker and in
    every epoch, so validation curves compare like with like."""
    g = torch.Generator().manual_seed(seed + 104_729)
    return np.sort(torch.randperm(num_users, generator=g)[:n].numpy())


def eval_sample_size(eval_users: int | None, num_users: int, num_items: int) -> int:
    """How many users evaluation ranks: all (num_users) or a sample (see TrainConfig)."""
    if eval_users is None:
        full = num_users * num_items <= FULL_RANKING_LIMIT
        return num_users if full else min(num_users, DEFAULT_EVAL_USERS)
    return num_users if eval_users == 0 else min(num_users, eval_users)


VALID_SHARE = 1.0
"""A full validation costing more than this share of the training between two validations is
replaced by a sample of DEFAULT_EVAL_USERS users (`valid_users=None`): above 1, validation
is most of a run; below, a sample's noise can move early stopping's epoch for little time
saved (docs/decisions.md)."""

PAIR_COST = 1_100
"""What one training pair costs beside scoring its 1 + n items, in ranked scores: BPR's epoch
on gowalla-lightgcn is 3.8 µs a pair and a full ranking 3.2 ns a score (benchmarks/pages/speed.md,
"Sampled validation")."""


def valid_sample_size(config, num_users: int, num_items: int, train_pairs: int) -> int:
    """How many users each validation before the last ranks (see TrainConfig.valid_users):
    the ranking's scores (users × items) against the training's between two validations
    (pairs × (PAIR_COST + 2 × (1 + n)), a score forward and one backward per scored item)."""
    full = eval_sample_size(config.eval_users, num_users, num_items)
    if config.valid_users is not None:
        return full if config.valid_users == 0 else min(full, config.valid_users)
    ranking = full * num_items
    per_pair = PAIR_COST + 2 * (1 + config.sampler.num_negatives)
    training = config.eval_every * train_pairs * per_pair
    return full if ranking <= VALID_SHARE * training else min(full, DEFAULT_EVAL_USERS)


def ci95(sums: dict[str, float], squares: dict[str, float], n: int, population: int) -> dict:
    """Half-widths of normal 95% intervals of the means of a simple random sample of n users
    out of `population` (finite-population corrected)."""
    if n < 2:
        return {name: math.inf for name in sums}
    fpc = math.sqrt(max(0.0, (population - n) / max(1, population - 1)))
    out = {}
    for name, total in sums.items():
        var = max(0.0, (squares[name] - total * total / n) / (n - 1))
        out[name] = 1.96 * math.sqrt(var / n) * fpc
    return out


@torch.no_grad()
def ranking_sums(
    model,
    targets: InteractionIndex,
    masked: list[InteractionIndex],
    ks: tuple[int, ...] = (10, 20, 50),
    chunk_elements: int = 1 << 24,
    users: torch.Tensor | None = None,
    squares: dict | None = None,
) -> tuple[dict[str, float], int]:
    """Sums of per-user metrics and the number of users with ≥ 1 target item.

    Sums (not means) so that user shards can be added up and divided once. Every user with a
    target item counts (of `users`, if given: a sample), ranked against all items except those
    in `masked` (train; for test also validation). Recall@k = hits / |targets_u|; NDCG@k's
    ideal DCG uses min(k, |targets_u|) relevant items. `squares`, if a dict, receives the sums
    of squared per-user metrics (for a sample's confidence interval).
    """
    device = targets.device
    kmax = min(max(ks), targets.num_items)
    eligible = targets.degree > 0
    if users is not None:
        eligible = eligible & torch.zeros_like(eligible).index_fill_(0, users, True)
    users_all = torch.nonzero(eligible).squeeze(1)
    chunk = max(1, chunk_elements // max(1, min(targets.num_items, ITEM_BLOCK)))
    discounts = 1.0 / torch.log2(torch.arange(2, kmax + 2, device=device, dtype=torch.float64))
    ideal = torch.cumsum(discounts, 0)
    sums = {
        f"{m}@{k}": torch.zeros((), dtype=torch.float64, device=device)
        for k in ks
        for m in ("ndcg", "recall")
    }
    sq = {name: torch.zeros_like(v) for name, v in sums.items()}
    if hasattr(model, "serving_vectors") and targets.num_items <= ITEM_BLOCK:
        model = ReusingScorer(*model.serving_vectors())  # item vectors made once, not per chunk
    for start in range(0, users_all.numel(), chunk):
        users = users_all[start : start + chunk]
        top = top_k(model, users, kmax, masked).indices  # [C, kmax]
        hits = targets.contains(users, top).double()  # [C, kmax]
        n_rel = targets.degree[users].double()
        for k in ks:
            kk = min(k, kmax)
            dcg = (hits[:, :kk] * discounts[:kk]).sum(1)
            idcg = ideal[(n_rel.clamp(max=kk) - 1).long()]
            for name, per_user in (
                (f"ndcg@{k}", dcg / idcg),
                (f"recall@{k}", hits[:, :kk].sum(1) / n_rel),
            ):
                sums[name] += per_user.sum()
                sq[name] += per_user.square().sum()
    if squares is not None:
        squares.update({name: float(v) for name, v in sq.items()})
    return {name: float(v) for name, v in sums.items()}, int(users_all.numel())


def evaluate(model, targets, masked, ks=(10, 20, 50)) -> dict[str, float]:
    """Means over users with ≥ 1 target item (see `ranking_sums`)."""
    sums, n = ranking_sums(model, targets, masked, ks)
    return {name: (v / n if n else 0.0) for name, v in sums.items()}
