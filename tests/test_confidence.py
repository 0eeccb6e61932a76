"""Interaction strength (TrainConfig.confidence): prepare keeps the ratings, each train pair's
weight is its own rating's (in process and in a Ray shard), the weights change what trains
only as asked, and a dataset without ratings is refused before anything is written."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from tests.conftest import pair_rating
from trainer.core.confidence import batch_weights, pair_confidence
from trainer.core.engine import Engine
from trainer.core.presets import build_config
from trainer.data.dataset import PreparedData
from trainer.data.prepare import PrepareOptions, prepare


def test_prepare_keeps_ratings_and_sums_a_repeated_pair(tmp_path):
    rows = ["user,item,rating"] + [
        f"u{u},i{i},{(u + i) % 4 + 1}" for u in range(8) for i in range(8)
    ]
    rows.append("u0,i1,2.5")  # u0,i1 again: its ratings add up, 2 + 2.5
    (tmp_path / "in.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "data"
    prepare(str(out), PrepareOptions(kcore=0, seed=0), input_path=str(tmp_path / "in.csv"))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["ratings"] is True
    data = PreparedData.load(str(out))
    ids = {name: data.ids(name) for name in ("users", "items")}
    seen = {}
    for split in data.splits.values():
        assert split.ratings is not None and split.ratings.dtype == np.float32
        for u, i, r in zip(split.users, split.items, split.ratings, strict=True):
            seen[(ids["users"][u], ids["items"][i])] = float(r)
    assert len(seen) == 64
    assert seen[("u0", "i1")] == 4.5
    assert seen[("u3", "i2")] == (3 + 2) % 4 + 1


def test_a_dataset_without_ratings_says_so(tiny_data):
    data = PreparedData.load(tiny_data)
    assert not data.has_ratings and data.ratings("train") is None
    assert "rating" not in pq.read_schema(os.path.join(tiny_data, "train.parquet")).names


@pytest.mark.parametrize("kind", ["linear", "log"])
def test_confidence_is_implicits_formula_and_a_batch_averages_one(kind):
    cfg = build_config("recommended", {"confidence": kind, "confidence_alpha": 2.0})
    ratings = np.array([0.0, 1.0, 4.0, 9.0], dtype=np.float32)
    c = pair_confidence(cfg, ratings, "cpu")
    expected = 1 + 2.0 * (ratings if kind == "linear" else np.log1p(ratings))
    assert torch.allclose(c, torch.as_tensor(expected, dtype=torch.float32))
    w = batch_weights(c, torch.tensor([1, 2, 3]))
    assert float(w.mean()) == pytest.approx(1.0)
    assert float(w[2] / w[0]) == pytest.approx(float(c[3] / c[1]))


@pytest.mark.parametrize("shard", [None, "first half"])
def test_each_train_pair_weighs_its_own_rating(rated_data, shard):
    """The weights follow the engine's pair order (sorted by key), not the file's."""
    full = PreparedData.load(rated_data)
    users = None if shard is None else np.arange(full.num_users // 2)
    data = full if shard is None else PreparedData.load(rated_data, users=users)
    given = {"confidence": "linear", "sampler": {"num_negatives": 50}}
    engine = Engine(build_config("recommended", given), data, shard=users)
    raw = {name: data.ids(name) for name in ("users", "items")}
    global_users = (
        engine.train_users if users is None else torch.as_tensor(users)[engine.train_users]
    )
    for k in range(0, len(engine.positives), 7):
        u = int(raw["users"][int(global_users[k])][1:])
        i = int(raw["items"][int(engine.train_items[k])][1:])
        assert float(engine.confidence[k]) == 1 + pair_rating(u, i)


def _losses(data, given: dict, epochs: int = 2) -> list[float]:
    cfg = build_config("recommended", {"dim": 8, "batch_size": 256, "epochs": epochs, **given})
    engine = Engine(cfg, PreparedData.load(data) if isinstance(data, str) else data)
    return [engine.train_epoch()["loss"] for _ in range(epochs)]


def test_equal_ratings_train_the_unweighted_model_and_unequal_ones_do_not(rated_data):
    data = PreparedData.load(rated_data)
    plain = _losses(data, {"sampler": {"num_negatives": 50}})
    data.splits["train"].ratings = np.full_like(data.splits["train"].ratings, 3.0)
    level = _losses(data, {"confidence": "linear", "sampler": {"num_negatives": 50}})
    assert level == pytest.approx(plain, rel=1e-5)
    weighted = _losses(rated_data, {"confidence": "linear", "sampler": {"num_negatives": 50}})
    assert abs(weighted[1] - plain[1]) > 1e-3


def test_confidence_on_a_dataset_without_ratings_is_one_line_and_writes_nothing(
    tiny_data, tmp_path
):
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "adasir", "train", "--data", tiny_data, "--out", str(out)]
        + ["--epochs", "1", "--confidence", "linear"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "confidence 'linear'" in lines[0] and "no" in lines[0]
    assert not out.exists()
