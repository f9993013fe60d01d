"""Make a paired test set: degrade every video of a folder with a degradation YAML
(docs/method.md, "Degradation"; README "Make a paired test set").

For each input (video file or frame folder) of ``input_dir``:

- ``<output_dir>/<name>.mp4``: the LQ video, same frame count and exact frame rate as the
  input, audio dropped, H.264 (written to a temporary name and renamed when complete);
- ``<output_dir>/<name>_contact.png``: a contact sheet, one row per sampled frame, HQ crop on
  the left and the LQ crop of the same region on the right (LQ shown enlarged with nearest
  neighbour when it is smaller), to judge the degradation at a glance;
- ``<output_dir>/run_config.json``: the settings (config values, seed, sizes) of the run.

Frames are streamed: the video is degraded in clips of ``clip_frames`` frames (33, a training
clip, by default), each clip drawing its per-clip choices as a training sample does. Every clip
has its own generator seeded by (``seed``, video name, clip number), so a rerun gives the same
LQ on the same device, and one video's LQ does not depend on the other files in the folder.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import cv2
import numpy as np
import torch

from Wan_SR.core.devices import resolve_device
from Wan_SR.core.files import atomic_path
from Wan_SR.core.log import progress
from Wan_SR.data import video_io
from Wan_SR.data.degradation import Degradation, load_config
from .common import Summary, output_names, write_run_config

log = logging.getLogger(__name__)

SHEET_SUFFIX = "_contact.png"


@dataclass
class DegradeOptions:
    config: Optional[str] = None      # YAML file (None: config/degradation_pssr.yml)
    seed: int = 0
    keep_size: bool = True            # LQ resized back to the HQ size (as in training)
    scale: Optional[int] = None       # with keep_size False: LQ at HQ/scale (None: the YAML's)
    device: Optional[str] = None
    clip_frames: int = 33             # frames degraded together (per-clip choices)
    sheet_frames: int = 4             # rows of the contact sheet
    sheet_crop: int = 192             # side of the square HQ crop on the sheet
    save_quality: float = 9.0
    sort_files: bool = True

    def validate(self) -> None:
        if self.clip_frames < 1:
            raise ValueError("--clip_frames must be >= 1")
        if self.sheet_frames < 1 or self.sheet_crop < 16:
            raise ValueError("--sheet_frames must be >= 1 and --sheet_crop >= 16")
        if self.scale is not None and not 1 <= self.scale <= 16:
            raise ValueError(f"--scale must be in 1..16, got {self.scale}")
        if not 0 <= self.save_quality <= 10:
            raise ValueError("--save_quality must be in 0..10")


def clip_seed(seed: int, name: str, clip: int) -> int:
    """Seed of one clip of one video: a hash of (seed, name, clip number)."""
    h = hashlib.sha256(f"{int(seed)}|{name}|{int(clip)}".encode()).digest()
    return int.from_bytes(h[:8], "little") & (2 ** 62 - 1)


def degrade_folder(input_dir, output_dir, options: Optional[DegradeOptions] = None) -> int:
    """Degrade every input of ``input_dir`` into ``output_dir``; returns the exit status
    (0, or 1 when an input failed). Raises ValueError / VideoError for a missing or empty input
    folder and for a bad config."""
    o = options or DegradeOptions()
    o.validate()
    inp, out = Path(input_dir), Path(output_dir)
    if not inp.is_dir():
        raise video_io.VideoError(f"--input_dir not found or not a folder: {inp}")
    if out.resolve() == inp.resolve():
        raise ValueError("--output_dir must differ from --input_dir (outputs would overwrite inputs)")
    inputs = video_io.list_inputs(inp, sort=o.sort_files)
    if not inputs:
        raise video_io.VideoError(f"{inp}: no videos (mp4/mov/avi/mkv/webm/m4v) or frame folders")
    overrides = {} if o.keep_size or o.scale is None else {"scale": int(o.scale)}
    cfg = load_config(o.config, **overrides)
    deg = Degradation(cfg)
    device = resolve_device(o.device)
    out.mkdir(parents=True, exist_ok=True)
    settings = {"config": cfg.to_dict(), "config_file": cfg.source, "seed": o.seed,
                "keep_size": o.keep_size, "clip_frames": o.clip_frames, "device": str(device)}
    write_run_config(out, "Wan_SR.tools.degrade", settings)
    log.info("degrading %d input(s) from %s into %s (chain %s, x%d, %s, device %s)",
             len(inputs), inp, out, cfg.chain, deg.scale,
             "LQ at HQ size" if o.keep_size else f"LQ at 1/{deg.scale} size", device)
    summary = Summary("degrade")
    names = output_names(inputs)
    for path in progress(inputs, desc="videos", unit="video"):
        name = names[path]
        try:
            degrade_video(path, out / f"{name}.mp4", out / f"{name}{SHEET_SUFFIX}", deg, o,
                          device, name)
            summary.done.append(name)
        except (video_io.VideoError, OSError, ValueError, RuntimeError) as e:
            summary.fail(path.name, e)
    return summary.log()


def degrade_video(path: Path, out_video: Path, out_sheet: Path, deg: Degradation,
                  o: DegradeOptions, device, name: str) -> dict:
    """Degrade one video; returns {'frames', 'fps', 'size'} of the LQ written."""
    info = video_io.probe(path)
    h, w = info.height, info.width
    if h // deg.scale < 1 or w // deg.scale < 1:
        raise ValueError(f"{path.name}: {w}x{h} is too small for x{deg.scale}")
    oh, ow = deg.output_size(h, w, resize_back=o.keep_size)
    picks = sorted(set(np.linspace(0, info.num_frames - 1, o.sheet_frames).round().astype(int)))
    sheet_pairs = []
    written = 0
    with video_io.VideoWriter(out_video, fps=info.rate, size=(ow, oh),
                              quality=o.save_quality) as writer:
        for clip, frames in enumerate(video_io.iter_frames(path, chunk=o.clip_frames, info=info)):
            hq = torch.from_numpy(frames).to(device).permute(0, 3, 1, 2)[None].float() / 255.0
            gen = torch.Generator().manual_seed(clip_seed(o.seed, name, clip))
            lq = deg(hq, generator=gen, resize_back=o.keep_size)[0]
            lq8 = (lq * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
            writer.write(lq8)
            for i in picks:
                if written <= i < written + len(frames):
                    sheet_pairs.append((i, frames[i - written], lq8[i - written]))
            written += len(frames)
    if written != info.num_frames:
        log.warning("%s: probe said %d frames, %d were decoded and written", path.name,
                    info.num_frames, written)
    write_contact_sheet(out_sheet, sheet_pairs, o.sheet_crop)
    log.info("%s: %d frames %dx%d -> %s (%dx%d)", path.name, written, w, h, out_video.name, ow, oh)
    return {"frames": written, "fps": info.rate, "size": (ow, oh)}


def contact_sheet(pairs, crop: int = 192) -> np.ndarray:
    """RGB uint8 image: one row per (frame index, HQ frame, LQ frame), the same region of both
    side by side (LQ enlarged with nearest neighbour when smaller), labelled. The region is the
    most detailed of nine candidate windows of the first frame, the same for every row."""
    rows = []
    gap = 4
    h, w = pairs[0][1].shape[:2]
    c = min(crop, h, w)
    top, left = _busiest_crop(pairs[0][1], c)
    for idx, hq, lq in pairs:
        hq_crop = hq[top:top + c, left:left + c]
        sy, sx = lq.shape[0] / h, lq.shape[1] / w
        lt, ll = int(top * sy), int(left * sx)
        lc_h, lc_w = max(1, int(round(c * sy))), max(1, int(round(c * sx)))
        lq_crop = lq[lt:lt + lc_h, ll:ll + lc_w]
        if lq_crop.shape[:2] != (c, c):
            lq_crop = cv2.resize(lq_crop, (c, c), interpolation=cv2.INTER_NEAREST)
        row = np.full((c + 16, 2 * c + gap, 3), 255, np.uint8)
        row[16:, :c] = hq_crop
        row[16:, c + gap:] = lq_crop
        for text, x in ((f"HQ f{idx}", 2), ("LQ", c + gap + 2)):
            cv2.putText(row, text, (x, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1,
                        cv2.LINE_AA)
        rows.append(row)
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, gap), (0, width - r.shape[1]), (0, 0)), constant_values=255)
            for r in rows]
    return np.concatenate(rows, 0)


def _busiest_crop(frame: np.ndarray, c: int) -> tuple[int, int]:
    """(top, left) of the c x c window, among a 3 x 3 grid of positions, with the most detail
    (mean absolute luma gradient), so the sheet shows texture rather than a flat area."""
    lum = frame.astype(np.float32).mean(2)
    grad = np.abs(np.diff(lum, axis=0))[:, :-1] + np.abs(np.diff(lum, axis=1))[:-1]
    h, w = frame.shape[:2]
    best, pos = -1.0, ((h - c) // 2, (w - c) // 2)
    for top in sorted({0, (h - c) // 2, h - c}):
        for left in sorted({0, (w - c) // 2, w - c}):
            e = float(grad[top:top + c - 1, left:left + c - 1].mean())
            if e > best:
                best, pos = e, (top, left)
    return pos


def write_contact_sheet(path: Path, pairs, crop: int = 192) -> Path:
    if not pairs:
        raise ValueError(f"{path.name}: no frames for the contact sheet")
    img = contact_sheet(pairs, crop)
    ok, buf = cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"{path}: PNG encoding failed")
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.tobytes())
    return path
