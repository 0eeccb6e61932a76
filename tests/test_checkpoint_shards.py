"""The sharded checkpoint: each worker's user rows in its own file, read whole by the service
and file by file by a restarted worker (the Ray path is tests/test_ray.py)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from trainer.core.config import TrainConfig
from trainer.core.engine import Engine
from trainer.data.dataset import PreparedData
from trainer.distributed.sharding import plan_shards
from trainer.outputs.checkpoint import (
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
    shard_file,
    shard_table,
    write_user_shard,
)


@pytest.fixture()
def sharded(tiny_data, tmp_path):
    data = PreparedData.load(tiny_data)
    cfg = TrainConfig(preset="paper", epochs=1, batch_size=512, lr=0.01)
    whole = Engine(cfg, data)
    whole.train_epoch()
    plan = plan_shards(data.splits["train"].users, data.num_users, 3, 512)
    state = {k: v for k, v in whole.model.state_dict().items() if k != "user_emb"}
    path = str(tmp_path / "checkpoint")
    save_checkpoint(
        path,
        model_name="mf",
        dim=32,
        state=state,
        item_counts=data.item_counts(),
        data=data,
        config=cfg.model_dump(),
        metrics={},
        epoch=1,
        user_shards=shard_table(plan.shards),
    )
    for k, ids in enumerate(plan.shards):
        write_user_shard(path, k, 3, ids, whole.model.user_emb.detach()[torch.as_tensor(ids)])
    return data, cfg, whole, plan, path


def test_the_service_reads_the_whole_table(sharded):
    data, _, whole, plan, path = sharded
    blob = load_checkpoint(path)
    covered = np.concatenate(plan.shards)
    assert torch.equal(blob["state"]["user_emb"][covered], whole.model.user_emb.detach()[covered])
    assert torch.equal(blob["state"]["item_emb"], whole.model.item_emb.detach())


def test_a_worker_reads_only_its_own_file(sharded):
    data, cfg, whole, plan, path = sharded
    for k in (0, 2):
        os.remove(os.path.join(path, shard_file(k, 3)))
    with pytest.raises(CheckpointError, match="users-00000-of-00003.pt is missing"):
        load_checkpoint(path)
    blob = load_checkpoint(path, users=plan.shards[1])  # shard 1's file is all it needs
    part = Engine(cfg, data, plan.shards[1])
    part.restore(blob)
    assert torch.equal(
        part.model.user_emb.detach(), whole.model.user_emb.detach()[torch.as_tensor(plan.shards[1])]
    )


def test_other_user_sets_are_cut_from_the_assembled_table(sharded):
    _, _, whole, plan, path = sharded
    users = np.sort(np.concatenate([plan.shards[0][:5], plan.shards[2][:5]]))
    rows = load_checkpoint(path, users=users)["state"]["user_emb"]
    assert torch.equal(rows, whole.model.user_emb.detach()[torch.as_tensor(users)])


def test_export_blocks_read_ranges_of_a_sharded_table_as_the_model_ranks(sharded, tmp_path):
    """CheckpointBlocks (the Ray Data export's worker) ranks a range of users from its rows of
    the shard files and seen pairs alone: the same rows as Model.export over the whole table,
    with and without seen items and an allow-list."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from trainer.api import Model
    from trainer.export import CheckpointBlocks, allowed_mask

    _, _, _, _, path = sharded
    model = Model.load(path)
    banned, allowed = model.item_ids[:7], model.item_ids[3:40]
    for exclude_seen, mask in (
        (True, None),
        (False, allowed_mask(model.item_index, banned, allowed)),
    ):
        model.export(
            tmp_path / "whole.parquet",
            k=5,
            exclude_seen=exclude_seen,
            filter_items=None if mask is None else banned,
            candidates=None if mask is None else allowed,
        )
        blocks = CheckpointBlocks(path, 5, exclude_seen, None if mask is None else mask.numpy())
        cuts = [0, 1, 17, 60, model.num_users]  # uneven ranges, one of a single user
        parts = pa.concat_tables([blocks.rank(lo, hi) for lo, hi in zip(cuts, cuts[1:])])
        whole = pq.read_table(tmp_path / "whole.parquet")
        assert parts.select(["user", "rank", "item"]).equals(whole.select(["user", "rank", "item"]))
        scores = [t.column("score").to_numpy() for t in (parts, whole)]
        np.testing.assert_allclose(*scores, rtol=1e-5)  # other block shapes, other BLAS sums


def test_a_ray_export_never_replaces_what_is_not_an_export(sharded, tmp_path):
    from trainer.distributed.export import export_top_k_ray
    from trainer.errors import UsageError

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(UsageError, match="is not an earlier export"):
        export_top_k_ray(sharded[-1], str(tmp_path / "mine"), k=5)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"
    with pytest.raises(UsageError, match="k = 0"):
        export_top_k_ray(sharded[-1], str(tmp_path / "new"), k=0)
