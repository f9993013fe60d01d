"""What the folder loops share: the run settings file, each output's record, and the per-run
summary.

Every run writes its resolved settings to ``<output_dir>/run_config.json`` when it starts
(docs/method.md, "Running"), so a result can be reproduced. Every output gets its own hidden
record, ``<folder>/.<name>.mp4.pssr.json`` (:class:`Records`): removed before the output is
(re)written and written right after the output is renamed into place, so ``--skip_existing``
keeps exactly the complete outputs made with the same settings, even after a killed run or a
run with other settings into the same folder, and processes writing different outputs never
share a file.
"""
from __future__ import annotations

import hashlib
import json
import logging
import platform
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

from Wan_SR.core.distributed import current, on_main
from Wan_SR.core.files import file_sha256, remove_stale_partials, write_json_atomic
from Wan_SR.data.video_io import VideoWriter, is_complete_output, stem

log = logging.getLogger(__name__)

RUN_CONFIG = "run_config.json"
RECORD_SUFFIX = ".pssr.json"

# why --skip_existing redoes an output that exists (a missing output is simply made)
MISSING = "missing"
NO_RECORD = "has no record"
OTHER_SETTINGS = "made with other settings"
CHANGED = "changed since it was recorded"
INCOMPLETE = "incomplete"
UNREADABLE = "cannot be read"


def run_config_path(output_dir) -> Path:
    return Path(output_dir) / RUN_CONFIG


def read_run_config(output_dir) -> Optional[dict]:
    return _read_json(run_config_path(output_dir))


def write_run_config(output_dir, script: str, settings: dict, argv=None, **extra) -> Path:
    """Write ``run_config.json``: the script, its command line, the resolved settings that
    decide the outputs, and the versions that produced them (``extra``: more keys)."""
    data = {
        "script": script,
        "argv": list(sys.argv[1:] if argv is None else argv),
        "settings": _jsonable(settings),
        "written": _now(),
        "versions": {"python": platform.python_version(), "torch": torch.__version__},
        **{k: _jsonable(v) for k, v in extra.items()},
    }
    return write_json_atomic(run_config_path(output_dir), data)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _jsonable(obj):
    """Tuples -> lists, paths -> str, recursively (so settings compare equal after a JSON trip)."""
    return json.loads(json.dumps(obj, default=str))


def _read_json(path: Path) -> Optional[dict]:
    """The JSON object in ``path``; None when it is absent or unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# ---------------------------------------------------------------------------- output records

def record_path(output) -> Path:
    """The hidden record beside an output: ``<folder>/.<name>.mp4.pssr.json``."""
    p = Path(output)
    return p.with_name(f".{p.name}{RECORD_SUFFIX}")


def settings_digest(settings: dict) -> str:
    """SHA-256 of the settings as canonical JSON (key order does not matter)."""
    text = json.dumps(_jsonable(settings), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def new_run_id() -> str:
    return f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"


def output_state(output, frames: int, digest: str) -> Optional[str]:
    """None when ``output`` can be kept: its record names settings of digest ``digest`` and
    this very file (size and SHA-256), and the file holds ``frames`` frames. Otherwise why it
    is (re)made: :data:`MISSING`, :data:`NO_RECORD`, :data:`OTHER_SETTINGS`, :data:`CHANGED`
    (another program replaced it), :data:`UNREADABLE` or :data:`INCOMPLETE`."""
    p = Path(output)
    if not p.is_file():
        return MISSING
    rec = _read_json(record_path(p))
    if rec is None:
        return NO_RECORD
    if rec.get("digest") != digest:
        return OTHER_SETTINGS
    try:
        if rec.get("size") != p.stat().st_size or rec.get("sha256") != file_sha256(p):
            return CHANGED
    except OSError:
        return UNREADABLE
    if not is_complete_output(p, frames):
        return INCOMPLETE
    return None


@dataclass
class Records:
    """The records one run writes beside its outputs, and how it judges an existing output.

    An output's record is removed when the writer of its new file closes (the encoder's last
    frames, then the new file replaces the output) and written atomically right after
    (:meth:`close_writer`): an output with a record is complete and was made with the recorded
    settings, whatever killed a run at whatever moment. While a new file is written under its
    temporary name the old output is untouched and its record (size and SHA-256 of that very
    file) still vouches for it. ``redone``: {output: why} of the existing outputs :meth:`check`
    sent back to be made again."""
    script: str
    settings: dict
    run_id: str = field(default_factory=new_run_id)
    redone: dict = field(default_factory=dict)

    def __post_init__(self):
        self.settings = _jsonable(self.settings)
        self.digest = settings_digest(self.settings)

    def check(self, output, frames: int) -> Optional[str]:
        """None when ``--skip_existing`` keeps ``output``, else why it is made (see
        :func:`output_state`; an existing output that is made again is logged, with a warning
        when it replaces another run's result, and noted in ``redone``)."""
        why = output_state(output, frames, self.digest)
        if why not in (None, MISSING):
            self.redone[str(output)] = why
            level = logging.WARNING if why in (OTHER_SETTINGS, CHANGED) else logging.INFO
            log.log(level, "%s %s: redone", output, why)
        return why

    def open_writer(self, path, **writer_kw):
        """A :class:`~Wan_SR.data.video_io.VideoWriter` for ``path`` (writing under a temporary
        name: the old output and its record stay valid until :meth:`close_writer`)."""
        return VideoWriter(path, **writer_kw)

    def close_writer(self, writer) -> Path:
        """Drop the old record, close ``writer`` (its file replaces the old output), then record
        the new file."""
        record_path(writer.path).unlink(missing_ok=True)
        path = writer.close()
        write_json_atomic(record_path(path), {
            "output": path.name, "frames": writer.frames_written, "size": path.stat().st_size,
            "sha256": file_sha256(path), "script": self.script, "run_id": self.run_id,
            "written": _now(), "digest": self.digest,
            "settings": self.settings})
        return path


def start_run(script: str, settings: dict, output_dir, folders, **extra) -> Records:
    """Every process: this run's :class:`Records` (one run id, chosen by the main process).
    The main process removes what killed runs left in ``folders`` and writes
    ``run_config.json`` (at the start, so an interrupted run leaves its settings too;
    ``extra``: more keys, such as the run's whole config)."""
    records = Records(script, settings, on_main(new_run_id, share=True))
    if current().is_main:
        clean_stale_partials(*folders)
        write_run_config(output_dir, script, settings, run_id=records.run_id, **extra)
    return records


def end_run(output_dir, records: Records, status: int) -> None:
    """The main process adds ``finished`` and ``exit_status`` to ``run_config.json`` (unless
    another run has written it since)."""
    if not current().is_main:
        return
    config = read_run_config(output_dir)
    if config is not None and config.get("run_id") == records.run_id:
        config.update(finished=_now(), exit_status=status)
        write_json_atomic(run_config_path(output_dir), config)


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
        self.redone: dict[str, str] = {}  # existing outputs made again: {output: why}
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
        self.redone.update(other.redone)
        self.made(other.frames, other.seconds)

    def log(self) -> int:
        """Log the summary; returns the exit status (1 when anything failed or had a problem)."""
        log.info("%s: %d done, %d skipped (complete), %d failed", self.what, len(self.done),
                 len(self.skipped), len(self.failed))
        for name, reason in self.failed.items():
            log.warning("failed: %s (%s)", name, reason)
        if self.redone:
            why = Counter(self.redone.values())
            log.info("%s: %d existing output(s) redone: %s", self.what, len(self.redone),
                     ", ".join(f"{n} {reason}" for reason, n in why.most_common()))
        if self.problems:
            log.warning("%s: %d input(s) skipped for a problem", self.what, len(self.problems))
        return 1 if self.failed or self.problems else 0


def output_names(inputs) -> dict:
    """{input path: output base name}. Names are the inputs' base names; inputs that share one
    (``t.mp4`` and ``t.mkv``) get ``t_mp4`` and ``t_mkv`` (a frame folder: ``t_frames``), with a
    notice, so no output overwrites another."""
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
    """Remove temporary files a killed earlier run left in ``folders``, and records whose
    output is gone (with a notice). A record is written only after its output exists, so
    this is safe while other processes write other outputs there."""
    for folder in folders:
        for f in remove_stale_partials(folder):
            log.info("removed %s, left by an interrupted earlier run", f)
        if Path(folder).is_dir():
            for rec in Path(folder).glob(f".*{RECORD_SUFFIX}"):
                output = rec.with_name(rec.name[1:-len(RECORD_SUFFIX)])
                if not output.exists():
                    rec.unlink(missing_ok=True)
                    log.info("removed %s, the record of a missing output", rec)
