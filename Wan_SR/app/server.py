"""The app's state and the handlers of the page's events (:mod:`.ui` lays them out).

Every handler takes what the page sends (a run id from the session, names chosen from lists,
numbers, and uploads that Gradio stored in the workspace's upload folder) and returns what the
page shows. A refused request or a failed job is a message in the page (``status``); the app
goes on. Paths never come from a request: files are found from run ids and names
(:class:`~.session.RunStore`, :class:`~.safety.Library`)."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import gradio as gr
import numpy as np
import pandas as pd

from Wan_SR.core.options import FINAL, Step1Config
from Wan_SR.models.tagger import ClipPrompts
from . import compare, tune
from .options import AppOptions
from .restore import job_config, job_fields, restore_job
from .safety import Library, UserError, Workspace, check_upload
from .session import INPUT, Run, RunStore

log = logging.getLogger(__name__)


def warn(msg: str) -> str:
    return f"**Not done:** {msg}"


@dataclass
class Models:
    """What the app loaded once at start."""
    pipe: object
    prompts: ClipPrompts
    config: Step1Config


class App:
    """One app: the loaded models, the workspace, the runs and the folders it may read."""

    def __init__(self, models: Models, options: AppOptions, workspace: Workspace):
        self.models, self.options, self.workspace = models, options, workspace
        self.inputs = Library({"input_dir": options.input_dir} if options.input_dir else {})
        self.folders = Library({})
        for d in options.compare_dir:  # by folder name; the path where two names are alike
            label = Path(d).name or str(d)
            self.folders.add(label if label not in self.folders.folders else str(d), d)
        self.store = RunStore(workspace.runs, options.max_runs, on_drop=self._forget)
        names = models.pipe.branch_names()
        self.branches, self.last = names + [FINAL], names[-1]
        self.device = str(models.pipe.device)

    # ------------------------------------------------------------------ restore
    def input_names(self) -> list[str]:
        return list(self.inputs.videos("input_dir")) if self.inputs.labels() else []

    def checked_input(self, upload, picked):
        """The VideoInfo of the upload, else of the picked library video."""
        o = self.options
        if upload:
            return check_upload(upload, self.workspace.uploads, o.max_upload_mb, o.max_frames)
        if picked:
            path = self.inputs.video("input_dir", picked)
            return check_upload(path, None, o.max_upload_mb, o.max_frames)
        raise UserError("no video: upload one or pick one from the list")

    def restore(self, upload, picked, outputs, tags, *values, progress=None):
        """Restore the chosen video; (status, run id, first view of the run)."""
        try:
            info = self.checked_input(upload, picked)
            names = [f.name for _, f in job_fields()]
            settings = dict(zip(names, values), outputs=list(outputs or []), tags=bool(tags))
            cfg = job_config(self.models.config, dict(zip(names, values)), outputs)
            if progress is not None:
                progress(0, desc=f"restoring {info.num_frames} frames")
            name = Path(upload).stem if upload else Path(picked).stem
            run = restore_job(self.models.pipe, self.models.prompts, self.store, cfg, info,
                              bool(tags), settings, name=name)
        except UserError as e:
            log.warning("restore refused: %s", e)
            return (warn(str(e)), gr.update(), *self.no_view(), *self.folder_lists())
        for branch in run.outputs:
            self.folders.add(f"{run.id}/{branch}", Path(run.outputs[branch]).parent)
        status = (f"Restored **{run.name}** ({run.num_frames} frames, "
                  f"{run.input.width}x{run.input.height} at {run.input.rate} fps) as {run.id}: "
                  f"{', '.join(run.outputs)}")
        return (status, run.id, *self.first_view(run), *self.folder_lists())

    def _forget(self, run: Run) -> None:
        for label in [lb for lb in self.folders.labels() if lb.startswith(f"{run.id}/")]:
            self.folders.remove(label)

    def folder_lists(self):
        labels = self.folders.labels()
        return gr.update(choices=labels), gr.update(choices=labels)

    def no_view(self):
        return (gr.update(),) * 7

    def first_view(self, run: Run):
        """branch list, frame slider, viewer, input player, output player, downloads, and the
        Tune tab's frame slider."""
        shown = next(iter(run.outputs))
        view = self.frame_pair(run, shown, 0)
        frames = gr.update(maximum=max(run.num_frames - 1, 0), value=0)
        return (gr.update(choices=list(run.outputs), value=shown), frames, view,
                str(run.input.path), str(run.outputs[shown]),
                [str(run.download(b)) for b in run.outputs], frames)

    def frame_pair(self, run: Run, label: str, index: int):
        """(input frame at the output's size, output frame) for the before/after viewer."""
        after = run.frame(label, index)
        before = run.frame(INPUT, index)
        if before.shape != after.shape:
            before = cv2.resize(before, (after.shape[1], after.shape[0]),
                                interpolation=cv2.INTER_CUBIC)
        return before, after

    def view(self, run_id, label, index):
        """The before/after pair of one frame and the output's player."""
        try:
            run = self.store.get(run_id)
            return self.frame_pair(run, label, index), str(run.video(label))
        except UserError as e:
            raise gr.Error(str(e)) from None

    # ------------------------------------------------------------------ tune
    def tune_frame(self, run_id, index, alpha, fc, order, border):
        """(base frame, fused frame) of frame ``index`` with these values, and a status."""
        try:
            run = self.store.get(run_id)
            fusion = tune.fusion_options(alpha, fc, order, border)
            fused = tune.fuse_frame(run, self.last, index, fusion, self.device)
            return (run.frame("base", index), fused), (
                f"frame {int(index)} of {run.id}: alpha {fusion.alpha:g}, fc {fusion.fc:g}, "
                f"order {fusion.order}, border {fusion.border}")
        except UserError as e:
            return None, warn(str(e))

    def fuse_clip(self, run_id, alpha, fc, order, border):
        """The whole clip fused: (download, equivalent command, status)."""
        try:
            run = self.store.get(run_id)
            fusion = tune.fusion_options(alpha, fc, order, border)
            path = tune.fuse_clip(run, self.last, fusion, self.device)
        except UserError as e:
            return None, "", warn(str(e))
        download = run.download(f"{tune.TUNED}:{path.parent.name}")
        return (str(download), tune.command_line(run, self.last, fusion),
                f"Wrote {path.name} ({run.num_frames} frames): the same frames as "
                f"inference_step_2.py writes with these values (command below).")

    # ------------------------------------------------------------------ compare
    def match(self, reference, result):
        """The names both folders hold: (name list, status)."""
        try:
            found = compare.match(self.folders, reference, result)
        except UserError as e:
            return gr.update(choices=[], value=None), warn(str(e))
        if not found.pairs:
            return gr.update(choices=[], value=None), warn(
                "no names in common. " + "; ".join(found.problems[:5]))
        names = sorted(found.pairs)
        note = (" Left out: " + "; ".join(found.problems[:5])) if found.problems else ""
        return gr.update(choices=names, value=names[0]), (
            f"{len(names)} video(s) matched by name.{note}")

    def _pair(self, reference, result, name):
        found = compare.match(self.folders, reference, result)
        if name not in found.pairs:
            raise UserError(f"no pair named {name!r}")
        return found.pairs[name]

    def scores(self, reference, result, name):
        """(PSNR per frame, SSIM per frame, summary, frame slider) of one pair."""
        try:
            ref, res = self._pair(reference, result, name)
            values = compare.per_frame(ref, res)
        except UserError as e:
            return None, None, warn(str(e)), gr.update()
        n = len(values["psnr"])
        tables = [pd.DataFrame({"frame": np.arange(n), m.upper(): values[m]})
                  for m in compare.METRICS]
        summary = (f"**{name}**: {n} frames, mean PSNR {np.mean(values['psnr']):.2f} dB, "
                   f"mean SSIM {np.mean(values['ssim']):.4f} (as eval_metrics.py scores them: "
                   f"RGB, no crop)")
        return (*tables, summary, gr.update(maximum=max(n - 1, 0), value=0))

    def compare_frames(self, reference, result, name, index):
        """The two frames side by side, and the pair for the before/after viewer."""
        try:
            ref, res = self._pair(reference, result, name)
            a, b = compare.frames(ref, res, index)
            return a, b, (a, b)
        except UserError as e:
            raise gr.Error(str(e)) from None
