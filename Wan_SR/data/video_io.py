"""Video input/output used by every PS-SR script.

Frames are uint8 RGB arrays of shape (N, H, W, 3). Videos are decoded and encoded by the
ffmpeg binary that ships with ``imageio-ffmpeg`` (no system ffmpeg needed), through pipes, so
a video is never held whole in memory. Folders of png/jpg frames are accepted wherever a video
is.

- :func:`probe` gives the number of *decodable* frames (counted, not trusted from the header;
  a damaged tail is detected and the lost frames are named in a warning), the fps as a float
  and as an exact rational string, the size as a player shows it (rotation metadata applied),
  the sample aspect ratio, and whether there is an audio track.
- :class:`FrameReader` streams frames in order (rotated as a player shows them);
  :meth:`FrameReader.get` serves overlapping windows (start indices never decrease) from a
  small buffer.
- :class:`VideoWriter` writes H.264 mp4 at the exact input fps and the exact input size (odd
  sizes use yuv444p), optionally with a sample aspect ratio, to a temporary name that is
  renamed on success and deleted on failure or interrupt, optionally copying the audio of a
  source file.
- Works with old ffmpeg builds too (imageio-ffmpeg 0.5.x bundles ffmpeg 4.2): options the
  binary does not know are replaced by their older spelling (:func:`ffmpeg_version`).
"""
from __future__ import annotations

import functools
import logging
import os
import re
import subprocess
import threading
from collections import deque
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np

from ..core.files import PARTIAL_TAG, partial_name

log = logging.getLogger(__name__)

# Extensions taken as videos in an input folder: every common container ffmpeg demuxes.
VIDEO_EXTS = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v",
              ".ts", ".mts", ".m2ts", ".m2t", ".mpg", ".mpeg", ".m2v", ".mpv", ".vob", ".mod",
              ".flv", ".f4v", ".wmv", ".asf", ".3gp", ".3g2", ".ogv", ".ogm", ".y4m", ".gif",
              ".mxf", ".dv", ".qt", ".divx", ".rm", ".rmvb", ".nut", ".ivf", ".mjpeg", ".mjpg",
              ".h264", ".264", ".avc", ".h265", ".265", ".hevc", ".obu", ".vp8", ".vp9")
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
DEFAULT_FOLDER_FPS = 30.0
# fps_mode replaced -vsync in ffmpeg 5.1; ffmpeg 8 removed -vsync.
_FPS_MODE_SINCE = (5, 1)
_MIN_FFMPEG = (3, 0)
_FIX_HINT = "pip install -U imageio-ffmpeg, or set IMAGEIO_FFMPEG_EXE to a newer ffmpeg"
# Seconds before the end decoded to check that the last packets decode (see _tail_counts).
_TAIL_SECONDS = 1.0


class VideoError(RuntimeError):
    """A video could not be read or written; the message names the file."""


def ffmpeg_exe() -> str:
    """The ffmpeg binary: ``$IMAGEIO_FFMPEG_EXE`` if set, else the one bundled with
    imageio-ffmpeg, else ``ffmpeg`` on the PATH."""
    env = os.environ.get("IMAGEIO_FFMPEG_EXE")
    if env:
        return env
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError):
        import shutil

        exe = shutil.which("ffmpeg")
        if exe is None:
            raise VideoError("no ffmpeg found: pip install imageio-ffmpeg (see requirements.txt)")
        return exe


# ---------------------------------------------------------------------------------------------
# ffmpeg version and the options it understands
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FFmpegCaps:
    exe: str
    version: str                           # as the binary prints it, e.g. "4.2.2-static"
    version_tuple: Optional[tuple]         # (major, minor) or None for git builds
    passthrough: tuple                     # ("-fps_mode", "passthrough") or ("-vsync", "passthrough")


_VERSION_RE = re.compile(r"ffmpeg version (\S+)")


def _parse_version(token: str) -> Optional[tuple]:
    m = re.match(r"n?(\d+)\.(\d+)", token)
    return (int(m.group(1)), int(m.group(2))) if m else None


@functools.lru_cache(maxsize=8)
def _caps_for(exe: str) -> FFmpegCaps:
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
    token = m.group(1)
    ver = _parse_version(token)
    if ver is None:  # git build ("N-112345-g..."): ask which option it knows
        helptext = subprocess.run([exe, "-hide_banner", "-h", "long"], stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60
                                  ).stdout.decode("utf-8", "replace")
        if "-fps_mode" in helptext:
            flag = "-fps_mode"
        elif "-vsync" in helptext:
            flag = "-vsync"
        else:
            raise VideoError(f"ffmpeg {token} ({exe}) knows neither -fps_mode nor -vsync: "
                             f"{_FIX_HINT}")
    elif ver < _MIN_FFMPEG:
        raise VideoError(f"ffmpeg {token} ({exe}) is too old (need >= "
                         f"{'.'.join(map(str, _MIN_FFMPEG))}): {_FIX_HINT}")
    else:
        flag = "-fps_mode" if ver >= _FPS_MODE_SINCE else "-vsync"
    caps = FFmpegCaps(exe, token, ver, (flag, "passthrough"))
    log.debug("ffmpeg %s at %s: frame-rate passthrough with %s", token, exe, flag)
    return caps


def ffmpeg_caps() -> FFmpegCaps:
    """Version of :func:`ffmpeg_exe` and the options to use with it (``ffmpeg -version`` runs
    once per binary; :func:`clear_ffmpeg_cache` forgets it)."""
    return _caps_for(ffmpeg_exe())


def ffmpeg_version() -> str:
    """The version string of :func:`ffmpeg_exe`, e.g. ``"4.2.2-static"``."""
    return ffmpeg_caps().version


def clear_ffmpeg_cache() -> None:
    _caps_for.cache_clear()


def _passthrough_args() -> list[str]:
    """Keep every decoded frame, no duplicates/drops: ``-fps_mode passthrough`` (ffmpeg >= 5.1)
    or ``-vsync passthrough`` (older)."""
    return list(ffmpeg_caps().passthrough)


def _explain_ffmpeg_error(err: str) -> str:
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


class _StderrTail:
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


_POPEN_KW = {"start_new_session": True} if os.name == "posix" else {}


# ---------------------------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------------------------

def _natural_key(name: str):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def is_frame_folder(path: str | os.PathLike) -> bool:
    p = Path(path)
    return p.is_dir() and any(f.suffix.lower() in IMAGE_EXTS for f in p.iterdir())


def list_frame_files(folder: str | os.PathLike) -> list[Path]:
    files = [f for f in Path(folder).iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTS]
    return sorted(files, key=lambda f: _natural_key(f.name))


def _is_partial(p: Path) -> bool:
    return p.name.startswith(".") and PARTIAL_TAG in p.name


def scan_inputs(folder: str | os.PathLike, sort: bool = True) -> tuple[list[Path], list[Path]]:
    """``(inputs, skipped)`` directly inside ``folder``: videos (by extension, see
    :data:`VIDEO_EXTS`) and frame folders, and the other entries, which are not read.
    Hidden files (``.DS_Store``, temporary ``.partial`` files of a writer) are in neither."""
    folder = Path(folder)
    if not folder.is_dir():
        raise VideoError(f"input folder not found: {folder}")
    inputs, skipped = [], []
    for p in folder.iterdir():
        if p.is_file() and p.suffix.lower() in VIDEO_EXTS and not _is_partial(p):
            inputs.append(p)
        elif p.is_dir() and is_frame_folder(p):
            inputs.append(p)
        elif not p.name.startswith("."):
            skipped.append(p)
    if sort:
        inputs.sort(key=lambda p: _natural_key(p.name))
        skipped.sort(key=lambda p: _natural_key(p.name))
    return inputs, skipped


def list_inputs(folder: str | os.PathLike, sort: bool = True,
                skipped: Optional[list] = None) -> list[Path]:
    """Videos and frame folders directly inside ``folder`` (naturally sorted when ``sort``).

    Entries that are neither are named in one WARNING and, when ``skipped`` is a list,
    appended to it."""
    inputs, left = scan_inputs(folder, sort=sort)
    if left:
        names = ", ".join(p.name + ("/" if p.is_dir() else "") for p in left)
        log.warning("%s: skipped %d entr%s that %s not a video or a folder of frames: %s",
                    folder, len(left), "y" if len(left) == 1 else "ies",
                    "is" if len(left) == 1 else "are", names)
        if skipped is not None:
            skipped.extend(left)
    return inputs


def stem(path: str | os.PathLike) -> str:
    """Base name used to pair files across folders (``a.mp4`` and folder ``a/`` both give ``a``)."""
    p = Path(path)
    return p.name if p.is_dir() else p.stem


def fps_to_rational(fps: float) -> Fraction:
    """Exact rate for ffmpeg: NTSC rates (29.97, 23.976, 59.94, ...) become n*1000/1001."""
    for base in (24, 30, 48, 60, 120):
        ntsc = Fraction(base * 1000, 1001)
        if abs(fps - float(ntsc)) < 0.006:
            return ntsc
    return Fraction(fps).limit_denominator(1001)


def _sar_fraction(sar) -> Optional[Fraction]:
    """``"4:3"``, ``"4/3"``, a Fraction or None -> Fraction (None for unknown/square)."""
    if sar is None:
        return None
    if isinstance(sar, Fraction):
        f = sar
    else:
        m = re.fullmatch(r"\s*(\d+)\s*[:/]\s*(\d+)\s*", str(sar))
        if not m:
            raise ValueError(f"sample aspect ratio must look like '4:3', got {sar!r}")
        num, den = int(m.group(1)), int(m.group(2))
        if num == 0 or den == 0:
            return None
        f = Fraction(num, den)
    return None if f == 1 else f


@dataclass
class VideoInfo:
    """What :func:`probe` found. ``width``/``height`` are the size of the frames the reader
    delivers, i.e. as a player shows them (after rotation metadata); ``num_frames`` counts the
    frames that decode."""
    path: Path
    width: int
    height: int
    num_frames: int
    fps: float
    rate: str  # exact rational frame rate for ffmpeg, e.g. "30000/1001"
    has_audio: bool = False
    audio_codec: Optional[str] = None
    is_folder: bool = False
    sar: str = "1:1"  # sample (pixel) aspect ratio of the delivered frames, "num:den"
    rotation: int = 0  # display rotation applied while reading, degrees counter-clockwise 0..359
    lost_frames: int = 0  # packets at the end that do not decode (not part of num_frames)
    codec: Optional[str] = None  # video codec name, e.g. "h264"
    pix_fmt: Optional[str] = None  # stored pixel format, e.g. "yuv420p"

    @property
    def packets(self) -> int:
        """Video packets in the file (``num_frames + lost_frames``)."""
        return self.num_frames + self.lost_frames


_SIZE_RE = re.compile(r"(?<![\dxX])([1-9]\d{0,4})x([1-9]\d{0,4})\b")
_SAR_RE = re.compile(r"\[SAR (\d+):(\d+) DAR \d+:\d+\]")
_FPS_RE = re.compile(r"([\d.]+)(k?) (fps|tbr)")
_DISPLAYMATRIX_RE = re.compile(r"display ?matrix: rotation of (-?[\d.]+) degrees", re.I)
_ROTATE_TAG_RE = re.compile(r"^\s*rotate\s*:\s*(-?[\d.]+)\s*$", re.M)


def _run(cmd: list[str]) -> tuple[int, str]:
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE)
    return proc.returncode, proc.stderr.decode("utf-8", "replace")


def _last_frame_stat(text: str) -> int:
    frames = re.findall(r"frame=\s*(\d+)", text)
    return int(frames[-1]) if frames else 0


def _info_and_packets(path: Path) -> tuple[str, int]:
    """ffmpeg's description of ``path`` and its number of video packets, from one remux to
    null (fast, no decode; the header's frame count is not trusted). 0 packets when the remux
    fails."""
    rc, text = _run([ffmpeg_exe(), "-hide_banner", "-nostats", "-i", str(path), "-map", "0:v:0",
                     "-c", "copy", "-f", "null", "-"])
    if rc < 0 and "Video:" not in text:  # killed by a signal before describing the file
        rc2, text2 = _run([ffmpeg_exe(), "-hide_banner", "-i", str(path)])
        text = text2 if "Video:" in text2 else \
            text + f"\nffmpeg {ffmpeg_version()} crashed on this file (signal {-rc})"
    return text, (_last_frame_stat(text) if rc == 0 else 0)


def _count_frames(path: Path) -> int:
    """Count video packets by remuxing to null (fast, no decode); the header is not trusted."""
    return _info_and_packets(path)[1]


def _count_frames_decoded(path: Path, sseof: Optional[float] = None) -> int:
    """Frames that decode (the whole file, or from the keyframe before ``sseof`` seconds before
    the end)."""
    seek = ["-sseof", f"-{sseof:g}", "-noaccurate_seek"] if sseof else []
    rc, text = _run([ffmpeg_exe(), "-hide_banner", "-nostats", *seek, "-i", str(path),
                     "-map", "0:v:0", *_passthrough_args(), "-f", "null", "-"])
    return _last_frame_stat(text) if rc == 0 or not sseof else 0


def _tail_counts(path: Path, seconds: float = _TAIL_SECONDS) -> Optional[tuple[int, int]]:
    """(packets, decoded frames) from the keyframe before the last ``seconds`` to the end, or
    None when the file cannot be seeked from its end. Both runs start at the same keyframe
    (``-noaccurate_seek``), so a difference means packets that do not decode."""
    seek = ["-sseof", f"-{seconds:g}", "-noaccurate_seek"]
    out: dict[str, int] = {}

    def packets():
        rc, text = _run([ffmpeg_exe(), "-hide_banner", "-nostats", *seek, "-i", str(path),
                         "-map", "0:v:0", "-c", "copy", "-f", "null", "-"])
        out["packets"] = _last_frame_stat(text) if rc == 0 else 0

    t = threading.Thread(target=packets, daemon=True)
    t.start()
    decoded = _count_frames_decoded(path, sseof=seconds)
    t.join()
    if out.get("packets", 0) <= 0:
        return None
    return out["packets"], decoded


def _video_block(text: str) -> tuple[str, str]:
    """The first video stream's line of ``ffmpeg -i`` and the indented lines under it."""
    lines = text.splitlines()
    for i, ln in enumerate(lines):
        if "Stream #" in ln and "Video:" in ln:
            block = []
            for nxt in lines[i + 1:]:
                if "Stream #" in nxt or not nxt.startswith("    ") or nxt.startswith("Output"):
                    break
                block.append(nxt)
            return ln, "\n".join(block)
    return "", ""


def _rotation(block: str) -> int:
    """Display rotation in degrees counter-clockwise (0..359) from the display matrix side
    data (or the old ``rotate`` tag, which counts clockwise)."""
    m = _DISPLAYMATRIX_RE.search(block)
    if m:
        return int(round(float(m.group(1)))) % 360
    m = _ROTATE_TAG_RE.search(block)
    if m:
        return (-int(round(float(m.group(1))))) % 360
    return 0


def probe(path: str | os.PathLike, fps: Optional[float] = None) -> VideoInfo:
    """Size, decodable frame count, fps, SAR, rotation and audio of a video file or a frame
    folder.

    ``fps`` overrides the file's rate (and is the rate of frame folders, default 30). The size
    is the one a player shows: with 90/270 degree rotation metadata width and height are the
    coded ones swapped, as the reader rotates the frames. The frame count is the number of
    packets (a fast remux), checked by decoding the last second: when packets at the end do
    not decode, the whole file is decoded to count the good frames and a WARNING names the lost
    ones (``lost_frames``).
    """
    path = Path(path)
    if not path.exists():
        raise VideoError(f"{path}: no such file or folder")
    if path.is_dir():
        files = list_frame_files(path)
        if not files:
            raise VideoError(f"{path}: folder holds no png/jpg frames")
        first = _imread(files[0])
        rate = fps_to_rational(fps or DEFAULT_FOLDER_FPS)
        return VideoInfo(path, first.shape[1], first.shape[0], len(files), float(rate),
                         f"{rate.numerator}/{rate.denominator}", is_folder=True)
    text, n_packets = _info_and_packets(path)
    line, block = _video_block(text)
    if not line:
        lines = [ln for ln in text.strip().splitlines() if ln.strip()]
        reason = lines[-1].strip() if lines else "unknown format"
        raise VideoError(f"{path}: not a readable video ({reason})")
    after = line.split("Video:", 1)[1]
    m = _SIZE_RE.search(after)
    if not m:
        raise VideoError(f"{path}: could not read the frame size")
    width, height = int(m.group(1)), int(m.group(2))
    cm = re.match(r"\s*(\w+)", after)
    codec = cm.group(1) if cm else None
    parts = after.split(",")
    pm = re.match(r"\s*([a-z0-9_]+)", parts[1]) if len(parts) > 1 else None
    pix_fmt = pm.group(1) if pm else None
    sm = _SAR_RE.search(after)
    sar = Fraction(int(sm.group(1)), int(sm.group(2))) if sm and int(sm.group(1)) and \
        int(sm.group(2)) else Fraction(1)
    rotation = _rotation(block)
    if rotation % 180 == 90:  # the reader delivers frames rotated as a player shows them
        width, height = height, width
        sar = 1 / sar
    src_fps = None
    for val, kilo, _kind in _FPS_RE.findall(after):
        src_fps = float(val) * (1000 if kilo else 1)
        break
    use_fps = fps or src_fps or DEFAULT_FOLDER_FPS
    rate = fps_to_rational(use_fps)

    n, lost = n_packets, 0
    if n_packets > 0:
        tail = _tail_counts(path)
        if tail is None or tail[0] != tail[1]:
            decoded = _count_frames_decoded(path)
            if 0 < decoded < n_packets:
                lost = n_packets - decoded
                n = decoded
                log.warning("%s: frames %d..%d (of %d) could not be decoded; only the first %d "
                            "are used", path.name, decoded, n_packets - 1, n_packets, decoded)
            elif decoded > n_packets:
                n = decoded
    else:
        n = _count_frames_decoded(path)
    if n <= 0:
        raise VideoError(f"{path}: video has no decodable frames")
    audio_lines = [ln for ln in text.splitlines() if "Audio:" in ln and "Stream #" in ln]
    acodec = None
    if audio_lines:
        am = re.search(r"Audio: (\w+)", audio_lines[0])
        acodec = am.group(1) if am else None
    return VideoInfo(path, width, height, n, float(rate), f"{rate.numerator}/{rate.denominator}",
                     has_audio=bool(audio_lines), audio_codec=acodec,
                     sar=f"{sar.numerator}:{sar.denominator}", rotation=rotation,
                     lost_frames=lost, codec=codec, pix_fmt=pix_fmt)


# ---------------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------------

def _imread(path: Path) -> np.ndarray:
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise VideoError(f"{path}: unreadable image")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _lost_message(name: str, got: int, expected: int, why: str = "") -> str:
    why = f" ({why})" if why else ""
    return (f"{name}: frames {got}..{expected - 1} (of {expected}) could not be decoded{why}; "
            f"only the first {got} are available")


def iter_frames(path: str | os.PathLike, chunk: int = 8,
                info: Optional[VideoInfo] = None) -> Iterator[np.ndarray]:
    """Yield uint8 RGB chunks of shape (n<=chunk, H, W, 3), in order, never the whole video.

    Frames come out as a player shows them (rotation metadata applied). When the stream ends
    before ``info.num_frames`` a WARNING names the frames that did not decode."""
    info = info or probe(path)
    if info.is_folder:
        files = list_frame_files(info.path)
        for i in range(0, len(files), chunk):
            frames = [_imread(f) for f in files[i:i + chunk]]
            for f, fr in zip(files[i:i + chunk], frames):
                if fr.shape[:2] != (info.height, info.width):
                    raise VideoError(f"{f}: frame size {fr.shape[1]}x{fr.shape[0]} differs from "
                                     f"the first frame's {info.width}x{info.height}")
            yield np.stack(frames)
        return
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-i", str(info.path),
           "-map", "0:v:0", *_passthrough_args(), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    frame_bytes = info.width * info.height * 3
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, bufsize=frame_bytes * 2, **_POPEN_KW)
    errs = _StderrTail(proc.stderr)
    produced = 0
    finished = False
    try:
        while True:
            buf = proc.stdout.read(frame_bytes * chunk)
            if not buf:
                break
            n = len(buf) // frame_bytes
            if n == 0:
                break
            produced += n
            yield np.frombuffer(buf[:n * frame_bytes], np.uint8).reshape(
                n, info.height, info.width, 3).copy()
        finished = True
    finally:
        proc.stdout.close()
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        err = errs.text()
        proc.stderr.close()
    if produced == 0:
        raise VideoError(f"{info.path}: decoded no frames ({_explain_ffmpeg_error(err)})")
    if finished and produced < info.num_frames:
        log.warning(_lost_message(info.path.name, produced, info.num_frames,
                                  _explain_ffmpeg_error(err) if err.strip() else ""))


def read_video(path: str | os.PathLike) -> np.ndarray:
    """Whole video as (N, H, W, 3) uint8. For tests and short clips only."""
    return np.concatenate(list(iter_frames(path)), axis=0)


class FrameReader:
    """Random-looking access to a forward-moving stream: ``get(start, count)`` with
    non-decreasing ``start`` keeps only frames from ``start`` on in memory.

    ``available`` is the number of frames the stream can deliver: ``info.num_frames`` (the
    decodable frames :func:`probe` counted) until the stream ends earlier, then the true count
    (a WARNING names the lost frames, and asking for them raises :class:`VideoError`)."""

    def __init__(self, path: str | os.PathLike, info: Optional[VideoInfo] = None, chunk: int = 8,
                 prefetch: int = 0):
        self.info = info or probe(path)
        self._it = iter_frames(self.info.path, chunk=chunk, info=self.info)
        if prefetch > 0:  # decode up to `prefetch` chunks ahead in a thread
            self._it = _prefetched(self._it, prefetch)
        self._buf: deque[np.ndarray] = deque()
        self._first = 0  # index of _buf[0]
        self._last_start = 0
        self._ended_at: Optional[int] = None

    def __len__(self) -> int:
        return self.info.num_frames

    @property
    def available(self) -> int:
        return self.info.num_frames if self._ended_at is None else min(self._ended_at,
                                                                       self.info.num_frames)

    def get(self, start: int, count: int) -> np.ndarray:
        if start < self._last_start:
            raise ValueError("FrameReader.get: start must not decrease")
        self._last_start = start
        while self._buf and self._first < start:
            self._buf.popleft()
            self._first += 1
        while self._first + len(self._buf) < start + count:
            try:
                chunk = next(self._it)
            except StopIteration:
                self._ended_at = self._first + len(self._buf)
                break
            self._buf.extend(chunk)
        while self._buf and self._first < start:  # chunk may have started before `start`
            self._buf.popleft()
            self._first += 1
        frames = list(self._buf)[: count]
        if len(frames) < count:
            end = self._first + len(self._buf) if self._ended_at is None else self._ended_at
            raise VideoError(f"{self.info.path}: expected {start + count} frames, the stream "
                             f"ended at {end}")
        return np.stack(frames)

    def close(self):
        self._it.close()



def read_frame(path: str | os.PathLike, index: int, info: Optional[VideoInfo] = None) -> np.ndarray:
    """Frame ``index`` as (H, W, 3) uint8, numbered as the streaming reader numbers frames (a
    video is decoded forward to it; a frame folder reads one file)."""
    info = info or probe(path)
    if not 0 <= index < info.num_frames:
        raise ValueError(f"{info.path}: frame {index} out of range (0..{info.num_frames - 1})")
    if info.is_folder:
        return _imread(list_frame_files(info.path)[index])
    reader = FrameReader(info.path, info=info)
    try:
        return reader.get(index, 1)[0]
    finally:
        reader.close()


_END = object()


def _prefetched(it: Iterator, depth: int) -> Iterator:
    """Run ``it`` in a daemon thread, ``depth`` items ahead; exceptions re-raised in order."""
    import queue

    q: "queue.Queue" = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def work():
        try:
            for item in it:
                while not stop.is_set():
                    try:
                        q.put(("ok", item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(("end", _END))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            q.put(("err", e))

    t = threading.Thread(target=work, daemon=True)
    t.start()
    try:
        while True:
            kind, item = q.get()
            if kind == "end":
                return
            if kind == "err":
                raise item
            yield item
    finally:
        stop.set()
        t.join(timeout=5)
        close = getattr(it, "close", None)
        if close is not None and not t.is_alive():
            close()


# ---------------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------------

def quality_to_crf(quality: float) -> int:
    """``quality`` 0..10 (imageio's scale, 10 = best) -> x264 CRF 51..0."""
    q = min(max(float(quality), 0.0), 10.0)
    return int(round(51 * (1 - q / 10)))


def _check_writable(path: Path) -> None:
    """Fail early, with the reason, when ``path`` cannot be written."""
    existing = path.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise VideoError(f"{path}: cannot create the output folder ({existing} is a file)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise VideoError(f"{path}: cannot create the output folder {path.parent} "
                         f"({e.strerror or e})") from None
    if path.is_dir():
        raise VideoError(f"{path}: is a folder, cannot write a video there")
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise VideoError(f"{path}: cannot write into {path.parent} (Permission denied)")


class VideoWriter:
    """Streamed H.264 mp4 writer. Use as a context manager::

        with VideoWriter(out, fps=info.fps, size=(w, h), audio_from=src, sar=info.sar) as w:
            w.write(frames_uint8)

    The file appears under its final name only after a clean close; on an exception (including
    KeyboardInterrupt) the partial file is removed. The output has exactly ``size``: even sizes
    use yuv420p, odd ones yuv444p (H.264 4:2:0 needs even sizes; an INFO notice says so).
    ``sar`` ("4:3", "4/3" or a Fraction; None or 1:1 for square pixels) is stored in the stream,
    so anamorphic sources keep their shape.
    """

    def __init__(self, path: str | os.PathLike, fps: float | str, size: tuple[int, int],
                 quality: float = 9.0, audio_from: Optional[str | os.PathLike] = None,
                 audio_codec: Optional[str] = None, background: bool = False,
                 sar: Optional[str | Fraction] = None, pix_fmt: Optional[str] = None):
        self.path = Path(path)
        self.width, self.height = int(size[0]), int(size[1])
        self.rate = fps if isinstance(fps, str) else None
        if self.rate is None:
            r = fps_to_rational(float(fps))
            self.rate = f"{r.numerator}/{r.denominator}"
        sar_f = _sar_fraction(sar)
        self.sar = f"{sar_f.numerator}:{sar_f.denominator}" if sar_f else "1:1"
        odd = self.width % 2 or self.height % 2
        self.pix_fmt = pix_fmt or ("yuv444p" if odd else "yuv420p")
        if odd and pix_fmt is None:
            log.info("%s: %dx%d has an odd side; written as H.264 yuv444p to keep the exact size "
                     "(some players only play yuv420p)", self.path.name, self.width, self.height)
        _check_writable(self.path)
        self.tmp = partial_name(self.path, ".mp4")
        cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{self.width}x{self.height}",
               "-r", self.rate, "-i", "-"]
        if audio_from is not None:
            cmd += ["-i", str(audio_from), "-map", "0:v:0", "-map", "1:a:0?"]
            cmd += ["-c:a", "copy"] if audio_codec in ("aac", "mp3", "ac3") else ["-c:a", "aac",
                                                                                   "-b:a", "192k"]
        if sar_f is not None:
            cmd += ["-vf", f"setsar={sar_f.numerator}/{sar_f.denominator}"]
        cmd += ["-c:v", "libx264", "-preset", "medium", "-crf", str(quality_to_crf(quality)),
                "-pix_fmt", self.pix_fmt, *_passthrough_args(), "-movflags", "+faststart",
                "-f", "mp4", str(self.tmp)]
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, **_POPEN_KW)
        self._stderr = _StderrTail(self._proc.stderr)
        self.frames_written = 0
        self._closed = False
        self._queue = self._thread = None
        self._error: Optional[BaseException] = None
        if background:  # pipe writes (x264 back-pressure) happen in a thread
            import queue

            self._queue = queue.Queue(maxsize=4)
            self._thread = threading.Thread(target=self._drain, daemon=True)
            self._thread.start()

    def _drain(self):
        while True:
            buf = self._queue.get()
            if buf is None:
                return
            if self._error is not None:
                continue
            try:
                self._proc.stdin.write(buf)
            except BaseException as e:  # noqa: BLE001 - raised in the caller's thread
                self._error = e

    def _ffmpeg_message(self) -> str:
        """ffmpeg's own reason, once it has exited (killed if it does not within 5 s)."""
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        return _explain_ffmpeg_error(self._stderr.text())

    def _fail(self, cause: Optional[BaseException] = None) -> None:
        """Stop ffmpeg, remove the partial file and raise a VideoError with ffmpeg's message."""
        self._closed = True
        self._stop_thread()
        try:
            self._proc.stdin.close()
        except (OSError, ValueError):
            pass
        msg = self._ffmpeg_message()
        self._remove_tmp()
        raise VideoError(f"{self.path}: writing failed ({msg})") from cause

    def _remove_tmp(self) -> None:
        try:
            if self.tmp.is_file() or self.tmp.is_symlink():
                self.tmp.unlink()
        except OSError as e:
            log.warning("%s: could not remove the partial file %s (%s)", self.path, self.tmp, e)

    def _write_bytes(self, buf: bytes) -> None:
        if self._queue is not None:
            if self._error is not None:
                self._raise_pipe_error(self._error)
            self._queue.put(buf)
            return
        try:
            self._proc.stdin.write(buf)
        except (BrokenPipeError, OSError) as e:
            self._raise_pipe_error(e)

    def _raise_pipe_error(self, e: BaseException):
        if not isinstance(e, (BrokenPipeError, OSError)):
            raise e
        self._fail(e)

    def _stop_thread(self):
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def write(self, frames: np.ndarray) -> None:
        if self._closed:
            raise VideoError(f"{self.path}: write after close")
        frames = np.asarray(frames)
        if frames.ndim == 3:
            frames = frames[None]
        if frames.dtype != np.uint8 or frames.shape[1:] != (self.height, self.width, 3):
            raise ValueError(f"VideoWriter({self.path.name}): expected uint8 frames of shape "
                             f"(N, {self.height}, {self.width}, 3), got {frames.dtype} "
                             f"{tuple(frames.shape)}")
        self._write_bytes(np.ascontiguousarray(frames).tobytes())
        self.frames_written += frames.shape[0]

    def close(self) -> Path:
        if self._closed:
            return self.path
        try:
            self._stop_thread()
            if self._error is not None:
                self._fail(self._error)
            if self.frames_written == 0:
                self.abort()
                raise VideoError(f"{self.path}: writing failed (no frames)")
            try:
                self._proc.stdin.close()
            except (BrokenPipeError, OSError) as e:
                self._fail(e)
            rc = self._proc.wait()
            if rc != 0:
                self._fail()
            self._closed = True
            os.replace(self.tmp, self.path)
            return self.path
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Stop ffmpeg and remove the partial file (idempotent; safe in any state)."""
        self._closed = True
        if self._proc.poll() is None:
            self._proc.kill()
        self._stop_thread()
        try:
            self._proc.stdin.close()
        except (OSError, ValueError):
            pass
        self._proc.wait()
        self._remove_tmp()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False


def write_video(path: str | os.PathLike, frames: np.ndarray | Sequence[np.ndarray], fps: float,
                quality: float = 9.0, audio_from=None, sar: Optional[str | Fraction] = None
                ) -> Path:
    """Write a whole (N, H, W, 3) uint8 array (small clips, tests)."""
    frames = np.asarray(frames)
    with VideoWriter(path, fps, (frames.shape[2], frames.shape[1]), quality=quality,
                     audio_from=audio_from, sar=sar) as w:
        w.write(frames)
    return Path(path)


def is_complete_output(out_path: str | os.PathLike, expected_frames: int) -> bool:
    """True when ``out_path`` exists and holds ``expected_frames`` frames (for --skip_existing)."""
    p = Path(out_path)
    if not p.exists():
        return False
    try:
        return probe(p).num_frames == expected_frames
    except VideoError:
        return False


def frames_to_tensor(frames: np.ndarray, device="cpu"):
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float32 in [0, 1] on ``device``."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(frames)).to(device).permute(0, 3, 1, 2).float().div_(255.0)


def tensor_to_frames(frames) -> np.ndarray:
    """(N, 3, H, W) float in [0, 1] -> (N, H, W, 3) uint8 on the CPU (rounded, clamped)."""
    import torch

    out = frames.float().clamp(0.0, 1.0).mul(255.0).round_().to(torch.uint8)
    return out.permute(0, 2, 3, 1).contiguous().cpu().numpy()
