"""What the app may read, write and serve.

- :class:`Workspace`: the one folder the app writes (uploads land in its ``uploads/``, each run
  in ``runs/<id>/``), removed on exit (normal end, Ctrl-C or SIGTERM) when the app made it.
- :class:`Library`: folders given at start, offered by name; a request names an entry, never a
  path, and only names in the table reach the filesystem.
- :func:`check_upload`: an uploaded file is accepted only from the upload folder, under the size
  cap, as a video that decodes to 1..max_frames frames; anything else is a :class:`UserError`
  whose message the page shows.
"""
from __future__ import annotations

import atexit
import logging
import re
import shutil
import signal
import tempfile
from pathlib import Path
from typing import Optional

from Wan_SR.data import video_io

log = logging.getLogger(__name__)


class UserError(ValueError):
    """A request the app refuses; the message is shown in the page."""


def inside(path, folder) -> bool:
    """``path`` (links resolved) lies in ``folder``."""
    try:
        Path(path).resolve().relative_to(Path(folder).resolve())
        return True
    except (ValueError, OSError):
        return False


def safe_name(text: str, default: str = "clip") -> str:
    """A file name made of letters, digits, ``-``, ``_`` and ``.`` (never ``..`` or a folder)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("._")
    return name[:80] or default


class Workspace:
    """The app's folder: ``root`` (made here, or ``work_dir`` given at start, which must be
    empty or missing); :meth:`cleanup` (registered for exit and SIGTERM) removes what the
    app created."""

    def __init__(self, work_dir: Optional[str] = None):
        if work_dir is None:
            self.root, self.owned = Path(tempfile.mkdtemp(prefix="pssr-app-")), True
        else:
            self.root = Path(work_dir)
            if self.root.exists() and any(self.root.iterdir()):
                raise UserError(f"--work_dir {work_dir}: not empty (the app removes what it "
                                f"writes there on exit; give an empty or new folder)")
            self.root.mkdir(parents=True, exist_ok=True)
            self.owned = False
        self.root = self.root.resolve()
        self.uploads, self.runs = self.root / "uploads", self.root / "runs"
        for d in (self.uploads, self.runs):
            d.mkdir(exist_ok=True)
        self._done = False

    def register_cleanup(self) -> None:
        """Remove the workspace at exit, and turn SIGTERM into a normal exit so it runs."""
        atexit.register(self.cleanup)
        if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
            signal.signal(signal.SIGTERM, _exit_on_signal)

    def cleanup(self) -> None:
        if self._done:
            return
        self._done = True
        if self.owned:
            shutil.rmtree(self.root, ignore_errors=True)
        else:
            for d in (self.uploads, self.runs):
                shutil.rmtree(d, ignore_errors=True)
        log.info("removed the app's files in %s", self.root)


class Library:
    """Folders given at start, by label; the files of a folder by name (one level)."""

    def __init__(self, folders: dict):
        self.folders = {str(k): Path(v).resolve() for k, v in folders.items()}

    def add(self, label: str, folder) -> None:
        self.folders[label] = Path(folder).resolve()

    def remove(self, label: str) -> None:
        self.folders.pop(label, None)

    def labels(self) -> list[str]:
        return list(self.folders)

    def folder(self, label: Optional[str]) -> Path:
        if label not in self.folders:
            raise UserError(f"unknown folder {label!r}: choose one from the list")
        return self.folders[label]

    def videos(self, label: str) -> dict[str, Path]:
        """{file name: path} of the videos and frame folders directly in the folder."""
        folder = self.folder(label)
        try:
            return {p.name: p for p in video_io.list_inputs(folder)}
        except video_io.VideoError:
            return {}

    def video(self, label: str, name: Optional[str]) -> Path:
        found = self.videos(label)
        if name not in found:
            raise UserError(f"no video named {name!r} in {label}")
        return found[name]


def check_upload(path, uploads_dir, max_mb: float, max_frames: int) -> video_io.VideoInfo:
    """The probed video at ``path``, an upload (in ``uploads_dir``) or a library file (given
    by the app itself); raises :class:`UserError` saying what is wrong."""
    if path is None:
        raise UserError("no video: upload one or pick one from the list")
    p = Path(path)
    if uploads_dir is not None and not inside(p, uploads_dir):
        raise UserError("refused: the file is not an upload of this app")
    if p.is_file():
        size_mb = p.stat().st_size / 1e6
        if size_mb > max_mb:
            raise UserError(f"{p.name}: {size_mb:.1f} MB is over the upload limit of "
                            f"{max_mb:g} MB (--max_upload_mb)")
        if p.stat().st_size == 0:
            raise UserError(f"{p.name}: the file is empty")
    try:
        info = video_io.probe(p)
    except (video_io.VideoError, OSError, ValueError) as e:
        raise UserError(f"{p.name}: not a readable video ({first_line(e)})") from None
    if info.num_frames <= 0:
        raise UserError(f"{p.name}: the video has no frames that decode")
    if info.num_frames > max_frames:
        raise UserError(f"{p.name}: {info.num_frames} frames is over the limit of {max_frames} "
                        f"(--max_frames); cut the clip or start the app with a larger limit")
    return info


def first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:300] if text else type(e).__name__


def _exit_on_signal(signum, frame) -> None:
    """SIGTERM: a normal exit, so the exit handlers (the workspace's cleanup) run."""
    raise SystemExit(128 + signum)
