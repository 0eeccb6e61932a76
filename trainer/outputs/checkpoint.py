"""The one checkpoint format, written by the in-process and the Ray paths, read by the service.

A checkpoint is a directory:
    model.pt       torch.save dict: format_version, model name, dim, num_users, num_items,
                   state (full user table and item-side parameters), item_counts [num_items],
                   epoch; optionally optimizer and random-generator state (for resuming)
    seen.parquet   user, item (int32): train + validation pairs, masked when recommending
    users.parquet  index, id — external ids; items.parquet likewise
    config.json    the TrainConfig and the dataset manifest
    metrics.json   per-epoch records and test metrics so far
It is written to a temporary sibling and renamed into place, so a reader never sees half of
one. Pools are not saved: they are rebuilt from the model on resume.

Sharded (a Ray run): model.pt holds the item side and a `user_shards` table instead of the
user table; each worker writes its own rows as `users-<k>-of-<W>.pt` ({"ids": global user ids,
"rows": [n_k, d]}) into the same Ray checkpoint (Ray merges the workers' directories), so no
rank gathers every user row. A reader that asks for a set of users (a restarted worker) reads
only the shard file holding exactly them; the service and the driver assemble the full table.
Users in no shard (no train pairs) keep zero rows.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
import zipfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from trainer.errors import UsageError
from trainer.outputs.atomic import remove_stale_temps, replace_directory

CHECKPOINT_VERSION = 2  # 2 added sharded user tables; 1 is read as it was
FILES = (
    "model.pt",
    "seen.parquet",
    "users.parquet",
    "items.parquet",
    "config.json",
    "metrics.json",
)


class CheckpointError(ValueError):
    """A checkpoint that is missing, truncated or inconsistent."""


def shard_file(k: int, world: int) -> str:
    return f"users-{k:05d}-of-{world:05d}.pt"


def ids_digest(ids) -> str:
    """SHA-256 of a user-id set (sorted int64): names which shard file holds which users."""
    return hashlib.sha256(np.sort(np.asarray(ids, dtype=np.int64)).tobytes()).hexdigest()


def shard_table(shards: list[np.ndarray]) -> list[dict]:
    """model.pt's `user_shards` entry for a partition of the users into `shards`."""
    return [
        {"file": shard_file(k, len(shards)), "users": int(len(ids)), "ids_sha256": ids_digest(ids)}
        for k, ids in enumerate(shards)
    ]


def write_user_shard(
    directory: str, k: int, world: int, ids: np.ndarray, rows: torch.Tensor
) -> None:
    """One worker's rows of the user table, atomically, into a checkpoint directory."""
    os.makedirs(directory, exist_ok=True)
    final = os.path.join(directory, shard_file(k, world))
    tmp = f"{final}.tmp{os.getpid()}"
    torch.save(
        {"ids": torch.as_tensor(np.asarray(ids, dtype=np.int64)), "rows": rows.detach().cpu()}, tmp
    )
    os.replace(tmp, final)


def _read_shard(
    path: str, entry: dict, dim: int, mmap: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids [n], rows [n, d]) of one shard file; `mmap`: rows are read from disk only where
    they are indexed."""
    file = os.path.join(path, entry["file"])
    if not os.path.isfile(file):
        raise CheckpointError(
            f"{path}: user shard {entry['file']} is missing (a worker's part "
            "of the checkpoint never arrived)"
        )
    try:
        part = torch.load(file, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:
        raise CheckpointError(f"{path}: {entry['file']} is unreadable ({exc})") from None
    ids, rows = part["ids"], part["rows"]
    if ids.numel() != entry["users"] or tuple(rows.shape) != (entry["users"], dim):
        raise CheckpointError(f"{path}: {entry['file']} does not hold the rows its table says")
    return ids, rows


def _user_rows(path: str, blob: dict, users: np.ndarray | None) -> torch.Tensor:
    """The user table of a sharded checkpoint: every user's row, or `users`' (sorted) rows in
    order. A user no shard holds (no train pairs) has a row of zeros."""
    table, dim = blob["user_shards"], blob["dim"]
    if users is None:
        full = torch.zeros(blob["num_users"], dim)
        for entry in table:
            ids, rows = _read_shard(path, entry, dim)
            full[ids] = rows
        return full
    wanted = ids_digest(users)
    for entry in table:
        if entry["ids_sha256"] == wanted:  # a restarted worker: its own file only
            ids, rows = _read_shard(path, entry, dim)
            order = torch.as_tensor(np.searchsorted(ids.numpy(), np.asarray(users)))
            return rows[order]
    # Any other subset (an export block): from each shard, only the rows of `users`.
    users = np.asarray(users, dtype=np.int64)
    out = torch.zeros(len(users), dim)
    for entry in table:
        shard_ids, rows = _read_shard(path, entry, dim, mmap=True)
        shard_users = shard_ids.numpy()
        at = np.minimum(np.searchsorted(users, shard_users), max(len(users) - 1, 0))
        hit = (users[at] == shard_users) if len(users) else np.zeros(len(shard_users), dtype=bool)
        out[torch.as_tensor(at[hit])] = rows[torch.as_tensor(hit)]
    return out


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 of a model state's names, shapes and bytes: model.pt records it, and a full
    load checks it, so that altered parameters are refused rather than served."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _check_zip(file: str) -> None:
    """A torch file's zip CRCs: a byte changed inside it (not re-saved) is found here."""
    try:
        with zipfile.ZipFile(file) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError) as exc:
        raise CheckpointError(f"{file}: unreadable ({exc})") from None
    if bad is not None:
        raise CheckpointError(f"{file}: damaged ({bad} fails its checksum)")


def write_json_atomic(path: str, obj) -> None:
    """Write `obj` to a temporary sibling, then rename it over `path`: readers see the old
    file or the new one; a failed write (a full disk) leaves `path` as it was and no
    temporary file."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "w") as fh:
            json.dump(obj, fh, indent=2)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _write_seen(data_path: str, out: str) -> None:
    """seen.parquet: the dataset's train then validation pairs as int32, streamed batch by
    batch from its files (a Ray rank holds only its shard's pairs; memory stays one batch)."""
    schema = pa.schema([("user", pa.int32()), ("item", pa.int32())])
    with pq.ParquetWriter(out, schema) as writer:
        for split in ("train", "valid"):
            source = pq.ParquetFile(os.path.join(data_path, f"{split}.parquet"))
            for batch in source.iter_batches(batch_size=1 << 20, columns=["user", "item"]):
                writer.write_table(
                    pa.table(
                        {
                            "user": batch.column("user").to_numpy().astype(np.int32),
                            "item": batch.column("item").to_numpy().astype(np.int32),
                        },
                        schema=schema,
                    )
                )


def _save_tensors(obj: dict, path: str) -> None:
    """torch.save, with a write the disk refused reported as the OSError it is: torch turns a
    full disk into a RuntimeError ("unexpected pos ..."), which would read as a bug."""
    try:
        torch.save(obj, path)
    except RuntimeError:
        needed = sum(t.numel() * t.element_size() for t in _tensors_in(obj))
        if shutil.disk_usage(os.path.dirname(path)).free < needed:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path) from None
        raise


def _tensors_in(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from _tensors_in(value)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            yield from _tensors_in(value)


def save_checkpoint(
    path: str,
    *,
    model_name: str,
    dim: int,
    state: dict[str, torch.Tensor],
    item_counts: np.ndarray,
    data,
    config: dict,
    metrics: dict,
    epoch: int,
    optimizer: dict | None = None,
    user_shards: list[dict] | None = None,
    generator: torch.Tensor | None = None,
) -> str:
    """Write a checkpoint directory at `path` (replacing one that is there). With
    `user_shards` (shard_table), `state` has no user table: the workers write their shard files
    (write_user_shard) into the same checkpoint, and it is complete once they all have."""
    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.", dir=parent)
    cpu_state = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    try:
        _save_tensors(
            {
                "format_version": CHECKPOINT_VERSION,
                "model": model_name,
                "dim": dim,
                "num_users": data.num_users,
                "num_items": data.num_items,
                "state": cpu_state,
                "state_sha256": state_digest(cpu_state),
                "item_counts": torch.as_tensor(item_counts),
                "epoch": epoch,
                "optimizer": optimizer,
                "generator": generator,
                "user_shards": user_shards,
            },
            os.path.join(tmp, "model.pt"),
        )
        _write_seen(data.path, os.path.join(tmp, "seen.parquet"))
        for name in ("users.parquet", "items.parquet"):
            shutil.copyfile(os.path.join(data.path, name), os.path.join(tmp, name))
        write_json_atomic(
            os.path.join(tmp, "config.json"),
            {"train": config, "dataset": {"path": data.path, **data.manifest}},
        )
        write_json_atomic(os.path.join(tmp, "metrics.json"), metrics)
        os.chmod(tmp, 0o755)
        # A checkpoint that cannot be read never replaces one that can (the shard files of a
        # sharded one are the workers' to write).
        load_checkpoint(tmp, users=None if user_shards is None else [])
        replace_directory(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def checkpoint_dir(path: str | os.PathLike) -> str:
    """A run directory (holding checkpoint/) or a checkpoint directory → the checkpoint one."""
    path = os.fspath(path)
    inner = os.path.join(path, "checkpoint")
    return inner if os.path.isfile(os.path.join(inner, "model.pt")) else path


def is_checkpoint_dir(path: str) -> bool:
    """A directory holding a checkpoint and nothing but what this format writes into one
    (its files, user shards, the ANN cache and their temporary siblings)."""
    if not os.path.isfile(os.path.join(path, "model.pt")):
        return False
    return all(_checkpoint_owned(name) for name in os.listdir(path))


def _checkpoint_owned(name: str) -> bool:
    bare = name.lstrip(".")
    return (
        any(bare.startswith(f) for f in FILES)
        or bare.startswith("ann-hnsw")
        or (bare.startswith("users-") and ".pt" in bare)
    )


def save_target(path: str | os.PathLike) -> tuple[str, str]:
    """Where Model.save(path) writes: (the run directory, its checkpoint directory). PATH is
    a run directory, or RUN/checkpoint. Refuses (UsageError, naming what is there) anything
    that is not this format's own to replace: a file, or a directory holding anything but
    one checkpoint (and the temporary siblings of a killed save, removed here)."""
    text = os.fspath(path)
    if not text.strip():
        raise UsageError("save: give the directory to write (the path is empty)")
    path = os.path.abspath(text)
    if os.path.basename(path) == "checkpoint":
        run_dir, target = os.path.dirname(path), path
    else:
        run_dir, target = path, os.path.join(path, "checkpoint")
    if os.path.lexists(run_dir) and not os.path.isdir(run_dir):
        raise UsageError(f"save: {run_dir} exists and is not a directory")
    remove_stale_temps(run_dir, "checkpoint")
    if target != path and os.path.isdir(run_dir):
        other = sorted(
            n for n in os.listdir(run_dir) if n != "checkpoint" and not n.startswith(".checkpoint.")
        )
        if other:
            raise UsageError(
                f"save: {run_dir} holds other files ({', '.join(other[:5])}"
                f"{', ...' if len(other) > 5 else ''}); save replaces only a directory "
                "holding one checkpoint: give a new path, or RUN/checkpoint to replace a "
                "run's checkpoint alone"
            )
    if os.path.lexists(target) and not (
        os.path.isdir(target) and (not os.listdir(target) or is_checkpoint_dir(target))
    ):
        raise UsageError(f"save: {target} exists and is not a checkpoint; give a new path")
    return run_dir, target


def load_checkpoint(path: str, with_optimizer: bool = False, users=None) -> dict:
    """Read and check a checkpoint. Raises CheckpointError naming what is wrong.

    users: global user ids (sorted): state["user_emb"] then holds only their rows, in that
    order (a sharded checkpoint reads only the file holding exactly them, when one does). This
    is a restoring worker's read: the id maps and seen pairs are only counted (their Parquet
    metadata), not loaded, and come back as None."""
    missing = [f for f in FILES if not os.path.isfile(os.path.join(path, f))]
    if missing:
        raise CheckpointError(f"{path}: not a checkpoint (missing {', '.join(missing)})")
    try:
        # A subset of the users is read through a memory map: only its rows come off disk.
        blob = torch.load(
            os.path.join(path, "model.pt"),
            map_location="cpu",
            weights_only=True,
            mmap=users is not None and not with_optimizer,
        )
        with open(os.path.join(path, "config.json")) as fh:
            config = json.load(fh)
        with open(os.path.join(path, "metrics.json")) as fh:
            metrics = json.load(fh)
        tables = _tables(path, full=users is None)
        stamp = file_stamp(os.path.join(path, "model.pt"))
    except Exception as exc:  # truncated zip, bad JSON, bad Parquet: all the same to a reader
        raise CheckpointError(
            f"{path}: checkpoint is unreadable ({type(exc).__name__}: {exc})"
        ) from None
    if blob.get("format_version") not in (1, CHECKPOINT_VERSION):
        raise CheckpointError(
            f"{path}: checkpoint format {blob.get('format_version')} is not {CHECKPOINT_VERSION}"
        )
    _check_documents(path, config, metrics)
    if users is None:
        _check_integrity(path, blob)
    state = blob["state"]
    n_u, n_i, d = blob["num_users"], blob["num_items"], blob["dim"]
    if blob.get("user_shards") is not None:
        state["user_emb"] = (
            torch.zeros(0, d)
            if users is not None and len(users) == 0
            else _user_rows(path, blob, None if users is None else np.asarray(users))
        )
    elif users is not None:
        state["user_emb"] = state["user_emb"][torch.as_tensor(np.asarray(users, dtype=np.int64))]
    n_rows = n_u if users is None else len(users)
    if (
        tuple(state["user_emb"].shape) != (n_rows, d)
        or tuple(state["item_emb"].shape) != (n_i, d)
        or tables["n_users"] != n_u
        or tables["n_items"] != n_i
    ):
        raise CheckpointError(f"{path}: tensor shapes disagree with the id maps")
    if users is None:
        _check_seen(path, tables, n_u, n_i)
    if not with_optimizer:
        blob.pop("optimizer", None)
        blob.pop("generator", None)
    return {
        **blob,
        "config": config,
        "metrics": metrics,
        "user_ids": tables["user_ids"],
        "item_ids": tables["item_ids"],
        "seen_users": tables["seen_users"],
        "seen_items": tables["seen_items"],
        "path": path,
        "stamp": stamp,
    }


def file_stamp(path: str) -> tuple[int, int, int]:
    """(inode, size, mtime in ns): a file replaced or rewritten has another stamp."""
    st = os.stat(path)
    return st.st_ino, st.st_size, st.st_mtime_ns


def _check_documents(path: str, config, metrics) -> None:
    """config.json and metrics.json hold what a checkpoint writes: objects, config's `train`
    an object of options (a reader would otherwise fall back to other defaults, such as dot
    products for a cosine model)."""
    if not isinstance(config, dict) or not isinstance(config.get("train"), dict):
        raise CheckpointError(
            f"{path}: config.json is not a checkpoint's (an object with the run's train "
            f"options); it holds {type(config).__name__} {json.dumps(config)[:60]}"
        )
    if not isinstance(metrics, dict):
        raise CheckpointError(f"{path}: metrics.json is not an object")


def _check_integrity(path: str, blob: dict) -> None:
    """model.pt's (and the shard files') zip CRCs, and its parameters against the digest it
    recorded when written (checkpoints from before the digest are checked by CRC alone)."""
    _check_zip(os.path.join(path, "model.pt"))
    for entry in blob.get("user_shards") or []:
        if os.path.isfile(os.path.join(path, entry["file"])):
            _check_zip(os.path.join(path, entry["file"]))
    recorded = blob.get("state_sha256")
    if recorded is not None and state_digest(blob["state"]) != recorded:
        raise CheckpointError(f"{path}: model.pt's parameters do not match their digest")


def _check_seen(path: str, tables: dict, n_users: int, n_items: int) -> None:
    """seen.parquet's pairs index real users and items."""
    for name, values, n in (
        ("user", tables["seen_users"], n_users),
        ("item", tables["seen_items"], n_items),
    ):
        if values.size and (values.min() < 0 or values.max() >= n):
            raise CheckpointError(
                f"{path}: seen.parquet has {name} indices outside 0..{n - 1} "
                f"({int(values.min())}..{int(values.max())})"
            )


def _tables(path: str, full: bool) -> dict:
    """The id maps and seen pairs (full), or just their row counts."""
    if not full:
        pq.read_metadata(os.path.join(path, "seen.parquet"))  # readable, at least
        return {
            "n_users": pq.read_metadata(os.path.join(path, "users.parquet")).num_rows,
            "n_items": pq.read_metadata(os.path.join(path, "items.parquet")).num_rows,
            "user_ids": None,
            "item_ids": None,
            "seen_users": None,
            "seen_items": None,
        }
    user_ids = pq.read_table(os.path.join(path, "users.parquet")).column("id").to_pylist()
    item_ids = pq.read_table(os.path.join(path, "items.parquet")).column("id").to_pylist()
    seen = pq.read_table(os.path.join(path, "seen.parquet"))
    return {
        "n_users": len(user_ids),
        "n_items": len(item_ids),
        "user_ids": user_ids,
        "item_ids": item_ids,
        "seen_users": seen.column("user").to_numpy().astype(np.int64),
        "seen_items": seen.column("item").to_numpy().astype(np.int64),
    }


def resume_source(out: str, storage_path: str | None = None) -> str | None:
    """The checkpoint `--resume` continues OUT from: OUT/checkpoint, else the newest complete
    checkpoint a Ray run left under its storage (OUT/ray by default; a driver killed before
    the end never copied one to OUT/checkpoint). None: nothing to continue from."""
    final = os.path.join(out, "checkpoint")
    if os.path.isfile(os.path.join(final, "model.pt")):
        return final
    return newest_ray_checkpoint(storage_path or os.path.join(out, "ray"))


def newest_ray_checkpoint(storage: str, run: str | None = None) -> str | None:
    """The complete Ray checkpoint (every shard file present and consistent) of the highest
    epoch under Ray storage (of the Ray run named `run` only, if given), whether or not Ray's
    controller registered it; None if there is none."""
    runs = (
        [os.path.join(storage, run)]
        if run
        else [os.path.join(storage, d) for d in _listdir(storage)]
    )
    candidates = [
        os.path.join(r, name)
        for r in runs
        for name in _listdir(r)
        if name.startswith("checkpoint_")
    ]
    for path in sorted(candidates, key=_checkpoint_epoch, reverse=True):
        try:
            load_checkpoint(path)  # complete: every shard file present and consistent
        except CheckpointError:
            continue
        return path
    return None


def _listdir(path: str) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


def _checkpoint_epoch(path: str) -> tuple[int, float]:
    """A Ray checkpoint's epoch (from model.pt's header), then its age: newest first."""
    try:
        # Memory-mapped: the epoch is read, the tables are not.
        blob = torch.load(
            os.path.join(path, "model.pt"), map_location="cpu", weights_only=True, mmap=True
        )
        return int(blob.get("epoch", -1)), os.path.getmtime(path)
    except Exception:  # noqa: BLE001 - unreadable: tried last
        return -1, 0.0
