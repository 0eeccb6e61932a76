"""Warm start on grown data (`--init-from MODEL`): a model trained on an earlier copy of the
dataset gives the new model its rows for the users and items it knew, matched by their
external ids; new users and items keep the fresh initialisation. The optimiser starts
afresh."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from trainer.errors import UsageError
from trainer.outputs.checkpoint import CheckpointError, checkpoint_dir, load_checkpoint


class WarmStart(NamedTuple):
    users_known: int
    users: int
    items_known: int
    items: int

    def describe(self, source: str) -> str:
        return (
            f"warm start from {source}: {self.users_known:,} of {self.users:,} users and "
            f"{self.items_known:,} of {self.items:,} items start from its rows; the others "
            "are initialised afresh"
        )


def _rows_by_id(old_ids: list, new_ids: list) -> tuple[np.ndarray, np.ndarray]:
    """(positions in new_ids, their rows in old_ids) for the ids both know."""
    old = {key: row for row, key in enumerate(old_ids)}
    pairs = [(i, old[key]) for i, key in enumerate(new_ids) if key in old]
    if not pairs:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    new_pos, old_rows = zip(*pairs, strict=True)
    return np.asarray(new_pos, np.int64), np.asarray(old_rows, np.int64)


def load_source(path: str, model_name: str, dim: int) -> dict:
    """The checkpoint to start from, refused in one line when it cannot seed this model."""
    try:
        blob = load_checkpoint(checkpoint_dir(path))
    except CheckpointError as exc:
        raise UsageError(f"--init-from: {exc}") from None
    if blob["model"] != model_name or blob["dim"] != dim:
        raise UsageError(
            f"--init-from {path}: a {blob['model']} model with d = {blob['dim']} cannot start a "
            f"{model_name} model with d = {dim}; give --model {blob['model']} --dim {blob['dim']}"
        )
    return blob


@torch.no_grad()
def warm_start(model, model_name: str, data, shard: np.ndarray | None, path: str) -> WarmStart:
    """Copy into `model` (this process's users: `shard`, sorted global ids, or all) the rows
    of the model at `path` for the users and items it knew, by external id, and its other
    parameters (GMF's h). Returns what was copied, counted over this process's users."""
    blob = load_source(path, model_name, model.user_emb.shape[1])
    state = blob["state"]
    user_ids = data.ids("users")
    mine = user_ids if shard is None else [user_ids[u] for u in shard]
    local, rows = _rows_by_id(blob["user_ids"], mine)
    model.user_emb[torch.as_tensor(local)] = state["user_emb"][torch.as_tensor(rows)].to(
        model.user_emb.device, model.user_emb.dtype
    )
    items, item_rows = _rows_by_id(blob["item_ids"], data.ids("items"))
    model.item_emb[torch.as_tensor(items)] = state["item_emb"][torch.as_tensor(item_rows)].to(
        model.item_emb.device, model.item_emb.dtype
    )
    for name, param in model.named_parameters():
        if name not in ("user_emb", "item_emb") and name in state:
            param.copy_(state[name])
    return WarmStart(len(local), len(mine), len(items), data.num_items)
