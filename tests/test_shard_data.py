"""Shard-local data: a Ray worker reads only its users' pairs, yet gets the whole dataset's
item counts and the same shard plan; what it trains on is what the full load gives its shard."""

from __future__ import annotations

import numpy as np
import torch

from trainer.core.config import TrainConfig
from trainer.core.engine import Engine
from trainer.data.dataset import PreparedData, count_train, dataset_size
from trainer.distributed.sharding import plan_shards


def test_a_shard_load_holds_only_its_users_and_the_global_counts(tiny_data):
    full = PreparedData.load(tiny_data)
    n_users, n_items = dataset_size(tiny_data)
    assert (n_users, n_items) == (full.num_users, full.num_items)
    degree, items = count_train(tiny_data, n_users, n_items)
    assert np.array_equal(items, full.item_counts())
    plan = plan_shards(None, n_users, 3, 512, degree=degree)
    assert all(
        np.array_equal(a, b)
        for a, b in zip(
            plan.shards,
            plan_shards(full.splits["train"].users, n_users, 3, 512).shards,
            strict=True,
        )
    )
    shard = plan.shards[1]
    part = PreparedData.load(tiny_data, users=shard)
    for name, split in part.splits.items():
        mine = np.isin(full.splits[name].users, shard)
        assert np.array_equal(split.users, full.splits[name].users[mine])
        assert np.array_equal(split.items, full.splits[name].items[mine])
        assert split.users.size < 0.5 * full.splits[name].users.size  # a third of the pairs
    assert np.array_equal(part.item_counts(), full.item_counts())
    # An engine on the shard-local data is the engine on the full data's shard.
    cfg = TrainConfig(
        preset="paper", epochs=1, batch_size=256, lr=0.01, sampler={"name": "adasir-p"}
    )
    a, b = Engine(cfg, full, shard), Engine(cfg, part, shard)
    a.train_epoch()
    b.train_epoch()
    assert torch.equal(a.model.user_emb, b.model.user_emb)
    assert a.evaluate("test") == b.evaluate("test")
