"""Tune: every config is validated before Ray starts; the tiny search runs on a real local Ray."""

from __future__ import annotations

import csv
import glob
import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT

from trainer.distributed.tune import load_spec
from trainer.outputs.checkpoint import load_checkpoint

TUNE = os.path.join(ROOT, "trainer", "tune.py")


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "tune_configs", "*.yaml"))))
def test_shipped_configs_are_valid(path):
    spec = load_spec(path)
    assert spec.search and all(k != "test" for k in spec.search)


def test_paper_grid_and_pool_sweep_cover_what_the_paper_did():
    grid = load_spec(os.path.join(ROOT, "tune_configs", "paper_l2_grid.yaml"))
    assert grid.search["l2"].grid == [0.1, 0.01, 0.001, 0.0001]
    assert len(grid.search["sampler.name"].grid) == 9
    sweep = load_spec(os.path.join(ROOT, "tune_configs", "pool_size_sweep.yaml"))
    assert sweep.search["sampler.pool_size"].grid == [100, 200, 400, 1000, 2000]
    cfg = sweep.train_config({"sampler.pool_size": 400, "sampler.name": "adasir-w"})
    assert cfg.sampler.num_candidates == cfg.sampler.pool_size == 400  # tie: |K| = |R|


@pytest.mark.parametrize(
    "text,message",
    [
        ("name: x\ndataset: d\nsearch: {l2: {grid: [0.1]}\n", "malformed YAML"),
        ("- just\n- a list\n", "mapping at the top level"),
        ("name: x\ndataset: d\nfixed: {colour: red}\nsearch: {l2: {grid: [0.1]}}\n", "colour"),
        (
            "name: x\ndataset: d\nsearch: {sampler.name: {grid: [uniform, magic]}}\n",
            "'magic' is not a valid option",
        ),
        ("name: x\ndataset: d\nsearch: {warp_speed: {grid: [1]}}\n", "warp_speed"),
        ("name: x\ndataset: d\nsearch: {l2: {grid: [0.1], choice: [1]}}\n", "exactly one of"),
        ("name: x\ndataset: d\nsearch: {lr: {loguniform: [0, 1]}}\n", "low > 0"),
        (
            "name: x\ndataset: d\nsearch: {l2: {grid: [0.1]}}\nscheduler: {type: hyperband}\n",
            "scheduler.type",
        ),
    ],
)
def test_bad_configs_fail_before_ray_starts(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_spec(str(path))
    proc = subprocess.run(
        [sys.executable, TUNE, str(path)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2 and "tune: error" in proc.stderr
    assert "Started a local Ray" not in proc.stderr


def check_tiny_search(out, model_root) -> None:
    """What tune_configs/tiny.yaml's search leaves in `out` (run by tests/test_docs_commands.py
    as docs/tune.md gives it): both trials, the best by validation, its checkpoint with early
    stopping inside the trial, registered with the service under `model_root`."""
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert len(rows) == 2 and {r["l2"] for r in rows} == {"0.01", "0.001"}
    assert all(float(r["valid_ndcg@50"]) > 0 and float(r["test_ndcg@50"]) > 0 for r in rows)
    best = json.loads((out / "best.json").read_text())
    assert best["trial"]["valid_ndcg@50"] == max(float(r["valid_ndcg@50"]) for r in rows)
    assert "| l2 |" in (out / "results.md").read_text()
    ckpt = load_checkpoint(str(out / "best" / "checkpoint"))
    assert ckpt["config"]["train"]["l2"] == best["train_config"]["l2"]
    # Early stopping runs inside the trial: the saved tables are its best validated epoch's,
    # and the trial reports that epoch's validation metric.
    choice = ckpt["metrics"]["early_stopping"]
    assert 1 <= choice["best_epoch"] <= 3 and choice["patience"] == 1
    by_epoch = {e["epoch"]: e["valid"]["ndcg@50"] for e in ckpt["metrics"]["epochs"]}
    assert best["trial"]["valid_ndcg@50"] == by_epoch[choice["best_epoch"]]
    from service.model_store import ModelRegistry

    assert "tune/tiny/best" in ModelRegistry(str(model_root)).scan()
