"""The plan of step 1, decided before any model work: for each input video, the outputs it
gets (after ``--skip_existing``), their names and paths, the branches to decode, the
processing size and the audio source; and the settings that decide the outputs (each output's
record, compared by ``--skip_existing``)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from Wan_SR.core.options import FINAL, Step1Config, Step1Options
from Wan_SR.data import video_io
from ..common import Records

SCRIPT = "inference_step_1.py"


@dataclass(frozen=True)
class ClipPlan:
    """What restoring one clip involves, whatever it is read from and written to."""
    num_frames: int
    height: int           # processing = output size (after --upscale)
    width: int
    names: tuple          # every branch the pipeline makes (base, base+draft_1, ...)
    outputs: tuple        # outputs to make (branches and 'final')
    decode: tuple         # branches to decode: the outputs plus what 'final' needs


def plan_clip(num_frames: int, height: int, width: int, names: Sequence[str],
              outputs: Sequence[str], upscale: float = 1.0) -> ClipPlan:
    """The :class:`ClipPlan` of a clip of ``num_frames`` frames of ``height`` x ``width``
    (before ``upscale``), for the pipeline's branches ``names`` and the wanted ``outputs``."""
    names = tuple(names)
    decode = tuple(b for b in names
                   if b in outputs or (FINAL in outputs and b in (names[0], names[-1])))
    if upscale != 1:
        height, width = int(round(height * upscale)), int(round(width * upscale))
    return ClipPlan(num_frames, height, width, names, tuple(outputs), decode)


@dataclass(frozen=True)
class VideoJob:
    """One input video: its output name, :class:`ClipPlan` and where its outputs go."""
    info: "video_io.VideoInfo"
    name: str
    clip: ClipPlan
    output_dir: Path
    audio: Optional[Path]  # the input whose audio the outputs copy

    def path(self, output: str) -> Path:
        return output_path(self.output_dir, output, self.name)


def output_path(output_dir, output: str, name: str) -> Path:
    return Path(output_dir) / output / f"{name}.mp4"


def plan_video(in_path, output_dir, cfg: Step1Config, names: Sequence[str],
               records: Optional[Records], info=None, name: Optional[str] = None
               ) -> Optional[VideoJob]:
    """The :class:`VideoJob` of one video (``names``: the pipeline's branches; ``name``: of the
    outputs, default the input's base name); None when ``--skip_existing`` keeps every output
    (complete and recorded by ``records`` with the same settings)."""
    o = cfg.step1
    info = info or video_io.probe(in_path, fps=cfg.output.rate())
    name = name or video_io.stem(info.path)
    outputs = o.resolve_outputs(len(names) - 1)
    if cfg.output.skip_existing:
        outputs = [out for out in outputs
                   if records.check(output_path(output_dir, out, name), info.num_frames)]
        if not outputs:
            return None
    clip = plan_clip(info.num_frames, info.height, info.width, names, outputs, o.upscale)
    audio = info.path if (not o.no_audio and info.has_audio and not info.is_folder) else None
    return VideoJob(info, name, clip, Path(output_dir), audio)


def probe_inputs(inputs, cfg: Step1Config) -> dict:
    """{input: its VideoInfo, or the error that probing it raised}: probed once, before the
    models load (the memory plan needs the largest clip), and reused by the run."""
    out = {}
    for path in inputs:
        try:
            out[path] = video_io.probe(path, fps=cfg.output.rate())
        except (video_io.VideoError, OSError) as e:
            out[path] = e
    return out


def largest_clip(probed: dict, cfg: Step1Config) -> Optional[tuple[int, int, int]]:
    """(frames, height, width) at the processing size, the largest over the probed inputs (for
    the memory plan); None when none could be probed (they fail later, each with its reason)."""
    sizes = [plan_clip(i.num_frames, i.height, i.width, ["base"], ["base"], cfg.step1.upscale)
             for i in probed.values() if not isinstance(i, Exception)]
    if not sizes:
        return None
    return (max(c.num_frames for c in sizes), max(c.height for c in sizes),
            max(c.width for c in sizes))


def record_settings(cfg: Step1Config, pipe, prompts) -> dict:
    """The settings that decide step 1's outputs (in ``run_config.json`` and in each output's
    record, compared by ``--skip_existing``): the pipeline's resolved sampling config, its
    dtype and prompt (before per-clip tags; those follow from ``tags``), the windows, the
    fusion, and how the outputs are written."""
    sampling = dataclasses.asdict(pipe.config)
    del sampling["record_blocks"]  # follows from k_select
    sampling.update(dtype=str(pipe.dtype).replace("torch.", ""), prompt=prompts.prompt)
    if pipe.fp8:  # only then: the records of earlier runs stay valid
        sampling["fp8"] = True
    o: Step1Options = cfg.step1
    return {"sampling": sampling, "windows": dataclasses.asdict(cfg.windows),
            "fusion": dataclasses.asdict(cfg.fusion), "upscale": o.upscale,
            "fps": cfg.output.rate(), "save_quality": cfg.output.save_quality,
            "copy_audio": not o.no_audio, "window_space": o.window_space,
            "tags": prompts.describe()}
