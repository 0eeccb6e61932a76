"""Readers for interaction files. Each returns `RawInteractions` with string ids.

Formats: RecBole atomic `.inter` (plain or .gz), CSV/TSV/Parquet with user,item[,rating]
[,timestamp] columns, LightGCN text (`user item item ...` per line), and a MATLAB `.mat`
users×items sparse matrix under key `data`.
"""

from __future__ import annotations

import csv
import gzip
import math
import os
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from trainer.errors import UsageError

Format = Literal["auto", "inter", "csv", "tsv", "parquet", "lightgcn", "mat"]

USER_COLUMNS = ("user", "user_id", "userid", "uid")
ITEM_COLUMNS = ("item", "item_id", "itemid", "iid", "movie_id", "movieid")
RATING_COLUMNS = ("rating", "score", "value")

MAX_ID_CHARS = 1000
"""The longest user or item id, in characters: prepare refuses longer ones, and the service's
requests take no longer ones."""


class DataError(UsageError):
    """Input that cannot be prepared; the message names the file and where."""


@dataclass
class RawInteractions:
    users: pa.Array  # string
    items: pa.Array  # string
    ratings: np.ndarray | None  # float64, or None when the input has no rating


def detect_format(path: str) -> str:
    name = os.path.basename(path).lower()
    name = name[:-3] if name.endswith(".gz") else name
    for suffix, fmt in (
        (".inter", "inter"),
        (".csv", "csv"),
        (".tsv", "tsv"),
        (".parquet", "parquet"),
        (".txt", "lightgcn"),
        (".mat", "mat"),
    ):
        if name.endswith(suffix):
            return fmt
    raise DataError(f"{path}: cannot tell the format from the name; pass --format")


def read_interactions(path: str, fmt: str = "auto") -> RawInteractions:
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file")
    if os.path.getsize(path) == 0:
        raise DataError(f"{path}: the file is empty")
    fmt = detect_format(path) if fmt == "auto" else fmt
    reader: Callable[..., RawInteractions] = {  # type: ignore[assignment]
        "inter": _read_inter,
        "csv": _read_delimited,
        "tsv": _read_delimited,
        "parquet": _read_parquet,
        "lightgcn": read_lightgcn,
        "mat": _read_mat,
    }[fmt]
    try:
        raw = reader(path, fmt) if fmt in ("csv", "tsv") else reader(path)
    except (EOFError, OSError, zlib.error) as exc:  # a truncated .gz, an unreadable file
        why = (
            "the compressed stream ends early"
            if isinstance(exc, EOFError)
            else (getattr(exc, "strerror", None) or str(exc))
        )
        raise DataError(f"{os.path.basename(path)}: cannot be read ({why})") from None
    if len(raw.users) == 0:
        raise DataError(f"{path}: no interactions in the file")
    return raw


# -- delimited text (.inter, .csv, .tsv) -----------------------------------------------------


def _open_text(path: str):
    """A text file, a UTF-8 byte-order mark dropped (spreadsheets write one)."""
    opener = gzip.open if path.endswith(".gz") else open
    return opener(path, "rt", encoding="utf-8-sig", errors="replace", newline="")


def _first_bad_line(path: str, delimiter: str, n_fields: int, rating_field: int | None):
    """Line number and reason of the first malformed data line (only run after a failure)."""
    with _open_text(path) as fh:
        for number, line in enumerate(fh, start=1):
            line = line.rstrip("\r\n")
            if number == 1 or not line:
                continue
            fields = line.split(delimiter)
            if len(fields) != n_fields:
                return number, f"expected {n_fields} fields, found {len(fields)}"
            if rating_field is not None:
                try:
                    value = float(fields[rating_field])
                except ValueError:
                    return number, f"rating {fields[rating_field]!r} is not a number"
                if not math.isfinite(value):
                    return number, f"rating {fields[rating_field]!r} is not finite"
    return None, "unreadable"


def _read_table(path: str, delimiter: str, quoted: bool = False) -> pa.Table:
    """Every column as strings (ids such as 007 stay as written); `quoted`: fields may be
    quoted ("u0"), and the quotes are not part of the value."""
    header = _header(path, delimiter, quoted)
    try:
        return pacsv.read_csv(
            path,
            parse_options=pacsv.ParseOptions(
                delimiter=delimiter, quote_char='"' if quoted else False
            ),
            convert_options=pacsv.ConvertOptions(
                column_types={name: pa.string() for name in header}
            ),
        )
    except pa.ArrowInvalid as exc:
        line, why = _first_bad_line(path, delimiter, len(header), None)
        where = f"line {line}" if line else "parse error"
        raise DataError(f"{path}: {where}: {why} ({exc})") from None


def _header(path: str, delimiter: str, quoted: bool = False) -> list[str]:
    with _open_text(path) as fh:
        line = fh.readline().rstrip("\r\n")
    if quoted:
        return next(csv.reader([line], delimiter=delimiter))
    return line.split(delimiter)


def _pick(names: list[str], wanted: tuple[str, ...], path: str, what: str, required: bool):
    lowered = [n.lower() for n in names]
    for w in wanted:
        if w in lowered:
            return lowered.index(w)
    if required:
        raise DataError(
            f"{path}: no {what} column; header has {names}, expected one of {list(wanted)}"
        )
    return None


def _columns_to_raw(path, table: pa.Table, names, delimiter) -> RawInteractions:
    ui = _pick(names, USER_COLUMNS, path, "user", True)
    ii = _pick(names, ITEM_COLUMNS, path, "item", True)
    ri = _pick(names, RATING_COLUMNS, path, "rating", False)
    users = table.column(ui).combine_chunks().cast(pa.string())
    items = table.column(ii).combine_chunks().cast(pa.string())
    for col, what in ((users, "user"), (items, "item")):
        if col.null_count or pc.any(pc.equal(pc.utf8_length(col), 0)).as_py():
            line = _first_empty(col)
            raise DataError(f"{path}: row {line + 1} (line {line + 2}): empty {what} id")
    ratings = None
    if ri is not None:
        ratings = _parse_ratings(path, table.column(ri).combine_chunks(), names, delimiter, ri)
    return RawInteractions(users, items, ratings)


def _first_empty(col: pa.Array) -> int:
    empty = pc.fill_null(pc.equal(pc.utf8_length(col), 0), False)  # null length: not empty
    bad = pc.or_(pc.is_null(col), empty)
    return int(np.flatnonzero(bad.to_numpy(zero_copy_only=False))[0])


def _parse_ratings(path, col: pa.Array, names, delimiter, index) -> np.ndarray:
    try:
        values = pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False)
        if np.isfinite(values).all():  # NaN and ±inf would pass or fail --min-rating arbitrarily
            return values
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    if delimiter is not None:
        line, why = _first_bad_line(path, delimiter, len(names), index)
        if line is not None:
            raise DataError(f"{path}: line {line}, column {names[index]!r}: {why}")
    strings = col.cast(pa.string()).to_pylist()
    for row, s in enumerate(strings):
        try:
            if s is None or not math.isfinite(float(s)):
                raise ValueError
        except ValueError:
            raise DataError(
                f"{path}: row {row + 1}, column {names[index]!r}: "
                f"rating {s!r} is not a finite number"
            ) from None
    raise DataError(f"{path}: column {names[index]!r}: ratings are not numbers")


def _read_inter(path: str) -> RawInteractions:
    """RecBole atomic file: tab-separated, header fields `name:type` (e.g. user_id:token)."""
    header = _header(path, "\t")
    names = [h.split(":", 1)[0].strip() for h in header]
    table = _read_table(path, "\t")
    return _columns_to_raw(path, table, names, "\t")


def _read_delimited(path: str, fmt: str) -> RawInteractions:
    delimiter = "\t" if fmt == "tsv" else ","
    header = [h.strip() for h in _header(path, delimiter, quoted=True)]
    table = _read_table(path, delimiter, quoted=True)
    return _columns_to_raw(path, table, header, delimiter)


def _read_parquet(path: str) -> RawInteractions:
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"{path}: not a readable Parquet file ({exc})") from None
    names = table.column_names
    return _columns_to_raw(path, table, names, None)


# -- LightGCN text ----------------------------------------------------------------------------


def read_lightgcn(path: str) -> RawInteractions:
    """One line per user: `user item item ...`, whitespace-separated integer ids."""
    users, items = [], []
    with _open_text(path) as fh:
        for number, line in enumerate(fh, start=1):
            fields = line.split()
            if not fields:
                continue
            for f in fields:
                if not f.isdigit():
                    raise DataError(
                        f"{path}: line {number}: id {f!r} is not a non-negative integer"
                    )
            users.extend([fields[0]] * (len(fields) - 1))
            items.extend(fields[1:])
    return RawInteractions(pa.array(users, pa.string()), pa.array(items, pa.string()), None)


# -- MATLAB .mat ------------------------------------------------------------------------------


def _read_mat(path: str) -> RawInteractions:
    import scipy.io
    import scipy.sparse

    try:
        content = scipy.io.loadmat(path)
    except Exception as exc:  # scipy raises several types for a bad file
        raise DataError(f"{path}: not a readable MATLAB file ({exc})") from None
    if "data" not in content:
        keys = sorted(k for k in content if not k.startswith("__"))
        raise DataError(f"{path}: no 'data' matrix (keys: {keys})")
    return matrix_interactions(content["data"], path)


def matrix_interactions(matrix, source: str) -> RawInteractions:
    """A users × items matrix (scipy sparse or dense) as interactions: each non-zero entry,
    its row and column numbers as ids and its value as the rating. Negative and NaN entries
    are refused: they would train as positives."""
    import scipy.sparse

    if not scipy.sparse.issparse(matrix):
        matrix = scipy.sparse.coo_matrix(np.asarray(matrix, dtype=np.float64))
    coo = matrix.tocoo()
    vals = coo.data.astype(np.float64)
    bad = ~np.isfinite(vals) | (vals < 0)
    if bad.any():
        at = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{source}: entry ({coo.row[at]}, {coo.col[at]}) is {vals[at]}; implicit feedback "
            "is counts or weights ≥ 0 (negative and NaN entries would train as positives)"
        )
    keep = vals != 0
    if not keep.any():
        raise DataError(f"{source}: no non-zero entries")
    rows, cols = coo.row[keep], coo.col[keep]
    return RawInteractions(pa.array(rows.astype(str)), pa.array(cols.astype(str)), vals[keep])


def frame_interactions(df) -> RawInteractions:
    """A pandas DataFrame with columns user, item[, rating] as interactions, refused where a
    file would be: missing columns or values, empty ids, non-finite ratings; and a column
    that mixes types (1 and "1" would become one id)."""
    import pandas as pd

    missing = [c for c in ("user", "item") if c not in df.columns]
    if missing:
        raise DataError(
            f"the DataFrame has no column(s) {missing}; it needs user and item "
            f"(and optionally rating); it has {list(df.columns)[:10]}"
        )
    if len(df) == 0:
        raise DataError("the DataFrame has no rows")
    if df[["user", "item"]].isna().to_numpy().any():
        raise DataError("the DataFrame's user or item column has missing values")
    for column in ("user", "item"):
        kind = pd.api.types.infer_dtype(df[column], skipna=False)
        if kind.startswith("mixed"):
            types = sorted({type(v).__name__ for v in df[column]})
            raise DataError(
                f"the DataFrame's {column} column mixes types ({', '.join(types)}): ids such "
                f"as 1 and '1' would become one; convert it first (df[{column!r}].astype(str))"
            )
    users = pa.array(df["user"].astype(str).to_numpy(), pa.string())
    items = pa.array(df["item"].astype(str).to_numpy(), pa.string())
    for col, what in ((users, "user"), (items, "item")):
        if pc.any(pc.equal(pc.utf8_length(col), 0)).as_py():
            raise DataError(f"the DataFrame: row {_first_empty(col)}: empty {what} id")
    ratings = None
    if "rating" in df.columns:
        try:
            ratings = df["rating"].to_numpy(dtype=np.float64)
        except (TypeError, ValueError):
            raise DataError("the DataFrame's rating column is not numbers") from None
        if not np.isfinite(ratings).all():
            at = int(np.flatnonzero(~np.isfinite(ratings))[0])
            raise DataError(f"the DataFrame: row {at}: rating {ratings[at]} is not finite")
    return RawInteractions(users, items, ratings)
