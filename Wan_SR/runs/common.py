"""What the folder loops share: the run settings file and the per-run summary.

Every run writes its resolved settings to ``<output_dir>/run_config.json`` (docs/method.md,
"Reproducing a run"), so a result can be reproduced and ``--skip_existing`` can tell an output
made with the same settings from one made with others.
"""
from __future__ import annotations

import json
import logging
import platform
import sys
import time
from pathlib import Path
from typing import Optional

from Wan_SR.core.files import remove_stale_partials, write_json_atomic

log = logging.getLogger(__name__)

RUN_CONFIG = "run_config.json"


def run_config_path(output_dir) -> Path:
    return Path(output_dir) / RUN_CONFIG


def read_run_config(output_dir) -> Optional[dict]:
    p = run_config_path(output_dir)
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def same_settings(output_dir, settings: dict) -> bool:
    """True when ``output_dir`` holds a run_config.json whose ``settings`` equal ``settings``."""
    prev = read_run_config(output_dir)
    return prev is not None and _jsonable(prev.get("settings")) == _jsonable(settings)


def write_run_config(output_dir, script: str, settings: dict, argv=None) -> Path:
    """Write ``run_config.json``: the script, its command line, the resolved settings that
    decide the outputs, and the versions that produced them."""
    import torch

    data = {
        "script": script,
        "argv": list(sys.argv[1:] if argv is None else argv),
        "settings": _jsonable(settings),
        "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": {"python": platform.python_version(), "torch": torch.__version__},
    }
    return write_json_atomic(run_config_path(output_dir), data)


def _jsonable(obj):
    """Tuples -> lists, paths -> str, recursively (so settings compare equal after a JSON trip)."""
    return json.loads(json.dumps(obj, default=str))


class Summary:
    """Counts of one run, logged at the end: processed / skipped / failed, with reasons, and the
    frames made with the seconds spent making them. ``problems``: inputs left out for a
    problem (step 2: no partner, sizes differ), which also make the exit status 1."""

    def __init__(self, what: str, quiet: bool = False):
        self.what, self.quiet = what, quiet  # quiet: failures are not logged (reported elsewhere)
        self.done: list[str] = []
        self.skipped: list[str] = []
        self.failed: dict[str, str] = {}
        self.problems: list[str] = []
        self.frames = 0
        self.seconds = 0.0

    def fail(self, name: str, reason) -> None:
        self.failed[name] = str(reason)
        if not self.quiet:
            log.error("%s: %s", name, reason)

    def made(self, frames: int, seconds: float) -> None:
        self.frames += frames
        self.seconds += seconds

    def speed(self) -> str:
        fps = self.frames / self.seconds if self.seconds > 0 else 0.0
        return f"{self.frames} frames in {self.seconds:.1f} s ({fps:.2f} frames/s)"

    def merge(self, other: "Summary") -> None:
        """Add another process's counts."""
        self.done += other.done
        self.skipped += other.skipped
        self.failed.update(other.failed)
        self.problems += other.problems
        self.made(other.frames, other.seconds)

    def log(self) -> int:
        """Log the summary; returns the exit status (1 when anything failed or had a problem)."""
        log.info("%s: %d done, %d skipped (complete), %d failed", self.what, len(self.done),
                 len(self.skipped), len(self.failed))
        for name, reason in self.failed.items():
            log.warning("failed: %s (%s)", name, reason)
        if self.problems:
            log.warning("%s: %d input(s) skipped for a problem", self.what, len(self.problems))
        return 1 if self.failed or self.problems else 0


def output_names(inputs) -> dict:
    """{input path: output base name}. Names are the inputs' base names; inputs that share one
    (``t.mp4`` and ``t.mkv``) get ``t_mp4`` and ``t_mkv`` (a frame folder: ``t_frames``), with a
    notice, so no output overwrites another."""
    from Wan_SR.data.video_io import stem

    groups: dict[str, list] = {}
    for p in inputs:
        groups.setdefault(stem(p), []).append(Path(p))
    names = {}
    for s, paths in groups.items():
        if len(paths) == 1:
            names[paths[0]] = s
            continue
        for p in paths:
            names[p] = f"{s}_{p.suffix.lstrip('.').lower() or 'frames'}" if p.is_file() \
                else f"{s}_frames"
        log.warning("inputs %s share the name '%s': written as %s", ", ".join(p.name for p in paths),
                    s, ", ".join(names[p] for p in paths))
    if len(set(names.values())) != len(names):
        dup = sorted({n for n in names.values() if list(names.values()).count(n) > 1})
        raise ValueError(f"cannot give distinct output names to the inputs {dup}; rename them")
    return names


def clean_stale_partials(*folders) -> None:
    """Remove temporary files a killed earlier run left in ``folders`` (with a notice)."""
    for folder in folders:
        for f in remove_stale_partials(folder):
            log.info("removed %s, left by an interrupted earlier run", f)
