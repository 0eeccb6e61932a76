"""Storage that refuses writes: a disk that fills during training, a read-only --out, a full
disk under prepare. Each is a real filesystem (a small tmpfs mounted for the test, read-only
where asked), so these tests need the right to mount one and are skipped without it."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT, SHARED_DATA

from trainer.outputs.checkpoint import load_checkpoint

RUN = os.path.join(ROOT, "trainer", "run.py")
PREPARE = os.path.join(ROOT, "trainer", "prepare.py")


def _mount_tmpfs(path: str, size_kib: int, read_only: bool = False) -> None:
    os.makedirs(path, exist_ok=True)
    options = f"size={size_kib}k" + (",ro" if read_only else "")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", path], capture_output=True, text=True
    )
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or 'mount failed'})")


@pytest.fixture
def mounts():
    made: list[str] = []

    def mount(path: str, size_kib: int, read_only: bool = False) -> str:
        _mount_tmpfs(path, size_kib, read_only)
        made.append(path)
        return path

    yield mount
    for path in reversed(made):
        subprocess.run(["umount", "-l", path], capture_output=True)


def _train(data: str, out: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, RUN, "--threads", "1", "--data", data, "--out", out, *extra],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def _size_kib(path: str) -> int:
    total = sum(
        os.path.getsize(f)
        for f in glob.glob(os.path.join(path, "**"), recursive=True)
        if os.path.isfile(f)
    )
    return total // 1024 + 1


TRAIN = ("--preset", "paper", "--dim", "64", "--epochs", "6", "--eval-every", "1")


@pytest.mark.slow
def test_a_disk_that_fills_during_training_fails_in_one_line(tiny_data, tmp_path, mounts):
    """Room for one checkpoint but not for its replacement beside it: the run ends with one
    line and exit 2, run.json says failed, no temporary file is left, and the last complete
    checkpoint is still there and loads."""
    probe = _train(tiny_data, str(tmp_path / "probe"), *TRAIN, "--epochs", "1")
    assert probe.returncode == 0, probe.stderr
    checkpoint_kib = _size_kib(str(tmp_path / "probe" / "checkpoint"))
    disk = mounts(str(tmp_path / "disk"), int(checkpoint_kib * 1.6) + 64)
    out = os.path.join(disk, "run")
    done = _train(tiny_data, out, *TRAIN, "--checkpoint-every", "1")
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "cannot write" in errors[0] and "Traceback" not in done.stderr
    with open(os.path.join(out, "run.json")) as fh:
        assert json.load(fh)["state"] == "failed"
    leftovers = [
        p
        for p in glob.glob(os.path.join(disk, "**", "*"), recursive=True)
        if ".tmp" in os.path.basename(p) or os.path.basename(p).startswith(".")
    ]
    assert leftovers == []
    assert load_checkpoint(os.path.join(out, "checkpoint"))["epoch"] >= 1


@pytest.mark.slow
def test_a_read_only_out_is_one_line_and_nothing_is_written(tiny_data, tmp_path, mounts):
    disk = mounts(str(tmp_path / "ro"), 1024, read_only=True)
    done = _train(tiny_data, os.path.join(disk, "run"), *TRAIN)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "cannot write" in done.stderr and "Read-only file system" in done.stderr
    assert os.listdir(disk) == []


def test_prepare_into_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, mounts):
    source = os.path.join(SHARED_DATA, "ml-100k", "ml-100k.inter.gz")
    if not os.path.isfile(source):
        pytest.skip(f"{source} is not on this machine")
    disk = mounts(str(tmp_path / "small"), 64)
    done = subprocess.run(
        [sys.executable, PREPARE, "--input", source, "--out", os.path.join(disk, "ml")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "cannot write" in done.stderr and "No space left" in done.stderr
    assert os.listdir(disk) == []
