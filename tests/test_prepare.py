"""Loaders for every format, their errors, atomic output and deterministic splits."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.io
import scipy.sparse
from conftest import ROOT, SHARED_DATA

from trainer.data.dataset import PreparedData
from trainer.data.formats import DataError, read_interactions
from trainer.data.prepare import PrepareOptions, prepare

ROWS = [
    (f"u{u}", f"movie {i}, part {i % 3}", float(1 + (u + i) % 5))
    for u in range(12)
    for i in range(9)
    if (u * 7 + i) % 4 != 0
]
NO_CORE = PrepareOptions(kcore=0)


def _write_inter(path, rows=ROWS, gz=False):
    text = "user_id:token\titem_id:token\trating:float\ttimestamp:float\r\n" + "".join(
        f"{u}\t{i}\t{r}\t{n}\r\n" for n, (u, i, r) in enumerate(rows)
    )
    if gz:
        with gzip.open(path, "wt", newline="") as fh:
            fh.write(text)
    else:
        with open(path, "w", newline="") as fh:
            fh.write(text)


def _pairs(out):
    data = PreparedData.load(out)
    users, items = data.ids("users"), data.ids("items")
    pairs = set()
    for split in data.splits.values():
        pairs |= {(users[u], items[i]) for u, i in zip(split.users, split.items)}
    return data, pairs


@pytest.mark.parametrize("gz", [False, True])
def test_recbole_inter_with_string_ids(tmp_path, gz):
    path = tmp_path / ("x.inter.gz" if gz else "x.inter")
    _write_inter(str(path), gz=gz)
    data, pairs = _pairs(
        prepare(str(tmp_path / "out"), NO_CORE, str(path)) and str(tmp_path / "out")
    )
    assert pairs == {(u, i) for u, i, _ in ROWS}  # titles with commas survive as ids
    assert data.num_users == 12


def test_rating_filter_dedup_and_kcore(tmp_path):
    rows = ROWS + ROWS[:5]  # duplicates
    path = tmp_path / "x.inter"
    _write_inter(str(path), rows)
    out = str(tmp_path / "out")
    manifest = prepare(out, PrepareOptions(min_rating=3, kcore=3), str(path))
    data, pairs = _pairs(out)
    kept = {(u, i) for u, i, r in ROWS if r >= 3}
    assert pairs <= kept
    users = [u for u, _ in pairs]
    items = [i for _, i in pairs]
    assert min(users.count(u) for u in set(users)) >= 3  # k-core reached its fixed point
    assert min(items.count(i) for i in set(items)) >= 3
    assert manifest["counts"]["after_rating_filter"] == len([r for r in rows if r[2] >= 3])


@pytest.mark.parametrize("fmt", ["csv", "tsv", "parquet"])
def test_tabular_formats(tmp_path, fmt):
    path = tmp_path / f"x.{fmt}"
    if fmt == "parquet":
        pq.write_table(
            pa.table(
                {
                    "user_id": [u for u, _, _ in ROWS],
                    "item_id": [i for _, i, _ in ROWS],
                    "rating": [r for _, _, r in ROWS],
                }
            ),
            str(path),
        )
    else:
        sep = "," if fmt == "csv" else "\t"
        rows = [(u, i.replace(",", ";"), r) for u, i, r in ROWS]
        path.write_text(
            f"user{sep}item{sep}rating{sep}timestamp\n"
            + "".join(f"{u}{sep}{i}{sep}{r}{sep}0\n" for u, i, r in rows)
        )
    out = str(tmp_path / "out")
    prepare(out, NO_CORE, str(path))
    _, pairs = _pairs(out)
    assert len(pairs) == len(ROWS)


def test_lightgcn_text_keeps_the_given_test_split(tmp_path):
    train = tmp_path / "train.txt"
    test = tmp_path / "test.txt"
    train.write_text("0 1 2 3 4 5\n1 0 2 4 6 7\n2 1 3 5 7\n")
    test.write_text("0 6 7\n1 3\n2 0 99\n")  # item 99 unknown in train: dropped, counted
    out = str(tmp_path / "out")
    manifest = prepare(
        out, PrepareOptions(kcore=0, valid_ratio=0.0), str(train), test_path=str(test)
    )
    data = PreparedData.load(out)
    users, items = data.ids("users"), data.ids("items")
    test_pairs = {
        (users[u], items[i]) for u, i in zip(data.splits["test"].users, data.splits["test"].items)
    }
    assert test_pairs == {("0", "6"), ("0", "7"), ("1", "3"), ("2", "0")}
    assert manifest["counts"]["given_test_pairs_dropped"] == 1
    assert manifest["counts"]["train"] == 14


def test_mat_file(tmp_path):
    m = scipy.sparse.random(20, 15, density=0.4, random_state=0, format="csc") * 5
    path = tmp_path / "x.mat"
    scipy.io.savemat(str(path), {"data": m})
    out = str(tmp_path / "out")
    manifest = prepare(out, NO_CORE, str(path))
    assert manifest["counts"]["after_kcore"] == m.nnz
    bad = tmp_path / "bad.mat"
    scipy.io.savemat(str(bad), {"other": m})
    with pytest.raises(DataError, match="no 'data' matrix"):
        read_interactions(str(bad))


@pytest.mark.parametrize(
    "content,message",
    [
        ("", "empty"),
        ("user,rating\nu1,3\n", "no item column"),
        ("user,item,rating\nu1,i1,3\nu2,i2,five\n", "line 3, column 'rating'.*five"),
        ("user,item,rating\nu1,i1,3\nu2,i2\n", "line 3: expected 3 fields, found 2"),
        ("user,item\nu1,\n", "empty item id"),
        ("user,item\n", "no interactions"),
    ],
)
def test_malformed_inputs_name_the_problem_and_write_nothing(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    out = tmp_path / "out"
    with pytest.raises(DataError, match=message):
        prepare(str(out), NO_CORE, str(path))
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["bad.csv"]  # no temporary leftovers


def test_nothing_left_after_filtering(tmp_path):
    path = tmp_path / "x.inter"
    _write_inter(str(path))
    with pytest.raises(DataError, match="nothing left after the rating filter"):
        prepare(str(tmp_path / "a"), PrepareOptions(min_rating=10), str(path))
    with pytest.raises(DataError, match="nothing left after 50-core"):
        prepare(str(tmp_path / "b"), PrepareOptions(kcore=50), str(path))
    with pytest.raises(DataError, match="no rating column"):
        (tmp_path / "r.txt").write_text("0 1 2\n")
        prepare(str(tmp_path / "c"), PrepareOptions(min_rating=1), str(tmp_path / "r.txt"))


def test_existing_output_is_kept_without_overwrite(tmp_path):
    path = tmp_path / "x.inter"
    _write_inter(str(path))
    out = tmp_path / "out"
    prepare(str(out), NO_CORE, str(path))
    before = (out / "train.parquet").read_bytes()
    with pytest.raises(DataError, match="--overwrite"):
        prepare(str(out), PrepareOptions(kcore=0, seed=5), str(path))
    assert (out / "train.parquet").read_bytes() == before
    prepare(str(out), PrepareOptions(kcore=0, seed=5), str(path), overwrite=True)
    assert json.loads((out / "manifest.json").read_text())["options"]["seed"] == 5


def test_overwrite_never_deletes_the_input_or_a_directory_that_is_not_a_dataset(tmp_path):
    """`--out d --input d/in.inter --overwrite` would have replaced d, input and sibling
    datasets with it; it is refused, and so is any non-dataset directory."""
    d = tmp_path / "d"
    d.mkdir()
    _write_inter(str(d / "in.inter"))
    prepare(str(d / "other"), NO_CORE, str(d / "in.inter"))
    for out in (d, d / "other" / ".."):
        with pytest.raises(DataError, match="holds the input"):
            prepare(str(out), NO_CORE, str(d / "in.inter"), overwrite=True)
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("keep me")
    with pytest.raises(DataError, match="not a prepared dataset"):
        prepare(str(notes), NO_CORE, str(d / "in.inter"), overwrite=True)
    assert (d / "in.inter").is_file() and (d / "other" / "manifest.json").is_file()
    assert (notes / "todo.txt").read_text() == "keep me"


def test_two_prepares_racing_for_one_new_out_leave_one_winner(tmp_path):
    """Two `adasir prepare` runs to the same new --out at once: one writes it, the other is
    refused with exit 2; never both 0 with one output silently replacing the other."""
    path = tmp_path / "x.inter"
    _write_inter(str(path), rows=ROWS * 1)
    for trial in range(3):
        out = tmp_path / f"out{trial}"
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "adasir",
                    "prepare",
                    "--input",
                    str(path),
                    "--kcore",
                    "0",
                    "--seed",
                    str(seed),
                    "--out",
                    str(out),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for seed in (1, 2)
        ]
        codes = [p.wait(timeout=120) for p in procs]
        assert sorted(codes) == [0, 2], codes
        winner = codes.index(0) + 1
        assert json.loads((out / "manifest.json").read_text())["options"]["seed"] == winner


def test_same_seed_gives_byte_identical_output(tmp_path):
    path = tmp_path / "x.inter"
    _write_inter(str(path))
    for name in ("a", "b"):
        prepare(str(tmp_path / name), NO_CORE, str(path))
    prepare(str(tmp_path / "c"), PrepareOptions(kcore=0, seed=1), str(path))
    files = sorted(os.listdir(tmp_path / "a"))
    assert files == [
        "items.parquet",
        "manifest.json",
        "test.parquet",
        "train.parquet",
        "users.parquet",
        "valid.parquet",
    ]
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
    assert (tmp_path / "a" / "test.parquet").read_bytes() != (
        tmp_path / "c" / "test.parquet"
    ).read_bytes()


def test_split_ratios_per_user(tmp_path):
    out = str(tmp_path / "out")
    prepare(out, PrepareOptions(), synthetic="users=300,items=200,mean=40,seed=3")
    data = PreparedData.load(out)
    n = {s: np.bincount(data.splits[s].users, minlength=data.num_users) for s in data.splits}
    total = n["train"] + n["valid"] + n["test"]
    assert (np.abs(n["test"] - 0.2 * total) <= 1).all()
    assert (np.abs(n["valid"] - 0.1 * (total - n["test"])) <= 1).all()
    for a, b in (("train", "test"), ("train", "valid"), ("valid", "test")):
        ka = set(data.splits[a].users * data.num_items + data.splits[a].items)
        kb = set(data.splits[b].users * data.num_items + data.splits[b].items)
        assert not ka & kb


def test_synthetic_spec_errors(tmp_path):
    with pytest.raises(DataError, match="cannot read 'colour=3'"):
        prepare(str(tmp_path / "o"), PrepareOptions(), synthetic="users=10,colour=3")
    with pytest.raises(DataError, match="not a number"):
        prepare(str(tmp_path / "o"), PrepareOptions(), synthetic="users=many")


def test_cli_on_movielens_100k(tmp_path):
    src = os.path.join(SHARED_DATA, "ml-100k", "ml-100k.inter.gz")
    if not os.path.exists(src):
        pytest.skip("shared MovieLens-100K not present")
    out = tmp_path / "ml100k"
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "trainer", "prepare.py"),
            "--input",
            src,
            "--out",
            str(out),
            "--min-rating",
            "4",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    counts = json.loads(proc.stdout)
    assert counts["after_rating_filter"] == 55375 and counts["users"] > 900
    bad = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "trainer", "prepare.py"),
            "--input",
            str(tmp_path / "missing.csv"),
            "--out",
            str(tmp_path / "x"),
        ],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "no such file" in bad.stderr


def _prepare_cli(*args):
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, "trainer", "prepare.py"), *args],
        capture_output=True,
        text=True,
    )


def test_unreadable_inputs_and_outputs_get_one_line_and_exit_2(tmp_path):
    good = tmp_path / "good.inter.gz"
    _write_inter(good, gz=True)
    truncated = tmp_path / "cut.inter.gz"
    truncated.write_bytes(good.read_bytes()[:-40])
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    cases = [
        (["--input", str(truncated), "--out", str(tmp_path / "o1")], "cannot be read"),
        (["--input", str(good), "--out", str(a_file)], "exists and is not a directory"),
        # /proc is read-only even for root: the nearest thing to a read-only --out here
        (["--input", str(good), "--out", "/proc/adasir-out"], "cannot write there"),
    ]
    for args, message in cases:
        proc = _prepare_cli(*args, "--kcore", "0")
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "cut.inter.gz", "good.inter.gz"]


@pytest.mark.parametrize("value", ["inf", "-inf", "nan"])
def test_non_finite_ratings_are_rejected(tmp_path, value):
    path = tmp_path / "r.csv"
    path.write_text(f"user,item,rating\nu1,i1,3\nu2,i2,{value}\n")
    with pytest.raises(DataError, match=f"line 3, column 'rating'.*{value}"):
        prepare(str(tmp_path / "out"), NO_CORE, str(path))


def test_synthetic_size_is_bounded(tmp_path):
    with pytest.raises(DataError, match="users=100000000 is over the limit"):
        prepare(str(tmp_path / "o"), PrepareOptions(), synthetic="users=100000000")
    with pytest.raises(DataError, match="interactions is over the limit"):
        prepare(str(tmp_path / "o"), PrepareOptions(), synthetic="users=5000000,mean=100")


@pytest.mark.parametrize("line", [b"u2,i2,\x1b[31mfive\n", b"u2,\x1b]0;owned\x07,five\x00\n"])
def test_errors_that_quote_input_escape_control_characters(tmp_path, line):
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"user,item,rating\nu1,i1,5\n" + line)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "adasir",
            "prepare",
            "--input",
            str(bad),
            "--out",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not any(c < 0x20 and c != 0x0A or c == 0x7F for c in proc.stderr), proc.stderr
    assert not (tmp_path / "out").exists()


def test_ids_longer_than_the_service_takes_are_refused_where_data_enters(tmp_path):
    from trainer.data.formats import MAX_ID_CHARS

    rows = [(f"u{u}", f"i{i}", 1.0) for u in range(5) for i in range(4)]
    rows.append(("u" * (MAX_ID_CHARS + 1), "i1", 1.0))
    path = tmp_path / "long.inter"
    _write_inter(str(path), rows=rows)
    with pytest.raises(DataError, match=f"user id has {MAX_ID_CHARS + 1} characters"):
        prepare(str(tmp_path / "out"), NO_CORE, str(path))
    assert not (tmp_path / "out").exists()


def test_a_parquet_input_with_a_null_user_id_is_one_line(tmp_path):
    path = tmp_path / "nulls.parquet"
    pq.write_table(pa.table({"user": ["a", None, "b"], "item": ["x", "y", "z"]}), path)
    with pytest.raises(DataError, match="row 2 .*empty user id"):
        prepare(str(tmp_path / "out"), NO_CORE, str(path))
    assert not (tmp_path / "out").exists()
