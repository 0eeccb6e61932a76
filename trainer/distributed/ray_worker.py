"""What each Ray Train worker runs (trainer/distributed/ray_train.py starts them): its shard
of users, the same Engine as the in-process path, Ray's callbacks (ray_callbacks.py), and a
restart from the newest checkpoint after a failure."""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable
from typing import Literal

import torch

from trainer.core.callbacks import Callback, MetricsFile, RunMetrics
from trainer.core.config import TrainConfig
from trainer.core.engine import Engine
from trainer.core.models import item_digest
from trainer.core.tracking import MlflowEpochs, MlflowRun
from trainer.core.training import (
    LrSchedule,
    RefitPlan,
    refit_config,
    refit_metrics,
    refit_records,
)
from trainer.data.dataset import PreparedData, count_train, dataset_size
from trainer.distributed.collective_replicas import CollectiveReplicas
from trainer.distributed.exchange import GradientExchange
from trainer.distributed.ray_callbacks import RayEpochStats, RayReporter
from trainer.distributed.sharding import plan_shards
from trainer.outputs.checkpoint import load_checkpoint, newest_ray_checkpoint


@dataclasses.dataclass(frozen=True)
class WorkerConfig:
    """Everything a worker is told: the TorchTrainer's train_loop_config, typed."""

    train: TrainConfig
    data: str
    """The prepared dataset directory (every worker reads its own shard of it)."""
    threads: int = 1
    gpu: bool = False
    out: str | None = None
    """The run directory: rank 0 writes OUT/metrics.json, which the driver prints."""
    checkpoint_every: int = 0
    item_exchange: Literal["auto", "dense", "sparse"] = "auto"
    resume_from: str | None = None
    """--resume's checkpoint."""
    storage: str | None = None
    ray_run: str | None = None
    """This Ray run's name under `storage`: its newest checkpoint after a failure."""
    pid_dir: str | None = None
    """OUT/workers: each rank's pid and the restarts (for the operator and the tests)."""
    mlflow: MlflowRun | None = None
    """Rank 0 logs every epoch to this MLflow run (the driver starts and ends it)."""
    refit: RefitTask | None = None
    """Set for a refit: train on train + validation as the plan says (the driver starts it
    once the validated run has ended)."""

    @property
    def progress_file(self) -> str:
        """OUT's file rank 0 rewrites after every epoch and the driver prints from."""
        return RefitTask.PROGRESS if self.refit else "metrics.json"

    def as_loop_config(self) -> dict:
        return {"worker": self}

    @classmethod
    def from_loop_config(cls, loop_config: dict) -> WorkerConfig:
        config = loop_config.get("worker")
        if not isinstance(config, cls):
            raise TypeError(f"train_worker takes WorkerConfig.as_loop_config(), not {loop_config}")
        return config


@dataclasses.dataclass(frozen=True)
class RefitTask:
    """What a refit replays and the validated run's metrics.json it extends."""

    plan: RefitPlan
    validated: dict

    PROGRESS = "refit-metrics.json"
    """OUT's file of the refit's epochs so far, which the driver prints (OUT/metrics.json
    keeps the validated run's until the refit ends)."""


def train_worker(loop_config: dict) -> None:
    """The per-worker training function given to TorchTrainer (its train_loop_config is
    WorkerConfig.as_loop_config()): set up this worker's shard, then the one epoch loop
    (Engine.fit) with Ray's callbacks."""
    import ray.train

    cfg = WorkerConfig.from_loop_config(loop_config)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(max(1, cfg.threads))
    config = cfg.train
    run_config = refit_config(config, cfg.refit.plan) if cfg.refit else config
    data, plan = _load_shard(cfg, rank, world)
    device = "cpu"
    if cfg.gpu:
        import ray.train.torch

        torch.cuda.set_device(ray.train.torch.get_device())
        device = "cuda"
    local_cfg = run_config.model_copy(
        update={"device": device, "batch_size": plan.batch_per_worker}
    )
    replicas = CollectiveReplicas(world)
    exchange = GradientExchange(world, cfg.item_exchange)
    engine = Engine(
        local_cfg,
        data,
        plan.shards[rank],
        steps_per_epoch=plan.steps_per_epoch,
        exchange=exchange,
        replicas=replicas,
    )
    history = _resume(engine, cfg)
    _write_pid(cfg.pid_dir, rank)
    engine.fit(_callbacks(cfg, engine, data, plan, rank, world, replicas, exchange), history)


def _load_shard(cfg: WorkerConfig, rank: int, world: int):
    """This rank's users' pairs and the shard plan. Only per-user counts of the whole dataset
    are needed for the plan (one streamed pass), so a worker's memory grows with its shard,
    not the dataset. A refit trains on train + validation: its counts and pairs both."""
    splits = ("train", "valid") if cfg.refit else ("train",)
    num_users, num_items = dataset_size(cfg.data)
    degree, item_counts = count_train(cfg.data, num_users, num_items, splits)
    plan = plan_shards(None, num_users, world, cfg.train.batch_size, degree=degree)
    data = PreparedData.load(cfg.data, users=plan.shards[rank], item_counts=item_counts)
    if cfg.refit:
        data = data.with_validation_in_train(item_counts)
    return data, plan


def _callbacks(cfg, engine, data, plan, rank, world, replicas, exchange) -> list[Callback]:
    """The epoch's global numbers, rank 0's progress file for the driver, and the sharded
    checkpoints with Ray's reports; a refit's metrics extend the validated run's."""
    header = _header(engine, cfg.train, data, plan, world)
    metrics = RunMetrics(
        header,
        extra=lambda: {
            **exchange.per_step(),
            "ddp_bytes_per_step": _ddp_bytes(engine, data, cfg.train),
        },
    )
    callbacks: list[Callback] = [RayEpochStats(replicas)]
    checkpointed: Callable[[list[dict], dict | None], dict] = metrics
    if cfg.refit:
        callbacks.insert(0, LrSchedule(cfg.refit.plan.lr_after_epoch))
        checkpointed = functools.partial(refit_metrics, cfg.refit.validated, cfg.refit.plan)
    if rank == 0:  # the driver prints progress from this file (MetricsTail)
        callbacks.append(MetricsFile(cfg.out or "", metrics, cfg.progress_file))
        if cfg.mlflow:
            callbacks.append(MlflowEpochs(cfg.mlflow, prefix="refit_" if cfg.refit else ""))
    callbacks.append(RayReporter(data, cfg.train, plan, rank, checkpointed, cfg.checkpoint_every))
    return callbacks


def _resume(engine: Engine, cfg: WorkerConfig) -> list[dict]:
    """Ray's latest checkpoint after a worker failure, else --resume's; returns the epochs it
    covers. Users take their shard's rows; the item side is the same on every worker."""
    import ray.train

    resumed = ray.train.get_checkpoint()
    # After a failure, Ray's controller may not have registered the newest checkpoint (the
    # workers persisted it, the report had not reached the controller): the newest complete
    # one of this Ray run's own storage is taken when it is newer than Ray's.
    on_disk = (
        newest_ray_checkpoint(cfg.storage, cfg.ray_run) if cfg.storage and cfg.ray_run else None
    )
    sources = [s for s in (on_disk, cfg.resume_from) if s]
    blob = None
    if resumed is not None:
        with resumed.as_directory() as d:
            blob = load_checkpoint(d, users=engine.shard)  # this worker's shard file only
    for source in sources:
        candidate = load_checkpoint(source, users=engine.shard)
        if blob is None or candidate["epoch"] > blob["epoch"]:
            blob = candidate
    if blob is None:
        return []
    if resumed is not None or on_disk:  # a restart after a failure, not a first start
        _note_restart(cfg, blob["epoch"])
    history = engine.restore(blob)
    if cfg.refit:  # a refit's checkpoint keeps its own epochs apart from the validated run's
        history = refit_records(blob, engine.epoch)
    return history


def _note_restart(cfg: WorkerConfig, epoch: int) -> None:
    """OUT/workers/restarts: one line per worker restart after a failure, with the epoch it
    continued from (what the run's failure handling did, for its operator and the tests)."""
    pid_dir = cfg.pid_dir
    if pid_dir and os.path.isdir(pid_dir):
        with open(os.path.join(pid_dir, "restarts"), "a") as fh:
            fh.write(f"{os.getpid()} continued from epoch {epoch}\n")


def _write_pid(pid_dir: str | None, rank: int) -> None:
    if pid_dir and os.path.isdir(os.path.dirname(pid_dir)):
        os.makedirs(pid_dir, exist_ok=True)
        with open(os.path.join(pid_dir, f"rank-{rank}.pid"), "w") as fh:
            fh.write(str(os.getpid()))


def _ddp_bytes(engine: Engine, data: PreparedData, config: TrainConfig) -> int:
    """What one process of plain DDP over the whole model would all-reduce per step."""
    return (
        sum(p.numel() * p.element_size() for p in engine.model.item_parameters())
        + data.num_users * config.dim * 4
    )


def _header(engine: Engine, config: TrainConfig, data: PreparedData, plan, world: int) -> dict:
    import torch.distributed as dist

    # Every rank's item side as it starts (fresh: the one-process init; resumed: the checkpoint).
    digests: list = [None] * world
    dist.all_gather_object(digests, item_digest(engine.model))
    return {
        "config": config.model_dump(),
        "data": data.path,
        "workers": world,
        "shard_pairs": plan.pairs,
        "steps_per_epoch": plan.steps_per_epoch,
        "item_start_sha256": digests,
    }
