"""The errors a user can act on. Each entry point prints them as one line and exits 2;
anything else is a bug and keeps its traceback (exit 1)."""

from __future__ import annotations

import errno


class UsageError(ValueError):
    """Bad input or a request that cannot be met: the message says what to change."""


class TrainingFailed(RuntimeError):
    """Training ran and could not finish (diverged, or a Ray run lost its workers)."""


def one_line(exc: BaseException) -> str:
    """The message an entry point prints: pydantic's multi-line report becomes
    `field.path: message; ...` on one line."""
    from pydantic import ValidationError

    if not isinstance(exc, ValidationError):
        return printable(" ".join(str(exc).split("\n")))
    parts = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return printable("; ".join(parts))


def printable(text: str) -> str:
    """`text` with control characters escaped (ESC as \\x1b, NUL as \\x00): an error that
    quotes input never drives the terminal it is printed on."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


# errno values of a write the machine refused, not a bug: a full disk or quota, a read-only
# filesystem, no permission.
_STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def is_usage_error(exc: BaseException) -> bool:
    """What the CLIs report as one line with exit 2 (pydantic's ValidationError is a
    ValueError; so are DataError, RunDirError and CheckpointError; and a write the storage
    refused: the line names the path and the reason)."""
    if isinstance(exc, OSError) and exc.errno in _STORAGE_ERRNOS:
        return True
    return isinstance(exc, (ValueError, TrainingFailed))


def error_line(exc: BaseException) -> str:
    """The one line an entry point prints for a usage error: the message, its class where
    that helps (not for ValueErrors), and for a refused write the path, the reason and what
    to do."""
    if isinstance(exc, OSError) and exc.errno in _STORAGE_ERRNOS:
        where = printable(str(exc.filename)) if exc.filename else "the output"
        return (
            f"cannot write {where}: {exc.strerror}. Free space or give a writable --out; "
            "what was written before (the last complete checkpoint) is kept"
        )
    kind = "" if isinstance(exc, ValueError) else f"{type(exc).__name__}: "
    return kind + one_line(exc)
