"""What a video holds, before it is read: :func:`probe` gives the number of *decodable* frames
(counted, not trusted from the header; a damaged tail is detected and the lost frames are named
in a warning), the fps as a float and as an exact rational string, the size as a player shows it
(rotation metadata applied), the sample aspect ratio, the codecs and whether there is an audio
track (:class:`VideoInfo`). Frame folders are probed too (their rate is given, default 30)."""
from __future__ import annotations

import logging
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Optional

from .ffmpeg import VideoError, ffmpeg_version, last_frame_stat, passthrough_args, run_ffmpeg
from .inputs import list_frame_files, read_image

log = logging.getLogger(__name__)

DEFAULT_FOLDER_FPS = 30.0
# Seconds before the end decoded to check that the last packets decode (see _tail_counts).
_TAIL_SECONDS = 1.0

_SIZE_RE = re.compile(r"(?<![\dxX])([1-9]\d{0,4})x([1-9]\d{0,4})\b")
_SAR_RE = re.compile(r"\[SAR (\d+):(\d+) DAR \d+:\d+\]")
_FPS_RE = re.compile(r"([\d.]+)(k?) (fps|tbr)")
_DISPLAYMATRIX_RE = re.compile(r"display ?matrix: rotation of (-?[\d.]+) degrees", re.I)
_ROTATE_TAG_RE = re.compile(r"^\s*rotate\s*:\s*(-?[\d.]+)\s*$", re.M)


def fps_to_rational(fps: float) -> Fraction:
    """Exact rate for ffmpeg: NTSC rates (29.97, 23.976, 59.94, ...) become n*1000/1001."""
    for base in (24, 30, 48, 60, 120):
        ntsc = Fraction(base * 1000, 1001)
        if abs(fps - float(ntsc)) < 0.006:
            return ntsc
    return Fraction(fps).limit_denominator(1001)


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


@dataclass(frozen=True)
class _Stream:
    """The first video stream as ``ffmpeg -i`` describes it, as the reader delivers it."""
    width: int
    height: int
    codec: Optional[str]
    pix_fmt: Optional[str]
    sar: Fraction
    rotation: int
    fps: Optional[float]


# ---------------------------------------------------------------------------- counting frames

def _info_and_packets(path: Path) -> tuple[str, int]:
    """ffmpeg's description of ``path`` and its number of video packets, from one remux to
    null (fast, no decode; the header's frame count is not trusted). 0 packets when the remux
    fails."""
    rc, text = run_ffmpeg(["-hide_banner", "-nostats", "-i", str(path), "-map", "0:v:0",
                           "-c", "copy", "-f", "null", "-"])
    if rc < 0 and "Video:" not in text:  # killed by a signal before describing the file
        rc2, text2 = run_ffmpeg(["-hide_banner", "-i", str(path)])
        text = text2 if "Video:" in text2 else \
            text + f"\nffmpeg {ffmpeg_version()} crashed on this file (signal {-rc})"
    return text, (last_frame_stat(text) if rc == 0 else 0)


def _count_frames_decoded(path: Path, sseof: Optional[float] = None) -> int:
    """Frames that decode (the whole file, or from the keyframe before ``sseof`` seconds before
    the end)."""
    seek = ["-sseof", f"-{sseof:g}", "-noaccurate_seek"] if sseof else []
    rc, text = run_ffmpeg(["-hide_banner", "-nostats", *seek, "-i", str(path),
                           "-map", "0:v:0", *passthrough_args(), "-f", "null", "-"])
    return last_frame_stat(text) if rc == 0 or not sseof else 0


def _count_tail_packets(path: Path, seconds: float) -> int:
    rc, text = run_ffmpeg(["-hide_banner", "-nostats", "-sseof", f"-{seconds:g}",
                           "-noaccurate_seek", "-i", str(path), "-map", "0:v:0", "-c", "copy",
                           "-f", "null", "-"])
    return last_frame_stat(text) if rc == 0 else 0


def _tail_counts(path: Path, seconds: float = _TAIL_SECONDS) -> Optional[tuple[int, int]]:
    """(packets, decoded frames) from the keyframe before the last ``seconds`` to the end, or
    None when the file cannot be seeked from its end. Both runs start at the same keyframe
    (``-noaccurate_seek``), so a difference means packets that do not decode. The two ffmpeg
    runs go side by side."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        packets = pool.submit(_count_tail_packets, path, seconds)
        decoded = _count_frames_decoded(path, sseof=seconds)
        n_packets = packets.result()
    if n_packets <= 0:
        return None
    return n_packets, decoded


def _decodable_frames(path: Path, n_packets: int) -> tuple[int, int]:
    """(frames that decode, packets lost at the end). The packet count is checked by decoding
    the last second; when packets there do not decode, the whole file is decoded to count."""
    if n_packets <= 0:
        return _count_frames_decoded(path), 0
    tail = _tail_counts(path)
    if tail is not None and tail[0] == tail[1]:
        return n_packets, 0
    decoded = _count_frames_decoded(path)
    if 0 < decoded < n_packets:
        log.warning("%s: frames %d..%d (of %d) could not be decoded; only the first %d "
                    "are used", path.name, decoded, n_packets - 1, n_packets, decoded)
        return decoded, n_packets - decoded
    return (decoded if decoded > n_packets else n_packets), 0


# ---------------------------------------------------------------------------- ffmpeg -i text

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


def _parse_stream(path: Path, text: str) -> _Stream:
    """The first video stream of ``ffmpeg -i`` output; 90/270 degree rotation swaps the size
    and inverts the SAR, as the reader rotates the frames."""
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
    parts = after.split(",")
    pm = re.match(r"\s*([a-z0-9_]+)", parts[1]) if len(parts) > 1 else None
    sm = _SAR_RE.search(after)
    sar = Fraction(int(sm.group(1)), int(sm.group(2))) if sm and int(sm.group(1)) and \
        int(sm.group(2)) else Fraction(1)
    rotation = _rotation(block)
    if rotation % 180 == 90:  # the reader delivers frames rotated as a player shows them
        width, height = height, width
        sar = 1 / sar
    fm = _FPS_RE.search(after)
    fps = float(fm.group(1)) * (1000 if fm.group(2) else 1) if fm else None
    return _Stream(width, height, cm.group(1) if cm else None, pm.group(1) if pm else None,
                   sar, rotation, fps)


def _audio_codec(text: str) -> tuple[bool, Optional[str]]:
    """(has an audio stream, the first one's codec)."""
    audio_lines = [ln for ln in text.splitlines() if "Audio:" in ln and "Stream #" in ln]
    if not audio_lines:
        return False, None
    am = re.search(r"Audio: (\w+)", audio_lines[0])
    return True, (am.group(1) if am else None)


# ---------------------------------------------------------------------------- probe

def _probe_folder(path: Path, fps: Optional[float]) -> VideoInfo:
    files = list_frame_files(path)
    if not files:
        raise VideoError(f"{path}: folder holds no png/jpg frames")
    first = read_image(files[0])
    rate = fps_to_rational(fps or DEFAULT_FOLDER_FPS)
    return VideoInfo(path, first.shape[1], first.shape[0], len(files), float(rate),
                     f"{rate.numerator}/{rate.denominator}", is_folder=True)


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
        return _probe_folder(path, fps)
    text, n_packets = _info_and_packets(path)
    s = _parse_stream(path, text)
    rate = fps_to_rational(fps or s.fps or DEFAULT_FOLDER_FPS)
    n, lost = _decodable_frames(path, n_packets)
    if n <= 0:
        raise VideoError(f"{path}: video has no decodable frames")
    has_audio, acodec = _audio_codec(text)
    return VideoInfo(path, s.width, s.height, n, float(rate),
                     f"{rate.numerator}/{rate.denominator}", has_audio=has_audio,
                     audio_codec=acodec, sar=f"{s.sar.numerator}:{s.sar.denominator}",
                     rotation=s.rotation, lost_frames=lost, codec=s.codec, pix_fmt=s.pix_fmt)
