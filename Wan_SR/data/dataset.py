"""Training clips: :class:`VideoDataset`, :func:`collate_clips` and :func:`make_dataloader`.

Rows come from a CSV, JSON (a list of objects) or JSONL file whose paths are relative to
``base_path``, or — with no metadata file — from the media files at the top level of
``base_path``, each with the prompt of its same-name ``.txt`` (the default prompt when there is
none). Keys: ``video`` (HQ video or image, required), ``LQ_video`` (optional paired real LQ),
``prompt`` (optional: :data:`Wan_SR.core.options.DEFAULT_PROMPT` when missing or empty).

One sample (docs/method.md, "Training data"):

- ``num_frames`` must be 4n+1; a shorter video gives its own length rounded down to 4n+1; an
  image gives a 1-frame clip.
- The clip start is uniform over all valid starts, drawn from a generator seeded by
  (``seed``, epoch, index): reproducible, and different for every index (so for every process
  of a sharded run). Call :meth:`VideoDataset.set_epoch` before each epoch.
- Frames are resized to cover the target (bilinear, antialiased) and centre-cropped. Target:
  ``height`` x ``width`` when both are given, else the video's own size scaled down to at most
  ``max_pixels`` pixels, each side floored to a multiple of 16.
- A paired ``LQ_video`` is read at the same frame indices and resized/cropped to the HQ size;
  the synthetic degradation (``Wan_SR.data.degradation``) is then not applied by the trainer.

A sample is a dict: ``video`` uint8 tensor (T, 3, H, W) (uint8 keeps the worker-to-trainer
transfer 4x smaller than float; the trainer does ``x.float() / 255`` on the GPU — or pass
``dtype=torch.float32`` for [0, 1] floats), ``LQ_video`` (same shape and dtype, or None),
``prompt``, ``name`` (the row's ``video`` value), ``index``, ``start`` (first frame).

Bad rows never stop an epoch: rows that are malformed (no ``video``, unknown extension,
missing file) are dropped when the dataset is built (:attr:`VideoDataset.bad_rows`); a row that
fails when read is replaced by the next readable row (rows ``index+1, index+2, ...``, at most
:data:`MAX_TRIES` rows in all), read with the generator of the original index, so every sample
index gives a clip (the same one every time: a resumed run repeats an uninterrupted one, and
several processes never disagree on whether a step has a sample). The failed rows ride along in
the sample (``replaced``: ``[(name, reason), ...]``); only when :data:`MAX_TRIES` rows in a row
fail is the sample ``{"error": reason, "name": ...}``. :func:`collate_clips` gathers both into the
batch's ``skipped`` list and :class:`SkipReport` counts them in the training process.
"""
from __future__ import annotations

import csv
import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from ..core.options import DEFAULT_PROMPT
from .clip_reader import ClipError, ClipReader, is_image, is_video

log = logging.getLogger(__name__)

TIME_DIVISION, TIME_REMAINDER = 4, 1
SIZE_DIVISION = 16
DEFAULT_MAX_PIXELS = 1280 * 720
MAX_TRIES = 16  # rows tried for one sample before it is given up


class DatasetError(ValueError):
    """The dataset cannot be built (bad arguments, unreadable metadata, no usable rows)."""


def valid_num_frames(n: int) -> bool:
    return isinstance(n, int) and n >= 1 and n % TIME_DIVISION == TIME_REMAINDER


def round_down_frames(total: int) -> int:
    """Largest 4n+1 that is <= total (total >= 1)."""
    return (total - TIME_REMAINDER) // TIME_DIVISION * TIME_DIVISION + TIME_REMAINDER


def target_size(h: int, w: int, max_pixels: int) -> tuple[int, int]:
    """Dynamic size: (h, w) scaled down to at most ``max_pixels``, floored to multiples of 16."""
    if h * w > max_pixels:
        s = math.sqrt(max_pixels / (h * w))
        h, w = int(h * s), int(w * s)
    return h // SIZE_DIVISION * SIZE_DIVISION, w // SIZE_DIVISION * SIZE_DIVISION


def cover_crop(frames: np.ndarray, height: int, width: int) -> torch.Tensor:
    """(T, H, W, 3) uint8 -> (T, 3, height, width) uint8: resize so the frame covers the target
    (scale = max(width/W, height/H), sizes rounded), bilinear with antialias, centre crop."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
    h, w = x.shape[-2:]
    if (h, w) != (height, width):
        s = max(width / w, height / h)
        nh, nw = max(height, round(h * s)), max(width, round(w * s))
        if (nh, nw) != (h, w):
            parts = []
            for i in range(0, x.shape[0], 4):  # 4 frames at a time bounds the float copy
                xf = torch.nn.functional.interpolate(x[i:i + 4].float(), size=(nh, nw),
                                                     mode="bilinear", align_corners=False,
                                                     antialias=True)
                parts.append(xf.round().clamp(0, 255).to(torch.uint8))
            x = torch.cat(parts)
        top, left = int(round((nh - height) / 2.0)), int(round((nw - width) / 2.0))
        x = x[..., top:top + height, left:left + width]
    return x.contiguous()


def clip_generator(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of one sample: seeded by (seed, epoch, index) only."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch), int(index)])


# ----------------------------------------------------------------------------- metadata


@dataclass
class BadRow:
    name: str
    reason: str

    def __str__(self):
        return f"{self.name}: {self.reason}"


def _clean(v: Any) -> Optional[str]:
    """A cell as a stripped string, or None for missing/empty/NaN cells."""
    if v is None:
        return None
    if isinstance(v, float) and math.isnan(v):
        return None
    s = str(v).strip()
    return s or None


def read_metadata(path: str | os.PathLike) -> tuple[list[tuple[str, Any]], list[BadRow]]:
    """Rows of a .csv / .json / .jsonl file as (row label, row object); malformed JSONL lines
    become bad rows. A file that cannot be read at all raises :class:`DatasetError`."""
    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"metadata file not found: {p}")
    suffix = p.suffix.lower()
    bad: list[BadRow] = []
    rows: list[tuple[str, Any]] = []
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{p}: cannot read ({e})") from None
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise DatasetError(f"{p}: not valid JSON ({e})") from None
        if not isinstance(data, list):
            raise DatasetError(f"{p}: a JSON metadata file must hold a list of row objects")
        rows = [(f"{p.name}[{i}]", r) for i, r in enumerate(data)]
    elif suffix == ".jsonl":
        for ln, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append((f"{p.name}:{ln}", json.loads(line)))
            except json.JSONDecodeError as e:
                bad.append(BadRow(f"{p.name}:{ln}", f"not valid JSON ({e.msg})"))
    else:  # CSV (the release reads anything else with pandas.read_csv)
        reader = csv.DictReader(text.splitlines())
        if not reader.fieldnames:
            raise DatasetError(f"{p}: empty CSV file (a header line with 'video' is needed)")
        for ln, r in enumerate(reader, 2):
            r = {(k.strip() if isinstance(k, str) else k): v for k, v in r.items()}
            if None in r:  # more cells than header fields
                bad.append(BadRow(f"{p.name}:{ln}", "more cells than header columns"))
                continue
            rows.append((f"{p.name}:{ln}", r))
    return rows, bad


def scan_folder(base: Path) -> list[tuple[str, Any]]:
    """Rows for the media files at the top level of ``base`` (prompt from ``<stem>.txt``)."""
    rows = []
    for f in sorted(base.iterdir()):
        if not f.is_file() or not (is_video(f) or is_image(f)):
            continue
        txt = f.with_suffix(".txt")
        prompt = txt.read_text(encoding="utf-8", errors="replace").strip() if txt.is_file() else None
        rows.append((f.name, {"video": f.name, "prompt": prompt}))
    return rows


# ----------------------------------------------------------------------------- dataset


@dataclass
class Row:
    video: Path
    lq: Optional[Path]
    prompt: str
    name: str


class VideoDataset(torch.utils.data.Dataset):
    """HQ (and paired LQ) training clips; see the module docstring."""

    def __init__(self, base_path: str | os.PathLike, metadata_path: Optional[str | os.PathLike] = None,
                 num_frames: int = 81, height: Optional[int] = None, width: Optional[int] = None,
                 max_pixels: int = DEFAULT_MAX_PIXELS, repeat: int = 1, seed: int = 0,
                 data_file_keys: Sequence[str] = ("video", "LQ_video"),
                 default_prompt: str = DEFAULT_PROMPT, dtype: torch.dtype = torch.uint8,
                 quiet: bool = False):
        if not valid_num_frames(num_frames):
            raise DatasetError(f"--num_frames must be 4n+1 (1, 5, 9, ..., 33, ..., 81), got "
                               f"{num_frames}")
        if (height is None) != (width is None):
            raise DatasetError("give both --height and --width (fixed size) or neither "
                               "(dynamic size under --max_pixels)")
        if height is not None:
            if height <= 0 or width <= 0 or height % SIZE_DIVISION or width % SIZE_DIVISION:
                raise DatasetError(f"--height and --width must be positive multiples of "
                                   f"{SIZE_DIVISION}, got {height}x{width}")
        elif max_pixels < SIZE_DIVISION * SIZE_DIVISION:
            raise DatasetError(f"--max_pixels must be at least {SIZE_DIVISION ** 2}, got {max_pixels}")
        if repeat < 1:
            raise DatasetError(f"--dataset_repeat must be >= 1, got {repeat}")
        if dtype not in (torch.uint8, torch.float32):
            raise DatasetError("dtype must be torch.uint8 or torch.float32")
        unknown = [k for k in data_file_keys if k not in ("video", "LQ_video", "image")]
        if "video" not in data_file_keys or unknown:
            raise DatasetError(f"--data_file_keys must include 'video' and may add 'LQ_video' "
                               f"(and the release's 'image'); got {list(data_file_keys)}")
        self.base = Path(base_path)
        if not self.base.is_dir():
            raise DatasetError(f"--dataset_base_path is not a folder: {self.base}")
        self.num_frames, self.height, self.width = num_frames, height, width
        self.max_pixels, self.repeat, self.seed = max_pixels, repeat, seed
        self.use_lq = "LQ_video" in data_file_keys
        self.default_prompt, self.dtype = default_prompt, dtype
        self.epoch = 0
        if metadata_path is None:
            raw, self.bad_rows = scan_folder(self.base), []
            source = str(self.base)
        else:
            raw, self.bad_rows = read_metadata(metadata_path)
            source = str(metadata_path)
        self.rows: list[Row] = []
        for label, r in raw:
            row = self._check_row(label, r)
            if isinstance(row, BadRow):
                self.bad_rows.append(row)
            else:
                self.rows.append(row)
        warn, info = (log.debug, log.debug) if quiet else (log.warning, log.info)
        if "image" in data_file_keys:
            info("--data_file_keys: 'image' has no effect (the release loads that column but "
                 "its training never uses it; images go in the 'video' column)")
        if self.bad_rows:
            warn("%s: %d bad row(s) skipped: %s", source, len(self.bad_rows),
                 "; ".join(map(str, self.bad_rows[:10]))
                 + (" ..." if len(self.bad_rows) > 10 else ""))
        if not self.rows:
            raise DatasetError(f"{source}: no usable rows ({len(self.bad_rows)} bad)")
        n_default = sum(r.prompt == default_prompt for r in self.rows)
        info("%s: %d clips (x%d repeat), %d with the default prompt", source, len(self.rows),
             repeat, n_default)

    def _check_row(self, label: str, r: Any):
        if not isinstance(r, dict):
            return BadRow(label, f"a row must be an object with a 'video' key, got {type(r).__name__}")
        video = _clean(r.get("video"))
        if video is None:
            return BadRow(label, "no 'video' value")
        name = video
        vpath = self.base / video
        if not (is_video(vpath) or is_image(vpath)):
            return BadRow(name, f"unknown file type '{vpath.suffix}'")
        if not vpath.is_file():
            return BadRow(name, f"file not found: {vpath}")
        lq = _clean(r.get("LQ_video")) if self.use_lq else None
        lq_path = None
        if lq is not None:
            lq_path = self.base / lq
            if not (is_video(lq_path) or is_image(lq_path)):
                return BadRow(name, f"LQ_video has an unknown file type '{lq_path.suffix}'")
            if not lq_path.is_file():
                return BadRow(name, f"LQ_video not found: {lq_path}")
        prompt = _clean(r.get("prompt")) or self.default_prompt
        return Row(vpath, lq_path, prompt, name)

    def set_epoch(self, epoch: int) -> None:
        """Clip starts of the next epoch depend on ``epoch`` (call before iterating; DataLoader
        workers get a copy of the dataset when an epoch's iterator is created)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.rows) * self.repeat

    def __getitem__(self, index: int) -> dict:
        failed: list[tuple[str, str]] = []
        for k in range(min(len(self.rows), MAX_TRIES)):
            row = self.rows[(index + k) % len(self.rows)]
            try:
                sample = self._load(row, index)
            except Exception as e:  # noqa: BLE001 - a bad file must never stop an epoch
                failed.append((row.name, str(e) or type(e).__name__))
                log.debug("cannot read %s: %s", *failed[-1])
                continue
            sample["replaced"] = failed
            return sample
        return {"error": f"{len(failed)} row(s) in a row cannot be read", "name": failed[0][0],
                "index": index, "replaced": failed}

    def _load(self, row: Row, index: int) -> dict:
        rng = clip_generator(self.seed, self.epoch, index)
        hq_reader = ClipReader(row.video)
        total = hq_reader.num_frames
        n = 1 if is_image(row.video) else min(self.num_frames, round_down_frames(total))
        start = int(rng.integers(0, total - n + 1)) if total > n else 0
        if row.lq is not None:
            lq_reader = ClipReader(row.lq)
            if lq_reader.num_frames < start + n:
                raise ClipError(f"LQ_video {row.lq.name} has {lq_reader.num_frames} frames, the "
                                f"clip needs frames {start}..{start + n - 1}")
        hq = hq_reader.read(start, n)
        if self.height is not None:
            th, tw = self.height, self.width
        else:
            th, tw = target_size(hq.shape[1], hq.shape[2], self.max_pixels)
            if th == 0 or tw == 0:
                raise ClipError(f"frames of {hq.shape[2]}x{hq.shape[1]} are smaller than "
                                f"{SIZE_DIVISION} pixels")
        video = cover_crop(hq, th, tw)
        lq = cover_crop(lq_reader.read(start, n), th, tw) if row.lq is not None else None
        if self.dtype == torch.float32:
            video = video.float() / 255.0
            lq = lq.float() / 255.0 if lq is not None else None
        return {"video": video, "LQ_video": lq, "prompt": row.prompt, "name": row.name,
                "index": index, "start": start}


# ----------------------------------------------------------------------------- loading


def _stack_or_list(items: list):
    if items and all(isinstance(t, torch.Tensor) for t in items) and \
            all(t.shape == items[0].shape for t in items):
        return torch.stack(items)
    return items


def collate_clips(samples: list[dict]) -> dict:
    """Batch of samples: ``video`` (B, T, 3, H, W) when all clips have one shape, else a list of
    tensors; ``LQ_video`` likewise, None when no sample has one (a list with None entries when
    only some do); ``prompt``, ``name``, ``index``, ``start`` lists; ``skipped``: (name, reason,
    what replaced it or None) of every row that failed (a batch may hold no clip at all:
    ``len(batch["name"]) == 0``)."""
    good = [s for s in samples if "error" not in s]
    skipped = [(n, r, None if "error" in s else s["name"])
               for s in samples for n, r in s.get("replaced", [])]
    lqs = [s["LQ_video"] for s in good]
    if all(x is None for x in lqs):
        lq = None
    elif any(x is None for x in lqs):
        lq = lqs
    else:
        lq = _stack_or_list(lqs)
    return {"video": _stack_or_list([s["video"] for s in good]), "LQ_video": lq,
            "prompt": [s["prompt"] for s in good], "name": [s["name"] for s in good],
            "index": [s["index"] for s in good], "start": [s["start"] for s in good],
            "skipped": skipped}


@dataclass
class SkipReport:
    """Counts the samples skipped in an epoch (in the training process)."""
    skipped: list = field(default_factory=list)

    def add(self, batch: dict) -> int:
        return self.add_entries(batch.get("skipped", []))

    def add_entries(self, entries) -> int:
        """Log and count ``(name, reason, replacement or None)`` entries."""
        for name, reason, instead in entries:
            log.warning("skipped sample %s: %s%s", name, reason,
                        f" (replaced by {instead})" if instead else "")
            self.skipped.append((name, reason))
        return len(entries)

    @property
    def count(self) -> int:
        return len(self.skipped)

    def summary(self) -> str:
        names = sorted({n for n, _ in self.skipped})
        return (f"{self.count} sample(s) skipped ({len(names)} distinct file(s))"
                + (f": {', '.join(names[:10])}" if names else ""))


def make_dataloader(dataset: VideoDataset, batch_size: int = 1, num_workers: int = 0,
                    shuffle: bool = True, seed: int = 0, pin_memory: bool = False,
                    drop_last: bool = False, prefetch_factor: Optional[int] = None
                    ) -> torch.utils.data.DataLoader:
    """A DataLoader with :func:`collate_clips` (``--dataloader_num_workers`` workers; the shuffle
    order is seeded by ``seed``). Workers are not persistent, so :meth:`VideoDataset.set_epoch`
    before each epoch reaches them."""
    gen = torch.Generator()
    gen.manual_seed(int(seed))
    kw = {}
    if num_workers > 0 and prefetch_factor is not None:
        kw["prefetch_factor"] = prefetch_factor
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers,
        collate_fn=collate_clips, pin_memory=pin_memory, drop_last=drop_last, generator=gen,
        persistent_workers=False, **kw)
