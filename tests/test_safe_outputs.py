"""What the writers promise: `Model.save`, `fit(out=)` and the export replace only what they
wrote themselves, refuse anything else in one line, and leave no temporary file a reader
would take for data."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pandas as pd
import pyarrow.parquet as pq
import pytest
from conftest import block_frame

from trainer import Model, fit
from trainer.errors import UsageError


@pytest.fixture(scope="module")
def model() -> Model:
    return fit(block_frame(), dim=4, epochs=1)


def _tree(path) -> dict:
    """Every file below `path` with its bytes."""
    out = {}
    for root, _, files in os.walk(path):
        for name in files:
            full = os.path.join(root, name)
            with open(full, "rb") as fh:
                out[os.path.relpath(full, path)] = fh.read()
    return out


# -- Model.save ---------------------------------------------------------------------------


def test_save_refuses_a_directory_holding_other_files(model, tmp_path, monkeypatch):
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.parquet").write_bytes(b"x")
    before = _tree(tmp_path)
    with pytest.raises(UsageError, match=r"holds other files \(data, notes.txt\)"):
        model.save(tmp_path)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError, match="holds other files"):
        model.save(".")
    with pytest.raises(UsageError, match="path is empty"):
        model.save("")
    assert _tree(tmp_path) == before


def test_save_replaces_only_its_own_checkpoint(model, tmp_path):
    run = tmp_path / "run"
    model.save(run)
    again = Model.load(model.save(run))  # a directory holding exactly a checkpoint
    assert sorted(os.listdir(run)) == ["checkpoint"]
    assert again.item_ids == model.item_ids
    empty = tmp_path / "empty"
    empty.mkdir()
    assert Model.load(model.save(empty)).user_ids == model.user_ids


def test_save_to_a_checkpoint_path_writes_that_checkpoint(model, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text("{}")  # a run's other files stay
    assert model.save(run / "checkpoint") == str(run)
    assert sorted(os.listdir(run / "checkpoint")) == sorted(os.listdir(model._blob["path"]))
    assert Model.load(run).item_ids == model.item_ids
    model.save(run / "checkpoint")  # and again, over itself
    assert Model.load(run).item_ids == model.item_ids
    assert (run / "metrics.json").read_text() == "{}"
    assert not [n for n in os.listdir(run) if n.startswith(".")]


def test_save_refuses_a_file_and_a_foreign_checkpoint_path(model, tmp_path):
    target = tmp_path / "model.bin"
    target.write_bytes(b"old bytes")
    with pytest.raises(UsageError, match="exists and is not a directory"):
        model.save(target)
    assert target.read_bytes() == b"old bytes" and os.listdir(tmp_path) == ["model.bin"]
    other = tmp_path / "run" / "checkpoint"
    other.mkdir(parents=True)
    (other / "thesis.tex").write_text("mine")
    with pytest.raises(UsageError, match="is not a checkpoint"):
        model.save(other)
    assert (other / "thesis.tex").read_text() == "mine"


def test_a_killed_saves_leftovers_are_removed_by_the_next(model, tmp_path):
    run = tmp_path / "run"
    model.save(run)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        text=True,
        capture_output=True,
        check=True,
    ).stdout.strip()
    stale = run / f".checkpoint.tmp{dead}-abc"
    stale.mkdir()
    (stale / "model.pt").write_bytes(b"half")
    model.save(run)
    assert sorted(os.listdir(run)) == ["checkpoint"]


# -- fit(out=) ----------------------------------------------------------------------------


def test_fit_refuses_an_existing_run_without_overwrite(model, tmp_path):
    out = tmp_path / "run"
    first = fit(block_frame(), dim=4, epochs=1, out=out)
    before = _tree(out)
    with pytest.raises(UsageError, match=r"holds a complete run already; pass overwrite=True"):
        fit(block_frame(seed=1), dim=4, epochs=1, out=out)
    assert _tree(out) == before
    second = fit(block_frame(users=50), dim=4, epochs=1, out=out, overwrite=True)
    assert Model.load(out).user_ids == second.user_ids != first.user_ids
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]


def test_fit_refuses_a_file_and_a_directory_that_is_not_a_run(tmp_path):
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    with pytest.raises(UsageError, match="exists and is not a directory"):
        fit(block_frame(), dim=4, epochs=1, out=target)
    assert target.read_text() == "mine"
    with pytest.raises(UsageError, match="holds files already"):
        fit(block_frame(), dim=4, epochs=1, out=tmp_path)
    with pytest.raises(UsageError, match="not a run"):
        fit(block_frame(), dim=4, epochs=1, out=tmp_path, overwrite=True)
    assert target.read_text() == "mine"


# -- export ---------------------------------------------------------------------------------


def test_export_replaces_an_earlier_export_only(model, tmp_path):
    out = tmp_path / "recs.parquet"
    model.export(out, k=3)
    model.export(out, k=2)  # an earlier export: replaced
    assert set(pq.read_table(out).column("rank").to_pylist()) == {1, 2}
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    with pytest.raises(UsageError, match="not an earlier export"):
        model.export(notes, k=2)
    assert notes.read_text() == "mine"
    with pytest.raises(UsageError, match="is a directory"):
        model.export(tmp_path, k=2)
    with pytest.raises(UsageError, match="cannot write"):
        model.export(notes / "under" / "recs.parquet", k=2)


def _adasir(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "adasir", *args], capture_output=True, text=True, timeout=120
    )


@pytest.mark.slow
def test_recommend_all_refuses_what_it_would_lose_in_one_line(model, tmp_path):
    run = model.save(tmp_path / "run")
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    for out, message in (
        (notes, "not an earlier export"),
        (tmp_path, "is a directory"),
        (notes / "recs.parquet", "cannot write"),
        ("/proc/recs.parquet", "cannot write"),
    ):
        done = _adasir("recommend", "--model", run, "--all", "--out", str(out), "-k", "2")
        assert done.returncode == 2, done.stderr
        assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert notes.read_text() == "mine"


def test_a_killed_exports_temp_file_is_hidden_and_removed_by_the_next(model, tmp_path):
    """A `kill -9` mid-export leaves a temporary file that a directory reader skips (a
    leading dot) and that the next export of the same path removes."""
    run = model.save(tmp_path / "run")
    out = tmp_path / "recs" / "all.parquet"
    model.export(tmp_path / "recs" / "first.parquet", k=2)
    code = (
        "import sys, time; from trainer import Model; import trainer.export as e\n"
        "m = Model.load(sys.argv[1])\n"
        "real = e._block_table\n"
        "def slow(*a):\n    time.sleep(60)\n    return real(*a)\n"
        "e._block_table = slow\n"
        "m.export(sys.argv[2], k=2, block=1)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, run, str(out)])
    try:
        deadline = time.monotonic() + 60
        while not [n for n in os.listdir(out.parent) if n.startswith(".all.parquet.tmp")]:
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.1)
    finally:
        proc.kill()
        proc.wait()
    leftovers = [n for n in os.listdir(out.parent) if n.startswith(".")]
    assert leftovers and not out.exists()
    assert len(pd.read_parquet(out.parent)) == 2 * model.num_users  # the temp file is skipped
    model.export(out, k=2)
    assert sorted(os.listdir(out.parent)) == ["all.parquet", "first.parquet"]


# -- resume ---------------------------------------------------------------------------------


def _train_args(data: str, out) -> list[str]:
    return [
        sys.executable,
        os.path.join(os.path.dirname(os.path.dirname(__file__)), "trainer", "run.py"),
        "--data",
        data,
        "--out",
        str(out),
        "--epochs",
        "12",
        "--early-stopping-patience",
        "12",
        "--checkpoint-every",
        "1",
        "--threads",
        "1",
    ]


@pytest.mark.slow
def test_a_run_killed_during_its_refit_resumes_the_refit(tiny_data, tmp_path):
    """kill -9 while the refit trains: OUT/checkpoint is still the validated model, and
    --resume finishes the refit from its own last checkpoint, giving the model an
    uninterrupted run gives (the random generator is checkpointed too)."""
    import json

    from trainer.outputs.checkpoint import load_checkpoint

    whole = subprocess.run(
        _train_args(tiny_data, tmp_path / "whole"), capture_output=True, text=True, timeout=300
    )
    assert whole.returncode == 0, whole.stderr
    expected = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    out = tmp_path / "killed"
    proc = subprocess.Popen(_train_args(tiny_data, out), stdout=subprocess.DEVNULL)
    partial = out / "refit-checkpoint" / "model.pt"
    try:
        deadline = time.monotonic() + 300
        while not partial.exists():
            assert time.monotonic() < deadline and proc.poll() is None, "the refit never started"
            time.sleep(0.02)
    finally:
        proc.kill()  # SIGKILL: nothing is cleaned up
        proc.wait()
    validated = load_checkpoint(str(out / "checkpoint"))
    assert "before_refit" not in validated["metrics"], "killed after the refit ended"
    resumed = subprocess.run(
        [*_train_args(tiny_data, out), "--resume"], capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "refit: resumed after epoch" in resumed.stderr + resumed.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["refit"]["epochs"] == expected["refit"]["epochs"]
    assert metrics["test"] == pytest.approx(expected["test"], abs=1e-6)
    assert metrics["before_refit"] == expected["before_refit"]
    assert json.loads((out / "run.json").read_text())["state"] == "complete"
    assert load_checkpoint(str(out / "checkpoint"))["epoch"] == expected["refit"]["epochs"]
    assert not (out / "refit-checkpoint").exists()
