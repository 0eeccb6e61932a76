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
