"""Training in this process: the engine with the callbacks that write OUT/metrics.json and
OUT/checkpoint/ (the same checkpoint format a Ray run and the service use)."""

from __future__ import annotations

import functools
import json
import os
import shutil
from typing import NamedTuple

from trainer.core.callbacks import Callback, Checkpointer, ConsoleProgress, MetricsFile, RunMetrics
from trainer.core.config import TrainConfig
from trainer.core.engine import Engine
from trainer.core.logs import progress_logger
from trainer.core.tracking import MlflowEpochs, MlflowRun
from trainer.data.dataset import PreparedData
from trainer.outputs.checkpoint import (
    CheckpointError,
    load_checkpoint,
    resume_source,
    save_checkpoint,
    write_json_atomic,
)
from trainer.outputs.rundir import RunDirError

REFIT_CHECKPOINT = "refit-checkpoint"
"""OUT's directory for a refit's checkpoints before its last epoch: OUT/checkpoint keeps the
validated model, whole and servable, until the refit's final one replaces it."""


def checkpoint_engine(
    engine: Engine,
    out: str,
    metrics: dict,
    config: TrainConfig | None = None,
    name: str = "checkpoint",
) -> str:
    """The in-process engine's state as the shared checkpoint format in OUT/`name`; `config`
    is what the checkpoint records as the run's options (default: the engine's)."""
    st = engine.state()
    cfg = engine.config
    return save_checkpoint(
        os.path.join(out, name),
        model_name=cfg.model,
        dim=cfg.dim,
        state=st["model"],
        item_counts=engine.data.item_counts(),
        data=engine.data,
        config=(config or cfg).model_dump(),
        metrics=metrics,
        epoch=engine.epoch,
        optimizer=st["optimizer"],
        generator=st["generator"],
    )


def resume_engine(engine: Engine, out: str) -> list[dict]:
    """Load OUT/checkpoint into the engine; returns the epoch records it covers."""
    source = resume_source(out) or os.path.join(out, "checkpoint")
    blob = load_checkpoint(source, with_optimizer=True)
    try:
        return engine.restore(blob)
    except (RuntimeError, KeyError, ValueError) as exc:
        raise RunDirError(
            f"--resume: the checkpoint in {out} does not fit this run's options "
            f"(model, dim, dataset): {str(exc).splitlines()[0]}"
        ) from None


def train_in_process(
    config: TrainConfig,
    data: PreparedData,
    out: str,
    checkpoint_every: int = 0,
    log=None,
    resume: bool = False,
    tracking: MlflowRun | None = None,
) -> dict:
    """Train, validate, test and checkpoint into `out`; then refit on train + validation
    when the config asks for it. Returns metrics.json's content. `resume` continues where
    the run in `out` stopped: the validated run from its checkpoint, or, once that run has
    ended, the refit (from OUT/refit-checkpoint if it got that far). `tracking`: the MLflow
    run each epoch is logged to."""
    os.makedirs(out, exist_ok=True)
    log = log or progress_logger().info
    saved = _saved_metrics(out) if resume else {}
    if "refit" in saved and "before_refit" in saved:
        return saved  # the refit ended too: nothing left to train
    if refit_due(config, saved):  # the validated run ended; the refit had not
        validated, result = saved, saved
        log("resume: the validated run had ended; the refit follows")
    else:
        validated, result = _validated_run(
            config, data, out, checkpoint_every, log, resume, tracking
        )
    plan = refit_plan(config, result, data)
    if plan is None:
        return validated
    return refit(config, data, out, plan, validated, log, checkpoint_every, resume, tracking)


def _validated_run(
    config: TrainConfig,
    data: PreparedData,
    out: str,
    checkpoint_every: int,
    log,
    resume: bool,
    tracking: MlflowRun | None = None,
) -> tuple[dict, dict]:
    """The run with early stopping on validation: (its metrics, Engine.fit's result)."""
    engine = Engine(config, data)
    if engine.warm_start and not resume:
        log(engine.warm_start.describe(config.init_from or ""))
    history = resume_engine(engine, out) if resume else []
    metrics = RunMetrics({"config": config.model_dump(), "data": data.path, "workers": 0})
    callbacks = [
        ConsoleProgress(log),
        MetricsFile(out, metrics),
        Checkpointer(lambda e, m: checkpoint_engine(e, out, m), metrics, checkpoint_every),
    ]
    if tracking:
        callbacks.append(MlflowEpochs(tracking))
    result = engine.fit(callbacks, history)
    return metrics(result["epochs"], result["test"]), result


def refit_due(config: TrainConfig, saved: dict) -> bool:
    """Whether a resumed run's validated part had ended (tested, with the same epoch cap:
    a larger --epochs continues it instead) and a refit is asked for."""
    return (
        config.refit and "test" in saved and saved.get("config", {}).get("epochs") == config.epochs
    )


def _saved_metrics(out: str) -> dict:
    """metrics.json of the checkpoint a resume continues from (empty: none); only this is
    read here: whichever checkpoint training continues from is loaded, and checked, then."""
    source = resume_source(out)
    if source is None:
        return {}
    try:
        with open(os.path.join(source, "metrics.json")) as fh:
            metrics = json.load(fh)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{source}: metrics.json is unreadable ({exc})") from None
    if not isinstance(metrics, dict):
        raise CheckpointError(f"{source}: metrics.json is not an object")
    return metrics


class RefitPlan(NamedTuple):
    epochs: int
    lr_after_epoch: dict[int, float]
    """The learning rate set after each epoch where the validated run changed it."""


def refit_plan(config: TrainConfig, result: dict, data: PreparedData) -> RefitPlan | None:
    """What a refit replays: the best validated epoch and the lr changes before it; None when
    there is nothing to refit (not asked for, no validation split, no best epoch)."""
    best = (result.get("early_stopping") or {}).get("best_epoch")
    if not config.refit or not best or data.splits["valid"].users.size == 0:
        return None
    schedule = {r["epoch"]: r["lr"] for r in result["epochs"] if "lr" in r and r["epoch"] < best}
    return RefitPlan(best, schedule)


class LrSchedule(Callback):
    """Sets the learning rate after the epochs named in `lr_after_epoch`."""

    def __init__(self, lr_after_epoch: dict[int, float]):
        self.lr_after_epoch = lr_after_epoch

    def on_epoch_end(self, engine, records, test):
        if engine.epoch in self.lr_after_epoch:
            engine.optimizer.set_lr(self.lr_after_epoch[engine.epoch])


def refit_config(config: TrainConfig, plan: RefitPlan) -> TrainConfig:
    """The options a refit trains with: the validated run's, for the best epoch's count of
    epochs, tested at the end, with no early stopping."""
    return config.model_copy(
        update={"epochs": plan.epochs, "eval_every": plan.epochs, "early_stopping_patience": 0}
    )


def refit_announcement(data: PreparedData, plan: RefitPlan) -> str:
    pairs = data.splits["train"].users.size + data.splits["valid"].users.size
    return (
        f"refit: a fresh model on train + validation ({pairs} pairs) for {plan.epochs} "
        "epochs, the best validated epoch, with the same lr schedule"
    )


def refit_metrics(validated: dict, plan: RefitPlan, records: list[dict], test: dict | None) -> dict:
    """metrics.json of a refit: the validated run's, with the refit's records and, once it is
    tested, its test metrics in place of the validated model's (kept under before_refit)."""
    out = {
        **validated,
        "refit": {"epochs": plan.epochs, "lr_after_epoch": plan.lr_after_epoch, "records": records},
    }
    if test:
        out.update(test=test, before_refit={"test": validated.get("test")})
    return out


def refit(
    config: TrainConfig,
    data: PreparedData,
    out: str,
    plan: RefitPlan,
    validated: dict,
    log,
    checkpoint_every: int = 0,
    resume: bool = False,
    tracking: MlflowRun | None = None,
) -> dict:
    """A fresh model (same seed) trained on train + validation for plan.epochs epochs with the
    validated run's lr schedule, tested and checkpointed in place of the validated one. Every
    `checkpoint_every` epochs it checkpoints to OUT/refit-checkpoint, which `resume`
    continues from."""
    merged = data.with_validation_in_train()
    cfg = refit_config(config, plan)
    log(refit_announcement(data, plan))
    metrics = functools.partial(refit_metrics, validated, plan)

    def save(engine: Engine, m: dict) -> None:
        final = "before_refit" in m
        checkpoint_engine(engine, out, m, config, "checkpoint" if final else REFIT_CHECKPOINT)
        if final:
            shutil.rmtree(os.path.join(out, REFIT_CHECKPOINT), ignore_errors=True)

    engine = Engine(cfg, merged)
    history = _resume_refit(engine, out, log) if resume else []
    callbacks = [
        LrSchedule(plan.lr_after_epoch),
        ConsoleProgress(lambda line: log(f"refit {line}")),
        Checkpointer(save, metrics, checkpoint_every),
    ]
    if tracking:
        callbacks.append(MlflowEpochs(tracking, prefix="refit_"))
    result = engine.fit(callbacks, history)
    final = metrics(result["epochs"], result["test"])
    write_json_atomic(os.path.join(out, "metrics.json"), final)
    return final


def _resume_refit(engine: Engine, out: str, log) -> list[dict]:
    """Continue a refit from OUT/refit-checkpoint (its records so far); none there: the
    refit starts from its first epoch."""
    path = os.path.join(out, REFIT_CHECKPOINT)
    try:
        blob = load_checkpoint(path, with_optimizer=True)
    except CheckpointError:
        return []
    engine.restore(blob)
    log(f"refit: resumed after epoch {engine.epoch}")
    return refit_records(blob, engine.epoch)


def refit_records(checkpoint: dict, epoch: int) -> list[dict]:
    """A refit checkpoint's own epoch records up to `epoch` (its metrics keep the validated
    run's under `epochs`)."""
    return checkpoint["metrics"]["refit"]["records"][:epoch]


def describe_run(config: TrainConfig, data: PreparedData, out: str, workers: int) -> str:
    """The run's first line: what it trains, on what, where, and where it writes."""
    s = config.sampler
    negatives = (
        f"{s.num_negatives} shared {s.name} negatives a batch"
        if getattr(s, "shared_negatives", False)
        else f"{s.name} negatives"
    )
    where = f"Ray Train, {workers} workers" if workers else "in this process"
    valid = data.splits["valid"].users.size
    stopping = (
        f"early stopping on valid {config.early_stopping_metric}"
        + (", then a refit on train + valid" if config.refit else "")
        if valid and config.early_stopping_patience
        else f"{config.epochs} epochs"
    )
    return (
        f"training {config.model.upper()} (d = {config.dim}, {config.score} scores), "
        f"{config.loss} loss over {negatives}, {stopping}, {where}; data "
        f"{os.path.basename(data.path)}: {data.num_users} users, {data.num_items} items, "
        f"{data.splits['train'].users.size} train and {valid} valid pairs; writing {out}"
    )
