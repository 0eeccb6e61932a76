"""Training under Ray Train (Train V2), the driver's side: users sharded across workers, items
data-parallel. What each worker runs is ray_worker.py; its Ray-only callbacks ray_callbacks.py.

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

import contextlib
import dataclasses
import json
import os
import shutil
import tempfile
import threading
import time
import uuid
from typing import Literal

from trainer.core.callbacks import chosen_epoch_kept, format_choice, format_epoch
from trainer.core.config import TrainConfig, check_against_data
from trainer.core.logs import progress_logger
from trainer.core.tracking import MlflowRun
from trainer.core.training import refit_announcement, refit_due, refit_plan
from trainer.data.dataset import PreparedData
from trainer.distributed.ray_worker import RefitTask, WorkerConfig, train_worker
from trainer.distributed.sharding import plan_shards
from trainer.errors import TrainingFailed, UsageError
from trainer.outputs.atomic import replace_directory
from trainer.outputs.checkpoint import (
    load_checkpoint,
    newest_ray_checkpoint,
    resume_source,
    write_json_atomic,
)
from trainer.project import PROJECT_ROOT

REFIT_STORAGE = "ray-refit"
"""OUT's Ray storage for a refit's run, apart from the validated run's (OUT/ray): a resume
of the validated run never continues from a refit's checkpoint. Removed when the refit ends."""


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
        address="local",  # a new instance even where a dead head left its address file
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
        prefix: str = "",
        kept: str = "tested and saved",
    ):
        """after_epoch: the epoch a resumed run continues from (its earlier lines were printed
        by the run that trained them); metric: what early stopping watches (shown first);
        prefix: before every line ("refit "); kept: what became of the chosen epoch."""
        self.path, self.epochs, self.every_s, self.metric = path, epochs, every_s, metric
        self.prefix, self.kept = prefix, kept
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
            log(self.prefix + format_epoch(record, self.epochs, self.metric))
            choice = record.get("early_stopping") if "test" in metrics else None
            if choice and choice.get("best_epoch") is not None:
                log(self.prefix + format_choice(choice, self.kept))
            self.printed = record["epoch"]


def _cluster_on_this_host() -> str | None:
    """The address of the cluster the last `ray start` on this host began, if a Ray process
    of this host still serves it (a second local instance beside it would leave Ray's own
    helpers unsure which to join). The address file of a head that crashed or was killed is
    no cluster: joining it would wait minutes for a GCS that is gone."""
    try:
        from ray._private.services import find_bootstrap_address, find_gcs_addresses

        address = find_bootstrap_address(None)
        alive = find_gcs_addresses() if address else frozenset()
    except Exception:  # noqa: BLE001 - a private API: no answer means no cluster
        return None
    return address if address and address in alive else None


def check_ray_request(config: TrainConfig, data: PreparedData, workers: int, gpu: bool) -> None:
    """Errors a Ray run can see before any worker starts (no cluster needed)."""
    if config.device == "cuda" and not gpu:
        raise UsageError("under Ray, ask for GPUs with --gpu rather than --device cuda")
    check_against_data(config, data.num_users, data.num_items, data.has_ratings)
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
    item_exchange: Literal["auto", "dense", "sparse"] = "auto",
    tracking: MlflowRun | None = None,
) -> dict:
    """The validated run on `workers` Ray Train workers, then, when the config asks for it,
    the refit on train + validation (as in-process: training.refit). Returns metrics.json's
    content. `resume` continues where the run in `out` stopped: the validated run from its
    newest checkpoint, or, once it has ended, the refit."""
    import ray

    check_ray_request(config, data, workers, gpu)
    connect(address, workers)
    resources = ray.cluster_resources()
    if gpu and resources.get("GPU", 0) < workers:
        raise UsageError(
            f"--gpu with {workers} workers needs {workers} GPUs; the cluster has "
            f"{int(resources.get('GPU', 0))}"
        )
    cpus = resources.get("CPU", 1)
    if cpus < workers * (0 if gpu else 1):
        raise UsageError(f"--workers {workers} needs {workers} CPUs; the cluster has {int(cpus)}")
    storage = os.path.abspath(storage_path or os.path.join(out, "ray"))
    resume_from = resume_source(out, storage) if resume else None
    blob = load_checkpoint(resume_from, users=[]) if resume_from else None
    saved = blob["metrics"] if blob else {}
    if "refit" in saved and "before_refit" in saved:
        return saved  # the refit ended too: nothing left to train
    worker = WorkerConfig(
        train=config,
        data=data.path,
        out=out,
        gpu=gpu,
        threads=max(1, int(cpus // workers)) if not gpu else 1,
        checkpoint_every=checkpoint_every,
        item_exchange=item_exchange,
        resume_from=resume_from,
        storage=storage,
        pid_dir=os.path.join(out, "workers"),
        mlflow=tracking,
    )
    if refit_due(config, saved):
        validated = saved
        progress_logger().info("resume: the validated run had ended; the refit follows")
    else:
        validated = _fit_on_ray(worker, workers, max_failures, blob["epoch"] if blob else 0)
    plan = refit_plan(config, validated, data)
    if plan is None:
        return validated
    progress_logger().info(refit_announcement(data, plan))
    refit_storage = os.path.join(out, REFIT_STORAGE)
    refit_from = newest_ray_checkpoint(refit_storage) if resume else None
    refit = dataclasses.replace(
        worker,
        storage=refit_storage,
        resume_from=refit_from,
        refit=RefitTask(plan, validated),
    )
    done = load_checkpoint(refit_from, users=[])["epoch"] if refit_from else 0
    final = _fit_on_ray(refit, workers, max_failures, done)
    shutil.rmtree(refit_storage, ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        os.remove(os.path.join(out, refit.progress_file))
    return final


def _fit_on_ray(worker: WorkerConfig, workers: int, max_failures: int, done: int) -> dict:
    """One TorchTrainer run of `worker` (a validated run or a refit) under a fresh Ray run
    name; its final checkpoint replaces OUT/checkpoint and its metrics OUT/metrics.json,
    which it returns. Progress is printed from rank 0's file as the workers write it."""
    from ray.train import (
        CheckpointConfig,
        FailureConfig,
        LoggingConfig,
        RunConfig,
        ScalingConfig,
    )
    from ray.train.torch import TorchTrainer

    out = worker.out or ""
    ray_run = f"adasir-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    worker = dataclasses.replace(worker, ray_run=ray_run)
    trainer = TorchTrainer(
        train_worker,
        train_loop_config=worker.as_loop_config(),
        scaling_config=ScalingConfig(
            num_workers=workers,
            use_gpu=worker.gpu,
            resources_per_worker={"CPU": worker.threads},
        ),
        # A fresh name per run: reusing a name would silently resume an old run.
        run_config=RunConfig(
            name=ray_run,
            storage_path=worker.storage,
            failure_config=FailureConfig(max_failures=max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            # Ray Train's own INFO lines (each report, each checkpoint) stay in its log files.
            logging_config=LoggingConfig(log_level="WARNING"),
        ),
    )
    config = worker.train
    tail = MetricsTail(
        os.path.join(out, worker.progress_file),
        worker.refit.plan.epochs if worker.refit else config.epochs,
        done,
        metric=config.early_stopping_metric,
        prefix="refit " if worker.refit else "",
        kept=chosen_epoch_kept(config.refit and not worker.refit),
    )
    with tail:
        result = trainer.fit()
    if result.checkpoint is None:
        raise TrainingFailed(f"Ray run ended without a checkpoint: {result.error}")
    with result.checkpoint.as_directory() as d:
        metrics = load_checkpoint(d)["metrics"]
        tmp = tempfile.mkdtemp(prefix=".checkpoint.", dir=out)
        shutil.copytree(d, os.path.join(tmp, "checkpoint"))
    replace_directory(os.path.join(tmp, "checkpoint"), os.path.join(out, "checkpoint"))
    os.rmdir(tmp)
    write_json_atomic(os.path.join(out, "metrics.json"), metrics)
    _log_exchange(metrics)
    return metrics


def _log_exchange(metrics: dict) -> None:
    sent, ddp = metrics.get("exchange_bytes_per_step"), metrics.get("ddp_bytes_per_step")
    if sent is not None and ddp is not None:
        progress_logger().info(
            f"item exchange: {sent:,} bytes a step per worker ({ddp:,} for "
            f"DDP's all-reduce of every parameter)"
        )
