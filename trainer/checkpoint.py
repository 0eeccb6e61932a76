"""The one checkpoint format, written by the in-process and the Ray paths, read by the service.

A checkpoint is a directory:
    model.pt       torch.save dict: format_version, model name, dim, num_users, num_items,
                   state (full user table and item-side parameters), item_counts [num_items],
                   epoch; optionally optimizer state (for resuming)
    seen.parquet   user, item (int32): train + validation pairs, masked when recommending
    users.parquet  index, id — external ids; items.parquet likewise
    config.json    the TrainConfig and the dataset manifest
    metrics.json   per-epoch records and test metrics so far
It is written to a temporary sibling and renamed into place, so a reader never sees half of
one. Pools are not saved: they are rebuilt from the model on resume.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from trainer.atomic import replace_directory

CHECKPOINT_VERSION = 1
FILES = ("model.pt", "seen.parquet", "users.parquet", "items.parquet", "config.json",
         "metrics.json")


class CheckpointError(ValueError):
    """A checkpoint that is missing, truncated or inconsistent."""


def write_json_atomic(path: str, obj) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as fh:
        json.dump(obj, fh, indent=2)
        fh.write("\n")
    os.replace(tmp, path)


def save_checkpoint(path: str, *, model_name: str, dim: int, state: dict[str, torch.Tensor],
                    item_counts: np.ndarray, data, config: dict, metrics: dict, epoch: int,
                    optimizer: dict | None = None) -> str:
    """Write a complete checkpoint directory at `path` (replacing one that is there)."""
    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.", dir=parent)
    try:
        torch.save({"format_version": CHECKPOINT_VERSION, "model": model_name, "dim": dim,
                    "num_users": data.num_users, "num_items": data.num_items,
                    "state": {k: v.detach().cpu() for k, v in state.items()},
                    "item_counts": torch.as_tensor(item_counts), "epoch": epoch,
                    "optimizer": optimizer}, os.path.join(tmp, "model.pt"))
        seen = [data.splits["train"], data.splits["valid"]]
        pq.write_table(pa.table({
            "user": np.concatenate([s.users for s in seen]).astype(np.int32),
            "item": np.concatenate([s.items for s in seen]).astype(np.int32)}),
            os.path.join(tmp, "seen.parquet"))
        for name in ("users.parquet", "items.parquet"):
            shutil.copyfile(os.path.join(data.path, name), os.path.join(tmp, name))
        write_json_atomic(os.path.join(tmp, "config.json"),
                          {"train": config, "dataset": {"path": data.path, **data.manifest}})
        write_json_atomic(os.path.join(tmp, "metrics.json"), metrics)
        os.chmod(tmp, 0o755)
        load_checkpoint(tmp)  # a checkpoint that cannot be read never replaces one that can
        replace_directory(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def load_checkpoint(path: str, with_optimizer: bool = False) -> dict:
    """Read and check a checkpoint. Raises CheckpointError naming what is wrong."""
    missing = [f for f in FILES if not os.path.isfile(os.path.join(path, f))]
    if missing:
        raise CheckpointError(f"{path}: not a checkpoint (missing {', '.join(missing)})")
    try:
        blob = torch.load(os.path.join(path, "model.pt"), map_location="cpu", weights_only=True)
        with open(os.path.join(path, "config.json")) as fh:
            config = json.load(fh)
        with open(os.path.join(path, "metrics.json")) as fh:
            metrics = json.load(fh)
        users = pq.read_table(os.path.join(path, "users.parquet")).column("id").to_pylist()
        items = pq.read_table(os.path.join(path, "items.parquet")).column("id").to_pylist()
        seen = pq.read_table(os.path.join(path, "seen.parquet"))
    except Exception as exc:  # truncated zip, bad JSON, bad Parquet: all the same to a reader
        raise CheckpointError(f"{path}: checkpoint is unreadable ({type(exc).__name__}: {exc})") from None
    if blob.get("format_version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {blob.get('format_version')} "
                              f"is not {CHECKPOINT_VERSION}")
    state = blob["state"]
    n_u, n_i, d = blob["num_users"], blob["num_items"], blob["dim"]
    if (tuple(state["user_emb"].shape) != (n_u, d) or tuple(state["item_emb"].shape) != (n_i, d)
            or len(users) != n_u or len(items) != n_i):
        raise CheckpointError(f"{path}: tensor shapes disagree with the id maps")
    if not with_optimizer:
        blob.pop("optimizer", None)
    return {**blob, "config": config, "metrics": metrics, "user_ids": users, "item_ids": items,
            "seen_users": seen.column("user").to_numpy().astype(np.int64),
            "seen_items": seen.column("item").to_numpy().astype(np.int64), "path": path}
