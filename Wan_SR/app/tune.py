"""Tune the frequency-domain update of a finished run: the fusion of step 2
(:func:`Wan_SR.fusion.frequency.fuse_video`, docs/method.md "Frequency-domain update") of the
run's base output and its last draft output, on one frame at once (fusion is per frame, so
the frame equals that frame of the whole clip) or on the whole clip through
:func:`Wan_SR.runs.step2.fuse_pair`, the function ``inference_step_2.py`` runs per video: the
downloaded clip is what that script writes with the same values."""
from __future__ import annotations

import shlex
from pathlib import Path

import numpy as np
import torch

from Wan_SR.core.options import FusionOptions, step2_windows
from Wan_SR.data import video_io
from Wan_SR.fusion.frequency import fuse_video
from Wan_SR.runs.step2 import SCRIPT, Step2Options, check_pair, fuse_pair
from .safety import UserError
from .session import Run, probe

TUNED = "tuned"  # the folder of a run's whole-clip fusions


def fusion_options(alpha, fc, order, border) -> FusionOptions:
    """The page's values as checked fusion options (:class:`UserError` naming a bad one)."""
    try:
        f = FusionOptions(fc=float(fc), alpha=float(alpha), border=int(border), order=int(order))
        f.validate()
    except (TypeError, ValueError) as e:
        raise UserError(f"fusion settings: {e}") from None
    return f


def branches(run: Run, last: str) -> tuple[Path, Path]:
    """(consistent, sharp) = the run's base output and its last draft output ``last``."""
    missing = [b for b in ("base", last) if b not in run.outputs]
    if missing:
        raise UserError(f"tuning needs the outputs base and {last}; this run lacks "
                        f"{', '.join(missing)} (restore again with them ticked)")
    return Path(run.outputs["base"]), Path(run.outputs[last])


def fuse_frame(run: Run, last: str, index: int, fusion: FusionOptions, device="cpu"
               ) -> np.ndarray:
    """Frame ``index`` of the fusion, (H, W, 3) uint8 (step 2's tiles and rounding)."""
    branches(run, last)
    frames = [video_io.frames_to_tensor(run.frame(label, index)[None], device)
              for label in ("base", last)]
    with torch.inference_mode():
        fused = fuse_video(frames[0], frames[1], **fusion.kwargs(step2_windows()))
    return video_io.tensor_to_frames(fused)[0]


def step2_options(fusion: FusionOptions, device) -> Step2Options:
    return Step2Options(fusion=fusion, device=str(device))


def fuse_clip(run: Run, last: str, fusion: FusionOptions, device) -> Path:
    """The whole clip fused with ``fusion`` into the run's ``tuned/`` folder, as
    ``inference_step_2.py`` writes it (same function, same step-2 defaults otherwise)."""
    c, s = branches(run, last)
    info_c, info_s = probe(str(c)), probe(str(s))
    problem = check_pair(run.name, info_c, info_s)
    if problem:
        raise UserError(problem)
    label = (f"alpha{fusion.alpha:g}_fc{fusion.fc:g}_order{fusion.order}_"
             f"border{fusion.border}")
    out = run.folder / TUNED / label / f"{run.name}.mp4"
    out.parent.mkdir(parents=True, exist_ok=True)
    fuse_pair(run.name, info_c, info_s, out, step2_options(fusion, device),
              torch.device(device))
    run.tuned[f"{TUNED}:{label}"] = out
    return out


def command_line(run: Run, last: str, fusion: FusionOptions) -> str:
    """The ``inference_step_2.py`` command that writes the same clip from the run's folders."""
    c, s = branches(run, last)
    args = ["python", SCRIPT, "--consistent_dir", str(c.parent), "--sharp_dir", str(s.parent),
            "--output_dir", "OUT", "--alpha", f"{fusion.alpha:g}", "--fc", f"{fusion.fc:g}",
            "--order", str(fusion.order), "--border", str(fusion.border)]
    return " ".join(shlex.quote(a) for a in args)
