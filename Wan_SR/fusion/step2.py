"""Step 2 as a stand-alone pass: fuse the videos of two folders (SPEC §7).

``consistent_dir`` holds the base-branch results, ``sharp_dir`` the last-draft results; files
are paired by base name (``a.mp4`` and a frame folder ``a/`` both pair as ``a``). Each pair is
streamed: frames are read in temporal windows, fused, and written as soon as they are fused, so
a video is never held whole in memory. Fusion works frame by frame, so the temporal windows
only bound memory: every frame is fused exactly once, by the first window that covers it.
Nothing intermediate is written to disk (the output goes to a temporary name beside the final
one and is renamed when complete).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from tqdm import tqdm

from Wan_SR.cli.common import resolve_device
from Wan_SR.data import video_io
from Wan_SR.fusion.frequency import fuse_video
from Wan_SR.sampling.windows import WindowOptions, iter_windows


@dataclass
class Step2Options(WindowOptions):
    overlap_t: int = 8  # step 2's temporal overlap (windows only bound memory here)
    fc: float = 0.20
    alpha: float = 0.6
    border: int = 2
    order: int = 2
    eps: float = 1e-6
    device: Optional[str] = None  # None: cuda if available, else cpu
    fps: Optional[float] = None  # None: the consistent video's rate
    sort_files: bool = False
    skip_existing: bool = False
    save_quality: float = 9.0

    def fusion_kwargs(self) -> dict:
        return dict(fc=self.fc, alpha=self.alpha, border=self.border, order=self.order,
                    eps=self.eps, window_h=self.window_h, window_w=self.window_w,
                    overlap_h=self.overlap_h, overlap_w=self.overlap_w)


def _report(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


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
    bar = tqdm(total=n, desc=name, unit="frame", dynamic_ncols=True)
    try:
        with video_io.VideoWriter(out_path, fps=info_c.rate, size=(info_c.width, info_c.height),
                                  quality=opts.save_quality, audio_from=audio,
                                  audio_codec=info_c.audio_codec, background=True) as writer:
            done = 0  # frames [0, done) are fused and written
            for start, count in iter_windows(n, opts.window_t, opts.overlap_t):
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
    """Fuse every pair of the two folders into ``output_dir/<name>.mp4``. Returns the exit
    status: 0 when every input was fused (or skipped as already complete), 1 when any input was
    skipped for a problem or failed, 2 when the folders cannot be read."""
    device = resolve_device(opts.device)
    try:
        pairs, problems = pair_inputs(consistent_dir, sharp_dir, sort=opts.sort_files)
    except video_io.VideoError as e:
        _report(f"ERROR: {e}")
        return 2
    for msg in problems:
        _report(f"SKIPPED {msg}")
    output_dir = Path(output_dir)
    written, complete, failed = [], [], []
    for name, path_c, path_s in pairs:
        out_path = output_dir / f"{name}.mp4"
        try:
            info_c = video_io.probe(path_c, fps=opts.fps)
            info_s = video_io.probe(path_s)
        except video_io.VideoError as e:
            problems.append(str(e))
            _report(f"SKIPPED {name}: {e}")
            continue
        msg = check_pair(name, info_c, info_s)
        if msg is not None:
            problems.append(msg)
            _report(f"SKIPPED {msg}")
            continue
        if opts.skip_existing and video_io.is_complete_output(out_path, info_c.num_frames):
            complete.append(name)
            print(f"{name}: {out_path} is complete ({info_c.num_frames} frames), skipped",
                  flush=True)
            continue
        try:
            fuse_pair(name, info_c, info_s, out_path, opts, device)
        except (video_io.VideoError, RuntimeError, ValueError, OSError) as e:
            failed.append(name)
            _report(f"FAILED {name}: {e}")
            continue
        written.append(name)
        print(f"{name}: wrote {out_path} ({info_c.num_frames} frames at {info_c.rate} fps)",
              flush=True)
    print(f"step 2: {len(written)} written, {len(complete)} already complete, "
          f"{len(problems)} skipped for a problem, {len(failed)} failed", flush=True)
    return 1 if problems or failed else 0
