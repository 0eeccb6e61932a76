"""Progress goes through the `adasir` logger; this sets it up once per process."""

from __future__ import annotations

import logging
import os
import sys


class _CurrentStdout(logging.Handler):
    """Writes to whatever sys.stdout is at the time (a Ray worker's redirected stream, pytest's
    capture), not the stream that existed when the handler was made."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stdout.write(self.format(record) + "\n")
            sys.stdout.flush()
        except Exception:  # noqa: BLE001 - logging must never break training
            self.handleError(record)


def progress_logger() -> logging.Logger:
    """The `adasir` logger, with one plain-message stdout handler. It does not propagate: a Ray
    Train worker's root logger (which Ray configures, and which echoes print) would repeat every
    line. The level comes from $ADASIR_LOG_LEVEL (default INFO; WARNING silences progress)."""
    log = logging.getLogger("adasir")
    if not any(isinstance(h, _CurrentStdout) for h in log.handlers):
        handler = _CurrentStdout()
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.propagate = False
    log.setLevel(os.environ.get("ADASIR_LOG_LEVEL", "INFO").upper())
    return log
