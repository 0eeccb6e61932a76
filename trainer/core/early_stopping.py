"""Early stopping on a validation metric, with the best epoch's tables restored at the end.

The tracker lives inside Engine.fit, so the in-process run, every Ray Train worker and every
Tune trial take the same decision from the same numbers: validation metrics are summed over
the workers before anyone sees them, so every rank stops at the same epoch and calls the same
collectives (no hung `ray.train.report`). Each rank keeps a copy of its own parameters (its
shard of the user table, the replicated item side) from the best epoch; restoring needs no
communication.
"""

from __future__ import annotations

import torch


class BestEpoch:
    """Watches one validation metric (higher is better) and keeps the best epoch's parameters.

    patience: validations without a new best before `should_stop` turns true (0: never).
    A resumed run starts a fresh tracker: the best of the epochs before the resume is not
    held in memory, so only epochs trained after it can be restored.
    """

    def __init__(self, metric: str, patience: int):
        self.metric, self.patience = metric, patience
        self.best_value: float | None = None
        self.best_epoch: int | None = None
        self.since_best = 0
        self._params: dict[str, torch.Tensor] | None = None

    def update(self, model: torch.nn.Module, epoch: int, valid: dict[str, float]) -> None:
        """After a validation: a strictly higher value is the new best (and its parameters are
        copied); anything else counts one validation towards the patience."""
        value = valid[self.metric]
        if self.best_value is None or value > self.best_value:
            self.best_value, self.best_epoch, self.since_best = value, epoch, 0
            self._params = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            self.since_best += 1

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.since_best >= self.patience

    def restore(self, model: torch.nn.Module, epoch: int) -> bool:
        """Load the best epoch's parameters into `model` unless `epoch` is the best; returns
        whether anything was loaded."""
        if self._params is None or self.best_epoch == epoch:
            return False
        model.load_state_dict(self._params)
        return True

    def summary(self) -> dict:
        """What metrics.json records of the choice."""
        return {
            "metric": self.metric,
            "patience": self.patience,
            "best_epoch": self.best_epoch,
            "best_valid": self.best_value,
        }
