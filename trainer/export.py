"""All-user export: every user's top k written to one Parquet file, streamed in blocks of
users so memory stays one block of scores ([block, 65,536] at most) plus one row group.

Columns: user (string), rank (int16, 1 = best), item (string), score (float32). The file is
written under a temporary name beside `path` and renamed into place once complete.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

SCHEMA = pa.schema(
    [("user", pa.string()), ("rank", pa.int16()), ("item", pa.string()), ("score", pa.float32())]
)


def export_top_k(
    model,
    path: str,
    k: int,
    *,
    exclude_seen: bool = True,
    block: int = 4096,
    users: list[int] | None = None,
    allowed: torch.Tensor | None = None,
) -> dict:
    """Write the top k of `users` (indices; default: every user) of a trainer.api.Model to
    `path`. Returns {"users", "rows", "seconds"}. Slots no item can fill (a user who has seen
    nearly everything) are left out, so a user may have fewer than k rows."""
    if k < 1 or k > model.num_items:
        raise ValueError(f"k = {k}: give 1 ≤ k ≤ {model.num_items} (the model's items)")
    path = os.path.abspath(path)
    tmp = f"{path}.tmp{os.getpid()}"
    rows = list(range(model.num_users)) if users is None else list(users)
    item_ids = np.asarray(model.item_ids, dtype=object)
    user_ids = np.asarray(model.user_ids, dtype=object)
    start, written = time.perf_counter(), 0
    try:
        with pq.ParquetWriter(tmp, SCHEMA) as writer:
            for lo in range(0, len(rows), block):
                chunk = rows[lo : lo + block]
                scores, items = model.rank_users(chunk, k, exclude_seen, allowed)
                table = _block_table(user_ids[chunk], scores, items, item_ids)
                writer.write_table(table)
                written += table.num_rows
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return {"users": len(rows), "rows": written, "seconds": time.perf_counter() - start}


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
