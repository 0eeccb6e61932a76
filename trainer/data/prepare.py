"""Prepare interactions for training: filter, k-core, split, write Parquet + id maps + manifest.

    python trainer/prepare.py --input ml-1m.inter.gz --out data/ml-1m --min-rating 4
    python trainer/prepare.py --synthetic users=3000,items=2000 --out data/synth

Output directory (written to a temporary sibling, then renamed, so a failure leaves nothing):
    train.parquet, valid.parquet, test.parquet  columns user, item (int32 indices), sorted;
                                                rating (float32) where the input has one
    users.parquet, items.parquet                columns index (int32), id (string)
    manifest.json                               counts, options, seed, source checksum
Same input, options and seed ⇒ byte-identical files.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from trainer.data.formats import (
    MAX_ID_CHARS,
    DataError,
    RawInteractions,
    frame_interactions,
    read_interactions,
)
from trainer.data.synthetic import SyntheticSpec, generate
from trainer.errors import UsageError, error_line, is_usage_error
from trainer.outputs.atomic import place_directory, replace_directory

FORMAT_VERSION = 1
SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class PrepareOptions:
    min_rating: float | None = None
    """Keep interactions with rating ≥ this (needs a rating column); None keeps all."""
    kcore: int = 5
    """Drop users and items with fewer interactions, repeated until nothing changes (paper: 5)."""
    test_ratio: float = 0.2
    """Share of each user's items held out for test (paper: 20%)."""
    valid_ratio: float = 0.1
    """Share of each user's remaining train items held out for validation (paper: 10%)."""
    seed: int = 0
    """Seed of the random split."""

    def check(self) -> None:
        if not 0.0 <= self.test_ratio < 1.0 or not 0.0 <= self.valid_ratio < 1.0:
            raise DataError("--test-ratio and --valid-ratio must be in [0, 1)")
        if self.kcore < 0:
            raise DataError("--kcore must be ≥ 0")


def _encode(values: pa.Array) -> tuple[np.ndarray, pa.Array]:
    """String ids → (int64 codes into the sorted unique ids, sorted unique ids)."""
    unique = pc.unique(values)
    unique = unique.take(pc.sort_indices(unique))
    return pc.index_in(values, value_set=unique).to_numpy().astype(np.int64), unique


def _kcore(users: np.ndarray, items: np.ndarray, k: int) -> np.ndarray:
    """Mask of pairs surviving iterated k-core filtering (fixed point)."""
    keep = np.ones(users.size, dtype=bool)
    if k <= 1:
        return keep
    while True:
        u_deg = np.bincount(users[keep], minlength=users.max() + 1)
        i_deg = np.bincount(items[keep], minlength=items.max() + 1)
        new = keep & (u_deg[users] >= k) & (i_deg[items] >= k)
        if new.sum() == keep.sum():
            return new
        keep = new


def _split(users: np.ndarray, num_users: int, opts: PrepareOptions, rng) -> np.ndarray:
    """Per-user random split: 0 = train, 1 = valid, 2 = test. users must be sorted."""
    deg = np.bincount(users, minlength=num_users)
    n_test = np.floor(opts.test_ratio * deg + 0.5).astype(np.int64)
    n_test = np.where(deg >= 2, np.clip(n_test, 1 if opts.test_ratio > 0 else 0, deg - 1), 0)
    n_valid = np.floor(opts.valid_ratio * (deg - n_test) + 0.5).astype(np.int64)
    n_valid = np.minimum(n_valid, np.maximum(deg - n_test - 1, 0))
    order = np.lexsort((rng.random(users.size), users))  # random order within each user
    start = np.concatenate([[0], np.cumsum(deg)[:-1]])
    position = np.empty(users.size, dtype=np.int64)
    position[order] = np.arange(users.size) - start[users[order]]
    part = np.zeros(users.size, dtype=np.int8)
    part[position < n_test[users] + n_valid[users]] = 1
    part[position < n_test[users]] = 2
    return part


def _check_id_lengths(source: str, ids: pa.Array, kind: str) -> None:
    """Ids longer than the service accepts would be trained on and never served."""
    if len(ids) == 0:
        return
    lengths = pc.utf8_length(ids.cast(pa.string()))
    longest = pc.max(lengths).as_py()
    if longest > MAX_ID_CHARS:
        at = pc.index(lengths, longest).as_py()
        raise DataError(
            f"{source}: a {kind} id has {longest} characters (the limit is "
            f"{MAX_ID_CHARS}): {str(ids[at].as_py())[:40]!r}..."
        )


def _check_ratings(source: str, kept: np.ndarray | None) -> None:
    """Ratings that reach training (those the rating filter kept) must be finite and ≥ 0: a
    negative one (a dislike) would train as a positive."""
    if kept is None:
        return
    bad = ~np.isfinite(kept) | (kept < 0)
    if bad.any():
        raise DataError(
            f"{source}: rating {kept[np.flatnonzero(bad)[0]]} would train as a positive; "
            "ratings must be finite and ≥ 0: drop those rows, or give a minimum rating "
            "(--min-rating) that leaves them out"
        )


def prepare_arrays(
    raw: RawInteractions,
    opts: PrepareOptions,
    source: str,
    given_test: RawInteractions | None = None,
) -> dict:
    """Filter, index, split. Returns tables and manifest fields; writes nothing. Where the
    input has ratings, every split's table keeps them (`rating`, float32: a pair given twice
    sums its ratings, as a scipy COO matrix does; a given test file without ratings gives NaN)."""
    opts.check()
    n_raw = len(raw.users)
    users_s, items_s, ratings = raw.users, raw.items, raw.ratings
    if opts.min_rating is not None:
        if ratings is None:
            raise DataError(f"{source}: --min-rating given but the input has no rating column")
        keep = ratings >= opts.min_rating
        users_s, items_s = users_s.filter(pa.array(keep)), items_s.filter(pa.array(keep))
        ratings = ratings[keep]
    n_rated = len(users_s)
    _check_ratings(source, ratings)
    u, user_ids = _encode(users_s)
    i, item_ids = _encode(items_s)
    _check_id_lengths(source, user_ids, "user")
    _check_id_lengths(source, item_ids, "item")
    if u.size == 0:
        raise DataError(
            f"{source}: nothing left after the rating filter (--min-rating {opts.min_rating})"
        )
    u, i, r = _unique_pairs(u, i, ratings, len(item_ids))
    keep = _kcore(u, i, opts.kcore)
    u, i, r = u[keep], i[keep], None if r is None else r[keep]
    if u.size == 0:
        raise DataError(f"{source}: nothing left after {opts.kcore}-core filtering")
    # Re-index the survivors; sorted ids stay sorted, so indices follow the ids' order.
    kept_users, u = np.unique(u, return_inverse=True)
    kept_items, i = np.unique(i, return_inverse=True)
    user_ids, item_ids = user_ids.take(pa.array(kept_users)), item_ids.take(pa.array(kept_items))
    rng = np.random.default_rng(opts.seed)
    dropped_test = 0
    if given_test is None:
        part = _split(u, len(user_ids), opts, rng)
    else:
        no_test = PrepareOptions(**{**asdict(opts), "test_ratio": 0.0})
        part = _split(u, len(user_ids), no_test, rng)
        test_u, test_i, test_r, dropped_test = _given_test_pairs(
            given_test, user_ids, item_ids, u * len(item_ids) + i
        )
        u, i = np.concatenate([u, test_u]), np.concatenate([i, test_i])
        if r is not None:
            r = np.concatenate([r, test_r if test_r is not None else np.full(test_u.size, np.nan)])
        part = np.concatenate([part, np.full(test_u.size, 2, dtype=np.int8)])
    tables = _split_tables(u, i, r, part)
    counts = {
        "raw_rows": n_raw,
        "after_rating_filter": n_rated,
        "after_kcore": int(u.size),
        "users": len(user_ids),
        "items": len(item_ids),
        **{name: tables[name].num_rows for name in SPLITS},
        "given_test_pairs_dropped": dropped_test,
    }
    return {"tables": tables, "user_ids": user_ids, "item_ids": item_ids, "counts": counts}


def _split_tables(u: np.ndarray, i: np.ndarray, r: np.ndarray | None, part: np.ndarray) -> dict:
    """One table per split (`part` 0, 1, 2), its pairs sorted by (user, item)."""
    tables = {}
    for code, name in enumerate(SPLITS):
        sel = part == code
        order = np.lexsort((i[sel], u[sel]))
        columns = {
            "user": pa.array(u[sel][order].astype(np.int32)),
            "item": pa.array(i[sel][order].astype(np.int32)),
        }
        if r is not None:
            columns["rating"] = pa.array(r[sel][order].astype(np.float32))
        tables[name] = pa.table(columns)
    return tables


def _unique_pairs(u: np.ndarray, i: np.ndarray, ratings: np.ndarray | None, num_items: int):
    """(users, items, ratings) deduplicated and sorted by (user, item); a repeated pair's
    ratings summed (None stays None)."""
    pairs, inverse = np.unique(u * num_items + i, return_inverse=True)
    summed = None
    if ratings is not None:
        summed = np.bincount(inverse.ravel(), weights=ratings, minlength=pairs.size)
    return pairs // num_items, pairs % num_items, summed


def _given_test_pairs(given: RawInteractions, user_ids, item_ids, train_keys: np.ndarray):
    """A given test file's pairs among the known users and items and not in train: (users,
    items, ratings or None, rows dropped as unknown)."""
    test_u = pc.index_in(given.users, value_set=user_ids).to_numpy(zero_copy_only=False)
    test_i = pc.index_in(given.items, value_set=item_ids).to_numpy(zero_copy_only=False)
    known = ~(np.isnan(test_u.astype(float)) | np.isnan(test_i.astype(float)))
    ratings = None if given.ratings is None else given.ratings[known]
    u, i, r = _unique_pairs(
        test_u[known].astype(np.int64), test_i[known].astype(np.int64), ratings, len(item_ids)
    )
    fresh = ~np.isin(u * len(item_ids) + i, train_keys)
    return u[fresh], i[fresh], None if r is None else r[fresh], int((~known).sum())


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_out(out: str, overwrite: bool, inputs: tuple[str, ...] = ()) -> None:
    """Refuse an --out that is a file, holds something without --overwrite, or that
    --overwrite would wrongly delete: a directory that is not a prepared dataset, or one that
    is or holds an input file."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise DataError(f"{out}: exists and is not a directory")
    if not os.path.exists(out) or not os.listdir(out):
        return
    if not overwrite:
        raise DataError(f"{out}: exists and is not empty; pass --overwrite to replace it")
    real = os.path.realpath(out)
    for path in inputs:
        if os.path.commonpath([real, os.path.realpath(path)]) == real:
            raise DataError(
                f"{out}: holds the input {os.path.basename(path)}; --overwrite "
                "would delete it. Write the dataset somewhere else"
            )
    if not os.path.isfile(os.path.join(out, "manifest.json")):
        raise DataError(f"{out}: is not a prepared dataset; --overwrite only replaces one")


def write_prepared(
    out: str, result: dict, manifest: dict, overwrite: bool = False, inputs: tuple[str, ...] = ()
) -> dict:
    """Write into a temporary sibling directory, then rename over `out` (without
    `overwrite`, only if nothing has appeared there meanwhile). Returns the manifest as
    written (with each file's rows and SHA-256)."""
    out = os.path.abspath(out)
    check_out(out, overwrite, inputs)
    parent = os.path.dirname(out)
    try:
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.", dir=parent)
    except OSError as exc:
        raise DataError(f"{out}: cannot write there ({exc.strerror or exc})") from None
    os.chmod(tmp, 0o755)
    try:
        for name, table in result["tables"].items():
            pq.write_table(table, os.path.join(tmp, f"{name}.parquet"))
        for name, ids in (("users", result["user_ids"]), ("items", result["item_ids"])):
            pq.write_table(
                pa.table(
                    {
                        "index": pa.array(np.arange(len(ids), dtype=np.int32)),
                        "id": ids.cast(pa.string()),
                    }
                ),
                os.path.join(tmp, f"{name}.parquet"),
            )
        # Rows and SHA-256 of every table: PreparedData.load checks them before training.
        manifest = {
            **manifest,
            "ratings": "rating" in result["tables"]["train"].column_names,
            "files": {
                name: {
                    "rows": pq.read_metadata(os.path.join(tmp, name)).num_rows,
                    "sha256": file_sha256(os.path.join(tmp, name)),
                }
                for name in sorted(f for f in os.listdir(tmp) if f.endswith(".parquet"))
            },
        }
        with open(os.path.join(tmp, "manifest.json"), "w") as fh:
            json.dump(manifest, fh, indent=2, sort_keys=True)
            fh.write("\n")
        if overwrite:
            replace_directory(tmp, out)
        else:
            place_directory(tmp, out)
    except FileExistsError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataError(
            f"{out}: another run wrote it first; pass --overwrite to replace it"
        ) from None
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataError(f"{out}: cannot write there ({exc.strerror or exc})") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def prepare(
    out: str,
    opts: PrepareOptions,
    input_path: str | None = None,
    fmt: str = "auto",
    test_path: str | None = None,
    synthetic: str | None = None,
    overwrite: bool = False,
) -> dict:
    """Read, prepare and write one dataset. Returns the manifest."""
    if (input_path is None) == (synthetic is None):
        raise DataError("give exactly one of --input or --synthetic")
    inputs = tuple(p for p in (input_path, test_path) if p)
    check_out(os.path.abspath(out), overwrite, inputs)  # before the input is read
    if synthetic is not None:
        spec = SyntheticSpec.parse(synthetic)
        raw, source = generate(spec), {"synthetic": spec.describe()}
        given_test = None
    else:
        assert input_path is not None  # exactly one of the two, checked above
        raw = read_interactions(input_path, fmt)
        given_test = (
            read_interactions(test_path, "lightgcn" if fmt == "lightgcn" else "auto")
            if test_path
            else None
        )
        source = {"path": os.path.basename(input_path), "sha256": file_sha256(input_path)}
        if test_path:
            source["test_path"] = os.path.basename(test_path)
            source["test_sha256"] = file_sha256(test_path)
    result = prepare_arrays(raw, opts, input_path or "synthetic", given_test)
    manifest = {
        "format_version": FORMAT_VERSION,
        "source": source,
        "options": asdict(opts),
        "counts": result["counts"],
        "split": "given test file" if given_test else "random per user",
    }
    return write_prepared(out, result, manifest, overwrite, inputs)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--input", help="interactions file (.inter[.gz], .csv, .tsv, .parquet, .txt, .mat)"
    )
    src.add_argument(
        "--synthetic", help="generate data instead: users=U,items=I,dim=D,mean=M,seed=S,..."
    )
    ap.add_argument("--test-input", help="LightGCN-style test file kept as the test split")
    ap.add_argument(
        "--format",
        default="auto",
        choices=["auto", "inter", "csv", "tsv", "parquet", "lightgcn", "mat"],
    )
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--min-rating", type=float, default=None)
    ap.add_argument("--kcore", type=int, default=5)
    ap.add_argument("--test-ratio", type=float, default=0.2)
    ap.add_argument("--valid-ratio", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    args = ap.parse_args(argv)
    opts = PrepareOptions(args.min_rating, args.kcore, args.test_ratio, args.valid_ratio, args.seed)
    try:
        manifest = prepare(
            args.out, opts, args.input, args.format, args.test_input, args.synthetic, args.overwrite
        )
    except Exception as exc:  # bad input or a refused write: one line; bugs keep a traceback
        if not is_usage_error(exc):
            raise
        print(f"prepare: error: {error_line(exc)}", file=sys.stderr)
        return 2
    print(json.dumps(manifest["counts"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())


def split_frame(df, test_ratio: float = 0.2, seed: int = 0):
    """(train, test): a DataFrame of interactions (user, item, …) split per user at random, as
    `adasir prepare` splits: `test_ratio` of each user's rows (at least one, where the user has
    two or more; none of a user's only row) go to test. Rows keep their columns and index."""
    if not 0.0 < test_ratio < 1.0:
        raise UsageError(f"test_ratio {test_ratio}: give a share between 0 and 1")
    raw = frame_interactions(df)
    codes, _ = _encode(raw.users)
    order = np.argsort(codes, kind="stable")
    opts = PrepareOptions(kcore=0, test_ratio=test_ratio, valid_ratio=0.0, seed=seed)
    part_sorted = _split(codes[order], int(codes.max()) + 1, opts, np.random.default_rng(seed))
    part = np.empty_like(part_sorted)
    part[order] = part_sorted
    return df[part != 2], df[part == 2]
