"""Warm start on grown data: known users and items start from the earlier model's rows (by
external id), new ones from the fresh initialisation, in one process and on a shard alike."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT

from trainer.core.config import TrainConfig
from trainer.core.engine import Engine
from trainer.core.training import train_in_process
from trainer.data.dataset import PreparedData
from trainer.data.prepare import PrepareOptions, prepare
from trainer.errors import UsageError


@pytest.fixture(scope="module")
def grown(tmp_path_factory):
    """An earlier dataset (300 users, 200 items), a model trained on it, and the grown one
    (400 users, 260 items: the same ids and more)."""
    root = tmp_path_factory.mktemp("grown")
    old, new = str(root / "old"), str(root / "new")
    prepare(old, PrepareOptions(seed=0), synthetic="users=300,items=200,mean=20,seed=1")
    prepare(new, PrepareOptions(seed=0), synthetic="users=400,items=260,mean=20,seed=2")
    run = str(root / "run")
    config = TrainConfig(preset="paper", model="gmf", dim=8, epochs=2, eval_every=1, seed=0)
    train_in_process(config, PreparedData.load(old), run, log=lambda s: None)
    return old, new, run, config


def _rows(data: PreparedData, kind: str) -> dict[str, int]:
    return {key: row for row, key in enumerate(data.ids(kind))}


def test_known_rows_come_from_the_earlier_model_and_new_rows_are_fresh(grown):
    from trainer.outputs.checkpoint import load_checkpoint

    old_path, new_path, run, config = grown
    old, new = PreparedData.load(old_path), PreparedData.load(new_path)
    earlier = load_checkpoint(os.path.join(run, "checkpoint"))["state"]
    warm = Engine(config.model_copy(update={"init_from": run}), new)
    cold = Engine(config, new)
    assert warm.warm_start == (len(old.ids("users")), new.num_users, old.num_items, new.num_items)
    for kind, table in (("users", "user_emb"), ("items", "item_emb")):
        before, after = _rows(old, kind), _rows(new, kind)
        known = [k for k in after if k in before]
        fresh = [after[k] for k in after if k not in before]
        assert len(known) == len(before) and fresh  # every earlier id is still there, and more
        got = getattr(warm.model, table).detach()
        want = earlier[table][[before[k] for k in known]]
        assert torch.equal(got[[after[k] for k in known]], want)
        assert torch.equal(got[fresh], getattr(cold.model, table).detach()[fresh])
    assert torch.equal(warm.model.h.detach(), earlier["h"])  # GMF's other parameter too


def test_a_shard_takes_its_users_rows_of_the_warm_one_process_model(grown):
    _, new_path, run, config = grown
    new = PreparedData.load(new_path)
    cfg = config.model_copy(update={"init_from": run})
    whole = Engine(cfg, new).model.user_emb.detach()
    shard = np.arange(150, 400)
    part = Engine(cfg, new, shard).model
    assert torch.equal(part.user_emb.detach(), whole[150:400])


def test_a_model_of_another_shape_is_refused_saying_which(grown):
    _, new_path, run, config = grown
    with pytest.raises(UsageError, match="a gmf model with d = 8 cannot start a mf model"):
        Engine(
            config.model_copy(update={"init_from": run, "model": "mf"}), PreparedData.load(new_path)
        )


@pytest.mark.slow
def test_the_command_line_warm_starts_and_refuses_a_path_that_is_no_model(grown, tmp_path):
    _, new_path, run, _ = grown
    base = [sys.executable, os.path.join(ROOT, "trainer", "run.py"), "--data", new_path]
    base += ["--preset", "paper", "--model", "gmf", "--dim", "8", "--epochs", "1"]
    ok = subprocess.run(
        [*base, "--out", str(tmp_path / "w"), "--init-from", run],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "warm start from" in ok.stdout + ok.stderr
    bad = subprocess.run(
        [*base, "--out", str(tmp_path / "b"), "--init-from", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 2 and "--init-from" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert not (tmp_path / "b").exists()


def test_fit_takes_a_model_to_start_from(grown):
    import pandas as pd

    from trainer.api import fit

    old_path, new_path, run, _ = grown
    new = PreparedData.load(new_path)
    users, items = new.ids("users"), new.ids("items")
    train = new.splits["train"]
    frame = pd.DataFrame(
        {"user": [users[u] for u in train.users], "item": [items[i] for i in train.items]}
    )
    options = dict(preset="paper", model="gmf", dim=8, epochs=1, verbose=False)
    first = fit(frame, **options)
    again = fit(frame, init_from=first, **options)
    assert again.config["init_from"] == first._blob["path"]
