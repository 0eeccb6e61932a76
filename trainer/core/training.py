"""Training in this process: the engine with the callbacks that write OUT/metrics.json and
OUT/checkpoint/ (the same checkpoint format a Ray run and the service use)."""

from __future__ import annotations

import os

from trainer.core.callbacks import Checkpointer, ConsoleProgress, MetricsFile, RunMetrics
from trainer.core.config import TrainConfig
from trainer.core.engine import Engine
from trainer.core.logs import progress_logger
from trainer.data.dataset import PreparedData
from trainer.outputs.checkpoint import load_checkpoint, save_checkpoint
from trainer.outputs.rundir import RunDirError


def checkpoint_engine(engine: Engine, out: str, metrics: dict) -> str:
    """The in-process engine's state as the shared checkpoint format."""
    st = engine.state()
    cfg = engine.config
    return save_checkpoint(
        os.path.join(out, "checkpoint"), model_name=cfg.model, dim=cfg.dim, state=st["model"],
        item_counts=engine.data.item_counts(), data=engine.data, config=cfg.model_dump(),
        metrics=metrics, epoch=engine.epoch, optimizer=st["optimizer"])


def resume_engine(engine: Engine, out: str) -> list[dict]:
    """Load OUT/checkpoint into the engine; returns the epoch records it covers."""
    blob = load_checkpoint(os.path.join(out, "checkpoint"), with_optimizer=True)
    try:
        return engine.restore(blob)
    except (RuntimeError, KeyError, ValueError) as exc:
        raise RunDirError(f"--resume: the checkpoint in {out} does not fit this run's options "
                          f"(model, dim, dataset): {str(exc).splitlines()[0]}") from None


def train_in_process(config: TrainConfig, data: PreparedData, out: str,
                     checkpoint_every: int = 0, log=None, resume: bool = False) -> dict:
    os.makedirs(out, exist_ok=True)
    engine = Engine(config, data)
    history = resume_engine(engine, out) if resume else []
    metrics = RunMetrics({"config": config.model_dump(), "data": data.path, "workers": 0})
    callbacks = [ConsoleProgress(log or progress_logger().info), MetricsFile(out, metrics),
                 Checkpointer(lambda e, m: checkpoint_engine(e, out, m), metrics, checkpoint_every)]
    result = engine.fit(callbacks, history)
    return metrics(result["epochs"], result["test"])
