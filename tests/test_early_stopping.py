"""Early stopping: the best validated epoch's tables are tested and saved, in-process and under
Ray Train with the same decision on every rank."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import ROOT

from trainer.core.config import TrainConfig
from trainer.core.early_stopping import BestEpoch
from trainer.core.evaluate import sample_users
from trainer.core.training import train_in_process
from trainer.data.dataset import PreparedData
from trainer.outputs.checkpoint import load_checkpoint

# A learning rate far too high for dot-product BPR without L2: validation peaks within a few
# epochs and then falls as the model overfits, so the run stops well before its cap.
OVERFIT = {
    "lr": 1.0,
    "dim": 128,
    "l2": 0.0,
    "batch_size": 1024,
    "epochs": 40,
    "eval_every": 1,
    "early_stopping_patience": 3,
    "sampler": {"name": "uniform"},
}


def _state(path: str) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["state"]


def test_best_epoch_tracker_counts_validations_without_a_new_best():
    model = torch.nn.Linear(2, 1)
    best = BestEpoch("recall@20", patience=2)
    for epoch, value in enumerate([0.1, 0.3, 0.3, 0.2], start=1):
        best.update(model, epoch, {"recall@20": value})
    assert (best.best_epoch, best.best_value, best.should_stop) == (2, 0.3, True)
    assert not BestEpoch("recall@20", patience=0).should_stop  # 0 never stops


@pytest.mark.slow
def test_a_run_that_peaks_early_saves_that_epochs_tables(tiny_data, tmp_path):
    data = PreparedData.load(tiny_data)
    metrics = train_in_process(
        TrainConfig(preset="paper", **OVERFIT), data, str(tmp_path / "early")
    )
    choice = metrics["early_stopping"]
    best, trained = choice["best_epoch"], len(metrics["epochs"])
    assert trained == best + 3 < OVERFIT["epochs"], (best, trained)
    valid = [e["valid"]["recall@20"] for e in metrics["epochs"]]
    assert choice["best_valid"] == max(valid) == valid[best - 1]
    # The same run stopped by hand at the best epoch: its checkpoint is the early-stopped one.
    plain = {**OVERFIT, "epochs": best, "early_stopping_patience": 0}
    again = train_in_process(TrainConfig(preset="paper", **plain), data, str(tmp_path / "plain"))
    early, at_best = (
        _state(str(tmp_path / "early" / "checkpoint")),
        _state(str(tmp_path / "plain" / "checkpoint")),
    )
    assert early.keys() == at_best.keys()
    assert all(torch.equal(early[k], at_best[k]) for k in early)
    assert metrics["test"] == again["test"]  # tested on the best epoch's tables
    on_disk = json.loads((tmp_path / "early" / "metrics.json").read_text())
    assert on_disk["early_stopping"]["best_epoch"] == best
    assert on_disk["epochs"][-1]["restored_epoch"] == best


def test_no_validation_split_never_stops(tmp_path):
    from trainer.data.prepare import PrepareOptions, prepare

    out = str(tmp_path / "novalid")
    prepare(out, PrepareOptions(seed=0, valid_ratio=0.0), synthetic="users=200,items=100,seed=2")
    cfg = TrainConfig(preset="paper", **{**OVERFIT, "epochs": 6, "early_stopping_patience": 1})
    metrics = train_in_process(cfg, PreparedData.load(out), str(tmp_path / "run"))
    assert len(metrics["epochs"]) == 6 and metrics["early_stopping"]["best_epoch"] is None


def test_an_unknown_stopping_metric_is_refused():
    with pytest.raises(ValueError, match="early_stopping_metric 'recall@7' is not computed"):
        TrainConfig(preset="paper", early_stopping_metric="recall@7")
    TrainConfig(preset="paper", early_stopping_metric="ndcg@7", topk=(7,))


@pytest.mark.ray
@pytest.mark.slow
def test_ray_workers_agree_on_the_stopping_epoch(tiny_data, tmp_path):
    """Two Ray workers see the same (summed) validation metrics, so every rank stops at the
    same epoch, by the in-process rule, and the run ends without a hung report. (The epoch
    itself need not be the in-process run's: the shards draw other random streams.) They
    validate a sample of 300 users between them, the same global sample as in one process,
    and the kept model once in full at the end."""
    config = json.dumps({**OVERFIT, "lr": 0.05, "early_stopping_patience": 1, "valid_users": 300})
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "disabled",
        "RAY_USAGE_STATS_ENABLED": "0",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": ROOT,
    }
    out = tmp_path / "w2"
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "trainer", "run.py"),
            "--data",
            tiny_data,
            "--out",
            str(out),
            "--config",
            config,
            "--workers",
            "2",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    valid = [e["valid"]["recall@20"] for e in metrics["epochs"]]
    best = metrics["early_stopping"]["best_epoch"]
    assert len(valid) == best + 1 < OVERFIT["epochs"], valid  # one validation of patience
    assert valid[best - 1] == max(valid) == metrics["early_stopping"]["best_valid"]
    assert metrics["epochs"][-1]["restored_epoch"] == best
    data = PreparedData.load(tiny_data)
    sample = torch.as_tensor(sample_users(data.num_users, 300, 0))
    counted = int((data.index("valid", "cpu").degree[sample] > 0).sum())
    assert all(e["valid_sample"]["users"] == counted for e in metrics["epochs"] if "valid" in e)
    full = metrics["epochs"][-1]["valid_full"]
    assert set(full) == set(valid_metrics := metrics["epochs"][best - 1]["valid"])
    assert full != valid_metrics  # every user, not the sample
    ckpt = load_checkpoint(str(out / "checkpoint"))
    assert ckpt["metrics"]["early_stopping"]["best_epoch"] == best
    assert ckpt["state"]["user_emb"].abs().sum(1).min() > 0  # every rank's rows made it in


@pytest.mark.parametrize("optimizer", ["adam", "sparse-adam"])
def test_a_decayed_learning_rate_survives_a_resume(tiny_data, optimizer):
    from trainer.core.engine import Engine

    data = PreparedData.load(tiny_data)
    cfg = TrainConfig(preset="paper", optimizer=optimizer, lr=0.01, sampler={"name": "uniform"})
    first = Engine(cfg, data)
    assert first.optimizer.scale_lr(0.5) == 0.005
    again = Engine(cfg, data)
    again.load_state(first.state())
    rates = [g["lr"] for g in again.optimizer.dense.param_groups] if again.optimizer.dense else []
    rates += [o.lr for o in getattr(again.optimizer, "rows", {}).values()]
    assert again.optimizer.lr == 0.005 and rates and set(rates) == {0.005}


def test_a_refit_is_the_best_epoch_retrained_on_train_and_validation(tiny_data, tmp_path):
    """refit=True: after the validated run, a fresh model trained on train + validation for
    the best epoch's count with the same lr schedule is what is tested and checkpointed —
    tensor for tensor the model trained by hand that way."""
    from trainer.core.engine import Engine
    from trainer.core.training import LrSchedule

    data = PreparedData.load(tiny_data)
    # lr 0.25: validation dips at epochs 4 and 7 (the lr halves each time) and peaks at 10.
    cfg = {
        **OVERFIT,
        "lr": 0.25,
        "lr_decay_on_plateau": 0.5,
        "epochs": 15,
        "early_stopping_patience": 4,
    }
    metrics = train_in_process(
        TrainConfig(preset="paper", **cfg, refit=True), data, str(tmp_path / "refit")
    )
    best = metrics["early_stopping"]["best_epoch"]
    decays = {r["epoch"]: r["lr"] for r in metrics["epochs"] if "lr" in r and r["epoch"] < best}
    assert metrics["refit"]["epochs"] == best and metrics["refit"]["lr_after_epoch"] == decays
    assert decays, "the schedule to replay should hold a decay"
    assert len(metrics["refit"]["records"]) == best
    assert metrics["before_refit"]["test"] != metrics["test"]
    by_hand = Engine(
        TrainConfig(
            preset="paper",
            **{**cfg, "epochs": best, "eval_every": best, "early_stopping_patience": 0},
        ),
        data.with_validation_in_train(),
    )
    by_hand.fit([LrSchedule(decays)])
    saved = load_checkpoint(str(tmp_path / "refit" / "checkpoint"))
    assert all(torch.equal(saved["state"][k], v) for k, v in by_hand.model.state_dict().items())
    assert saved["config"]["train"]["refit"] is True and saved["epoch"] == best
    on_disk = json.loads((tmp_path / "refit" / "metrics.json").read_text())
    assert on_disk["test"] == metrics["test"] and "before_refit" in on_disk


def test_without_a_validation_split_there_is_nothing_to_refit(tmp_path):
    from trainer.data.prepare import PrepareOptions, prepare

    out = str(tmp_path / "novalid")
    prepare(out, PrepareOptions(seed=0, valid_ratio=0.0), synthetic="users=200,items=100,seed=2")
    cfg = TrainConfig(preset="paper", **{**OVERFIT, "epochs": 3}, refit=True)
    metrics = train_in_process(cfg, PreparedData.load(out), str(tmp_path / "run"))
    assert "refit" not in metrics and len(metrics["epochs"]) == 3


def test_a_callback_can_end_the_run_after_an_epoch(tiny_data):
    """engine.stop_requested (set by a callback) ends fit after that epoch: validated there
    (although not a validation epoch), the best epoch restored and tested, as a normal end."""
    from trainer.core.callbacks import Callback
    from trainer.core.engine import Engine

    class StopAtTwo(Callback):
        def on_epoch_trained(self, engine, record):
            engine.stop_requested = engine.epoch == 2

    cfg = TrainConfig(
        preset="paper", epochs=10, eval_every=5, batch_size=512, sampler={"name": "uniform"}
    )
    result = Engine(cfg, PreparedData.load(tiny_data)).fit([StopAtTwo()])
    assert [r["epoch"] for r in result["epochs"]] == [1, 2]
    assert "valid" in result["epochs"][-1] and result["test"]
    assert result["early_stopping"]["best_epoch"] == 2
