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
from contextlib import closing
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Optional

import torch

from Wan_SR.core.devices import resolve_device
from Wan_SR.core.distributed import current
from Wan_SR.core.log import progress
from Wan_SR.core.options import FusionOptions, OutputOptions, WindowOptions, step2_windows
from Wan_SR.core.windows import new_frame_ranges
from Wan_SR.data import video_io
from Wan_SR.fusion.frequency import fuse_video
from .common import Records, Summary, end_run, start_run
from .outputs import OutputWriters, WriterSink
from .parallel import (decided, deliver, finish, pixel_frames, reporter, share_work,
                       window_parts)

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


class PairFrames:
    """The frames of one pair in frame order, both inputs read alike: the new frames of each
    temporal window at a time ({"consistent", "sharp"}: (n,3,H,W) in [0,1] on ``device``; the
    overlap with the previous window is already fused, :func:`new_frame_ranges`). ``split``:
    the windows cut into parts for every process (one pair of readers per process, its parts
    in frame order)."""

    def __init__(self, info_c: video_io.VideoInfo, info_s: video_io.VideoInfo,
                 windows: WindowOptions, device, split: bool = False):
        self.infos, self.device = (info_c, info_s), device
        n = info_c.num_frames
        self.ranges = new_frame_ranges(n, windows.window_t, windows.overlap_t)
        self.parts = window_parts(len(self.ranges), n, info_c.width * info_c.height * 3, split)
        self.readers = ()

    @property
    def num_parts(self) -> int:
        return len(self.parts)

    def chunks(self, part: int, note=None):
        if not self.readers:
            self.readers = tuple(video_io.FrameReader(i.path, info=i, prefetch=4)
                                 for i in self.infos)
        a, b = self.parts[part]
        for lo, hi in self.ranges[a:b]:
            c, s = (video_io.frames_to_tensor(r.get(lo, hi - lo), self.device)
                    for r in self.readers)
            yield {"consistent": c, "sharp": s}

    def close(self) -> None:
        for r in self.readers:
            r.close()
        self.readers = ()


class FusedSink(WriterSink):
    """The fused output of one pair (:class:`~Wan_SR.runs.outputs.WriterSink`): at the
    consistent input's rate, with its audio. ``made``: the frames fused here."""

    def __init__(self, name: str, info_c: video_io.VideoInfo, out_path: Path,
                 opts: Step2Options, records: Records, together: bool = False):
        audio = info_c.path if info_c.has_audio else None
        writers = OutputWriters(records, {"fused": out_path}, info_c.num_frames, name,
                                fps=info_c.rate, size=(info_c.width, info_c.height),
                                quality=opts.save_quality, audio_from=audio,
                                audio_codec=info_c.audio_codec, background=True, sar=info_c.sar)
        super().__init__(writers, together)
        self.fusion_kw = opts.fusion_kwargs()
        self.made = 0

    def render(self, chunk: dict) -> dict:
        with torch.inference_mode():
            fused = fuse_video(chunk["consistent"], chunk["sharp"], **self.fusion_kw)
        frames = video_io.tensor_to_frames(fused, wait=False)
        self.made += frames.shape[0]
        return {"fused": frames}


def fuse_pair(name: str, info_c: video_io.VideoInfo, info_s: video_io.VideoInfo, out_path: Path,
              opts: Step2Options, device: torch.device, records: Optional[Records] = None,
              together: bool = False) -> int:
    """Stream one pair through the fusion into ``out_path``, with its record (``records``:
    default new ones with the settings of ``opts``). ``together``: every process calls this
    for the same pair and fuses a share of its windows, written in order by the main process
    (the same chunks, so the same frames). Returns the frames fused here; raises (on every
    process, with ``together``) when anything failed, leaving no partial output."""
    records = records or Records(SCRIPT, opts.settings())
    with closing(PairFrames(info_c, info_s, opts.windows, device, split=together)) as source, \
            FusedSink(name, info_c, out_path, opts, records, together) as sink:
        deliver(source, sink, together)
        sink.close()
    return sink.made


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
    records = start_run(SCRIPT, opts.settings(), output_dir, [output_dir],
                        config=dataclasses.asdict(opts))
    main = current().is_main
    t_run = time.perf_counter()
    paths = {name: (path_c, path_s) for name, path_c, path_s in pairs}
    share = share_work(list(paths), lambda name: probe_pair(name, *paths[name], opts.fps),
                       lambda infos: pixel_frames(infos[0]), opts.split)
    summary = Summary("step 2")
    if main:
        summary.problems += problems
    jobs = share.jobs()
    for name, together in progress(jobs, desc="videos", unit="video", leave=True) \
            if len(jobs) > 1 else jobs:
        report = reporter(summary, together)
        out_path = output_dir / f"{name}.mp4"
        try:
            info_c, info_s = share.info(name)
        except video_io.VideoError as e:
            report.problems.append(str(e))
            log.warning("skipped: %s: %s", name, e)
            continue
        if decided(partial(skip_pair, name, info_c, info_s, out_path, opts, records, report),
                   together):
            continue
        t0 = time.perf_counter()
        try:
            made = fuse_pair(name, info_c, info_s, out_path, opts, device, records, together)
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
