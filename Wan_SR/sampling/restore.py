"""Step 1 over whole videos: temporal windows x spatial tiles through :class:`PSSRPipeline`,
blended in memory (SPEC §6) and streamed to one writer per output branch.

Output layout: ``<output_dir>/<branch>/<name>.mp4`` for ``base``, ``base+draft_k`` and (with
``final``) the step-2 fusion of ``base`` and the last draft branch, computed in the same pass
from the in-memory frames (no lossy intermediate is re-read).
"""
from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from ..data import video_io
from .pipeline import branch_names
from .windows import (SpatialAccumulator, TemporalBlender, WindowOptions, tile_boxes,
                      window_starts)

FINAL = "final"


@dataclass
class RestoreOptions:
    outputs: Optional[Sequence[str]] = None   # None: base and every base+draft_k
    windows: WindowOptions = None
    upscale: float = 1.0
    fps: Optional[float] = None
    save_quality: float = 9.0
    skip_existing: bool = False
    sort_files: bool = False
    copy_audio: bool = True
    fusion: Optional[dict] = None             # kwargs for fuse_video (defaults of step 2)
    window_space: str = "pixel"               # "pixel" (published) or "latent" (encode/decode once)

    def __post_init__(self):
        if self.windows is None:
            self.windows = WindowOptions()


def output_path(output_dir, branch: str, name: str) -> Path:
    return Path(output_dir) / branch / f"{name}.mp4"


def resolve_outputs(outputs: Optional[Sequence[str]], num_draft_steps: int) -> list[str]:
    names = branch_names(num_draft_steps)
    if not outputs:
        return names
    allowed = names + [FINAL]
    bad = [o for o in outputs if o not in allowed]
    if bad:
        raise ValueError(f"unknown output(s) {bad}; choose from {allowed}")
    if FINAL in outputs and num_draft_steps == 0:
        raise ValueError("'final' needs at least one draft step")
    return [o for o in allowed if o in outputs]


def _report(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass
class VideoJob:
    """What restoring one video involves; shared by the pixel- and the latent-window runners."""
    info: "video_io.VideoInfo"
    name: str
    names: list          # every branch the pipeline produces (base, base+draft_1, ...)
    outputs: list        # outputs to write (after --skip_existing)
    decode: list         # branches to decode: the outputs plus what 'final' needs
    height: int          # processing = output size (after --upscale)
    width: int
    audio: Optional[Path]


def plan_video(pipe, in_path, output_dir, opts: RestoreOptions, info=None) -> Optional[VideoJob]:
    """Outputs, decoded branches and sizes of one video; None when ``skip_existing`` finds every
    output complete."""
    n_draft = len(pipe.config.timestep_draft_list)
    names = branch_names(n_draft)
    outputs = resolve_outputs(opts.outputs, n_draft)
    info = info or video_io.probe(in_path, fps=opts.fps)
    name = video_io.stem(info.path)
    if opts.skip_existing:
        outputs = [o for o in outputs
                   if not video_io.is_complete_output(output_path(output_dir, o, name),
                                                      info.num_frames)]
        if not outputs:
            return None
    decode = [b for b in names if b in outputs or (FINAL in outputs and b in (names[0], names[-1]))]
    W = info.width if opts.upscale == 1 else int(round(info.width * opts.upscale))
    H = info.height if opts.upscale == 1 else int(round(info.height * opts.upscale))
    audio = info.path if (opts.copy_audio and info.has_audio and not info.is_folder) else None
    return VideoJob(info, name, names, outputs, decode, H, W, audio)


def open_writers(job: VideoJob, output_dir, opts: RestoreOptions) -> dict:
    """One streamed writer per output (all aborted again if one fails to open)."""
    writers = {}
    try:
        for o in job.outputs:
            writers[o] = video_io.VideoWriter(output_path(output_dir, o, job.name),
                                              fps=job.info.rate, size=(job.width, job.height),
                                              quality=opts.save_quality, audio_from=job.audio,
                                              audio_codec=job.info.audio_codec, background=True)
    except BaseException:
        abort_writers(writers)
        raise
    return writers


@contextlib.contextmanager
def video_outputs(job: VideoJob, output_dir, opts: RestoreOptions, reader, bar):
    """Open the writers of ``job`` and yield them; on any error abort them (no partial files).
    Always close the progress bar and the frame reader."""
    writers = {}
    try:
        writers = open_writers(job, output_dir, opts)
        yield writers
    except BaseException:
        abort_writers(writers)
        raise
    finally:
        bar.close()
        reader.close()


def abort_writers(writers: dict) -> None:
    for wr in writers.values():
        wr.abort()


def resize_frames(frames: torch.Tensor, job: VideoJob) -> torch.Tensor:
    """Input frames (T,3,h,w) in [0,1] -> the processing size (bicubic, ``--upscale``)."""
    if tuple(frames.shape[-2:]) != (job.height, job.width):
        frames = F.interpolate(frames, size=(job.height, job.width), mode="bicubic",
                               align_corners=False).clamp_(0, 1)
    return frames


def write_outputs(writers: dict, done: dict, job: VideoJob, opts: RestoreOptions, device) -> None:
    """Write finished frames ``done`` = {branch: (n,3,H,W) in [0,1]}: every branch that is an
    output, and 'final' (fusion of base and the last draft branch) when both are in ``done``."""
    for b, frames in done.items():
        if b in writers:
            writers[b].write(video_io.tensor_to_frames(frames))
    base, last = job.names[0], job.names[-1]
    if FINAL in writers and base in done and last in done and done[base].shape[0]:
        from ..fusion.frequency import fuse_video

        fused = fuse_video(done[base].to(device), done[last].to(device), **(opts.fusion or {}))
        writers[FINAL].write(video_io.tensor_to_frames(fused))


def close_writers(writers: dict, job: VideoJob) -> dict:
    """Check every output got exactly the input's frame count, then close: {output: path}."""
    N = job.info.num_frames
    for o, wr in writers.items():
        if wr.frames_written != N:
            raise video_io.VideoError(f"{job.name}: {o} got {wr.frames_written} of {N} frames")
    return {o: wr.close() for o, wr in writers.items()}


def restore_video(pipe, in_path, output_dir, opts: RestoreOptions, info=None,
                  progress: bool = True) -> dict:
    """Restore one video (file or frame folder). Returns {output: path} of what was written."""
    if opts.window_space == "latent":
        from .latent_windows import restore_video_latent

        return restore_video_latent(pipe, in_path, output_dir, opts, info=info, progress=progress)
    if opts.window_space != "pixel":
        raise ValueError(f"window_space must be 'pixel' or 'latent', got {opts.window_space!r}")
    from tqdm import tqdm

    job = plan_video(pipe, in_path, output_dir, opts, info)
    if job is None:
        return {}
    info, decode, H, W = job.info, job.decode, job.height, job.width
    w = opts.windows
    N = info.num_frames
    t_win = min(w.window_t, N)
    starts = window_starts(N, t_win, w.overlap_t)
    boxes = tile_boxes(H, W, w.window_h, w.window_w, w.overlap_h, w.overlap_w)
    blenders = {b: TemporalBlender(starts, N) for b in decode}
    # frames are decoded ahead in a thread; blending and fusion stay on the pipeline's device
    reader = video_io.FrameReader(info.path, info=info, chunk=8, prefetch=2 * (t_win // 8 + 1))
    bar = tqdm(total=N, desc=job.name, unit="frame", dynamic_ncols=True, disable=not progress)
    with video_outputs(job, output_dir, opts, reader, bar) as writers:
        for s in starts:
            frames = video_io.frames_to_tensor(reader.get(s, t_win), pipe.device)
            frames = resize_frames(frames, job)
            if len(boxes) == 1:
                window = pipe.run_tile(frames, decode)
            else:
                accs = {b: SpatialAccumulator((t_win, 3, H, W), w.overlap_h, w.overlap_w,
                                              device=pipe.device)
                        for b in decode}
                for top, left, th, tw in boxes:
                    tile = pipe.run_tile(frames[..., top:top + th, left:left + tw], decode)
                    for b in decode:
                        accs[b].add(tile[b], top, left)
                window = {b: accs[b].result() for b in decode}
            done = {b: blenders[b].add(window[b]) for b in decode}
            write_outputs(writers, done, job, opts, pipe.device)
            bar.update(next(iter(done.values())).shape[0])
        return close_writers(writers, job)


def restore_folder(pipe, input_dir, output_dir, opts: RestoreOptions, log=print) -> int:
    """Restore every video / frame folder of ``input_dir``. A file that cannot be read or fails
    is reported by name and the others still run. Returns 0 if all succeeded, else 1."""
    inputs = video_io.list_inputs(input_dir, sort=opts.sort_files)
    if not inputs:
        _report(f"no videos or frame folders in {input_dir}")
        return 1
    failed, written, skipped = [], 0, 0
    for path in inputs:
        name = video_io.stem(path)
        try:
            info = video_io.probe(path, fps=opts.fps)
            t0 = time.perf_counter()
            out = restore_video(pipe, path, output_dir, opts, info=info)
            secs = time.perf_counter() - t0
        except (video_io.VideoError, RuntimeError, ValueError, OSError) as e:
            failed.append(name)
            _report(f"FAILED {name}: {e}")
            continue
        if out:
            written += 1
            log(f"{name}: {info.num_frames} frames at {info.rate} fps in {secs:.1f} s "
                f"({info.num_frames / secs:.2f} frames/s) -> " + ", ".join(str(p) for p in out.values()))
        else:
            skipped += 1
            log(f"{name}: outputs complete, skipped")
    log(f"step 1: {written} restored, {skipped} already complete, {len(failed)} failed")
    return 1 if failed else 0
