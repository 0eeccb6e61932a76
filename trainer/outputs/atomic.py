"""Replacing a directory so that readers see the old one or the new one, never neither.

Checkpoints, prepared datasets and replaced runs all go through `replace_directory`: the new
content is written in full to a sibling temporary directory first, then swapped in. On Linux
the swap is one `renameat2(RENAME_EXCHANGE)` call — the destination path always names a
complete directory; elsewhere (or on a filesystem that refuses the exchange) it is two
renames with a short gap.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import shutil
import tempfile

_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
_RENAME_EXCHANGE = 2


def _renameat2(a: str, b: str, flags: int) -> int | None:
    """renameat2(2): 0 on success, the errno on failure, None where the platform lacks it."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return None
    renameat2.argtypes = [
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_uint,
    ]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), flags) == 0:
        return 0
    err = ctypes.get_errno()
    return None if err in (errno.ENOSYS, errno.EINVAL) else err


def _exchange(a: str, b: str) -> bool:
    """Atomically swap two existing paths; False where the platform cannot."""
    return _renameat2(a, b, _RENAME_EXCHANGE) == 0


def place_directory(new: str, dst: str) -> None:
    """Move the complete directory `new` to `dst` only if nothing is there yet (an empty
    directory counts as nothing); otherwise FileExistsError, and `new` is left in place. Two
    writers racing for the same `dst`: one wins, the other is refused (one atomic
    renameat2(RENAME_NOREPLACE) on Linux)."""
    if os.path.isdir(dst) and not os.path.islink(dst) and not os.listdir(dst):
        try:
            os.rmdir(dst)
        except OSError:
            pass  # filled meanwhile: refused below
    result = _renameat2(new, dst, _RENAME_NOREPLACE)
    if result is None:  # no renameat2: a check, then a rename (a short window remains)
        if os.path.lexists(dst):
            raise FileExistsError(errno.EEXIST, "exists", dst)
        os.rename(new, dst)
    elif result:
        raise FileExistsError(result, os.strerror(result), dst)


def replace_directory(new: str, dst: str) -> None:
    """Move the complete directory `new` to `dst`, replacing what is there; the replaced
    directory is deleted afterwards. `new` and `dst` must be on the same filesystem."""
    if not os.path.exists(dst):
        os.rename(new, dst)
        return
    if _exchange(new, dst):
        shutil.rmtree(new, ignore_errors=True)  # `new` now holds the old content
        return
    trash = tempfile.mkdtemp(prefix=f".{os.path.basename(dst)}.old.", dir=os.path.dirname(dst))
    os.rename(dst, os.path.join(trash, "x"))
    os.rename(new, dst)
    shutil.rmtree(trash, ignore_errors=True)


def temp_sibling_prefix(name: str) -> str:
    """The prefix of this process's temporary siblings for `name`: hidden (a leading dot,
    which directory readers such as pyarrow's skip) and carrying the pid, so that
    `remove_stale_temps` can tell a dead writer's leftovers from a live one's."""
    return f".{name}.tmp{os.getpid()}-"


def remove_stale_temps(directory: str, name: str) -> None:
    """Delete the temporary siblings of `name` in `directory` that writers which died (a
    kill -9) left behind; a live writer's are kept."""
    pattern = re.compile(rf"\.{re.escape(name)}\.tmp(\d+)-")
    try:
        entries = os.listdir(directory)
    except OSError:
        return
    for entry in entries:
        match = pattern.match(entry)
        if match and not pid_alive(int(match.group(1))):
            path = os.path.join(directory, entry)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                try:
                    os.unlink(path)
                except OSError:
                    pass


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid runs on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
