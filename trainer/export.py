"""All-user export: every user's top k written to Parquet, streamed in blocks of users so
memory stays one block of scores (SCORE_BLOCK_BYTES) plus one block's rows.

Columns: user (string), rank (int16, 1 = best), item (string), score (float32). The output
is written under a hidden temporary name beside its path and renamed into place once
complete; it replaces only an earlier export.

- `export_top_k`: a loaded Model, one file, in this process.
- `CheckpointBlocks`: ranks a range of a checkpoint's users reading only that range's rows
  of the user table and of the seen pairs (trainer/distributed/export.py runs it on Ray Data
  workers, one range a batch).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from pools.interactions import InteractionIndex
from trainer.core.models import build_model
from trainer.core.topk import ITEM_BLOCK, VectorScorer, top_k
from trainer.errors import UsageError
from trainer.outputs.atomic import remove_stale_temps, temp_sibling_prefix
from trainer.outputs.checkpoint import load_checkpoint

SCHEMA = pa.schema(
    [("user", pa.string()), ("rank", pa.int16()), ("item", pa.string()), ("score", pa.float32())]
)


SCORE_BLOCK_BYTES = 256 << 20
"""The float32 scores of one block of users, [block, min(items, topk.ITEM_BLOCK)], stay
within this: the export's memory is this plus one block's rows."""


def users_per_block(num_items: int) -> int:
    """How many users one export block ranks at a time (SCORE_BLOCK_BYTES)."""
    return max(1, SCORE_BLOCK_BYTES // (4 * min(num_items, ITEM_BLOCK)))


def export_top_k(
    model,
    path: str,
    k: int,
    *,
    exclude_seen: bool = True,
    block: int | None = None,
    users: list[int] | None = None,
    allowed: torch.Tensor | None = None,
) -> dict:
    """Write the top k of `users` (indices; default: every user) of a trainer.api.Model to
    `path`. Returns {"users", "rows", "seconds"}. Slots no item can fill (a user who has seen
    nearly everything) are left out, so a user may have fewer than k rows."""
    if k < 1 or k > model.num_items:
        raise ValueError(f"k = {k}: give 1 ≤ k ≤ {model.num_items} (the model's items)")
    path = os.path.abspath(path)
    tmp = _writable_temp(path)
    rows = list(range(model.num_users)) if users is None else list(users)
    block = block or users_per_block(model.num_items)
    item_ids = np.asarray(model.item_ids, dtype=object)
    user_ids = np.asarray(model.user_ids, dtype=object)
    start, written = time.perf_counter(), 0
    try:
        with pq.ParquetWriter(tmp, SCHEMA) as writer:
            for lo in range(0, len(rows), block):
                chunk = rows[lo : lo + block]
                scores, items = model._rank_users(chunk, k, exclude_seen, allowed)
                table = _block_table(user_ids[chunk], scores, items, item_ids)
                writer.write_table(table)
                written += table.num_rows
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    return {"users": len(rows), "rows": written, "seconds": time.perf_counter() - start}


def _writable_temp(path: str) -> str:
    """The temporary sibling an export of `path` writes first: hidden, so that a directory
    reader (pd.read_parquet(dir)) never takes it for a part, and named with this pid, so
    that a killed export's is removed by the next one. Refuses (UsageError, one line) a path
    whose replacement would lose something: a directory, or a file that is not an earlier
    export; and a path that cannot be written."""
    if os.path.isdir(path):
        raise UsageError(f"{path} is a directory; give the Parquet file to write")
    if os.path.lexists(path) and not is_export_file(path):
        raise UsageError(
            f"{path} exists and is not an earlier export (a Parquet file of columns "
            f"{', '.join(SCHEMA.names)}): give a new path"
        )
    parent = os.path.dirname(path)
    try:
        os.makedirs(parent, exist_ok=True)
        remove_stale_temps(parent, os.path.basename(path))
        tmp = os.path.join(parent, temp_sibling_prefix(os.path.basename(path)) + "parquet")
        open(tmp, "wb").close()
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None
    return tmp


def is_export_file(path: str) -> bool:
    """Whether `path` is a Parquet file with the export's columns (what an export may
    replace)."""
    try:
        return pq.read_schema(path).names == SCHEMA.names
    except (OSError, pa.ArrowException):
        return False


def allowed_mask(
    item_index: dict[str, int],
    filter_items: Iterable[str] | None,
    candidates: Iterable[str] | None,
) -> torch.Tensor | None:
    """[N] bool of the items that may be returned, or None for all: the `candidates` (every
    item if None) less `filter_items`. Unknown ids in either list are ignored; candidates of
    which none is known allow nothing. item_index: external id → index, N entries."""
    if filter_items is None and candidates is None:
        return None
    if candidates is None:
        allowed = torch.ones(len(item_index), dtype=torch.bool)
    else:
        allowed = torch.zeros(len(item_index), dtype=torch.bool)
        allowed[[item_index[i] for i in candidates if i in item_index]] = True
    if filter_items is not None:
        allowed[[item_index[i] for i in filter_items if i in item_index]] = False
    return allowed


def _block_table(
    users: np.ndarray, scores: torch.Tensor, items: torch.Tensor, item_ids: np.ndarray
) -> pa.Table:
    """One block's rows: [B, k] scores and item indices as long-format columns."""
    b, k = scores.shape
    keep = torch.isfinite(scores).reshape(-1).numpy()
    return pa.table(
        {
            "user": pa.array(np.repeat(users, k)[keep], pa.string()),
            "rank": pa.array(np.tile(np.arange(1, k + 1, dtype=np.int16), b)[keep]),
            "item": pa.array(item_ids[items.reshape(-1).numpy()][keep], pa.string()),
            "score": pa.array(scores.reshape(-1).numpy().astype(np.float32)[keep]),
        },
        schema=SCHEMA,
    )


class CheckpointBlocks:
    """Top k of ranges of a checkpoint's users, for workers that must not hold the whole user
    table: the item side and the item ids are read once; each range reads its own rows of the
    user table (memory-mapped from model.pt, or picked from the shard files of a sharded
    checkpoint), of users.parquet and of seen.parquet."""

    def __init__(
        self, path: str, k: int, exclude_seen: bool = True, allowed: np.ndarray | None = None
    ):
        head = load_checkpoint(path, users=[])  # the item side; no user rows, no id maps
        train = head["config"].get("train", {})
        self.path, self.exclude_seen = path, exclude_seen
        self.num_users, self.num_items = int(head["num_users"]), int(head["num_items"])
        if k < 1 or k > self.num_items:
            raise ValueError(f"k = {k}: give 1 ≤ k ≤ {self.num_items} (the model's items)")
        self.k = k
        # The item side once: a model with no user rows, whose query_vectors turn each
        # range's user rows into queries.
        self._model = build_model(
            head["model"],
            0,
            self.num_items,
            int(head["dim"]),
            seed=0,
            score=train.get("score", "dot"),
        )
        self._model.load_state_dict(head["state"])
        self._item_vectors = self._model.serving_vectors()[1]
        items = pq.read_table(os.path.join(path, "items.parquet"), columns=["id"])
        self.item_ids = np.asarray(items.column("id").to_pylist(), dtype=object)
        self.allowed = None if allowed is None else torch.as_tensor(allowed, dtype=torch.bool)

    def rank(self, lo: int, hi: int) -> pa.Table:
        """The rows (user, rank, item, score) of users lo..hi−1, best first per user."""
        users = np.arange(lo, hi, dtype=np.int64)
        rows = load_checkpoint(self.path, users=users)["state"]["user_emb"]
        with torch.no_grad():
            queries = self._model.query_vectors(rows).contiguous()
        masked = [self._seen(lo, hi)] if self.exclude_seen else []
        local = torch.arange(len(users))
        scores, found = top_k(
            VectorScorer(queries, self._item_vectors), local, self.k, masked, allowed=self.allowed
        )
        return _block_table(self._user_ids(lo, hi), scores, found, self.item_ids)

    def _seen(self, lo: int, hi: int) -> InteractionIndex:
        """The seen pairs of users lo..hi−1, as local rows 0..hi−lo−1."""
        user = pc.field("user")
        pairs = pq.read_table(
            os.path.join(self.path, "seen.parquet"), filters=(user >= lo) & (user < hi)
        )
        rows = torch.as_tensor(pairs.column("user").to_numpy().astype(np.int64) - lo)
        cols = torch.as_tensor(pairs.column("item").to_numpy().astype(np.int64))
        return InteractionIndex(rows, cols, hi - lo, self.num_items)

    def _user_ids(self, lo: int, hi: int) -> np.ndarray:
        index = pc.field("index")
        ids = pq.read_table(
            os.path.join(self.path, "users.parquet"),
            columns=["index", "id"],
            filters=(index >= lo) & (index < hi),
        ).sort_by("index")
        return np.asarray(ids.column("id").to_pylist(), dtype=object)
