"""Which worker owns which users, and how many steps every worker runs: pure policy, no Ray."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ShardPlan:
    """shards[w]: sorted global user ids owned by worker w. Every worker runs `steps_per_epoch`
    steps of `batch_per_worker` pairs, so collectives line up (a smaller shard cycles)."""

    shards: list[np.ndarray]
    batch_per_worker: int
    steps_per_epoch: int
    pairs: list[int]


def plan_shards(
    train_users: np.ndarray | None,
    num_users: int,
    workers: int,
    batch_size: int,
    degree: np.ndarray | None = None,
) -> ShardPlan:
    """Deterministic, pair-balanced partition of the users with train pairs.

    Users are ordered by train degree (descending, ties by id) and dealt in a snake
    0,1,…,N−1,N−1,…,0 so every worker gets a similar number of pairs. The global batch stays
    `batch_size`: each worker takes ⌈batch_size / N⌉ pairs per step. `degree` [num_users]
    (train pairs per user) may stand in for `train_users` (a worker that never loads them all).
    """
    if degree is None:
        if train_users is None:
            raise ValueError("plan_shards needs train_users or their degree")
        degree = np.bincount(train_users, minlength=num_users)
    active = np.flatnonzero(degree > 0)
    if workers < 1:
        raise ValueError("workers must be ≥ 1")
    if workers > active.size:
        raise ValueError(
            f"--workers {workers} is more than the {active.size} users with train "
            "pairs: every worker needs at least one user"
        )
    order = active[np.lexsort((active, -degree[active]))]
    lap = np.arange(order.size) % (2 * workers)
    owner = np.where(lap < workers, lap, 2 * workers - 1 - lap)
    shards = [np.sort(order[owner == w]) for w in range(workers)]
    pairs = [int(degree[s].sum()) for s in shards]
    per_worker = max(1, math.ceil(batch_size / workers))
    steps = max(math.ceil(p / per_worker) for p in pairs)
    return ShardPlan(shards, per_worker, steps, pairs)
