"""Experiment tracking in a real local MLflow store (sqlite): in-process runs, Ray Train's
rank 0 (tests/test_ray.py's three-worker run) and Tune's trials log to it; the embedded
default store sits beside the run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT

from trainer.core.tracking import epoch_metrics, flat_params, metric_key, require_mlflow
from trainer.errors import UsageError

RUN = os.path.join(ROOT, "trainer", "run.py")


def test_epoch_records_become_mlflow_metrics_and_options_params():
    record = {
        "epoch": 3,
        "loss": 0.5,
        "sample_s": 0.1,
        "train_s": 0.2,
        "valid": {"recall@20": 0.3, "ndcg@50": float("nan")},
    }
    assert metric_key("ndcg@50") == "ndcg_at_50"
    assert epoch_metrics(record, "refit_") == {
        "refit_loss": 0.5,
        "refit_sample_s": 0.1,
        "refit_train_s": 0.2,
        "refit_valid_recall_at_20": 0.3,
    }
    assert flat_params({"dim": 4, "sampler": {"name": "uniform"}}) == {
        "dim": "4",
        "sampler.name": "uniform",
    }


def test_mlflow_missing_is_one_line_saying_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow now raises ImportError
    with pytest.raises(UsageError, match=r"pip install 'adasir-service\[mlflow\]'"):
        require_mlflow()


def _mlflow():
    return pytest.importorskip("mlflow")


def _train(data, out, *extra):
    args = [sys.executable, RUN, "--data", data, "--out", str(out), "--epochs", "4"]
    args += ["--eval-every", "2", "--seed", "0", "--threads", "1", "--mlflow", *extra]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    return proc


def only_run(store: str, experiment: str):
    client = _mlflow().MlflowClient(tracking_uri=f"sqlite:///{store}")
    found = client.get_experiment_by_name(experiment)
    assert found is not None, experiment
    runs = client.search_runs([found.experiment_id])
    assert len(runs) == 1
    return client, runs[0]


def check_tracked_run(client, run, out):
    """Options as params, every epoch's metrics by step, the refit's apart, the test
    metrics, the model directory as artifacts; the run FINISHED."""
    metrics = json.loads((out / "metrics.json").read_text())
    assert run.info.status == "FINISHED" and run.info.run_name == out.name
    assert run.data.params["dim"] == str(metrics["config"]["dim"])
    assert run.data.params["sampler.name"] == metrics["config"]["sampler"]["name"]
    loss = client.get_metric_history(run.info.run_id, "loss")
    assert [m.step for m in loss] == [e["epoch"] for e in metrics["epochs"]]
    assert [m.value for m in loss] == pytest.approx([e["loss"] for e in metrics["epochs"]])
    valid = client.get_metric_history(run.info.run_id, "valid_recall_at_20")
    assert [m.step for m in valid] == [e["epoch"] for e in metrics["epochs"] if "valid" in e]
    refit = client.get_metric_history(run.info.run_id, "refit_loss")
    assert len(refit) == metrics["refit"]["epochs"]
    assert run.data.metrics["test_recall_at_20"] == pytest.approx(metrics["test"]["recall@20"])
    assert run.data.metrics["validated_test_recall_at_20"] == pytest.approx(
        metrics["before_refit"]["test"]["recall@20"]
    )
    model = [a.path for a in client.list_artifacts(run.info.run_id, "model")]
    assert "model/model.pt" in model
    assert [a.path for a in client.list_artifacts(run.info.run_id) if not a.is_dir] == [
        "metrics.json"
    ]


@pytest.mark.slow
def test_an_in_process_run_is_tracked_in_the_default_store_beside_it(tiny_data, tmp_path):
    _mlflow()
    out = tmp_path / "runs" / "first"
    proc = _train(tiny_data, out)
    assert "mlflow: run" in proc.stdout + proc.stderr
    store = tmp_path / "runs" / "mlflow.db"
    client, run = only_run(str(store), os.path.basename(tiny_data))
    check_tracked_run(client, run, out)
    assert (tmp_path / "runs" / "mlartifacts").is_dir()  # beside the store, not in the cwd


@pytest.mark.slow
@pytest.mark.ray
def test_tune_trials_are_tracked_through_rays_mlflow_logger(tiny_data, tmp_path):
    import yaml

    _mlflow()
    spec = yaml.safe_load(open(os.path.join(ROOT, "tune_configs", "tiny.yaml")))
    spec.update(dataset=tiny_data, output=str(tmp_path / "tune" / "tiny"), mlflow="")
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(spec))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "trainer", "tune.py"), str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    client = _mlflow().MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'tune' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tiny")
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(float(r.data.params["l2"]) for r in runs) == [0.001, 0.01]  # one per trial
    for run in runs:
        history = client.get_metric_history(run.info.run_id, "valid_ndcg_at_50")
        assert history and all(0 <= m.value <= 1 for m in history)
