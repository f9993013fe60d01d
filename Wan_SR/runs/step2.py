"""Step 2 as a stand-alone pass: fuse the videos of two folders (docs/method.md,
"Frequency-domain update").

``consistent_dir`` holds the base-branch results, ``sharp_dir`` the last-draft results; files
are paired by base name (``a.mp4`` and a frame folder ``a/`` both pair as ``a``). Each pair is
streamed: frames are read in temporal windows, fused, and written as soon as they are fused, so
a video is never held whole in memory. Fusion works frame by frame, so the temporal windows
only bound memory: every frame is fused exactly once, by the first window that covers it.
Nothing intermediate is written to disk (the output goes to a temporary name beside the final
one and is renamed when complete).
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

from Wan_SR.core.devices import resolve_device
from Wan_SR.core.log import progress
from Wan_SR.core.options import FusionOptions, OutputOptions, WindowOptions, step2_windows
from Wan_SR.core.windows import iter_windows
from Wan_SR.data import video_io
from Wan_SR.fusion.frequency import fuse_video
from .common import Summary, clean_stale_partials, same_settings, write_run_config

log = logging.getLogger(__name__)
_OUT = OutputOptions()


@dataclass
class Step2Options:
    """Step 2's settings (defaults from :mod:`Wan_SR.core.options`; flat for convenience)."""
    windows: WindowOptions = field(default_factory=step2_windows)
    fusion: FusionOptions = field(default_factory=FusionOptions)
    device: Optional[str] = None      # None: cuda if available, else cpu
    fps: Optional[float] = None       # None: the consistent video's rate
    sort_files: bool = _OUT.sort_files
    skip_existing: bool = _OUT.skip_existing
    save_quality: float = _OUT.save_quality

    def __init__(self, windows: Optional[WindowOptions] = None,
                 fusion: Optional[FusionOptions] = None, device: Optional[str] = None,
                 fps: Optional[float] = None, sort_files: bool = _OUT.sort_files,
                 skip_existing: bool = _OUT.skip_existing, save_quality: float = _OUT.save_quality,
                 **flat):
        """Also takes the window and fusion fields flat (``Step2Options(alpha=1, window_h=64)``)."""
        w = dataclasses.asdict(windows or step2_windows())
        f = dataclasses.asdict(fusion or FusionOptions())
        for k, v in flat.items():
            if k in w:
                w[k] = v
            elif k in f:
                f[k] = v
            else:
                raise TypeError(f"Step2Options: unknown option {k!r}")
        self.windows, self.fusion = WindowOptions(**w), FusionOptions(**f)
        self.device, self.fps, self.sort_files = device, fps, sort_files
        self.skip_existing, self.save_quality = skip_existing, save_quality

    def fusion_kwargs(self) -> dict:
        return self.fusion.kwargs(self.windows)

    def settings(self) -> dict:
        """What decides the outputs (compared by ``--skip_existing``)."""
        return {"windows": dataclasses.asdict(self.windows),
                "fusion": dataclasses.asdict(self.fusion), "fps": self.fps,
                "save_quality": self.save_quality}


def pair_inputs(consistent_dir, sharp_dir, sort: bool = True
                ) -> tuple[list[tuple[str, Path, Path]], list[str]]:
    """``(pairs, problems)``: ``(name, consistent, sharp)`` for names found in both folders, and
    one message per input that has no partner or whose name is ambiguous."""
    problems: list[str] = []

    def by_name(folder, label):
        items: dict[str, Path] = {}
        for p in video_io.list_inputs(folder, sort=sort):
            name = video_io.stem(p)
            if name in items:
                problems.append(f"{name}: two inputs with this name in {label} "
                                f"({items[name].name}, {p.name})")
                continue
            items[name] = p
        return items

    cons, sharp = by_name(consistent_dir, "consistent_dir"), by_name(sharp_dir, "sharp_dir")
    pairs = []
    for name, path in cons.items():
        if name in sharp:
            pairs.append((name, path, sharp[name]))
        else:
            problems.append(f"{name}: no partner in sharp_dir {sharp_dir} (have {path.name})")
    for name, path in sharp.items():
        if name not in cons:
            problems.append(f"{name}: no partner in consistent_dir {consistent_dir} "
                            f"(have {path.name})")
    return pairs, problems


def check_pair(name: str, info_c: video_io.VideoInfo, info_s: video_io.VideoInfo) -> Optional[str]:
    """A message when the two inputs cannot be fused frame by frame, else None."""
    if (info_c.width, info_c.height) != (info_s.width, info_s.height):
        return (f"{name}: frame sizes differ (consistent {info_c.width}x{info_c.height}, "
                f"sharp {info_s.width}x{info_s.height})")
    if info_c.num_frames != info_s.num_frames:
        return (f"{name}: frame counts differ (consistent {info_c.num_frames}, "
                f"sharp {info_s.num_frames})")
    return None


def fuse_pair(name: str, info_c: video_io.VideoInfo, info_s: video_io.VideoInfo, out_path: Path,
              opts: Step2Options, device: torch.device) -> int:
    """Stream one pair through the fusion into ``out_path``; returns the frames written."""
    n = info_c.num_frames
    audio = info_c.path if info_c.has_audio else None
    reader_c = video_io.FrameReader(info_c.path, info=info_c, prefetch=4)
    reader_s = video_io.FrameReader(info_s.path, info=info_s, prefetch=4)
    bar = progress(total=n, desc=name, unit="frame")
    try:
        with video_io.VideoWriter(out_path, fps=info_c.rate, size=(info_c.width, info_c.height),
                                  quality=opts.save_quality, audio_from=audio,
                                  audio_codec=info_c.audio_codec, background=True,
                                  sar=info_c.sar) as writer:
            done = 0  # frames [0, done) are fused and written
            for start, count in iter_windows(n, opts.windows.window_t, opts.windows.overlap_t):
                end = start + count
                if end <= done:
                    continue
                # the overlap with the previous window is already fused: read only the new frames
                c = video_io.frames_to_tensor(reader_c.get(done, end - done), device)
                s = video_io.frames_to_tensor(reader_s.get(done, end - done), device)
                with torch.inference_mode():
                    fused = fuse_video(c, s, **opts.fusion_kwargs())
                writer.write(video_io.tensor_to_frames(fused))
                bar.update(end - done)
                done = end
            if done != n or writer.frames_written != n:
                raise video_io.VideoError(f"{name}: wrote {writer.frames_written} of {n} frames")
    finally:
        bar.close()
        reader_c.close()
        reader_s.close()
    return n


def run_step2(consistent_dir, sharp_dir, output_dir, opts: Step2Options) -> int:
    """Fuse every pair of the two folders into ``output_dir/<name>.mp4`` and write
    ``run_config.json``. Returns the exit status: 0 when every input was fused (or skipped as
    already complete), 1 when any input was skipped for a problem or failed, 2 when the folders
    cannot be read."""
    device = resolve_device(opts.device)
    try:
        pairs, problems = pair_inputs(consistent_dir, sharp_dir, sort=opts.sort_files)
    except video_io.VideoError as e:
        log.error("%s", e)
        return 2
    for msg in problems:
        log.warning("skipped: %s", msg)
    output_dir = Path(output_dir)
    settings = opts.settings()
    same = same_settings(output_dir, settings)
    if opts.skip_existing and not same and output_dir.exists():
        log.warning("--skip_existing: %s was made with other settings (or has no run_config.json):"
                    " every output is redone", output_dir)
    clean_stale_partials(output_dir)
    summary = Summary("step 2")
    for name, path_c, path_s in progress(pairs, desc="videos", unit="video", leave=True) \
            if len(pairs) > 1 else pairs:
        out_path = output_dir / f"{name}.mp4"
        try:
            info_c = video_io.probe(path_c, fps=opts.fps)
            info_s = video_io.probe(path_s)
        except video_io.VideoError as e:
            problems.append(str(e))
            log.warning("skipped: %s: %s", name, e)
            continue
        msg = check_pair(name, info_c, info_s)
        if msg is not None:
            problems.append(msg)
            log.warning("skipped: %s", msg)
            continue
        if opts.skip_existing and same and video_io.is_complete_output(out_path,
                                                                       info_c.num_frames):
            summary.skipped.append(name)
            log.info("%s: %s is complete (%d frames), skipped", name, out_path, info_c.num_frames)
            continue
        try:
            fuse_pair(name, info_c, info_s, out_path, opts, device)
        except (video_io.VideoError, RuntimeError, ValueError, OSError) as e:
            summary.fail(name, e)
            continue
        summary.done.append(name)
        log.info("%s: wrote %s (%d frames at %s fps)", name, out_path, info_c.num_frames,
                 info_c.rate)
    write_run_config(output_dir, "inference_step_2.py", settings)
    if problems:
        log.warning("step 2: %d input(s) skipped for a problem", len(problems))
    return max(summary.log(), 1 if problems else 0)
