"""Restore one video in the app: the job's :class:`~Wan_SR.core.options.Step1Config` (the app's
start config with the settings chosen in the page), and step 1 through the same function as
``inference_step_1.py`` (:func:`Wan_SR.runs.step1.restore_video`), which writes each output as
``<run folder>/<branch>/<name>.mp4`` with the input's frame count, fps and audio."""
from __future__ import annotations

import dataclasses
import logging
import time
import typing
from typing import Optional

import torch

from Wan_SR.core.options import Step1Config
from Wan_SR.data import video_io
from Wan_SR.models.tagger import ClipPrompts
from Wan_SR.runs.step1 import restore_video
from .options import JOB_FIELDS
from .safety import UserError, first_line, safe_name
from .session import Run, RunStore

log = logging.getLogger(__name__)


def config_part(cls) -> str:
    """The field of :class:`Step1Config` that holds options of class ``cls``."""
    hints = typing.get_type_hints(Step1Config)
    for f in dataclasses.fields(Step1Config):
        if hints[f.name] is cls or issubclass(hints[f.name], cls):
            return f.name
    raise KeyError(cls.__name__)


def job_fields() -> list[tuple[str, dataclasses.Field]]:
    """(part of Step1Config, field) of every setting offered per job, in page order."""
    out = []
    for cls, names in JOB_FIELDS:
        by_name = {f.name: f for f in dataclasses.fields(cls)}
        out += [(config_part(cls), by_name[n]) for n in names]
    return out


def value_type(f: dataclasses.Field) -> str:
    """A field's value type as written ('Optional[float]' -> 'float')."""
    t = str(f.type)
    return t[len("Optional["):-1] if t.startswith("Optional[") else t


def job_config(base: Step1Config, values: dict, outputs) -> Step1Config:
    """``base`` with the per-job ``values`` ({field name: value}, :func:`job_fields`) and the
    chosen outputs; raises :class:`UserError` naming a bad value."""
    parts: dict = {}
    for part, f in job_fields():
        if f.name in values and values[f.name] is not None:
            value = values[f.name]
            if value_type(f) == "int":
                value = int(value)
            elif value_type(f) == "float":
                value = float(value)
            parts.setdefault(part, {})[f.name] = value
    step1 = dict(parts.pop("step1", {}), outputs=list(outputs or []) or None, final=False)
    cfg = dataclasses.replace(
        base, step1=dataclasses.replace(base.step1, **step1),
        **{p: dataclasses.replace(getattr(base, p), **kw) for p, kw in parts.items()})
    if not outputs:
        raise UserError("choose at least one output")
    try:
        cfg.validate()
    except ValueError as e:
        raise UserError(str(e)) from None
    return cfg


def job_prompts(pipe, loaded: ClipPrompts, tags: bool, seed: int) -> ClipPrompts:
    """The job's prompts: tagged per clip (with the job's seed) when a tagger is loaded and
    ``tags`` is on; otherwise the prompt alone (the pipeline's embedding put back to it after
    a tagged job)."""
    if loaded.per_clip and tags:
        return ClipPrompts(loaded.prompt, loaded.tagger, loaded.text, seed=seed)
    if loaded.per_clip and pipe.prompt != loaded.prompt:
        pipe.use_context(loaded.embed(loaded.prompt), loaded.prompt)
    return ClipPrompts(loaded.prompt or pipe.prompt, seed=seed)


def restore_job(pipe, loaded: ClipPrompts, store: RunStore, cfg: Step1Config,
                info: video_io.VideoInfo, tags: bool, settings: dict,
                name: Optional[str] = None) -> Run:
    """Step 1 on one checked input into a new run folder; the finished :class:`Run`. A failure
    removes the run folder and raises :class:`UserError` with the reason."""
    rid, folder = store.new_folder()
    name = safe_name(name or video_io.stem(info.path))
    try:
        prompts = job_prompts(pipe, loaded, tags, cfg.sampling.seed)
        torch.manual_seed(cfg.sampling.seed)
        t0 = time.perf_counter()
        out, _ = restore_video(pipe, info.path, folder, cfg, info=info, name=name,
                               prompts=prompts, show_progress=True)
        log.info("%s: %d frames restored in %.1f s", name, info.num_frames,
                 time.perf_counter() - t0)
    except (video_io.VideoError, RuntimeError, ValueError, OSError) as e:
        store.drop(Run(rid, name, info, folder, {}, settings))
        raise UserError(f"{name}: restore failed ({first_line(e)})") from e
    order = cfg.step1.resolve_outputs(len(pipe.branch_names()) - 1)
    outputs = {b: out[b] for b in order if b in out}
    return store.add(Run(rid, name, info, folder, outputs, settings))
