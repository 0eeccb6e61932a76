"""What happens around Engine.fit's epochs: callbacks, so the engine never knows its driver.

A callback sees the engine before the first epoch, each epoch's record right after training
(before validation: Ray reduces the workers' statistics there), the records after each
epoch's evaluation (with the test metrics after the last), and the result. The in-process run
(trainer/run.py), each Ray worker (trainer/distributed/ray_worker.py) and the benchmarks compose these.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any


class Callback:
    def on_fit_start(self, engine) -> None:
        """Before the first epoch (after any resume)."""

    def on_epoch_trained(self, engine, record: dict) -> None:
        """After train_epoch, before validation; `record` may be updated in place."""

    def on_epoch_end(self, engine, records: list[dict], test: dict | None) -> None:
        """After the epoch's evaluation; `test` is set after the last epoch only."""

    def on_fit_end(self, engine, result: dict) -> None:
        """After the last epoch."""


def format_epoch(record: dict, epochs: int, metric: str = "recall@20") -> str:
    """An epoch's progress line; a validated one shows `metric` (what early stopping
    watches) first, then NDCG@50."""
    line = (
        f"epoch {record['epoch']}/{epochs} loss {record['loss']:.4f} "
        f"sample {record['sample_s']:.2f}s train {record['train_s']:.2f}s "
        f"eval {record.get('eval_s', 0.0):.2f}s"
    )
    if "compile_s" in record:
        line += f" (compiled the step in {record['compile_s']:.1f}s)"
    if "compile_error" in record:
        line += f" (eager step: torch.compile failed: {record['compile_error']})"
    if "valid" in record:
        v = record["valid"]
        shown = [metric] + [m for m in ("ndcg@50",) if m != metric]
        line += " valid " + " ".join(f"{m} {v.get(m, float('nan')):.4f}" for m in shown)
    return line


def format_choice(choice: dict, kept: str) -> str:
    """The line that says which epoch early stopping chose and what became of it."""
    return (
        f"best validation {choice['metric']} {choice['best_valid']:.4f} at epoch "
        f"{choice['best_epoch']}: its parameters are {kept}"
    )


def chosen_epoch_kept(refit: bool) -> str:
    """What becomes of the epoch early stopping chose, for its progress line."""
    return "tested; a refit follows" if refit else "tested and saved"


class ConsoleProgress(Callback):
    """One progress line per epoch through `log`."""

    def __init__(self, log: Callable[[str], None]):
        self.log = log

    def on_epoch_end(self, engine, records, test):
        cfg = engine.config
        self.log(format_epoch(records[-1], cfg.epochs, cfg.early_stopping_metric))
        choice = records[-1].get("early_stopping") if test else None
        if choice and choice["best_epoch"] is not None:
            stopped = "stopped early; " if engine.epoch < engine.config.epochs else ""
            self.log(stopped + format_choice(choice, chosen_epoch_kept(engine.config.refit)))


class RunMetrics:
    """metrics.json's content: a fixed header, the epochs so far, the test metrics at the end,
    and any `extra()` a driver adds (Ray: bytes exchanged per step)."""

    def __init__(self, header: dict, extra: Callable[[], dict] = dict):
        self.header, self.extra = header, extra

    def __call__(self, records: list[dict], test: dict | None) -> dict:
        metrics = {**self.header, "epochs": records, **self.extra()}
        if test:
            metrics["test"] = test
            if "early_stopping" in records[-1]:
                metrics["early_stopping"] = records[-1]["early_stopping"]
        return metrics


class MetricsFile(Callback):
    """OUT/metrics.json (or OUT/`name`), rewritten atomically after every epoch."""

    def __init__(self, out: str, metrics: RunMetrics, name: str = "metrics.json"):
        self.path, self.metrics = os.path.join(out, name), metrics

    def on_epoch_end(self, engine, records, test):
        from trainer.outputs.checkpoint import write_json_atomic

        if os.path.isdir(os.path.dirname(self.path)):
            write_json_atomic(self.path, self.metrics(records, test))


class Checkpointer(Callback):
    """save(engine, metrics) every `every` epochs (0: never) and after the last epoch."""

    def __init__(self, save: Callable[[Any, dict], object], metrics: Callable, every: int = 0):
        self.save, self.metrics, self.every = save, metrics, every

    def on_epoch_end(self, engine, records, test):
        if test or (self.every and engine.epoch % self.every == 0):
            self.save(engine, self.metrics(records, test))


class CurveRecorder(Callback):
    """Validation points against cumulative training seconds (sample + train, not eval)."""

    def __init__(self):
        self.seconds, self.points = 0.0, []

    def on_epoch_end(self, engine, records, test):
        record = records[-1]
        self.seconds += record["sample_s"] + record["train_s"]
        if "valid" in record:
            v = record["valid"]
            self.points.append((self.seconds, record["epoch"], v["ndcg@50"], v["recall@50"]))
