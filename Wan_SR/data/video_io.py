"""Video input/output used by every PS-SR script.

Frames are uint8 RGB arrays of shape (N, H, W, 3). Videos are decoded and encoded by the
ffmpeg binary that ships with ``imageio-ffmpeg`` (no system ffmpeg needed), through pipes, so
a video is never held whole in memory. Folders of png/jpg frames are accepted wherever a video
is.

- :func:`probe` gives the true frame count (counted, not trusted from the header), the fps as
  a float and as an exact rational string, the size, and whether there is an audio track.
- :class:`FrameReader` streams frames in order; :meth:`FrameReader.get` serves overlapping
  windows (start indices never decrease) from a small buffer.
- :class:`VideoWriter` writes H.264/yuv420p mp4 at the exact input fps, to a temporary name
  that is renamed on success and deleted on failure, optionally copying the audio of a
  source file.
"""
from __future__ import annotations

import os
import re
import subprocess
from collections import deque
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np

VIDEO_EXTS = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v")
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
DEFAULT_FOLDER_FPS = 30.0


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


def _natural_key(name: str):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def is_frame_folder(path: str | os.PathLike) -> bool:
    p = Path(path)
    return p.is_dir() and any(f.suffix.lower() in IMAGE_EXTS for f in p.iterdir())


def list_frame_files(folder: str | os.PathLike) -> list[Path]:
    files = [f for f in Path(folder).iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTS]
    return sorted(files, key=lambda f: _natural_key(f.name))


def list_inputs(folder: str | os.PathLike, sort: bool = True) -> list[Path]:
    """Videos and frame folders directly inside ``folder`` (naturally sorted when ``sort``)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise VideoError(f"input folder not found: {folder}")
    items = [p for p in folder.iterdir()
             if (p.is_file() and p.suffix.lower() in VIDEO_EXTS) or is_frame_folder(p)]
    return sorted(items, key=lambda p: _natural_key(p.name)) if sort else items


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


@dataclass
class VideoInfo:
    path: Path
    width: int
    height: int
    num_frames: int
    fps: float
    rate: str  # exact rational frame rate for ffmpeg, e.g. "30000/1001"
    has_audio: bool = False
    audio_codec: Optional[str] = None
    is_folder: bool = False


_STREAM_RE = re.compile(r"Stream #\d+:\d+.*?: Video: .*?(\d{2,5})x(\d{2,5})")
_FPS_RE = re.compile(r"([\d.]+)(k?) (fps|tbr)")


def _run_ffmpeg_info(path: Path) -> str:
    proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(path)],
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return proc.stderr.decode("utf-8", "replace")


def _count_frames(path: Path) -> int:
    """Count video packets by remuxing to null (fast, no decode); the header is not trusted."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostats", "-i", str(path), "-map", "0:v:0",
           "-c", "copy", "-f", "null", "-"]
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE)
    text = proc.stderr.decode("utf-8", "replace")
    frames = re.findall(r"frame=\s*(\d+)", text)
    if proc.returncode != 0 or not frames:
        return 0
    return int(frames[-1])


def _count_frames_decoded(path: Path) -> int:
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostats", "-i", str(path), "-map", "0:v:0",
           "-f", "null", "-"]
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE)
    frames = re.findall(r"frame=\s*(\d+)", proc.stderr.decode("utf-8", "replace"))
    return int(frames[-1]) if frames else 0


def probe(path: str | os.PathLike, fps: Optional[float] = None) -> VideoInfo:
    """Size, true frame count, fps and audio of a video file or a frame folder.

    ``fps`` overrides the file's rate (and is the rate of frame folders, default 30).
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
    text = _run_ffmpeg_info(path)
    video_lines = [ln for ln in text.splitlines() if "Video:" in ln and "Stream #" in ln]
    if not video_lines:
        reason = text.strip().splitlines()[-1] if text.strip() else "unknown format"
        raise VideoError(f"{path}: not a readable video ({reason})")
    m = _STREAM_RE.search(video_lines[0])
    if not m:
        raise VideoError(f"{path}: could not read the frame size")
    width, height = int(m.group(1)), int(m.group(2))
    src_fps = None
    for val, kilo, _kind in _FPS_RE.findall(video_lines[0]):
        src_fps = float(val) * (1000 if kilo else 1)
        break
    use_fps = fps or src_fps or DEFAULT_FOLDER_FPS
    rate = fps_to_rational(use_fps)
    n = _count_frames(path)
    if n <= 0:
        n = _count_frames_decoded(path)
    if n <= 0:
        raise VideoError(f"{path}: video has no decodable frames")
    audio_lines = [ln for ln in text.splitlines() if "Audio:" in ln and "Stream #" in ln]
    codec = None
    if audio_lines:
        am = re.search(r"Audio: (\w+)", audio_lines[0])
        codec = am.group(1) if am else None
    return VideoInfo(path, width, height, n, float(rate), f"{rate.numerator}/{rate.denominator}",
                     has_audio=bool(audio_lines), audio_codec=codec)


def _imread(path: Path) -> np.ndarray:
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise VideoError(f"{path}: unreadable image")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def iter_frames(path: str | os.PathLike, chunk: int = 8,
                info: Optional[VideoInfo] = None) -> Iterator[np.ndarray]:
    """Yield uint8 RGB chunks of shape (n<=chunk, H, W, 3), in order, never the whole video."""
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
           "-map", "0:v:0", "-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    frame_bytes = info.width * info.height * 3
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            bufsize=frame_bytes * 2)
    produced = 0
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
    finally:
        proc.stdout.close()
        proc.kill() if proc.poll() is None else None
        err = proc.stderr.read().decode("utf-8", "replace")
        proc.stderr.close()
        proc.wait()
    if produced == 0:
        raise VideoError(f"{info.path}: decoded no frames ({err.strip()[-200:]})")


def read_video(path: str | os.PathLike) -> np.ndarray:
    """Whole video as (N, H, W, 3) uint8. For tests and short clips only."""
    return np.concatenate(list(iter_frames(path)), axis=0)


class FrameReader:
    """Random-looking access to a forward-moving stream: ``get(start, count)`` with
    non-decreasing ``start`` keeps only frames from ``start`` on in memory."""

    def __init__(self, path: str | os.PathLike, info: Optional[VideoInfo] = None, chunk: int = 8,
                 prefetch: int = 0):
        self.info = info or probe(path)
        self._it = iter_frames(self.info.path, chunk=chunk, info=self.info)
        if prefetch > 0:  # decode up to `prefetch` chunks ahead in a thread
            self._it = _prefetched(self._it, prefetch)
        self._buf: deque[np.ndarray] = deque()
        self._first = 0  # index of _buf[0]
        self._last_start = 0

    def __len__(self) -> int:
        return self.info.num_frames

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
                break
            self._buf.extend(chunk)
        while self._buf and self._first < start:  # chunk may have started before `start`
            self._buf.popleft()
            self._first += 1
        frames = list(self._buf)[: count]
        if len(frames) < count:
            raise VideoError(f"{self.info.path}: expected {start + count} frames, the stream "
                             f"ended at {self._first + len(self._buf)}")
        return np.stack(frames)

    def close(self):
        self._it.close()


_END = object()


def _prefetched(it: Iterator, depth: int) -> Iterator:
    """Run ``it`` in a daemon thread, ``depth`` items ahead; exceptions re-raised in order."""
    import queue
    import threading

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


def quality_to_crf(quality: float) -> int:
    """``quality`` 0..10 (imageio's scale, 10 = best) -> x264 CRF 51..0."""
    q = min(max(float(quality), 0.0), 10.0)
    return int(round(51 * (1 - q / 10)))


class VideoWriter:
    """Streamed H.264 mp4 writer. Use as a context manager::

        with VideoWriter(out, fps=info.fps, size=(w, h), audio_from=src) as w:
            w.write(frames_uint8)

    The file appears under its final name only after a clean close; on an exception the
    partial file is removed. Odd sizes are padded by one edge pixel (yuv420p needs even sizes).
    """

    def __init__(self, path: str | os.PathLike, fps: float | str, size: tuple[int, int],
                 quality: float = 9.0, audio_from: Optional[str | os.PathLike] = None,
                 audio_codec: Optional[str] = None, background: bool = False):
        self.path = Path(path)
        self.width, self.height = int(size[0]), int(size[1])
        self.rate = fps if isinstance(fps, str) else None
        if self.rate is None:
            r = fps_to_rational(float(fps))
            self.rate = f"{r.numerator}/{r.denominator}"
        self.tmp = self.path.with_name(f".{self.path.stem}.{os.getpid()}.partial.mp4")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{self.width}x{self.height}",
               "-r", self.rate, "-i", "-"]
        if audio_from is not None:
            cmd += ["-i", str(audio_from), "-map", "0:v:0", "-map", "1:a:0?"]
            cmd += ["-c:a", "copy"] if audio_codec in ("aac", "mp3", "ac3") else ["-c:a", "aac",
                                                                                   "-b:a", "192k"]
        pad_w, pad_h = self.width % 2, self.height % 2
        if pad_w or pad_h:
            cmd += ["-vf", f"pad={self.width + pad_w}:{self.height + pad_h}:0:0,"
                           f"fillborders=right={pad_w}:bottom={pad_h}:mode=smear"]
        cmd += ["-c:v", "libx264", "-preset", "medium", "-crf", str(quality_to_crf(quality)),
                "-pix_fmt", "yuv420p", "-fps_mode", "passthrough", "-movflags", "+faststart",
                "-f", "mp4", str(self.tmp)]
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE)
        self.frames_written = 0
        self._closed = False
        self._queue = self._thread = None
        self._error: Optional[BaseException] = None
        if background:  # pipe writes (x264 back-pressure) happen in a thread
            import queue
            import threading

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

    def _write_bytes(self, buf: bytes) -> None:
        if self._queue is not None:
            if self._error is not None:
                self._raise_pipe_error(self._error)
            self._queue.put(buf)
            return
        try:
            self._proc.stdin.write(buf)
        except BrokenPipeError as e:
            self._raise_pipe_error(e)

    def _raise_pipe_error(self, e: BaseException):
        if not isinstance(e, (BrokenPipeError, OSError)):
            raise e
        err = self._proc.stderr.read().decode("utf-8", "replace")
        raise VideoError(f"{self.path}: ffmpeg stopped: {err.strip()[-300:]}") from e

    def _stop_thread(self):
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def write(self, frames: np.ndarray) -> None:
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
        self._closed = True
        self._stop_thread()
        if self._error is not None:
            self._proc.kill()
            self._proc.wait()
            self.tmp.unlink(missing_ok=True)
            raise VideoError(f"{self.path}: writing failed ({self._error})")
        self._proc.stdin.close()
        err = self._proc.stderr.read().decode("utf-8", "replace")
        rc = self._proc.wait()
        if rc != 0 or self.frames_written == 0:
            self.tmp.unlink(missing_ok=True)
            raise VideoError(f"{self.path}: writing failed ({err.strip()[-300:] or 'no frames'})")
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._proc.kill()
        self._stop_thread()
        try:
            self._proc.stdin.close()
        except Exception:
            pass
        self._proc.wait()
        self.tmp.unlink(missing_ok=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False


def write_video(path: str | os.PathLike, frames: np.ndarray | Sequence[np.ndarray], fps: float,
                quality: float = 9.0, audio_from=None) -> Path:
    """Write a whole (N, H, W, 3) uint8 array (small clips, tests)."""
    frames = np.asarray(frames)
    with VideoWriter(path, fps, (frames.shape[2], frames.shape[1]), quality=quality,
                     audio_from=audio_from) as w:
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
