"""Writing: :class:`VideoWriter` writes H.264 mp4 at the exact input fps and the exact input size
(odd sizes use yuv444p), optionally with a sample aspect ratio and the audio of a source file,
to a temporary name that is renamed on success and deleted on failure or interrupt;
:func:`is_complete_output` tells a finished output from an interrupted one."""
from __future__ import annotations

import logging
import os
import queue
import re
import subprocess
import threading
from fractions import Fraction
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ...core.files import partial_name
from .ffmpeg import VideoError, explain_ffmpeg_error, ffmpeg_exe, passthrough_args, popen, \
    StderrTail
from .probing import fps_to_rational, probe
from .tensors import HostFrames

log = logging.getLogger(__name__)

# Audio codecs mp4 takes as they are; any other audio track is re-encoded to AAC.
_COPY_AUDIO = ("aac", "mp3", "ac3")


def quality_to_crf(quality: float) -> int:
    """``quality`` 0..10 (imageio's scale, 10 = best) -> x264 CRF 51..0."""
    q = min(max(float(quality), 0.0), 10.0)
    return int(round(51 * (1 - q / 10)))


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


def _audio_args(audio_from, audio_codec: Optional[str]) -> list[str]:
    """Take the first audio track of ``audio_from`` (if it has one): copied, or AAC."""
    if audio_from is None:
        return []
    codec = ["-c:a", "copy"] if audio_codec in _COPY_AUDIO else ["-c:a", "aac", "-b:a", "192k"]
    return ["-i", str(audio_from), "-map", "0:v:0", "-map", "1:a:0?", *codec]


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
        cmd = self._command(quality, _audio_args(audio_from, audio_codec), sar_f)
        self._proc = popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE)
        self._stderr = StderrTail(self._proc.stderr)
        self.frames_written = 0
        self._closed = False
        self._queue = self._thread = None
        self._error: Optional[BaseException] = None
        self._input_ended = False
        if background:  # pipe writes (x264 back-pressure) happen in a thread
            self._queue = queue.Queue(maxsize=4)
            self._thread = threading.Thread(target=self._drain, daemon=True)
            self._thread.start()

    def _command(self, quality: float, audio: list[str], sar_f: Optional[Fraction]) -> list[str]:
        """ffmpeg reading raw RGB frames on stdin, writing H.264 mp4 to ``self.tmp``."""
        cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{self.width}x{self.height}",
               "-r", self.rate, "-i", "-", *audio]
        if sar_f is not None:
            cmd += ["-vf", f"setsar={sar_f.numerator}/{sar_f.denominator}"]
        return cmd + ["-c:v", "libx264", "-preset", "medium", "-crf", str(quality_to_crf(quality)),
                      "-pix_fmt", self.pix_fmt, *passthrough_args(), "-movflags", "+faststart",
                      "-f", "mp4", str(self.tmp)]

    def _drain(self):
        while True:
            buf = self._queue.get()
            if buf is None:
                return
            if self._error is not None:
                continue
            try:
                if buf is _END_OF_INPUT:
                    self._proc.stdin.close()
                else:
                    self._proc.stdin.write(_flat(buf))
            except BaseException as e:  # noqa: BLE001 - raised in the caller's thread
                self._error = e

    def end_input(self) -> None:
        """No more frames: the encoder starts on its last frames now (behind the frames still
        queued) and :meth:`close` waits for it. Ending every writer's input before closing
        the first lets a video's encoders finish together instead of one after another."""
        if self._closed or self._input_ended:
            return
        self._input_ended = True
        if self._queue is not None:
            self._queue.put(_END_OF_INPUT)
            return
        try:
            self._proc.stdin.close()
        except (BrokenPipeError, OSError) as e:
            self._error = e

    def _ffmpeg_message(self) -> str:
        """ffmpeg's own reason, once it has exited (killed if it does not within 5 s)."""
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        return explain_ffmpeg_error(self._stderr.text())

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

    def _write_frames(self, buf) -> None:
        if self._queue is not None:
            if self._error is not None:
                self._raise_pipe_error(self._error)
            self._queue.put(buf)
            return
        try:
            self._proc.stdin.write(_flat(buf))
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
        if self._closed or self._input_ended:
            raise VideoError(f"{self.path}: write after close")
        if not isinstance(frames, HostFrames):  # those are waited for in the writer's thread
            frames = np.asarray(frames)
            if frames.ndim == 3:
                frames = frames[None]
        if frames.dtype != np.uint8 or frames.shape[1:] != (self.height, self.width, 3):
            raise ValueError(f"VideoWriter({self.path.name}): expected uint8 frames of shape "
                             f"(N, {self.height}, {self.width}, 3), got {frames.dtype} "
                             f"{tuple(frames.shape)}")
        count = frames.shape[0]
        if isinstance(frames, np.ndarray) and self._queue is not None:
            # a background writer keeps the array until written (the caller hands it over)
            frames = np.ascontiguousarray(frames)
        self._write_frames(frames)
        self.frames_written += count

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
                self._proc.stdin.close()  # does nothing if end_input closed it
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


# what end_input queues behind a background writer's last frames
_END_OF_INPUT = object()


def _flat(frames) -> np.ndarray:
    """Frames (an array, or :class:`HostFrames`: waited for) as the flat uint8 buffer the pipe
    takes."""
    return np.ascontiguousarray(np.asarray(frames)).reshape(-1)


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
