"""Random-access clip reading for training (PyAV): seek to the key frame at or before the clip
start and decode forward, so a clip at frame 5000 costs one GOP of decoding, not 5000 frames.

Frame ``i`` is the i-th frame in presentation order, the same numbering as the streaming reader
``video_io.iter_frames`` (which decodes every frame with ``-fps_mode passthrough``), and the
RGB conversion is FFmpeg's, so :meth:`ClipReader.read` returns exactly the frames
``video_io.read_video(path)[start:start + count]`` returns.

A file's frame index (the presentation time stamps of its video packets and which are key
frames) is built once by demuxing, without decoding, and cached per process
(:func:`frame_index`); the frame count is the number of packets, as ``video_io.probe`` counts it.
Images (png/jpg/jpeg/webp/bmp) are 1-frame clips. Streams without time stamps fall back to
decoding from the start.
"""
from __future__ import annotations

import bisect
import logging
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import av
import cv2
import numpy as np

log = logging.getLogger(__name__)

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
VIDEO_EXTS = (".mp4", ".avi", ".mov", ".wmv", ".mkv", ".flv", ".webm", ".m4v")


class ClipError(RuntimeError):
    """A clip could not be read; the message names the file and the reason."""


def is_image(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTS


def is_video(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTS


@dataclass(frozen=True)
class FrameIndex:
    """Presentation time stamps (sorted) of a video stream's frames and of its key frames."""
    pts: tuple
    key_pts: tuple
    width: int
    height: int
    fps: float

    @property
    def num_frames(self) -> int:
        return len(self.pts)

    @property
    def has_pts(self) -> bool:
        return bool(self.pts) and self.pts[0] is not None


_CACHE: "OrderedDict[tuple, FrameIndex]" = OrderedDict()
_CACHE_LOCK = threading.Lock()
_CACHE_SIZE = 4096


def _open(path: Path):
    try:
        container = av.open(str(path))
    except Exception as e:  # noqa: BLE001 - PyAV raises many kinds
        raise ClipError(f"{path}: cannot open ({e})") from None
    if not container.streams.video:
        container.close()
        raise ClipError(f"{path}: no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    return container, stream


def frame_index(path: str | os.PathLike) -> FrameIndex:
    """The frame index of a video file, built by demuxing (no decoding); cached per process
    by (path, size, modification time)."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        raise ClipError(f"{p}: no such file") from None
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    with _CACHE_LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    container, stream = _open(p)
    try:
        pts, keys, missing = [], [], False
        for packet in container.demux(stream):
            if packet.size == 0:  # flush packet at the end
                continue
            if packet.pts is None:
                missing = True
                pts.append(None)
                continue
            pts.append(packet.pts)
            if packet.is_keyframe:
                keys.append(packet.pts)
        if missing:
            pts = [None] * len(pts)
            keys = []
        else:
            pts.sort()
            keys.sort()
        rate = stream.average_rate or stream.guessed_rate
        idx = FrameIndex(tuple(pts), tuple(keys), stream.codec_context.width,
                         stream.codec_context.height, float(rate) if rate else 0.0)
    except ClipError:
        raise
    except Exception as e:  # noqa: BLE001
        raise ClipError(f"{p}: cannot read the video stream ({e})") from None
    finally:
        container.close()
    if idx.num_frames == 0:
        raise ClipError(f"{p}: video has no frames")
    with _CACHE_LOCK:
        _CACHE[key] = idx
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return idx


def _read_image(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise ClipError(f"{path}: unreadable image")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)[None]


class ClipReader:
    """Random access to the frames of one video (or image) file::

        r = ClipReader("a.mp4")
        clip = r.read(start=5000, count=33)   # (33, H, W, 3) uint8 RGB
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if is_image(self.path):
            self._image = _read_image(self.path)
            self.index = None
        else:
            self._image = None
            self.index = frame_index(self.path)
        self.decoded_frames = 0  # frames decoded by the last read (for tests / benchmarks)

    @property
    def num_frames(self) -> int:
        return 1 if self._image is not None else self.index.num_frames

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)."""
        if self._image is not None:
            return self._image.shape[2], self._image.shape[1]
        return self.index.width, self.index.height

    def read(self, start: int, count: int) -> np.ndarray:
        """Frames ``start .. start+count-1`` as (count, H, W, 3) uint8 RGB."""
        n = self.num_frames
        if start < 0 or count < 1 or start + count > n:
            raise ClipError(f"{self.path}: frames {start}..{start + count - 1} requested, the "
                            f"file has {n}")
        if self._image is not None:
            self.decoded_frames = 1
            return self._image.copy()
        if not self.index.has_pts:
            return self._read_sequential(start, count)
        return self._read_seek(start, count)

    def _read_seek(self, start: int, count: int) -> np.ndarray:
        pts = self.index.pts
        want = pts[start: start + count]
        first, last = want[0], want[-1]
        keys = self.index.key_pts
        # key frames at or before the first wanted frame, nearest first
        k = bisect.bisect_right(keys, first) - 1
        candidates = [keys[i] for i in range(k, -1, -1)][:3] if k >= 0 else []
        for seek_pts in candidates + [None]:
            frames = self._decode_from(seek_pts, first, last, count)
            if frames is not None:
                return frames
        raise ClipError(f"{self.path}: could not decode frames {start}..{start + count - 1}")

    def _decode_from(self, seek_pts, first, last, count) -> Optional[np.ndarray]:
        """Seek to ``seek_pts`` (None: the start) and decode frames with first <= pts <= last;
        None when the seek landed after ``first`` (try an earlier key frame)."""
        container, stream = _open(self.path)
        out: list[np.ndarray] = []
        decoded = 0
        try:
            if seek_pts is not None:
                container.seek(seek_pts, stream=stream, backward=True, any_frame=False)
            for frame in container.decode(stream):
                decoded += 1
                if frame.pts is None:
                    continue
                if not out and frame.pts > first:
                    return None  # landed past the start: the caller seeks earlier
                if frame.pts < first:
                    continue
                if frame.pts > last:
                    break
                out.append(frame.to_ndarray(format="rgb24"))
                if len(out) == count:
                    break
        except Exception as e:  # noqa: BLE001
            raise ClipError(f"{self.path}: decoding failed ({e})") from None
        finally:
            container.close()
            self.decoded_frames = decoded
        return self._stack(out, count)

    def _read_sequential(self, start: int, count: int) -> np.ndarray:
        container, stream = _open(self.path)
        out = []
        try:
            for i, frame in enumerate(container.decode(stream)):
                if i >= start:
                    out.append(frame.to_ndarray(format="rgb24"))
                if len(out) == count:
                    break
        except Exception as e:  # noqa: BLE001
            raise ClipError(f"{self.path}: decoding failed ({e})") from None
        finally:
            container.close()
            self.decoded_frames = start + len(out)
        return self._stack(out, count)

    def _stack(self, frames: list, count: int) -> np.ndarray:
        if len(frames) != count:
            raise ClipError(f"{self.path}: decoded {len(frames)} of {count} frames")
        return np.stack(frames)


def read_clip(path: str | os.PathLike, start: int, count: int) -> np.ndarray:
    """``ClipReader(path).read(start, count)``."""
    return ClipReader(path).read(start, count)


def count_frames(path: str | os.PathLike) -> int:
    """Frames of a video file (packets counted, as ``video_io.probe``), 1 for an image."""
    return ClipReader(path).num_frames
