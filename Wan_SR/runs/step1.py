"""Step 1 over folders of videos: temporal windows x spatial tiles through
:class:`Wan_SR.sampling.pipeline.PSSRPipeline`, blended in memory and streamed to one writer per
output branch (docs/method.md, "Sliding windows", "Outputs").

Output layout: ``<output_dir>/<branch>/<name>.mp4`` for ``base``, ``base+draft_k`` and (with
``final``) the frequency-domain update of ``base`` and the last draft branch, computed in the
same pass from the in-memory frames (no lossy intermediate is re-read), with the same fusion
options and tiles as ``inference_step_2.py``. ``<output_dir>/run_config.json`` records the
settings of the run, and each output's hidden record those it was made with
(:class:`Wan_SR.runs.common.Records`).

Two runners share the plan/writer code: :func:`restore_video_pixel` (the published pixel
windows) and :func:`restore_video_latent` (``--window_space latent``).
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional, Sequence

import torch
import torch.nn.functional as F

from Wan_SR.core.distributed import current, items_per_part, on_main, ordered_parts
from Wan_SR.core.log import progress
from Wan_SR.core.options import FINAL, FusionOptions, OutputOptions, WindowOptions, branch_names
from Wan_SR.core.windows import first_window_touching, split_parts
from Wan_SR.data import video_io
from Wan_SR.fusion.frequency import fuse_video
from Wan_SR.sampling.clip import iter_pixel_windows, pixel_window_plan
from Wan_SR.sampling.latent_windows import (decode_streamed, encode_streamed, latent_windows,
                                            sample_windows)
from Wan_SR.sampling.pipeline import pad_frames, padded_shape
from .common import Records, Summary, end_run, output_names, start_run
from .parallel import finish, pixel_frames, share_work

log = logging.getLogger(__name__)

_OUT = OutputOptions()
SCRIPT = "inference_step_1.py"


@dataclass
class RestoreOptions:
    """Everything step 1 needs besides the pipeline (defaults from :mod:`Wan_SR.core.options`)."""
    outputs: Optional[Sequence[str]] = None   # None: base and every base+draft_k
    windows: WindowOptions = field(default_factory=WindowOptions)
    fusion: FusionOptions = field(default_factory=FusionOptions)
    upscale: float = 1.0
    fps: Optional[float] = None
    save_quality: float = _OUT.save_quality
    skip_existing: bool = _OUT.skip_existing
    sort_files: bool = _OUT.sort_files
    copy_audio: bool = True
    window_space: str = "pixel"               # "pixel" (published) or "latent" (encode/decode once)
    tag_seed: int = 0                         # seeds the choice of the frame to tag per clip
    split: str = "auto"                       # several processes: "auto", "videos" or "windows"

    def __post_init__(self):
        if self.windows is None:
            self.windows = WindowOptions()
        if self.fusion is None:
            self.fusion = FusionOptions()
        if self.window_space not in ("pixel", "latent"):
            raise ValueError(f"window_space must be 'pixel' or 'latent', got {self.window_space!r}")

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
    records: Records     # removes and writes each output's record


def plan_video(pipe, in_path, output_dir, opts: RestoreOptions, info=None,
               records: Optional[Records] = None, name: Optional[str] = None
               ) -> Optional[VideoJob]:
    """Outputs, decoded branches and sizes of one video; None when ``skip_existing`` keeps
    every output (complete and recorded with the settings of ``records``; default: this
    pipeline's and ``opts``' settings)."""
    n_draft = len(pipe.config.timestep_draft_list)
    names = branch_names(n_draft)
    outputs = resolve_outputs(opts.outputs, n_draft)
    info = info or video_io.probe(in_path, fps=opts.fps)
    name = name or video_io.stem(info.path)
    records = records or Records(SCRIPT, restore_settings(pipe, opts))
    if opts.skip_existing:
        outputs = [o for o in outputs
                   if records.check(output_path(output_dir, o, name), info.num_frames)]
        if not outputs:
            return None
    decode = [b for b in names if b in outputs or (FINAL in outputs and b in (names[0], names[-1]))]
    W = info.width if opts.upscale == 1 else int(round(info.width * opts.upscale))
    H = info.height if opts.upscale == 1 else int(round(info.height * opts.upscale))
    audio = info.path if (opts.copy_audio and info.has_audio and not info.is_folder) else None
    return VideoJob(info, name, names, outputs, decode, H, W, audio, records)


def tag_clip(pipe, job: VideoJob, opts: RestoreOptions) -> None:
    """With a tagger: tag one seeded-random frame of the input clip and use the tagged prompt for
    this clip (docs/method.md, "Prompt"). Once per clip, before any window or tile."""
    if getattr(pipe, "tagger", None) is None:
        return
    from Wan_SR.models.tagger import pick_frame

    index = pick_frame(job.info.num_frames, seed=opts.tag_seed)
    prompt = pipe.tagged_prompt(video_io.read_frame(job.info.path, index, info=job.info))
    pipe.use_prompt(prompt)
    log.info("%s: prompt (tags of frame %d): %s", job.name, index, prompt)


def tag_clip_everywhere(pipe, job: VideoJob, opts: RestoreOptions) -> None:
    """:func:`tag_clip` for a video every process works on: the main process tags (and encodes
    into the prompt cache), the others use the same prompt."""
    if getattr(pipe, "tagger", None) is None:
        return
    prompt = on_main(lambda: (tag_clip(pipe, job, opts), pipe.prompt)[1], share=True)
    pipe.use_prompt(prompt)


def open_writers(job: VideoJob, output_dir, opts: RestoreOptions) -> dict:
    """One streamed writer per output (all aborted again if one fails to open)."""
    writers = {}
    try:
        for o in job.outputs:
            writers[o] = job.records.open_writer(
                output_path(output_dir, o, job.name), fps=job.info.rate,
                size=(job.width, job.height), quality=opts.save_quality, audio_from=job.audio,
                audio_codec=job.info.audio_codec, background=True, sar=job.info.sar)
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


def output_frames(done: dict, job: VideoJob, opts: RestoreOptions, device) -> dict:
    """{output: (n,H,W,3) uint8} of finished frames ``done`` = {branch: (n,3,H,W) in [0,1]}:
    every branch that is an output, and 'final' (fusion of base and the last draft branch) when
    both are in ``done``."""
    out = {b: video_io.tensor_to_frames(frames) for b, frames in done.items()
           if b in job.outputs}
    base, last = job.names[0], job.names[-1]
    if FINAL in job.outputs and base in done and last in done and done[base].shape[0]:
        fused = fuse_video(done[base].to(device), done[last].to(device),
                           **opts.fusion.kwargs(opts.windows))
        out[FINAL] = video_io.tensor_to_frames(fused)
    return out


def write_outputs(writers: dict, done: dict, job: VideoJob, opts: RestoreOptions, device) -> None:
    """Write finished frames ``done`` (see :func:`output_frames`)."""
    for o, frames in output_frames(done, job, opts, device).items():
        writers[o].write(frames)


def close_writers(writers: dict, job: VideoJob) -> dict:
    """Check every output got exactly the input's frame count, then close each and record it
    (:meth:`Records.close_writer`): {output: path}."""
    N = job.info.num_frames
    for o, wr in writers.items():
        if wr.frames_written != N:
            raise video_io.VideoError(f"{job.name}: {o} got {wr.frames_written} of {N} frames")
    return {o: job.records.close_writer(wr) for o, wr in writers.items()}


def restore_video(pipe, in_path, output_dir, opts: RestoreOptions, info=None,
                  progress: bool = True, records: Optional[Records] = None,
                  name: Optional[str] = None) -> dict:
    """Restore one video (file or frame folder) to ``<output_dir>/<branch>/<name>.mp4``
    (``name``: default the input's base name), each output with its record (``records``, see
    :func:`plan_video`). Returns {output: path} of what was written."""
    run = restore_video_latent if opts.window_space == "latent" else restore_video_pixel
    return run(pipe, in_path, output_dir, opts, info=info, progress=progress, records=records,
               name=name)


def restore_video_pixel(pipe, in_path, output_dir, opts: RestoreOptions, info=None,
                        progress: bool = True, records: Optional[Records] = None,
                        name: Optional[str] = None) -> dict:
    """The published pixel windows: every window x tile is encoded, sampled and decoded on its
    own and blended in pixels. Returns {output: path} of what was written."""
    job = plan_video(pipe, in_path, output_dir, opts, info, records, name)
    if job is None:
        return {}
    tag_clip(pipe, job, opts)
    N = job.info.num_frames
    t_win, _, _ = pixel_window_plan(N, job.height, job.width, opts.windows)
    # frames are decoded ahead in a thread; blending and fusion stay on the pipeline's device
    reader = video_io.FrameReader(job.info.path, info=job.info, chunk=8,
                                  prefetch=2 * (t_win // 8 + 1))
    bar = _bar(progress, total=N, desc=job.name, unit="frame")

    def get_frames(s, n):
        return resize_frames(video_io.frames_to_tensor(reader.get(s, n), pipe.device), job)

    def on_tile(k, nk, i, ni):
        bar.set_postfix_str(f"window {k + 1}/{nk} tile {i + 1}/{ni}")

    with video_outputs(job, output_dir, opts, reader, bar) as writers:
        for done in iter_pixel_windows(pipe, get_frames, N, job.height, job.width, job.decode,
                                       opts.windows, on_tile):
            write_outputs(writers, done, job, opts, pipe.device)
            bar.update(next(iter(done.values())).shape[0])
        return close_writers(writers, job)


def restore(pipe, frames, outputs: Optional[Sequence[str]] = None,
            windows: Optional[WindowOptions] = None, fusion: Optional[FusionOptions] = None,
            upscale: float = 1.0, tag_seed: int = 0) -> dict:
    """Restore a whole clip held in memory (the Python API; pixel windows as step 1).

    ``frames``: (T, H, W, 3) uint8 array (what :func:`Wan_SR.data.video_io.read_video` returns).
    ``outputs``: branch names (``base``, ``base+draft_k``, ``final``; default base and every
    draft branch). Returns {output: (T, H', W', 3) uint8} with exactly T frames (H', W' = the
    size times ``upscale``). Write them at the source's fps with ``video_io.write_video``."""
    import numpy as np

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"restore: expected (T, H, W, 3) uint8 frames, got {frames.dtype} "
                         f"{tuple(frames.shape)}")
    windows, fusion = windows or WindowOptions(), fusion or FusionOptions()
    names = branch_names(len(pipe.config.timestep_draft_list))
    outs = resolve_outputs(outputs, len(names) - 1)
    decode = [b for b in names if b in outs or (FINAL in outs and b in (names[0], names[-1]))]
    N, h, w = frames.shape[:3]
    if getattr(pipe, "tagger", None) is not None:
        from Wan_SR.models.tagger import pick_frame

        pipe.tag_clip(frames[pick_frame(N, seed=tag_seed)])
    H, W = (h, w) if upscale == 1 else (int(round(h * upscale)), int(round(w * upscale)))

    def get_frames(s, n):
        x = video_io.frames_to_tensor(frames[s:s + n], pipe.device)
        if (H, W) != (h, w):
            x = F.interpolate(x, size=(H, W), mode="bicubic", align_corners=False).clamp_(0, 1)
        return x

    parts: dict = {o: [] for o in outs}
    for done in iter_pixel_windows(pipe, get_frames, N, H, W, decode, windows):
        for b in outs:
            if b in done:
                parts[b].append(video_io.tensor_to_frames(done[b]))
        if FINAL in outs and done[names[0]].shape[0]:
            fused = fuse_video(done[names[0]], done[names[-1]], **fusion.kwargs(windows))
            parts[FINAL].append(video_io.tensor_to_frames(fused))
    return {o: np.concatenate(p, 0) for o, p in parts.items()}


def padded_chunks(reader: video_io.FrameReader, job: VideoJob, device) -> Iterator[torch.Tensor]:
    """The padded clip in the VAE's chunk pattern: frame 0, then 4 frames at a time, each
    (n,3,Hp,Wp) in [0,1] on ``device``; frames past the clip repeat its last frame."""
    N = job.info.num_frames
    Tp, Hp, Wp = padded_shape(N, job.height, job.width)
    last = None
    a = 0
    while a < Tp:
        b = 1 if a == 0 else a + 4
        if a < N:
            real = video_io.frames_to_tensor(reader.get(a, min(b, N) - a), device)
            real = resize_frames(real, job)
            last = real[-1:]
        else:
            real = last
        yield pad_frames(real, b - a, Hp, Wp)
        a = b


def _decode_groups(job: VideoJob) -> list[list[str]]:
    """Branches decoded together: base and the last draft in lockstep when 'final' is written
    (the fusion needs both per chunk), every other branch alone."""
    groups = []
    if FINAL in job.outputs:
        groups.append([job.names[0], job.names[-1]])
    groups += [[b] for b in job.decode if not any(b in g for g in groups)]
    return groups


def restore_video_latent(pipe, in_path, output_dir, opts: RestoreOptions, info=None,
                         progress: bool = True, records: Optional[Records] = None,
                         name: Optional[str] = None) -> dict:
    """:func:`restore_video_pixel` with latent-space windows (same outputs, layout, skipping,
    audio, upscale, frame count and fps). Returns {output: path} of what was written."""
    job = plan_video(pipe, in_path, output_dir, opts, info, records, name)
    if job is None:
        return {}
    tag_clip(pipe, job, opts)
    N = job.info.num_frames
    Tp, Hp, Wp = padded_shape(N, job.height, job.width)
    Tl = (Tp - 1) // 4 + 1
    starts, _, _, boxes, _, _ = latent_windows((Tl, Hp // 8, Wp // 8), opts.windows)
    groups = _decode_groups(job)
    total = Tl + len(starts) * len(boxes) + Tl * len(groups)
    reader = video_io.FrameReader(job.info.path, info=job.info, prefetch=4)
    bar = _bar(progress, total=total, desc=job.name, unit="step")
    with video_outputs(job, output_dir, opts, reader, bar) as writers, torch.no_grad():
        def chunks():
            for c in padded_chunks(reader, job, pipe.device):
                yield c
                bar.update(1)

        z_l = encode_streamed(pipe, chunks())
        reader.close()
        volumes = sample_windows(pipe, z_l, job.decode, opts.windows,
                                 on_tile=lambda: bar.update(1))
        del z_l
        for group in groups:
            for done in decode_streamed(pipe, {b: volumes.pop(b) for b in group}, N,
                                        job.height, job.width):
                write_outputs(writers, done, job, opts, pipe.device)
                bar.update(1)
        return close_writers(writers, job)


def _bar(enabled: bool, **kw):
    return progress(enabled=enabled, **kw)


def restore_settings(pipe, opts: RestoreOptions) -> dict:
    """The settings that decide step 1's outputs (in each output's record, compared by
    ``--skip_existing``)."""
    cfg = pipe.config
    return {
        "sampling": {"timestep_base": cfg.timestep_base,
                     "timestep_draft_list": list(cfg.timestep_draft_list),
                     "k_select": cfg.k_select, "cfg_scale": cfg.cfg_scale,
                     "denoising_strength": cfg.denoising_strength,
                     "dtype": str(pipe.dtype).replace("torch.", ""),
                     # the prompt before per-clip tags (those follow from "tags")
                     "prompt": getattr(pipe, "base_prompt", None) or getattr(pipe, "prompt",
                                                                             None)},
        "windows": dataclasses.asdict(opts.windows),
        "fusion": dataclasses.asdict(opts.fusion),
        "upscale": opts.upscale, "fps": opts.fps, "save_quality": opts.save_quality,
        "copy_audio": opts.copy_audio, "window_space": opts.window_space,
        "tags": (dict(pipe.tagger.describe(), frame_seed=opts.tag_seed)
                 if getattr(pipe, "tagger", None) is not None else None),
    }


def restore_video_split(pipe, in_path, output_dir, opts: RestoreOptions, info,
                        records: Optional[Records], name: str) -> tuple[dict, int]:
    """Restore one video with every process (pixel windows): its temporal windows are cut into
    contiguous parts (:func:`Wan_SR.core.windows.split_parts`), part ``i`` restored by process
    ``i % size`` together with the windows before its seam, and every frame goes in order to
    the main process, which writes (and records) the outputs: the same frames as one process
    writes.
    Returns ({output: path} on the main process, frames this process made); raises on every
    process when any part failed."""
    main = current().is_main
    job = on_main(lambda: plan_video(pipe, in_path, output_dir, opts, info, records, name),
                  share=True)
    if job is None:
        return {}, 0
    tag_clip_everywhere(pipe, job, opts)
    N = job.info.num_frames
    t_win, starts, _ = pixel_window_plan(N, job.height, job.width, opts.windows)
    frame_bytes = job.height * job.width * 3 * len(job.outputs)
    parts = split_parts(len(starts), current().size,
                        items_per_part(max(1, N // len(starts)), frame_bytes))
    made, state = [0], {}

    def produce(i):
        # one reader per process, as its parts come in frame order (a new one only when a part
        # starts before the last window read: very long overlaps and short parts)
        k0, k1 = parts[i]
        first = starts[first_window_touching(starts, t_win, starts[k0])]
        if first < state.get("read_to", 0):
            state.pop("reader").close()
        if "reader" not in state:
            state["reader"] = video_io.FrameReader(job.info.path, info=job.info, chunk=8,
                                                   prefetch=2 * (t_win // 8 + 1))
        state["read_to"] = starts[k1 - 1]

        def get_frames(s, n):
            return resize_frames(video_io.frames_to_tensor(state["reader"].get(s, n),
                                                           pipe.device), job)

        for done in iter_pixel_windows(pipe, get_frames, N, job.height, job.width, job.decode,
                                       opts.windows, part=parts[i]):
            item = output_frames(done, job, opts, pipe.device)
            made[0] += next(iter(item.values())).shape[0]
            yield item

    def write(item):
        for o, frames in item.items():
            writers[o].write(frames)

    writers = on_main(lambda: open_writers(job, output_dir, opts)) or {}
    bar = _bar(main, total=len(parts), desc=name, unit="part")
    try:
        ordered_parts(len(parts), produce, write, on_part=lambda i: bar.update(1))
        return on_main(lambda: close_writers(writers, job)) or {}, made[0]
    except BaseException:
        abort_writers(writers)
        raise
    finally:
        bar.close()
        if "reader" in state:
            state["reader"].close()


def restore_folder(pipe, input_dir, output_dir, opts: RestoreOptions, inputs=None) -> int:
    """Restore every video / frame folder of ``input_dir`` (or the given ``inputs``). A file that
    cannot be read or fails is reported by name and the others still run. Writes
    ``run_config.json`` when it starts (and marks it finished at the end) and each output's
    record as soon as the output is complete. Returns 0 if all succeeded, else 1."""
    if inputs is None:
        inputs = video_io.list_inputs(input_dir, sort=opts.sort_files)
    if not inputs:
        log.error("no videos or frame folders in %s", input_dir)
        return 1
    names = output_names(inputs)
    outs = resolve_outputs(opts.outputs, len(pipe.config.timestep_draft_list))
    records = start_run(SCRIPT, restore_settings(pipe, opts), output_dir,
                        [output_dir, *(Path(output_dir) / o for o in outs)])
    t_run = time.perf_counter()
    share = share_work(inputs, lambda p: video_io.probe(p, fps=opts.fps), pixel_frames,
                       opts.split, can_split=opts.window_space == "pixel")
    summary = Summary("step 1")
    for path in share.together:  # every process on one video at a time
        name = names[Path(path)]
        try:
            info = share.info(path)
            t0 = time.perf_counter()
            out, made = restore_video_split(pipe, path, output_dir, opts, info, records, name)
            secs = time.perf_counter() - t0
        except (video_io.VideoError, RuntimeError, ValueError, OSError) as e:
            if current().is_main:
                summary.fail(name, e)
            continue
        summary.made(made, secs)
        if current().is_main:
            _report(summary, name, info, out, secs)
    videos = progress(share.alone, desc="videos", unit="video", leave=True) \
        if len(share.alone) > 1 else share.alone
    for path in videos:
        name = names[Path(path)]
        try:
            info = share.info(path)
            t0 = time.perf_counter()
            out = restore_video(pipe, path, output_dir, opts, info=info, records=records,
                                name=name)
            secs = time.perf_counter() - t0
        except (video_io.VideoError, RuntimeError, ValueError, OSError) as e:
            summary.fail(name, e)
            continue
        if out:
            summary.made(info.num_frames, secs)
        _report(summary, name, info, out, secs)
    log_tagging_cost(pipe)
    summary.redone.update(records.redone)
    status = finish(summary, time.perf_counter() - t_run)
    end_run(output_dir, records, status)
    return status


def _report(summary: Summary, name: str, info, out: dict, secs: float) -> None:
    if out:
        summary.done.append(name)
        log.info("%s: %d frames at %s fps in %.1f s (%.2f frames/s) -> %s", name,
                 info.num_frames, info.rate, secs, info.num_frames / secs,
                 ", ".join(str(p) for p in out.values()))
    else:
        summary.skipped.append(name)
        log.info("%s: outputs complete, skipped", name)


def log_tagging_cost(pipe) -> None:
    """What per-clip tags cost this run: tagging and the text encodes of new tagged prompts."""
    tagger, text = getattr(pipe, "tagger", None), getattr(pipe, "text", None)
    if tagger is None or not tagger.calls:
        return
    enc_s = text.seconds if text is not None else 0.0
    encodes = text.encodes if text is not None else 0
    log.info("tags: %d clip(s), %.2f s tagging + %.2f s encoding %d new prompt(s) "
             "(%.2f s per clip)", tagger.calls, tagger.seconds, enc_s, encodes,
             (tagger.seconds + enc_s) / tagger.calls)
