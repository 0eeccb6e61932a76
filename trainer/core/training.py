"""Training in this process: the engine with the callbacks that write OUT/metrics.json and
OUT/checkpoint/ (the same checkpoint format a Ray run and the service use)."""

from __future__ import annotations

import os
from typing import NamedTuple

from trainer.core.callbacks import Callback, Checkpointer, ConsoleProgress, MetricsFile, RunMetrics
from trainer.core.config import TrainConfig
from trainer.core.engine import Engine
from trainer.core.logs import progress_logger
from trainer.data.dataset import PreparedData
from trainer.outputs.checkpoint import (
    load_checkpoint,
    resume_source,
    save_checkpoint,
    write_json_atomic,
)
from trainer.outputs.rundir import RunDirError


def checkpoint_engine(
    engine: Engine, out: str, metrics: dict, config: TrainConfig | None = None
) -> str:
    """The in-process engine's state as the shared checkpoint format; `config` is what the
    checkpoint records as the run's options (default: the engine's)."""
    st = engine.state()
    cfg = engine.config
    return save_checkpoint(
        os.path.join(out, "checkpoint"),
        model_name=cfg.model,
        dim=cfg.dim,
        state=st["model"],
        item_counts=engine.data.item_counts(),
        data=engine.data,
        config=(config or cfg).model_dump(),
        metrics=metrics,
        epoch=engine.epoch,
        optimizer=st["optimizer"],
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
) -> dict:
    """Train, validate, test and checkpoint into `out`; then refit on train + validation
    when the config asks for it. Returns metrics.json's content."""
    os.makedirs(out, exist_ok=True)
    log = log or progress_logger().info
    engine = Engine(config, data)
    history = resume_engine(engine, out) if resume else []
    metrics = RunMetrics({"config": config.model_dump(), "data": data.path, "workers": 0})
    callbacks = [
        ConsoleProgress(log),
        MetricsFile(out, metrics),
        Checkpointer(lambda e, m: checkpoint_engine(e, out, m), metrics, checkpoint_every),
    ]
    result = engine.fit(callbacks, history)
    validated = metrics(result["epochs"], result["test"])
    plan = refit_plan(config, result, data)
    if plan is None:
        return validated
    return refit(config, data, out, plan, validated, log)


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


def refit(
    config: TrainConfig, data: PreparedData, out: str, plan: RefitPlan, validated: dict, log
) -> dict:
    """A fresh model (same seed) trained on train + validation for plan.epochs epochs with the
    validated run's lr schedule, tested and checkpointed in place of the validated one."""
    merged = data.with_validation_in_train()
    cfg = config.model_copy(
        update={"epochs": plan.epochs, "eval_every": plan.epochs, "early_stopping_patience": 0}
    )
    log(
        f"refit: a fresh model on train + validation ({merged.splits['train'].users.size} "
        f"pairs) for {plan.epochs} epochs, the best validated epoch, with the same lr schedule"
    )

    def metrics(records: list[dict], test: dict | None) -> dict:
        """The validated run's metrics, with the refit's records and its test metrics in
        place of the validated model's (kept under before_refit)."""
        out = {
            **validated,
            "refit": {
                "epochs": plan.epochs,
                "lr_after_epoch": plan.lr_after_epoch,
                "records": records,
            },
        }
        if test:
            out.update(test=test, before_refit={"test": validated.get("test")})
        return out

    engine = Engine(cfg, merged)
    callbacks = [
        LrSchedule(plan.lr_after_epoch),
        ConsoleProgress(lambda line: log(f"refit {line}")),
        Checkpointer(lambda e, m: checkpoint_engine(e, out, m, config), metrics),
    ]
    result = engine.fit(callbacks)
    final = metrics(result["epochs"], result["test"])
    write_json_atomic(os.path.join(out, "metrics.json"), final)
    return final
