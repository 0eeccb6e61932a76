"""Stop the Ray processes of one session and no other on the host: what the tests' `ray stop`
(tests/conftest.py's shim) and their cleanup run. No side effects on import: the shim loads
this file by path in a process of its own."""

from __future__ import annotations

import os
import signal


def _is_ray_process(cmdline: str) -> bool:
    """A process of a Ray cluster: its binaries and Python modules, its workers (`ray::…`)
    and the dashboard's subprocesses."""
    return "/site-packages/ray/" in cmdline or cmdline.startswith(("ray::", "ray-dashboard"))


def stop_ray_of_session(sid: int, spare: set[int] = frozenset()) -> int:
    """SIGKILL the Ray processes of session `sid` (what a script run with start_new_session
    started: a daemonised `ray start` stays in its session), none other on the host, and
    none in `spare`. Returns how many."""
    killed = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in spare:
            continue
        try:
            if os.getsid(int(entry)) != sid:
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmdline = fh.read().replace(b"\0", b" ").decode(errors="replace")
            if _is_ray_process(cmdline):
                os.kill(int(entry), signal.SIGKILL)
                killed += 1
        except (OSError, ProcessLookupError):
            continue
    return killed
