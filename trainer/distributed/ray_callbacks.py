"""The Engine callbacks only a Ray Train worker adds: the epoch's numbers gathered across
workers, and the sharded checkpoint with `ray.train.report`, a barrier every rank reaches at
the same epochs."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable

import torch

from trainer.core.callbacks import Callback
from trainer.distributed.collective_replicas import CollectiveReplicas
from trainer.outputs.checkpoint import save_checkpoint, shard_table, write_user_shard


class RayEpochStats(Callback):
    """The epoch's loss averaged over workers and its times from the slowest worker (it sets
    the pace); every worker's peak memory and sampler state, by rank; then the replicas'
    spread, which must stay 0."""

    def __init__(self, replicas: CollectiveReplicas):
        self.replicas = replicas

    def on_epoch_trained(self, engine, record):
        import torch.distributed as dist

        stats = torch.tensor(
            [record["loss"], record["sample_s"], record["train_s"]],
            dtype=torch.float64,
            device=engine.device,
        )
        dist.all_reduce(stats[:1])
        dist.all_reduce(stats[1:], op=dist.ReduceOp.MAX)
        record.update(
            loss=float(stats[0]) / self.replicas.world_size,
            sample_s=float(stats[1]),
            train_s=float(stats[2]),
        )
        mine = torch.tensor(
            [record["peak_rss_mb"], record["sampler_state_bytes"]],
            dtype=torch.float64,
            device=engine.device,
        )
        every = [torch.zeros_like(mine) for _ in range(self.replicas.world_size)]
        dist.all_gather(every, mine)
        record["worker_peak_rss_mb"] = [float(t[0]) for t in every]
        record["worker_sampler_state_bytes"] = [int(t[1]) for t in every]
        record["replica_spread"] = self.replicas.spread(engine.replicated_tensors())


class RayReporter(Callback):
    """Checkpoints (every `checkpoint_every` epochs and at the end; each rank writes its own
    user shard, rank 0 the rest) and `ray.train.report`, which every rank calls at the same
    epochs: it is a barrier."""

    def __init__(
        self,
        data,
        config,
        plan,
        rank,
        metrics: Callable[[list[dict], dict | None], dict],
        checkpoint_every: int,
    ):
        self.data, self.config, self.plan, self.rank = data, config, plan, rank
        self.metrics, self.every = metrics, checkpoint_every
        self.trained = False

    def on_fit_end(self, engine, result):
        """A run resumed from its final epoch's checkpoint (its driver died before copying
        it) trains nothing: that model, tested, is checkpointed and reported again, so that
        the driver has a checkpoint to copy."""
        if not self.trained and result["epochs"]:
            self.on_epoch_end(engine, result["epochs"], result["test"])

    def on_epoch_end(self, engine, records, test):
        import ray.train

        self.trained = True
        record = records[-1]
        due = bool(test) or bool(self.every and engine.epoch % self.every == 0)
        checkpoint_dir = (
            _write_checkpoint(
                engine, self.data, self.config, self.metrics(records, test), self.plan, self.rank
            )
            if due
            else None
        )
        # Report only when there is something new (validation, a checkpoint, the end): each
        # report is a barrier plus a round trip to the controller (~1 s on 2 cores). Every
        # report carries the latest validation metrics (schedulers such as ASHA need them each
        # time); test metrics appear only in the final one.
        if "valid" in record or due:
            last_valid = _reported_valid(records, test)
            report = {
                "epoch": engine.epoch,
                "loss": record["loss"],
                **{f"valid_{k}": v for k, v in last_valid.items()},
                **{f"test_{k}": v for k, v in (test or {}).items()},
            }
            checkpoint = (
                ray.train.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
            )
            ray.train.report(report, checkpoint=checkpoint)
        if checkpoint_dir:
            shutil.rmtree(os.path.dirname(checkpoint_dir), ignore_errors=True)


def _reported_valid(records: list[dict], test: dict | None) -> dict:
    """The validation metrics a report carries: the latest, except in the final report of a
    run whose tested tables are an earlier epoch's (early stopping), which carries that
    epoch's, so Tune ranks a trial by the model it saved."""
    best = (records[-1].get("early_stopping") or {}).get("best_epoch") if test else None
    for r in reversed(records):
        if "valid" in r and (best is None or r["epoch"] == best):
            return r["valid"]
    return {}


def _write_checkpoint(engine, data, config, metrics, plan, rank) -> str:
    """This rank's part of a sharded checkpoint (trainer/outputs/checkpoint.py): its user rows, and on
    rank 0 the item side, id maps and metrics. Ray merges the ranks' directories; no rank
    holds another's rows."""
    world = len(plan.shards)
    path = os.path.join(tempfile.mkdtemp(prefix="adasir-ckpt-"), "checkpoint")
    if rank == 0:
        state = {
            k: v.detach().cpu() for k, v in engine.model.state_dict().items() if k != "user_emb"
        }
        save_checkpoint(
            path,
            model_name=config.model,
            dim=config.dim,
            state=state,
            item_counts=data.item_counts(),
            data=data,
            config=config.model_dump(),
            metrics=metrics,
            epoch=engine.epoch,
            optimizer=None,
            user_shards=shard_table(plan.shards),
        )
    write_user_shard(path, rank, world, plan.shards[rank], engine.model.user_emb)
    return path
