"""Training under Ray Train (Train V2): users sharded across workers, items data-parallel.

Each worker (a Ray actor) runs the same `Engine` as the in-process path on its own shard of
users: their train pairs, embeddings and sample pools live on that worker (its GPU with
--gpu) and its pools are refreshed at the start of every epoch, all workers in parallel.
Item-side parameters are replicated; after every backward pass their gradients are averaged
across workers (trainer/distributed/exchange.py: the dense table or only the touched rows).
User embeddings never cross the network, so the bytes exchanged per step depend on the items,
not on the users. Every worker runs the same number of steps and calls `ray.train.report` at
the same epochs (validation, checkpoint, last). Validation and test are sharded too: each
worker ranks its own users against all items and the metric sums are all-reduced.

Checkpoints (every --checkpoint-every epochs and at the end) are the one format of
trainer/outputs/checkpoint.py with a sharded user table: every worker writes its own shard
file and rank 0 writes the item side and the id maps. On a worker failure Ray Train restarts
the group from the latest checkpoint (FailureConfig.max_failures); pools are rebuilt and the
Adam moments start afresh.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
import uuid

import torch

from pools.replicas import Replicas
from trainer.core.callbacks import Callback, MetricsFile, RunMetrics, format_choice, format_epoch
from trainer.core.config import TrainConfig, check_against_data
from trainer.core.engine import Engine
from trainer.core.logs import progress_logger
from trainer.core.models import item_digest
from trainer.data.dataset import PreparedData, count_train, dataset_size
from trainer.distributed.exchange import GradientExchange
from trainer.distributed.sharding import plan_shards
from trainer.errors import TrainingFailed, UsageError
from trainer.outputs.atomic import replace_directory
from trainer.outputs.checkpoint import (
    load_checkpoint,
    newest_ray_checkpoint,
    resume_source,
    save_checkpoint,
    shard_table,
    write_json_atomic,
    write_user_shard,
)
from trainer.project import PROJECT_ROOT


class CollectiveReplicas(Replicas):
    """Replicated state kept identical with torch.distributed collectives (Gloo or NCCL).

    An all-reduce hands every rank the same bits, so tables that start equal and take averaged
    updates stay bit-identical; `spread` measures it (0.0 when they are)."""

    def __init__(self, world_size: int):
        self.world_size = world_size

    def average_(self, tensor):
        import torch.distributed as dist

        dist.all_reduce(tensor)
        return tensor.div_(self.world_size)

    def broadcast_(self, tensor):
        import torch.distributed as dist

        dist.broadcast(tensor, src=0)
        return tensor

    def sum_(self, tensor):
        import torch.distributed as dist

        dist.all_reduce(tensor)
        return tensor

    def spread(self, tensors) -> float:
        import torch.distributed as dist

        worst = torch.zeros((), dtype=torch.float64)
        for t in tensors:
            hi, lo = t.detach().clone(), t.detach().clone()
            dist.all_reduce(hi, op=dist.ReduceOp.MAX)
            dist.all_reduce(lo, op=dist.ReduceOp.MIN)
            worst = torch.maximum(worst, (hi - lo).abs().max().double().cpu())
        return float(worst)


def train_worker(cfg: dict) -> None:
    """The per-worker training function given to TorchTrainer: set up this worker's shard,
    then the one epoch loop (Engine.fit) with Ray's callbacks."""
    import ray.train

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(max(1, int(cfg.get("threads", 1))))
    config = TrainConfig(**cfg["train"])
    # Shard-local data: the plan needs only per-user counts (one streamed pass), and the worker
    # then reads its own users' pairs; its memory grows with its shard, not the dataset.
    num_users, num_items = dataset_size(cfg["data"])
    degree, item_counts = count_train(cfg["data"], num_users, num_items)
    plan = plan_shards(None, num_users, world, config.batch_size, degree=degree)
    shard = plan.shards[rank]
    data = PreparedData.load(cfg["data"], users=shard, item_counts=item_counts)
    device = "cpu"
    if cfg.get("gpu"):
        import ray.train.torch

        torch.cuda.set_device(ray.train.torch.get_device())
        device = "cuda"
    local_cfg = config.model_copy(update={"device": device, "batch_size": plan.batch_per_worker})
    replicas = CollectiveReplicas(world)
    exchange = GradientExchange(world, cfg.get("item_exchange", "auto"))
    engine = Engine(
        local_cfg,
        data,
        shard,
        steps_per_epoch=plan.steps_per_epoch,
        exchange=exchange,
        replicas=replicas,
    )
    history = _resume(engine, cfg)
    _write_pid(cfg.get("pid_dir"), rank)
    metrics = RunMetrics(
        _header(engine, config, data, plan, world),
        extra=lambda: {
            **exchange.per_step(),
            "ddp_bytes_per_step": _ddp_bytes(engine, data, config),
        },
    )
    callbacks: list[Callback] = [RayEpochStats(replicas)]
    if rank == 0:  # the driver prints progress from this file (MetricsTail)
        callbacks.append(MetricsFile(cfg.get("out") or "", metrics))
    callbacks.append(RayReporter(data, config, plan, rank, metrics, cfg.get("checkpoint_every", 0)))
    engine.fit(callbacks, history)


def _resume(engine: Engine, cfg: dict) -> list[dict]:
    """Ray's latest checkpoint after a worker failure, else --resume's; returns the epochs it
    covers. Users take their shard's rows; the item side is the same on every worker."""
    import ray.train

    resumed = ray.train.get_checkpoint()
    # After a failure, Ray's controller may not have registered the newest checkpoint (the
    # workers persisted it, the report had not reached the controller): the newest complete
    # one of this Ray run's own storage is taken when it is newer than Ray's.
    on_disk = newest_ray_checkpoint(cfg["storage"], cfg["ray_run"]) if cfg.get("ray_run") else None
    sources = [s for s in (on_disk, cfg.get("resume_from")) if s]
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
    return engine.restore(blob)


def _note_restart(cfg: dict, epoch: int) -> None:
    """OUT/workers/restarts: one line per worker restart after a failure, with the epoch it
    continued from (what the run's failure handling did, for its operator and the tests)."""
    pid_dir = cfg.get("pid_dir")
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

    def __init__(self, data, config, plan, rank, metrics: RunMetrics, checkpoint_every: int):
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


def connect(address: str | None, workers: int = 1) -> None:
    """Join the cluster this job was submitted to (or --ray-address), else start a local one.

    A local Ray gets max(cores, workers) CPUs: more CPU workers than cores share the cores
    (slower, same answer) rather than being refused on a laptop. A real cluster is not resized."""
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=False)
        return
    running = _cluster_on_this_host()
    if running:
        progress_logger().info(
            f"Ray: joining the cluster already running on this host "
            f"({running}); --ray-address chooses another"
        )
        try:
            ray.init(address=running, log_to_driver=False)
        except ConnectionError:
            raise UsageError(
                f"could not join the Ray cluster running on this host ({running}): if it "
                "uses token authentication (Ray's default), set RAY_AUTH_MODE=token; or stop "
                "it (ray stop) to run on a Ray of this run's own"
            ) from None
        return
    progress_logger().info(
        f"Ray: starting a local Ray with {max(os.cpu_count() or 1, workers)} CPUs for this run"
    )
    # A local Ray sized for this machine; workers import the project through PYTHONPATH.
    pythonpath = os.pathsep.join(p for p in (PROJECT_ROOT, os.environ.get("PYTHONPATH")) if p)
    ray.init(
        num_cpus=max(os.cpu_count() or 1, workers),
        object_store_memory=256 * 1024 * 1024,
        runtime_env={"env_vars": {"PYTHONPATH": pythonpath}},
        include_dashboard=True,
        log_to_driver=False,  # workers' and Ray's own lines stay in Ray's logs: MetricsTail
    )


class MetricsTail:
    """The driver's progress: one line per epoch that rank 0 writes to OUT/metrics.json, and
    the early-stopping choice at the end, printed here in order, so the console has the run's
    lines and not the workers' or Ray's (the driver runs with log_to_driver off)."""

    def __init__(
        self,
        path: str,
        epochs: int,
        after_epoch: int = 0,
        every_s: float = 0.5,
        metric: str = "recall@20",
    ):
        """after_epoch: the epoch a resumed run continues from (its earlier lines were printed
        by the run that trained them); metric: what early stopping watches (shown first)."""
        self.path, self.epochs, self.every_s, self.metric = path, epochs, every_s, metric
        self.printed, self._stop = after_epoch, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.poll()

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.poll()

    def poll(self) -> None:
        try:
            with open(self.path) as fh:
                metrics = json.load(fh)
        except (OSError, ValueError):
            return  # not written yet, or being replaced
        log = progress_logger().info
        for record in [r for r in metrics.get("epochs", []) if r["epoch"] > self.printed]:
            log(format_epoch(record, self.epochs, self.metric))
            choice = record.get("early_stopping") if "test" in metrics else None
            if choice and choice.get("best_epoch") is not None:
                log(format_choice(choice, "tested and saved"))
            self.printed = record["epoch"]


def _cluster_on_this_host() -> str | None:
    """The address of the cluster the last `ray start` on this host began, if it still runs
    (a second local instance beside it would leave Ray's own helpers unsure which to join)."""
    try:
        from ray._private.services import find_bootstrap_address

        address = find_bootstrap_address(None)
    except Exception:  # noqa: BLE001 - a private API: no answer means no cluster
        return None
    return address or None


def check_ray_request(config: TrainConfig, data: PreparedData, workers: int, gpu: bool) -> None:
    """Errors a Ray run can see before any worker starts (no cluster needed)."""
    if config.device == "cuda" and not gpu:
        raise ValueError("under Ray, ask for GPUs with --gpu rather than --device cuda")
    check_against_data(config, data.num_users, data.num_items)
    plan_shards(data.splits["train"].users, data.num_users, workers, config.batch_size)


def train_with_ray(
    config: TrainConfig,
    data: PreparedData,
    out: str,
    *,
    workers: int,
    gpu: bool = False,
    max_failures: int = 2,
    checkpoint_every: int = 0,
    address: str | None = None,
    storage_path: str | None = None,
    resume: bool = False,
    item_exchange: str = "auto",
) -> dict:
    import ray
    from ray.train import (
        CheckpointConfig,
        FailureConfig,
        LoggingConfig,
        RunConfig,
        ScalingConfig,
    )
    from ray.train.torch import TorchTrainer

    check_ray_request(config, data, workers, gpu)
    if config.refit:
        progress_logger().info(
            "refit: in-process runs only for now; this Ray run keeps the "
            "best validated epoch's model"
        )
        config = config.model_copy(update={"refit": False})
    connect(address, workers)
    resources = ray.cluster_resources()
    if gpu and resources.get("GPU", 0) < workers:
        raise ValueError(
            f"--gpu with {workers} workers needs {workers} GPUs; the cluster has "
            f"{int(resources.get('GPU', 0))}"
        )
    cpus = resources.get("CPU", 1)
    cpus_per_worker = max(1, int(cpus // workers)) if not gpu else 1
    if cpus < workers * (0 if gpu else 1):
        raise ValueError(f"--workers {workers} needs {workers} CPUs; the cluster has {int(cpus)}")
    storage = os.path.abspath(storage_path or os.path.join(out, "ray"))
    resume_from = resume_source(out, storage) if resume else None
    done = load_checkpoint(resume_from, users=[])["epoch"] if resume_from else 0
    ray_run = f"adasir-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    trainer = TorchTrainer(
        train_worker,
        train_loop_config={
            "train": config.model_dump(),
            "data": data.path,
            "out": out,
            "gpu": gpu,
            "threads": cpus_per_worker,
            "checkpoint_every": checkpoint_every,
            "item_exchange": item_exchange,
            "resume_from": resume_from,
            "storage": storage,
            "ray_run": ray_run,
            "pid_dir": os.path.join(out, "workers"),
        },
        scaling_config=ScalingConfig(
            num_workers=workers, use_gpu=gpu, resources_per_worker={"CPU": cpus_per_worker}
        ),
        # A fresh name per run: reusing a name would silently resume an old run.
        run_config=RunConfig(
            name=ray_run,
            storage_path=storage,
            failure_config=FailureConfig(max_failures=max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            # Ray Train's own INFO lines (each report, each checkpoint) stay in its log files.
            logging_config=LoggingConfig(log_level="WARNING"),
        ),
    )
    tail = MetricsTail(
        os.path.join(out, "metrics.json"), config.epochs, done, metric=config.early_stopping_metric
    )
    with tail:
        result = trainer.fit()
    if result.checkpoint is None:
        raise TrainingFailed(f"Ray run ended without a checkpoint: {result.error}")
    final = os.path.join(out, "checkpoint")
    with result.checkpoint.as_directory() as d:
        blob = load_checkpoint(d)
        tmp = tempfile.mkdtemp(prefix=".checkpoint.", dir=out)
        shutil.copytree(d, os.path.join(tmp, "checkpoint"))
    replace_directory(os.path.join(tmp, "checkpoint"), final)
    os.rmdir(tmp)
    metrics = blob["metrics"]
    write_json_atomic(os.path.join(out, "metrics.json"), metrics)
    sent, ddp = metrics.get("exchange_bytes_per_step"), metrics.get("ddp_bytes_per_step")
    if sent is not None and ddp is not None:
        progress_logger().info(
            f"item exchange: {sent:,} bytes a step per worker ({ddp:,} for "
            f"DDP's all-reduce of every parameter)"
        )
    return metrics
