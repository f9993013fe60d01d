"""The ffmpeg binary: which one, its version and the options it understands, and how its
commands are run (stderr drained in a thread, one-line error messages).

Works with old ffmpeg builds too (imageio-ffmpeg 0.5.x bundles ffmpeg 4.2): options the binary
does not know are replaced by their older spelling (:func:`ffmpeg_caps`).
"""
from __future__ import annotations

import functools
import logging
import os
import re
import shutil
import subprocess
import threading
from collections import deque
from dataclasses import dataclass
from typing import Optional

try:
    import imageio_ffmpeg
except ImportError:  # then ffmpeg on the PATH is used
    imageio_ffmpeg = None

log = logging.getLogger(__name__)

# fps_mode replaced -vsync in ffmpeg 5.1; ffmpeg 8 removed -vsync.
_FPS_MODE_SINCE = (5, 1)
_MIN_FFMPEG = (3, 0)
_FIX_HINT = "pip install -U imageio-ffmpeg, or set IMAGEIO_FFMPEG_EXE to a newer ffmpeg"
_VERSION_RE = re.compile(r"ffmpeg version (\S+)")
# Children in their own session: a Ctrl-C in the terminal reaches Python, which stops them.
_POPEN_KW = {"start_new_session": True} if os.name == "posix" else {}


class VideoError(RuntimeError):
    """A video could not be read or written; the message names the file."""


def ffmpeg_exe() -> str:
    """The ffmpeg binary: ``$IMAGEIO_FFMPEG_EXE`` if set, else the one bundled with
    imageio-ffmpeg, else ``ffmpeg`` on the PATH."""
    env = os.environ.get("IMAGEIO_FFMPEG_EXE")
    if env:
        return env
    if imageio_ffmpeg is not None:
        try:
            return imageio_ffmpeg.get_ffmpeg_exe()
        except RuntimeError:
            pass
    exe = shutil.which("ffmpeg")
    if exe is None:
        raise VideoError("no ffmpeg found: pip install imageio-ffmpeg (see requirements.txt)")
    return exe


@dataclass(frozen=True)
class FFmpegCaps:
    exe: str
    version: str                           # as the binary prints it, e.g. "4.2.2-static"
    version_tuple: Optional[tuple]         # (major, minor) or None for git builds
    passthrough: tuple                     # ("-fps_mode", "passthrough") or ("-vsync", "passthrough")


def _parse_version(token: str) -> Optional[tuple]:
    m = re.match(r"n?(\d+)\.(\d+)", token)
    return (int(m.group(1)), int(m.group(2))) if m else None


def _version_token(exe: str) -> str:
    """The version ``exe -version`` prints (one clear VideoError when it prints none)."""
    try:
        proc = subprocess.run([exe, "-hide_banner", "-version"], stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
    except (OSError, subprocess.SubprocessError) as e:
        raise VideoError(f"ffmpeg {exe} could not be run ({e}): {_FIX_HINT}") from None
    text = proc.stdout.decode("utf-8", "replace")
    m = _VERSION_RE.search(text)
    if proc.returncode != 0 or not m:
        first = text.strip().splitlines()[0] if text.strip() else f"exit status {proc.returncode}"
        raise VideoError(f"ffmpeg {exe} does not report a version ({first[:120]}): {_FIX_HINT}")
    return m.group(1)


def _git_build_flag(exe: str, token: str) -> str:
    """A git build ("N-112345-g...") has no version number: ask it which option it knows."""
    helptext = subprocess.run([exe, "-hide_banner", "-h", "long"], stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60
                              ).stdout.decode("utf-8", "replace")
    if "-fps_mode" in helptext:
        return "-fps_mode"
    if "-vsync" in helptext:
        return "-vsync"
    raise VideoError(f"ffmpeg {token} ({exe}) knows neither -fps_mode nor -vsync: {_FIX_HINT}")


@functools.lru_cache(maxsize=8)
def _caps_for(exe: str) -> FFmpegCaps:
    token = _version_token(exe)
    ver = _parse_version(token)
    if ver is None:
        flag = _git_build_flag(exe, token)
    elif ver < _MIN_FFMPEG:
        raise VideoError(f"ffmpeg {token} ({exe}) is too old (need >= "
                         f"{'.'.join(map(str, _MIN_FFMPEG))}): {_FIX_HINT}")
    else:
        flag = "-fps_mode" if ver >= _FPS_MODE_SINCE else "-vsync"
    log.debug("ffmpeg %s at %s: frame-rate passthrough with %s", token, exe, flag)
    return FFmpegCaps(exe, token, ver, (flag, "passthrough"))


def ffmpeg_caps() -> FFmpegCaps:
    """Version of :func:`ffmpeg_exe` and the options to use with it (``ffmpeg -version`` runs
    once per binary; :func:`clear_ffmpeg_cache` forgets it)."""
    return _caps_for(ffmpeg_exe())


def ffmpeg_version() -> str:
    """The version string of :func:`ffmpeg_exe`, e.g. ``"4.2.2-static"``."""
    return ffmpeg_caps().version


def clear_ffmpeg_cache() -> None:
    _caps_for.cache_clear()


def passthrough_args() -> list[str]:
    """Keep every decoded frame, no duplicates/drops: ``-fps_mode passthrough`` (ffmpeg >= 5.1)
    or ``-vsync passthrough`` (older)."""
    return list(ffmpeg_caps().passthrough)


def explain_ffmpeg_error(err: str) -> str:
    """The last meaningful lines of ffmpeg's stderr as one line; an option the binary does not
    know becomes a message naming the version and the fix."""
    lines = [ln.strip() for ln in err.strip().splitlines() if ln.strip()]
    if any("Unrecognized option" in ln or "Option not found" in ln for ln in lines):
        try:
            caps = ffmpeg_caps()
            who = f"ffmpeg {caps.version} ({caps.exe})"
        except VideoError:
            who = "this ffmpeg"
        bad = next((ln for ln in lines if "Unrecognized option" in ln), lines[0])
        return f"{who} does not support an option we need ({bad}): {_FIX_HINT}"
    text = " | ".join(lines[-3:])
    return text[-300:] if text else "no message from ffmpeg"


class StderrTail:
    """Drain a child's stderr in a thread (a chatty ffmpeg never blocks on a full pipe) and
    keep its last lines."""

    def __init__(self, stream, keep: int = 40):
        self._lines: deque[str] = deque(maxlen=keep)
        self._stream = stream
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        try:
            for raw in iter(self._stream.readline, b""):
                self._lines.append(raw.decode("utf-8", "replace").rstrip())
        except (OSError, ValueError):
            pass

    def text(self, timeout: float = 5.0) -> str:
        self._thread.join(timeout)
        return "\n".join(self._lines)


def popen(cmd: list[str], **kw) -> subprocess.Popen:
    """Start an ffmpeg pipe (in its own session on POSIX)."""
    return subprocess.Popen(cmd, **kw, **_POPEN_KW)


def run_ffmpeg(args: list[str]) -> tuple[int, str]:
    """Run :func:`ffmpeg_exe` with ``args`` to the end: (exit status, stderr text)."""
    proc = subprocess.run([ffmpeg_exe(), *args], stdin=subprocess.DEVNULL,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return proc.returncode, proc.stderr.decode("utf-8", "replace")


def last_frame_stat(text: str) -> int:
    """The last ``frame=`` count ffmpeg printed (0 when none)."""
    frames = re.findall(r"frame=\s*(\d+)", text)
    return int(frames[-1]) if frames else 0
