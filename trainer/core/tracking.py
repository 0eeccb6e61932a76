"""Experiment tracking in MLflow: one MLflow run per training run, with its options as
params, every epoch's loss, times and validation metrics as metrics (step = the epoch; a
refit's under `refit_`), its test metrics at the end and the model directory as artifacts.

The driver creates the run and ends it; what logs the epochs is a callback where the epochs
are trained (in this process, or Ray Train's rank 0), which reaches the same run by its id.
MLflow is optional (`pip install 'adasir-service[mlflow]'`); `--mlflow` without it is refused
before anything is trained."""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

from trainer.core.callbacks import Callback
from trainer.errors import UsageError

DEFAULT_STORE = "mlflow.db"
"""The embedded default store, beside the run directory: `<OUT's parent>/mlflow.db`, with the
artifacts in `<OUT's parent>/mlartifacts`."""


def default_tracking_uri(out: str) -> str:
    return "sqlite:///" + os.path.join(os.path.dirname(os.path.abspath(out)), DEFAULT_STORE)


def require_mlflow() -> None:
    try:
        import mlflow  # noqa: F401
    except ImportError:
        raise UsageError(
            "--mlflow needs MLflow, which is not installed: pip install 'adasir-service[mlflow]'"
        ) from None


def metric_key(name: str) -> str:
    """MLflow's metric names allow no '@': recall@20 → recall_at_20."""
    return name.replace("@", "_at_")


def epoch_metrics(record: dict, prefix: str = "") -> dict[str, float]:
    """One epoch record's numbers as MLflow metrics: loss, seconds, validation metrics."""
    found = {k: record[k] for k in ("loss", "sample_s", "train_s", "lr") if k in record}
    found |= {f"valid_{k}": v for k, v in (record.get("valid") or {}).items()}
    return {
        prefix + metric_key(k): float(v)
        for k, v in found.items()
        if isinstance(v, int | float) and v == v  # no NaN: MLflow stores it, charts choke
    }


def flat_params(config: dict, prefix: str = "") -> dict[str, str]:
    """A config's fields as MLflow params (nested ones as sampler.name, …)."""
    params: dict[str, str] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            params |= flat_params(value, f"{prefix}{key}.")
        else:
            params[prefix + key] = str(value)
    return params


@dataclasses.dataclass(frozen=True)
class MlflowRun:
    """An MLflow run, by tracking URI and id: what a Ray worker is told (a client is made
    where it is used)."""

    uri: str
    run_id: str

    @classmethod
    def start(cls, uri: str, experiment: str, run_name: str, params: dict) -> MlflowRun:
        """A new run in `experiment` (created if missing; a local store keeps its artifacts
        beside it), with `params` logged."""
        from mlflow import MlflowClient
        from mlflow.entities import Param

        client = MlflowClient(tracking_uri=uri)
        run = client.create_run(ensure_experiment(uri, experiment), run_name=run_name)
        items = [Param(k, v[:6000]) for k, v in flat_params(params).items()]
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params a batch
            client.log_batch(run.info.run_id, params=items[i : i + 100])
        return cls(uri, run.info.run_id)

    def client(self):
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.uri)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, v, now, step) for k, v in metrics.items()]
        if batch:
            self.client().log_batch(self.run_id, metrics=batch)

    def finish(self, metrics: dict, out: str) -> None:
        """The run's test metrics (and the validated model's before a refit), OUT/metrics.json
        and the model directory (OUT/checkpoint) as artifacts; the run ends FINISHED."""
        final = {f"test_{metric_key(k)}": v for k, v in (metrics.get("test") or {}).items()}
        before = (metrics.get("before_refit") or {}).get("test") or {}
        final |= {f"validated_test_{metric_key(k)}": v for k, v in before.items()}
        best = (metrics.get("early_stopping") or {}).get("best_epoch")
        if best is not None:
            final["best_epoch"] = best
        self.log_metrics({k: float(v) for k, v in final.items() if v is not None}, step=0)
        client = self.client()
        client.log_artifact(self.run_id, os.path.join(out, "metrics.json"))
        client.log_artifacts(self.run_id, os.path.join(out, "checkpoint"), "model")
        client.set_terminated(self.run_id, "FINISHED")

    def fail(self, status: str = "FAILED") -> None:
        self.client().set_terminated(self.run_id, status)


def ensure_experiment(uri: str, name: str) -> str:
    """The id of experiment `name` at `uri`, created if missing (a sqlite store's with its
    artifacts beside it)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    return client.create_experiment(name, _local_artifacts(uri))


def _local_artifacts(uri: str) -> str | None:
    """A sqlite store's artifacts in mlartifacts/ beside it (MLflow's default would be the
    working directory's ./mlruns); other stores choose their own."""
    if uri.startswith("sqlite:///"):
        path = uri[len("sqlite:///") :]
        return "file://" + os.path.join(os.path.dirname(os.path.abspath(path)), "mlartifacts")
    return None


class MlflowEpochs(Callback):
    """Logs every trained epoch to `run` (its loss, times, learning rate and validation)."""

    def __init__(self, run: MlflowRun, prefix: str = ""):
        self.run, self.prefix = run, prefix

    def on_epoch_end(self, engine: Any, records, test):
        self.run.log_metrics(epoch_metrics(records[-1], self.prefix), step=records[-1]["epoch"])
