"""Load a prepared dataset directory (see trainer/prepare.py) into tensors."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass

import numpy as np
import pyarrow.parquet as pq
import torch

from pools.interactions import InteractionIndex
from trainer.data.formats import DataError
from trainer.data.prepare import FORMAT_VERSION, SPLITS, file_sha256

REQUIRED_FILES = ("manifest.json", "users.parquet", "items.parquet") + tuple(
    f"{s}.parquet" for s in SPLITS
)


def _verify_files(path: str, manifest: dict) -> None:
    """Every table has the rows the manifest counts and, where the manifest records it (data
    prepared since checksums were added), the same SHA-256: a truncated, emptied or swapped
    file is refused before training rather than trained on."""
    counts = manifest["counts"]
    expected = {f"{s}.parquet": counts[s] for s in SPLITS} | {
        "users.parquet": counts["users"],
        "items.parquet": counts["items"],
    }
    recorded = manifest.get("files", {})
    for name, rows in expected.items():
        file = os.path.join(path, name)
        try:
            found = pq.read_metadata(file).num_rows
        except Exception as exc:  # noqa: BLE001 - truncated or not Parquet at all
            raise DataError(
                f"{os.path.basename(path)}/{name}: damaged ({type(exc).__name__}); "
                "prepare the dataset again"
            ) from None
        if found != rows:
            raise DataError(
                f"{os.path.basename(path)}/{name}: {found} rows, the manifest says "
                f"{rows}; prepare the dataset again"
            )
        if name in recorded and file_sha256(file) != recorded[name]["sha256"]:
            raise DataError(
                f"{os.path.basename(path)}/{name}: checksum differs from the "
                "manifest's; prepare the dataset again"
            )


def _check_manifest_shape(path: str, manifest) -> None:
    """A manifest is an object whose counts are non-negative integers per table."""
    counts = manifest.get("counts") if isinstance(manifest, dict) else None
    needed = ("users", "items", *SPLITS)
    if not isinstance(counts, dict) or not all(
        type(counts.get(k)) is int and counts[k] >= 0 for k in needed
    ):
        raise DataError(
            f"{path}/manifest.json: not a manifest (it needs an object with "
            f"integer counts of {', '.join(needed)}); prepare the dataset again"
        )


@dataclass
class Split:
    users: np.ndarray  # int64 [nnz]
    items: np.ndarray  # int64 [nnz]
    ratings: np.ndarray | None = None  # float32 [nnz]; None: the dataset has no ratings


_BATCH_ROWS = 1 << 20  # rows per streamed Parquet batch: bounds a shard-local read's memory


def _stream_columns(file: str, columns: list[str]):
    """The file's columns as numpy arrays (ids int64, a rating float32), one record batch at
    a time."""
    for batch in pq.ParquetFile(file).iter_batches(batch_size=_BATCH_ROWS, columns=columns):
        yield [
            batch.column(c).to_numpy().astype(np.float32 if c == "rating" else np.int64)
            for c in columns
        ]


def _read_split(file: str, users: np.ndarray | None, num_users: int) -> Split:
    """A split's pairs (and ratings, where it has them); with `users` (sorted global ids)
    only theirs, streamed so memory holds one batch plus the kept rows, not the whole split."""
    columns = ["user", "item"]
    if "rating" in pq.read_schema(file).names:
        columns.append("rating")
    kept: list[list[np.ndarray]] = [[] for _ in columns]
    wanted = None
    if users is not None:
        wanted = np.zeros(num_users, dtype=bool)
        wanted[users] = True
    for arrays in _stream_columns(file, columns):
        if wanted is not None:
            u = arrays[0]
            keep = wanted[u.clip(0, num_users - 1)] & (u >= 0) & (u < num_users)
            arrays = [a[keep] for a in arrays]
        for parts, a in zip(kept, arrays):
            parts.append(a)
    dtypes = (np.int64, np.int64, np.float32)
    joined = [
        np.concatenate(parts) if parts else np.zeros(0, dtype) for parts, dtype in zip(kept, dtypes)
    ]
    return Split(joined[0], joined[1], joined[2] if len(columns) == 3 else None)


def dataset_size(path: str) -> tuple[int, int]:
    """(users, items) from the manifest, without reading the tables."""
    try:
        with open(os.path.join(os.path.abspath(path), "manifest.json")) as fh:
            manifest = json.load(fh)
        _check_manifest_shape(path, manifest)
        return int(manifest["counts"]["users"]), int(manifest["counts"]["items"])
    except (OSError, KeyError, ValueError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"{path}: not a prepared dataset ({exc})") from None


def count_train(
    path: str, num_users: int, num_items: int, splits: tuple[str, ...] = ("train",)
) -> tuple[np.ndarray, np.ndarray]:
    """(train pairs per user [num_users], per item [num_items]), streamed: what a worker needs
    about the whole train split (its shard plan, the popularity proposal) without holding it.
    `splits` ("train", "valid" for a refit) are the ones trained on."""
    users, items = np.zeros(num_users, np.int64), np.zeros(num_items, np.int64)
    for split in splits:
        for u, i in _stream_columns(os.path.join(path, f"{split}.parquet"), ["user", "item"]):
            users += np.bincount(u, minlength=num_users)[:num_users]
            items += np.bincount(i, minlength=num_items)[:num_items]
    return users, items


@dataclass
class PreparedData:
    path: str
    manifest: dict
    num_users: int
    num_items: int
    splits: dict[str, Split]
    train_item_counts: np.ndarray | None = None
    """Set when `splits` hold only a shard's pairs: the whole train split's item counts."""

    @classmethod
    def load(
        cls, path: str, users: np.ndarray | None = None, item_counts: np.ndarray | None = None
    ) -> PreparedData:
        """The dataset, checked against its manifest. With `users` (a Ray worker's shard),
        `splits` hold only their pairs and memory grows with the shard, not the dataset;
        item counts are still the whole train split's (`item_counts`, if the caller has them)."""
        path = os.path.abspath(path)
        missing = [f for f in REQUIRED_FILES if not os.path.isfile(os.path.join(path, f))]
        if missing:
            raise DataError(
                f"{path}: not a prepared dataset (missing {', '.join(missing)}); "
                "make one with `python trainer/prepare.py --input FILE --out DIR`"
            )
        try:
            with open(os.path.join(path, "manifest.json")) as fh:
                manifest = json.load(fh)
            _check_manifest_shape(path, manifest)
            if manifest.get("format_version") != FORMAT_VERSION:
                raise DataError(
                    f"{path}: prepared with format {manifest.get('format_version')}, "
                    f"this version reads {FORMAT_VERSION}; prepare it again"
                )
            counts = manifest["counts"]
            _verify_files(path, manifest)
            n_users = int(counts["users"])
            splits = {
                name: _read_split(os.path.join(path, f"{name}.parquet"), users, n_users)
                for name in SPLITS
            }
        except (OSError, KeyError, ValueError) as exc:
            if isinstance(exc, DataError):
                raise
            raise DataError(f"{path}: prepared dataset is unreadable ({exc})") from None
        data = cls(path, manifest, int(counts["users"]), int(counts["items"]), splits)
        if users is not None:
            data.train_item_counts = (
                item_counts
                if item_counts is not None
                else count_train(path, data.num_users, data.num_items)[1]
            )
        for name, split in splits.items():
            if split.users.size and (
                split.users.max() >= data.num_users
                or split.items.max() >= data.num_items
                or min(split.users.min(), split.items.min()) < 0
            ):
                raise DataError(f"{path}: {name}.parquet has indices outside the manifest's counts")
        if splits["train"].users.size == 0 and users is None:
            raise DataError(f"{path}: the train split is empty")
        return data

    def with_validation_in_train(self, item_counts: np.ndarray | None = None) -> PreparedData:
        """The same dataset with the validation pairs moved into train (a refit's data). A
        shard's data (a Ray worker's) passes the whole train + validation item counts."""
        train, valid = self.splits["train"], self.splits["valid"]
        ratings = None
        if train.ratings is not None and valid.ratings is not None:
            ratings = np.concatenate([train.ratings, valid.ratings])
        merged = Split(
            np.concatenate([train.users, valid.users]),
            np.concatenate([train.items, valid.items]),
            ratings,
        )
        empty = Split(np.zeros(0, np.int64), np.zeros(0, np.int64))
        return dataclasses.replace(
            self,
            splits={**self.splits, "train": merged, "valid": empty},
            train_item_counts=item_counts,
        )

    @property
    def has_ratings(self) -> bool:
        """Whether the splits carry ratings (the input had a rating column)."""
        return self.splits["train"].ratings is not None

    def item_counts(self) -> np.ndarray:
        """Train interactions per item, [num_items] (the whole train split's, also when only a
        shard's pairs are loaded)."""
        if self.train_item_counts is not None:
            return self.train_item_counts
        return np.bincount(self.splits["train"].items, minlength=self.num_items)

    def index(self, split: str, device, users: np.ndarray | None = None) -> InteractionIndex:
        """The split as an InteractionIndex; `users` (sorted global ids) restricts it to a shard
        whose local user index is the position in `users`."""
        s = self.splits[split]
        u, i, n_users = s.users, s.items, self.num_users
        if users is not None:
            local = np.full(self.num_users, -1, dtype=np.int64)
            local[users] = np.arange(users.size)
            keep = local[u] >= 0
            u, i, n_users = local[u[keep]], i[keep], users.size
        return InteractionIndex(
            torch.as_tensor(u, device=device),
            torch.as_tensor(i, device=device),
            n_users,
            self.num_items,
        )

    def ratings(self, split: str, users: np.ndarray | None = None) -> np.ndarray | None:
        """The split's ratings [nnz] in the order of `index(split, device, users)`'s pairs
        (sorted by user, then item); None where the dataset has none."""
        s = self.splits[split]
        if s.ratings is None:
            return None
        u, i, r = s.users, s.items, s.ratings
        if users is not None:
            keep = np.isin(u, users)
            u, i, r = u[keep], i[keep], r[keep]
        # Global and shard-local user indices sort alike (shards are sorted global ids).
        return r[np.lexsort((i, u))]

    def ids(self, kind: str) -> list[str]:
        """External ids by index, kind 'users' or 'items'."""
        table = pq.read_table(os.path.join(self.path, f"{kind}.parquet"))
        return table.column("id").to_pylist()
