"""Full-ranking evaluation: NDCG@k and Recall@k over all items, seen items masked."""

from __future__ import annotations

import math

import torch

from pools.interactions import InteractionIndex


@torch.no_grad()
def top_k(model, users: torch.Tensor, k: int, masked: list[InteractionIndex] = ()):
    """The k best items for each user, items in any `masked` index excluded.

    users [B] → torch.return_types.topk with values/indices [B, min(k, num_items)]; a masked
    item that still appears (a user who has seen nearly everything) has value −inf.
    """
    scores = model.score_all(users).float()
    for index in masked:
        rows, cols = index.rows_of(users)
        scores[rows, cols] = -math.inf
    return scores.topk(min(k, scores.shape[1]), dim=1)


@torch.no_grad()
def ranking_sums(
    model,
    targets: InteractionIndex,
    masked: list[InteractionIndex],
    ks: tuple[int, ...] = (10, 20, 50),
    chunk_elements: int = 1 << 24,
) -> tuple[dict[str, float], int]:
    """Sums of per-user metrics and the number of users with ≥ 1 target item.

    Sums (not means) so that user shards can be added up and divided once. Every user with a
    target item counts, ranked against all items except those in `masked` (train; for test
    also validation). Recall@k = hits / |targets_u|; NDCG@k's ideal DCG uses
    min(k, |targets_u|) relevant items.
    """
    device = targets.device
    kmax = min(max(ks), targets.num_items)
    users_all = torch.nonzero(targets.degree > 0).squeeze(1)
    chunk = max(1, chunk_elements // max(1, targets.num_items))
    discounts = 1.0 / torch.log2(torch.arange(2, kmax + 2, device=device, dtype=torch.float64))
    ideal = torch.cumsum(discounts, 0)
    sums = {f"{m}@{k}": torch.zeros((), dtype=torch.float64, device=device)
            for k in ks for m in ("ndcg", "recall")}
    for start in range(0, users_all.numel(), chunk):
        users = users_all[start:start + chunk]
        top = top_k(model, users, kmax, masked).indices  # [C, kmax]
        hits = targets.contains(users, top).double()  # [C, kmax]
        n_rel = targets.degree[users].double()
        for k in ks:
            kk = min(k, kmax)
            dcg = (hits[:, :kk] * discounts[:kk]).sum(1)
            idcg = ideal[(n_rel.clamp(max=kk) - 1).long()]
            sums[f"ndcg@{k}"] += (dcg / idcg).sum()
            sums[f"recall@{k}"] += (hits[:, :kk].sum(1) / n_rel).sum()
    return {name: float(v) for name, v in sums.items()}, int(users_all.numel())


def evaluate(model, targets, masked, ks=(10, 20, 50)) -> dict[str, float]:
    """Means over users with ≥ 1 target item (see `ranking_sums`)."""
    sums, n = ranking_sums(model, targets, masked, ks)
    return {name: (v / n if n else 0.0) for name, v in sums.items()}
