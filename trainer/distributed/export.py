"""All-user export over a Ray cluster with Ray Data: the users are cut into ranges, each
range is one row of a dataset, and `map_batches` ranks them on a pool of actors, each of
which holds the item side once and reads only its ranges' rows of the user table and seen
pairs (trainer/export.py: CheckpointBlocks) and writes them as one Parquet file per range
into a temporary directory, which replaces OUT only once every range's file is there.

The checkpoint must be on storage every node reads (a shared filesystem, as Ray Train's
storage is); the output directory too.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterable

import numpy as np
import pyarrow.parquet as pq

from trainer.errors import UsageError
from trainer.export import CheckpointBlocks, allowed_mask, users_per_block
from trainer.outputs.atomic import replace_directory
from trainer.outputs.checkpoint import checkpoint_dir, load_checkpoint


class _RankRanges:
    """The map_batches actor: one CheckpointBlocks; each range's rows go straight to their own
    Parquet file in the output directory (no rows through the object store), and the batch
    that comes back is the file's name and row count."""

    def __init__(self, path: str, out: str, k: int, exclude_seen: bool, allowed: np.ndarray | None):
        self.blocks, self.out = CheckpointBlocks(path, k, exclude_seen, allowed), out

    def __call__(self, batch: dict) -> dict:
        files, rows = [], []
        for lo, hi in zip(batch["lo"], batch["hi"]):
            table = self.blocks.rank(int(lo), int(hi))
            name = f"part-{int(lo):010d}.parquet"
            pq.write_table(table, os.path.join(self.out, name))
            files.append(name)
            rows.append(table.num_rows)
        return {"file": np.array(files), "rows": np.array(rows, dtype=np.int64)}


def export_top_k_ray(
    checkpoint: str,
    out: str,
    k: int,
    *,
    exclude_seen: bool = True,
    filter_items: Iterable[str] | None = None,
    candidates: Iterable[str] | None = None,
    block: int | None = None,
    workers: int = 2,
    cpus_per_worker: float = 1.0,
) -> dict:
    """Every user's top k of `checkpoint` (a run or checkpoint directory) into the directory
    `out` (Parquet files: user, rank, item, score), ranked by `workers` Ray Data actors over
    ranges of `block` users, on the Ray this process is connected to; `filter_items` and
    `candidates` as Model.recommend takes them. Returns {"users", "rows", "files",
    "seconds"}."""
    import ray

    if workers < 1 or (block is not None and block < 1):
        raise UsageError("give --workers ≥ 1 and a block of ≥ 1 users")
    checkpoint = os.path.abspath(checkpoint_dir(checkpoint))
    head = load_checkpoint(checkpoint, users=[])  # no user rows, no id maps
    num_users, num_items = int(head["num_users"]), int(head["num_items"])
    if k < 1 or k > num_items:
        raise UsageError(f"k = {k}: give 1 ≤ k ≤ {num_items} (the model's items)")
    allowed = _allowed(checkpoint, filter_items, candidates)
    out = os.path.abspath(out)
    _check_replaceable(out)
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.", dir=parent)
    block = block or users_per_block(num_items)
    ranges = [{"lo": lo, "hi": min(lo + block, num_users)} for lo in range(0, num_users, block)]
    start = time.perf_counter()
    try:
        written = (
            ray.data.from_items(ranges, override_num_blocks=len(ranges))
            .map_batches(
                _RankRanges,
                fn_constructor_kwargs={
                    "path": checkpoint,
                    "out": tmp,
                    "k": k,
                    "exclude_seen": exclude_seen,
                    "allowed": allowed,
                },
                batch_size=1,
                batch_format="numpy",
                compute=ray.data.ActorPoolStrategy(size=min(workers, len(ranges))),
                num_cpus=cpus_per_worker,
            )
            .take_all()
        )
        files, rows = len(written), sum(int(w["rows"]) for w in written)
        if files != len(ranges):
            raise RuntimeError(f"the export wrote {files} of {len(ranges)} parts")
        os.chmod(tmp, 0o755)
        replace_directory(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    seconds = time.perf_counter() - start
    return {"users": num_users, "rows": rows, "files": files, "seconds": seconds}


def _allowed(checkpoint: str, filter_items, candidates) -> np.ndarray | None:
    """The allow-list as [N] bool, from the item ids alone (the driver reads no tables)."""
    if filter_items is None and candidates is None:
        return None
    ids = pq.read_table(os.path.join(checkpoint, "items.parquet"), columns=["index", "id"])
    index = dict(zip(ids.column("id").to_pylist(), ids.column("index").to_pylist()))
    mask = allowed_mask(index, filter_items, candidates)
    return None if mask is None else mask.numpy()


def _check_replaceable(out: str) -> None:
    """OUT may be new or an earlier export (a directory of Parquet files and nothing else):
    anything else there is the user's, and is not replaced."""
    if not os.path.exists(out):
        return
    if not os.path.isdir(out) or any(
        not (name.endswith(".parquet") or name.startswith(".")) for name in os.listdir(out)
    ):
        raise UsageError(
            f"{out} exists and is not an earlier export (a directory of .parquet files): "
            "give a new path"
        )
