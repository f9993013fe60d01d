"""Step 1 over a folder: one loop over the inputs, for one process or several. Each video is
planned (:mod:`.plan`), prompted (:class:`~Wan_SR.models.tagger.ClipPrompts`), and its chunks
go from its source (:mod:`.sources`) to its sink (:mod:`.sink`) by
:func:`Wan_SR.runs.parallel.deliver`: by this process alone, or, for a video every process
restores together, in parts by all of them."""
from __future__ import annotations

import dataclasses
import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from pathlib import Path
from typing import Callable, Optional

from Wan_SR.core.log import progress
from Wan_SR.core.options import Step1Config
from Wan_SR.core.profile import CLIP, mark
from Wan_SR.data import video_io
from Wan_SR.models.tagger import ClipPrompts
from ..common import Records, Summary, end_run, output_names, start_run
from ..parallel import decided, deliver, finish, pixel_frames, reporter, share_work
from .load import out_of_memory_hint
from .plan import SCRIPT, plan_video, record_settings
from .sink import VideoSink
from .sources import open_source

log = logging.getLogger(__name__)


def run_prompts(pipe, cfg: Step1Config, prompts: Optional[ClipPrompts]) -> ClipPrompts:
    """``prompts``, or the pipeline's own prompt for every clip."""
    return prompts or ClipPrompts(pipe.prompt, seed=cfg.sampling.seed)


def prompt_clip(pipe, prompts: ClipPrompts, name: str, num_frames: int, read_frame,
                together: bool = False) -> None:
    """With per-clip prompts: the prompt of this clip (chosen once, before any window or tile;
    with ``together`` by the main process for all) and its embedding into the pipeline."""
    if not prompts.per_clip:
        return

    prompt = decided(lambda: prompts.choose(name, num_frames, read_frame), together)
    if prompt != pipe.prompt:
        pipe.use_context(prompts.embed(prompt), prompt)


def restore_video(pipe, in_path, output_dir, cfg: Step1Config, *, info=None,
                  records: Optional[Records] = None, name: Optional[str] = None,
                  prompts: Optional[ClipPrompts] = None, together: bool = False,
                  show_progress: bool = True,
                  closer: Optional[Callable[[Callable], Future]] = None) -> tuple[dict, int]:
    """Restore one video (file or frame folder) to ``<output_dir>/<output>/<name>.mp4``
    (``name``: default the input's base name), each output with its record (``records``:
    default this run's settings). ``together``: every process calls this for the same video
    and makes a share of its windows; the main process plans it and writes the outputs, so they
    are the frames one process writes.

    Returns ({output: path} written here, frames this process made); raises (on every process,
    with ``together``) when anything failed, leaving no partial output. ``closer``: given the
    function that closes the outputs (the encoders' last frames, the records), runs it, e.g. on
    a thread while the next video starts; the first value returned is then its Future."""
    prompts = run_prompts(pipe, cfg, prompts)
    records = records or Records(SCRIPT, record_settings(cfg, pipe, prompts))

    job = decided(lambda: plan_video(in_path, output_dir, cfg, pipe.branch_names(), records,
                                     info, name), together)
    if job is None:
        return {}, 0
    mark(CLIP, job.name)
    info = job.info
    prompt_clip(pipe, prompts, job.name, info.num_frames,
                lambda i: video_io.read_frame(info.path, i, info=info), together)
    with closing(open_source(pipe, job, cfg, together)) as source, \
            VideoSink(job, cfg.windows, cfg.fusion, cfg.output.save_quality, records,
                      pipe.device, together, show_progress) as sink:
        deliver(source, sink, together)
        if closer is not None and not together:
            return closer(sink.close_or_abort), sink.frames.made
        return sink.close(), sink.frames.made


def restore_folder(pipe, input_dir, output_dir, cfg: Step1Config, inputs=None,
                   prompts: Optional[ClipPrompts] = None) -> int:
    """Restore every video / frame folder of ``input_dir`` (or the given ``inputs``). A file that
    cannot be read or fails is reported by name and the others still run. Writes
    ``run_config.json`` when it starts (the config and the settings that decide the outputs;
    marked finished at the end) and each output's record as soon as the output is complete.
    Returns 0 if all succeeded, else 1."""
    if inputs is None:
        inputs = video_io.list_inputs(input_dir, sort=cfg.output.sort_files)
    if not inputs:
        log.error("no videos or frame folders in %s", input_dir)
        return 1
    names = output_names(inputs)
    prompts = run_prompts(pipe, cfg, prompts)
    outputs = cfg.step1.resolve_outputs(len(pipe.branch_names()) - 1)
    records = start_run(SCRIPT, record_settings(cfg, pipe, prompts), output_dir,
                        [output_dir, *(Path(output_dir) / o for o in outputs)],
                        config=dataclasses.asdict(cfg))
    t_run = time.perf_counter()
    share = share_work(inputs, lambda p: video_io.probe(p, fps=cfg.output.rate()),
                       pixel_frames, cfg.processes.split,
                       can_split=cfg.step1.window_space == "pixel")
    summary = Summary("step 1")
    jobs = share.jobs()
    with Closing(pipe) as closing_videos:
        for path, together in progress(jobs, desc="videos", unit="video", leave=True) \
                if len(jobs) > 1 else jobs:
            report, name = reporter(summary, together), names[Path(path)]
            try:
                info = share.info(path)
                t0 = time.perf_counter()
                out, made = restore_video(pipe, path, output_dir, cfg, info=info,
                                          records=records, name=name, prompts=prompts,
                                          together=together, closer=closing_videos.submit)
            except ERRORS as e:
                report.fail(name, out_of_memory_hint(e, pipe))
                continue
            closing_videos.add(report, summary, name, info, out, made, t0, together)
    prompts.log_cost()
    if pipe.stats.encodes:
        log.info("VAE passes: %d encode(s), %d decode(s)", pipe.stats.encodes, pipe.stats.decodes)
    if pipe.streams and pipe.stats.encodes:
        log.info("DiT weights streamed from host memory: %.2f GiB (%.2f GiB per window tile)",
                 pipe.streamed_bytes() / 2 ** 30,
                 pipe.streamed_bytes() / 2 ** 30 / pipe.stats.encodes)
    summary.redone.update(records.redone)
    status = finish(summary, time.perf_counter() - t_run)
    end_run(output_dir, records, status)
    return status


ERRORS = (video_io.VideoError, RuntimeError, ValueError, OSError)


class Closing:
    """The videos whose outputs are being closed (the encoders' last frames, the records) on a
    thread of their own while the next video runs, reported in input order as they finish. At
    most one video waits for its close: a video that is done waits for the close of the one
    before (its encoders have had a whole video's time to finish).

    A video's seconds run from its start, or from the end of the video before if that ended
    later, to the end of its outputs: the seconds of a run's videos add up to its wall time."""

    def __init__(self, pipe):
        self.pipe = pipe
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="pssr-close")
        self.pending: list = []
        self.last_end = 0.0

    def submit(self, close: Callable) -> Future:
        def timed():
            return close(), time.perf_counter()
        return self.pool.submit(timed)

    def add(self, report, summary, name, info, out, made, t0, together) -> None:
        """One restored video: ``out`` its outputs, or the Future of their close."""
        if not isinstance(out, Future):
            done = Future()
            done.set_result((out, time.perf_counter()))
            out = done
        self.pending.append((report, summary, name, info, out, made, t0, together))
        self.settle(keep=1)

    def settle(self, keep: int = 0) -> None:
        """Report the videos whose outputs are closed, in order, waiting while more than
        ``keep`` are pending."""
        while self.pending and (len(self.pending) > keep or self.pending[0][4].done()):
            report, summary, name, info, future, made, t0, together = self.pending.pop(0)
            try:
                out, end = future.result()
            except ERRORS as e:
                report.fail(name, out_of_memory_hint(e, self.pipe))
                continue
            secs = end - max(t0, self.last_end)
            self.last_end = end
            if out or together:
                summary.made(made, secs)
            report_video(report, name, info, out, secs)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            if exc_type is None:
                self.settle()
        finally:
            self.pool.shutdown(wait=True)
        return False


def report_video(report: Summary, name: str, info, out: dict, secs: float) -> None:
    if report.quiet:  # another process reports it
        return
    if out:
        report.done.append(name)
        log.info("%s: %d frames at %s fps in %.1f s (%.2f frames/s) -> %s", name,
                 info.num_frames, info.rate, secs, info.num_frames / secs,
                 ", ".join(str(p) for p in out.values()))
    else:
        report.skipped.append(name)
        log.info("%s: outputs complete, skipped", name)
