"""Shared fixtures: small prepared datasets and a model with fixed, known scores."""

from __future__ import annotations

import os

import pytest
import torch

from trainer.data.prepare import PrepareOptions, prepare

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SHARED_DATA = os.path.join(os.path.dirname(ROOT), "shared", "data")

# Ray Train's controller polls its workers every 2 s by default, so each Ray run of a test
# waited up to 2 s past its last epoch; the tests' runs (and their subprocesses) poll faster.
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")


def block_frame(users: int = 60, items: int = 40, pairs: int = 900, seed: int = 0):
    """A pandas DataFrame (user, item) of users who like the items next to their own number:
    a signal one epoch learns, small enough for many fits in a test."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    u = rng.integers(0, users, pairs)
    i = (u + rng.integers(0, 8, pairs)) % items
    df = pd.DataFrame({"user": [f"u{x}" for x in u], "item": [f"i{x}" for x in i]})
    return df.drop_duplicates().reset_index(drop=True)


class FixedScores:
    """A ScoringModel whose scores are a given [users, items] table."""

    def __init__(self, table: torch.Tensor):
        self.table = table
        self.num_items = table.shape[1]

    def score(self, users, items, scratch=None):
        return self.table[users[:, None], items]

    def score_all(self, users):
        return self.table[users]

    def score_shared(self, users, items):
        return self.table[users][:, items]

    def score_groups(self, users, items):
        return self.table[users[:, :, None], items[:, None, :]]


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> str:
    """A prepared synthetic dataset: ~600 users, ~400 items."""
    out = str(tmp_path_factory.mktemp("data") / "tiny")
    prepare(out, PrepareOptions(seed=0), synthetic="users=600,items=400,mean=25,seed=1")
    return out
