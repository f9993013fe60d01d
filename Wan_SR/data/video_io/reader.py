"""Reading frames in order, never the whole video: :func:`iter_frames` streams uint8 RGB chunks
(rotated as a player shows them) from a video through an ffmpeg pipe or from a frame folder;
:class:`FrameReader` serves overlapping windows (start indices never decrease) from a small
buffer, optionally decoding ahead in a thread."""
from __future__ import annotations

import logging
import os
import queue
import subprocess
import threading
from collections import deque
from typing import Iterator, Optional

import numpy as np

from .ffmpeg import VideoError, explain_ffmpeg_error, ffmpeg_exe, passthrough_args, popen, \
    StderrTail
from .inputs import list_frame_files, read_image
from .probing import VideoInfo, probe

log = logging.getLogger(__name__)


def _lost_message(name: str, got: int, expected: int, why: str = "") -> str:
    why = f" ({why})" if why else ""
    return (f"{name}: frames {got}..{expected - 1} (of {expected}) could not be decoded{why}; "
            f"only the first {got} are available")


def _iter_folder(info: VideoInfo, chunk: int) -> Iterator[np.ndarray]:
    files = list_frame_files(info.path)
    for i in range(0, len(files), chunk):
        frames = [read_image(f) for f in files[i:i + chunk]]
        for f, fr in zip(files[i:i + chunk], frames):
            if fr.shape[:2] != (info.height, info.width):
                raise VideoError(f"{f}: frame size {fr.shape[1]}x{fr.shape[0]} differs from "
                                 f"the first frame's {info.width}x{info.height}")
        yield np.stack(frames)


def _iter_video(info: VideoInfo, chunk: int) -> Iterator[np.ndarray]:
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-i", str(info.path),
           "-map", "0:v:0", *passthrough_args(), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    frame_bytes = info.width * info.height * 3
    proc = popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                 bufsize=frame_bytes * 2)
    errs = StderrTail(proc.stderr)
    produced = 0
    finished = False
    try:
        while True:
            buf = proc.stdout.read(frame_bytes * chunk)
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
        raise VideoError(f"{info.path}: decoded no frames ({explain_ffmpeg_error(err)})")
    if finished and produced < info.num_frames:
        log.warning(_lost_message(info.path.name, produced, info.num_frames,
                                  explain_ffmpeg_error(err) if err.strip() else ""))


def iter_frames(path: str | os.PathLike, chunk: int = 8,
                info: Optional[VideoInfo] = None) -> Iterator[np.ndarray]:
    """Yield uint8 RGB chunks of shape (n<=chunk, H, W, 3), in order, never the whole video.

    Frames come out as a player shows them (rotation metadata applied). When the stream ends
    before ``info.num_frames`` a WARNING names the frames that did not decode."""
    info = info or probe(path)
    yield from (_iter_folder(info, chunk) if info.is_folder else _iter_video(info, chunk))


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

    def _drop_before(self, start: int) -> None:
        while self._buf and self._first < start:
            self._buf.popleft()
            self._first += 1

    def get(self, start: int, count: int) -> np.ndarray:
        if start < self._last_start:
            raise ValueError("FrameReader.get: start must not decrease")
        self._last_start = start
        self._drop_before(start)
        while self._first + len(self._buf) < start + count:
            try:
                chunk = next(self._it)
            except StopIteration:
                self._ended_at = self._first + len(self._buf)
                break
            self._buf.extend(chunk)
        self._drop_before(start)  # the chunk may have started before `start`
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
        return read_image(list_frame_files(info.path)[index])
    reader = FrameReader(info.path, info=info)
    try:
        return reader.get(index, 1)[0]
    finally:
        reader.close()


def _produce(it: Iterator, q: "queue.Queue", stop: threading.Event) -> None:
    """Put ``("ok", item)`` for each item of ``it``, then ``("end", None)``, or ``("err", e)``;
    returns early once ``stop`` is set."""
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
        q.put(("end", None))
    except BaseException as e:  # noqa: BLE001 - handed to the consumer
        q.put(("err", e))


def _prefetched(it: Iterator, depth: int) -> Iterator:
    """Run ``it`` in a daemon thread, ``depth`` items ahead; exceptions re-raised in order."""
    q: "queue.Queue" = queue.Queue(maxsize=depth)
    stop = threading.Event()
    t = threading.Thread(target=_produce, args=(it, q, stop), daemon=True)
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
