"""Replacing a directory so that readers see the old one or the new one, never neither.

Checkpoints, prepared datasets and replaced runs all go through `replace_directory`: the new
content is written in full to a sibling temporary directory first, then swapped in. On Linux
the swap is one `renameat2(RENAME_EXCHANGE)` call — the destination path always names a
complete directory; elsewhere (or on a filesystem that refuses the exchange) it is two
renames with a short gap.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import tempfile

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _exchange(a: str, b: str) -> bool:
    """Atomically swap two existing paths; False where the platform cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                          ctypes.c_uint]
    return renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0


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
