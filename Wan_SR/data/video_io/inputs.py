"""What counts as an input: videos (by extension) and folders of png/jpg frames, found directly
inside a folder, naturally sorted, paired across folders by base name (:func:`stem`)."""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Optional

import cv2  # on first use: OpenCV adds half a second to every script's start-up
import numpy as np

from ...core.files import PARTIAL_TAG
from .ffmpeg import VideoError

log = logging.getLogger(__name__)

# Extensions taken as videos in an input folder: every common container ffmpeg demuxes.
VIDEO_EXTS = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v",
              ".ts", ".mts", ".m2ts", ".m2t", ".mpg", ".mpeg", ".m2v", ".mpv", ".vob", ".mod",
              ".flv", ".f4v", ".wmv", ".asf", ".3gp", ".3g2", ".ogv", ".ogm", ".y4m", ".gif",
              ".mxf", ".dv", ".qt", ".divx", ".rm", ".rmvb", ".nut", ".ivf", ".mjpeg", ".mjpg",
              ".h264", ".264", ".avc", ".h265", ".265", ".hevc", ".obu", ".vp8", ".vp9")
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def _natural_key(name: str):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def is_frame_folder(path: str | os.PathLike) -> bool:
    p = Path(path)
    return p.is_dir() and any(f.suffix.lower() in IMAGE_EXTS for f in p.iterdir())


def list_frame_files(folder: str | os.PathLike) -> list[Path]:
    """The frame images of a frame folder, in natural order (``2.png`` before ``10.png``)."""
    files = [f for f in Path(folder).iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTS]
    return sorted(files, key=lambda f: _natural_key(f.name))


def read_image(path: Path) -> np.ndarray:
    """One frame file as (H, W, 3) uint8 RGB."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise VideoError(f"{path}: unreadable image")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


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
