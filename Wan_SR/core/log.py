"""Logging and progress bars for every PS-SR script (docs/method.md, "Running").

Modules log through ``logging.getLogger(__name__)``; the scripts call :func:`setup_logging`
once. Only the main process logs at the chosen level when several processes run (the others
log errors only), and :func:`progress` hides its bar on those processes, when standard error is
not a terminal, or with ``--no_progress``.
"""
from __future__ import annotations

import logging
import os
import sys

from tqdm import tqdm

LOG_LEVELS = ("debug", "info", "warning", "error")
_PROGRESS = {"enabled": True}


def is_main_process() -> bool:
    """Rank 0 under torchrun / accelerate launch (RANK / LOCAL_RANK unset: a single process)."""
    for var in ("RANK", "LOCAL_RANK"):
        v = os.environ.get(var)
        if v not in (None, ""):
            return int(v) == 0
    return True


class _TqdmHandler(logging.Handler):
    """Writes to the current standard error through ``tqdm.write``, so log lines do not break a
    progress bar."""

    def emit(self, record):
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


def setup_logging(level: str = "info", progress: bool = True) -> None:
    """One handler on the ``Wan_SR`` logger: ``LEVEL name: message`` on standard error."""
    if level.lower() not in LOG_LEVELS:
        raise ValueError(f"log level must be one of {LOG_LEVELS}, got {level!r}")
    root = logging.getLogger("Wan_SR")
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = _TqdmHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    root.addHandler(handler)
    main = is_main_process()
    root.setLevel(getattr(logging, level.upper()) if main else logging.ERROR)
    _PROGRESS["enabled"] = bool(progress) and main


def progress_enabled() -> bool:
    return _PROGRESS["enabled"] and sys.stderr.isatty()


def progress(iterable=None, *, total=None, desc=None, unit="it", leave=False, enabled=True, **kw):
    """A tqdm bar with ETA on standard error; disabled when not a TTY, with ``--no_progress``,
    on a process other than the main one, or with ``enabled=False``."""
    on = enabled and progress_enabled()
    width = {"dynamic_ncols": True}
    if on and _columns() == 0:  # a terminal that reports no size (e.g. a bare pty): fixed width
        width = {"ncols": 100, "nrows": 40}
    return tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave, disable=not on,
                file=sys.stderr, **width, **kw)


def _columns() -> int:
    try:
        return os.get_terminal_size(sys.stderr.fileno()).columns
    except (OSError, ValueError, AttributeError):
        return 0
