"""Step 2 as a stand-alone pass: fuse the videos of two folders (docs/method.md,
"Frequency-domain update").

``consistent_dir`` holds the base-branch results, ``sharp_dir`` the last-draft results; files
are paired by base name (``a.mp4`` and a frame folder ``a/`` both pair as ``a``). Each pair is
streamed: frames are read in temporal windows, fused, and written as soon as they are fused, so
a video is never held whole in memory. Fusion works frame by frame, so the temporal windows
only bound memory: every frame is fused exactly once, by the first window that covers it.
Nothing intermediate is written to disk (the output goes to a temporary name beside the final
one and is renamed when complete; its record, :class:`Wan_SR.runs.common.Records`, follows).
"""
from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Optional

import torch

from Wan_SR.core.devices import resolve_device
from Wan_SR.core.log import progress
from Wan_SR.core.options import FusionOptions, OutputOptions, WindowOptions, step2_windows
from Wan_SR.core.distributed import current, items_per_part, on_main, ordered_parts
from Wan_SR.core.windows import new_frame_ranges, split_parts
from Wan_SR.data import video_io
from Wan_SR.fusion.frequency import fuse_video
from .common import Records, Summary, end_run, start_run
from .parallel import finish, pixel_frames, share_work

log = logging.getLogger(__name__)
_OUT = OutputOptions()
SCRIPT = "inference_step_2.py"


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
    split: str = "auto"               # several processes: "auto", "videos" or "windows"

    def __init__(self, windows: Optional[WindowOptions] = None,
                 fusion: Optional[FusionOptions] = None, device: Optional[str] = None,
                 fps: Optional[float] = None, sort_files: bool = _OUT.sort_files,
                 skip_existing: bool = _OUT.skip_existing, save_quality: float = _OUT.save_quality,
                 split: str = "auto", **flat):
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
        self.skip_existing, self.save_quality, self.split = skip_existing, save_quality, split

    def fusion_kwargs(self) -> dict:
        return self.fusion.kwargs(self.windows)

    def settings(self) -> dict:
        """What decides the outputs (in each output's record, compared by
        ``--skip_existing``)."""
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


def fused_chunks(readers, ranges, opts: Step2Options, device):
    """Fused uint8 frames of each ``[a, b)`` of ``ranges`` (in frame order), read from the two
    :class:`~Wan_SR.data.video_io.FrameReader` of ``readers``."""
    reader_c, reader_s = readers
    for a, b in ranges:
        c = video_io.frames_to_tensor(reader_c.get(a, b - a), device)
        s = video_io.frames_to_tensor(reader_s.get(a, b - a), device)
        with torch.inference_mode():
            fused = fuse_video(c, s, **opts.fusion_kwargs())
        yield video_io.tensor_to_frames(fused)


def open_readers(info_c: video_io.VideoInfo, info_s: video_io.VideoInfo) -> tuple:
    return (video_io.FrameReader(info_c.path, info=info_c, prefetch=4),
            video_io.FrameReader(info_s.path, info=info_s, prefetch=4))


def open_writer(info_c: video_io.VideoInfo, out_path: Path, opts: Step2Options,
                records: Records):
    audio = info_c.path if info_c.has_audio else None
    return records.open_writer(out_path, fps=info_c.rate, size=(info_c.width, info_c.height),
                               quality=opts.save_quality, audio_from=audio,
                               audio_codec=info_c.audio_codec, background=True, sar=info_c.sar)


def close_writer(writer, name: str, n: int, records: Records):
    """Check the frame count, then close (the output appears under its name) and record it."""
    if writer.frames_written != n:
        raise video_io.VideoError(f"{name}: wrote {writer.frames_written} of {n} frames")
    return records.close_writer(writer)


def default_records(opts: Step2Options, records: Optional[Records]) -> Records:
    """``records``, or new ones with the settings of ``opts``."""
    return records or Records(SCRIPT, opts.settings())


def fuse_pair(name: str, info_c: video_io.VideoInfo, info_s: video_io.VideoInfo, out_path: Path,
              opts: Step2Options, device: torch.device, records: Optional[Records] = None
              ) -> int:
    """Stream one pair through the fusion into ``out_path`` (with its record, see
    :func:`default_records`); returns the frames written.
    The overlap of a window with the previous one is already fused: each window reads and
    fuses only its new frames (:func:`Wan_SR.core.windows.new_frame_ranges`)."""
    n = info_c.num_frames
    records = default_records(opts, records)
    readers = open_readers(info_c, info_s)
    bar = progress(total=n, desc=name, unit="frame")
    try:
        with open_writer(info_c, out_path, opts, records) as writer:
            for frames in fused_chunks(readers, new_frame_ranges(n, opts.windows.window_t,
                                                                 opts.windows.overlap_t),
                                       opts, device):
                writer.write(frames)
                bar.update(frames.shape[0])
            close_writer(writer, name, n, records)
    finally:
        bar.close()
        for r in readers:
            r.close()
    return n


def fuse_pair_split(name: str, info_c: video_io.VideoInfo, info_s: video_io.VideoInfo,
                    out_path: Path, opts: Step2Options, device: torch.device,
                    records: Optional[Records] = None) -> int:
    """:func:`fuse_pair` with every process: the windows' new frames are cut into contiguous
    parts, part ``i`` fused by process ``i % size`` and written in order by the main process
    (the same chunks, so the same frames). Returns the frames this process fused; raises on
    every process when a part failed."""
    n = info_c.num_frames
    records = default_records(opts, records)
    ranges = new_frame_ranges(n, opts.windows.window_t, opts.windows.overlap_t)
    size = current().size
    parts = split_parts(len(ranges), size,
                        items_per_part(max(1, n // len(ranges)), info_c.width * info_c.height * 3))
    state = {"made": 0}

    def produce(i):
        if "readers" not in state:  # one pair of readers per process, parts in frame order
            state["readers"] = open_readers(info_c, info_s)
        a, b = parts[i]
        for frames in fused_chunks(state["readers"], ranges[a:b], opts, device):
            state["made"] += frames.shape[0]
            yield {"frames": frames}

    writer = on_main(lambda: open_writer(info_c, out_path, opts, records))
    try:
        ordered_parts(len(parts), produce, lambda item: writer.write(item["frames"]))
        on_main(lambda: close_writer(writer, name, n, records))
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    finally:
        for r in state.get("readers", ()):
            r.close()
    return state["made"]


def run_step2(consistent_dir, sharp_dir, output_dir, opts: Step2Options) -> int:
    """Fuse every pair of the two folders into ``output_dir/<name>.mp4``, each with its record,
    and write ``run_config.json`` (at the start; marked finished at the end). Returns the exit
    status: 0 when every input was fused (or skipped as already complete), 1 when any input
    was skipped for a problem or failed, 2 when the folders cannot be read."""
    device = resolve_device(opts.device)
    try:
        pairs, problems = pair_inputs(consistent_dir, sharp_dir, sort=opts.sort_files)
    except video_io.VideoError as e:
        log.error("%s", e)
        return 2
    for msg in problems:
        log.warning("skipped: %s", msg)
    output_dir = Path(output_dir)
    records = start_run(SCRIPT, opts.settings(), output_dir, [output_dir])
    main = current().is_main
    t_run = time.perf_counter()
    paths = {name: (path_c, path_s) for name, path_c, path_s in pairs}
    share = share_work(list(paths), lambda name: probe_pair(name, *paths[name], opts.fps),
                       lambda infos: pixel_frames(infos[0]), opts.split)
    summary = Summary("step 2")
    if main:
        summary.problems += problems
    jobs = [(name, True) for name in share.together] + [(name, False) for name in share.alone]
    for name, together in progress(jobs, desc="videos", unit="video", leave=True) \
            if len(jobs) > 1 else jobs:
        # a pair fused by every process together is reported by the main process only
        report = summary if main or not together else Summary(summary.what, quiet=True)
        out_path = output_dir / f"{name}.mp4"
        try:
            info_c, info_s = share.info(name)
        except video_io.VideoError as e:
            report.problems.append(str(e))
            log.warning("skipped: %s: %s", name, e)
            continue
        skip = partial(skip_pair, name, info_c, info_s, out_path, opts, records, report)
        if on_main(skip, share=True) if together else skip():  # together: the main decides
            continue
        t0 = time.perf_counter()
        try:
            made = (fuse_pair_split if together else fuse_pair)(name, info_c, info_s, out_path,
                                                                opts, device, records)
        except (video_io.VideoError, RuntimeError, ValueError, OSError) as e:
            report.fail(name, e)
            continue
        summary.made(made, time.perf_counter() - t0)
        report.done.append(name)
        log.info("%s: wrote %s (%d frames at %s fps)", name, out_path, info_c.num_frames,
                 info_c.rate)
    summary.redone.update(records.redone)
    status = finish(summary, time.perf_counter() - t_run)
    end_run(output_dir, records, status)
    return status


def probe_pair(name: str, path_c: Path, path_s: Path, fps: Optional[float]) -> tuple:
    """(consistent, sharp) infos of one pair."""
    return video_io.probe(path_c, fps=fps), video_io.probe(path_s)


def skip_pair(name, info_c, info_s, out_path, opts: Step2Options, records: Records,
              summary: Summary) -> bool:
    """True (with a notice in ``summary``) when the pair cannot be fused (a problem) or
    ``--skip_existing`` keeps its output (complete, recorded with the same settings)."""
    msg = check_pair(name, info_c, info_s)
    if msg is not None:
        summary.problems.append(msg)
        log.warning("skipped: %s", msg)
        return True
    if opts.skip_existing and records.check(out_path, info_c.num_frames) is None:
        summary.skipped.append(name)
        log.info("%s: %s is complete (%d frames), skipped", name, out_path, info_c.num_frames)
        return True
    return False
