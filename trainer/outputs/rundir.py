"""A run's output directory: never silently replaced, never a mix of two runs.

- A new OUT is trained in place. `run.json` says `running` (with the pid), then `complete`
  or `failed` (with the error); a killed run stays `running` with a dead pid.
- An existing OUT is refused unless `--overwrite` or `--resume`.
- `--overwrite` trains in a staging sibling (`.OUT.staging-*`) and swaps it in only when it
  completes: until then OUT is the old run, whole; a killed replacement leaves it untouched.
- `--resume` continues OUT from its checkpoint (model, optimizer state and metrics so far).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import socket
import tempfile
import time

from trainer.errors import UsageError
from trainer.outputs.atomic import pid_alive, replace_directory
from trainer.outputs.checkpoint import resume_source, write_json_atomic

STATE_FILE = "run.json"


class RunDirError(UsageError):
    """OUT cannot be used as asked (exit 2, one line)."""


def _is_run(out: str) -> bool:
    """A directory a run wrote: its state file, or a checkpoint."""
    return os.path.isfile(os.path.join(out, STATE_FILE)) or os.path.isfile(
        os.path.join(out, "checkpoint", "model.pt")
    )


def read_state(out: str) -> dict:
    try:
        with open(os.path.join(out, STATE_FILE)) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return {}


class RunDir:
    """Where a run writes (`work`), and the state it records there."""

    def __init__(
        self,
        out: str,
        *,
        overwrite: bool = False,
        resume: bool = False,
        storage_path: str | None = None,
        names: tuple[str, str] = (
            "--out",
            "pass --overwrite to replace it or --resume to continue it",
        ),
    ):
        """names: what the caller calls OUT, and what it tells a user to do when OUT holds a
        run already (the Python API says `out=` and `overwrite=True`)."""
        opt, hint = names
        if overwrite and resume:
            raise RunDirError("give --overwrite (replace OUT) or --resume (continue it), not both")
        self.out = os.path.abspath(out)
        self.resume = resume
        exists = os.path.isdir(self.out) and bool(os.listdir(self.out))
        if os.path.exists(self.out) and not os.path.isdir(self.out):
            raise RunDirError(f"{opt} {out}: exists and is not a directory")
        state = read_state(self.out) if exists else {}
        if (
            state.get("state") == "running"
            and pid_alive(int(state.get("pid", -1)))
            and state.get("host") == socket.gethostname()
        ):
            raise RunDirError(f"{opt} {out}: a run (pid {state['pid']}) is still writing there")
        if resume and resume_source(self.out, storage_path) is None:
            raise RunDirError(f"--resume: {out} has no checkpoint to continue from")
        if exists and not (overwrite or resume):
            what = f"a {state['state']} run" if state.get("state") else "files"
            raise RunDirError(f"{opt} {out}: holds {what} already; {hint}")
        if exists and overwrite and not _is_run(self.out):
            raise RunDirError(
                f"{opt} {out}: holds files that are not a run (no {STATE_FILE} or "
                "checkpoint/); overwriting replaces only an earlier run: give a new path"
            )
        self.staging = exists and overwrite
        if self.staging:
            self.work = tempfile.mkdtemp(
                prefix=f".{os.path.basename(self.out)}.staging-", dir=os.path.dirname(self.out)
            )
        else:
            os.makedirs(self.out, exist_ok=True)
            self.work = self.out

    def _write(self, state: str, **extra) -> None:
        previous = read_state(self.work)
        path = os.path.join(self.work, STATE_FILE)
        record = {
            "state": state,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": previous.get("started", time.strftime("%Y-%m-%dT%H:%M:%S")),
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S"),
            **extra,
        }
        try:
            write_json_atomic(path, record)
        except OSError as exc:
            if exc.errno != errno.ENOSPC or not os.path.isfile(path):
                raise
            # A full disk has no room for a second copy: the final state is written over the
            # old one, in the block it already holds (readers tolerate a torn read).
            with open(path, "r+") as fh:
                fh.write(json.dumps(record, indent=2) + "\n")
                fh.truncate()

    def start(self) -> None:
        self._write("running", resumed=self.resume)

    @contextlib.contextmanager
    def running(self):
        """The run's lifetime in run.json: `running` on entry, then `complete` (an
        overwritten run swapped in only then), `stopped` on KeyboardInterrupt or `failed` on
        any other error, which is raised again. A full disk that refuses run.json itself
        leaves the run's own error to be reported."""
        self.start()
        try:
            yield self
        except KeyboardInterrupt:
            self.stop()
            raise
        except BaseException as exc:
            with contextlib.suppress(OSError):
                self.fail(f"{type(exc).__name__}: {exc}")
            raise
        self.complete()

    def complete(self) -> None:
        self._write("complete")
        if self.staging:
            replace_directory(self.work, self.out)

    def stop(self) -> None:
        """Interrupted (SIGINT or SIGTERM): `stopped`; the last checkpoint stays for --resume."""
        self._end("stopped")

    def fail(self, error: str) -> None:
        self._end("failed", error=error)

    def _end(self, state: str, **extra) -> None:
        if self.staging:  # the old run in OUT stays as it was
            shutil.rmtree(self.work, ignore_errors=True)
            return
        self._write(state, **extra)
