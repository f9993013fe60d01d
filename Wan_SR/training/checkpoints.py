"""Checkpoints of training (docs/method.md §9, "Checkpoints and resume").

- Weights in the published layouts, written atomically: ``latest_base.safetensors`` (LoRA +
  widened patch embedding + head: ``inference_step_1.py --lora_base_path`` loads it unchanged),
  ``latest_reg.safetensors`` (the regulariser's LoRA + 16-channel patch embedding + head),
  ``latest_discriminator.safetensors`` (when a discriminator exists); ``step-XXXXXXX_*`` names
  with ``--save_latest False``.
- The full training state (models, optimisers, step, data position) as an accelerate state
  folder ``state/step-XXXXXXX`` that ``--resume_from_checkpoint latest`` continues from exactly.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Optional

from Wan_SR.core.distributed import all_gather
from Wan_SR.core.files import PARTIAL_TAG, remove_stale_partials as _remove, save_safetensors_atomic

log = logging.getLogger(__name__)

STATE_DIR = "state"
TRAINER_STATE = "trainer_state.json"
KEEP_STATES = 2


def weights_name(output: Path, kind: str, step: int, latest: bool) -> Path:
    return output / (f"latest_{kind}.safetensors" if latest else f"step-{step:07d}_{kind}.safetensors")


def save_weights(output: Path, step: int, latest: bool, parts: dict, metadata: dict) -> list:
    """``parts`` = {kind: state dict}; returns the written paths."""
    meta = {k: str(v) for k, v in metadata.items()}
    meta["step"] = str(step)
    return [save_safetensors_atomic(weights_name(output, kind, step, latest), sd, metadata=meta)
            for kind, sd in parts.items()]


def state_folder(output: Path, step: int) -> Path:
    return output / STATE_DIR / f"step-{step:07d}"


def save_state(accelerator, output: Path, step: int, trainer_state: dict) -> Optional[Path]:
    """``accelerator.save_state`` into a hidden temporary folder (``.step-N.<pid>.partial``, the
    main process's pid, shared by every process), renamed when complete; keeps the newest
    :data:`KEEP_STATES` folders."""
    final = state_folder(output, step)

    pid = all_gather(os.getpid())[0]  # the main process names the folder
    tmp = final.with_name(f".{final.name}.{pid}{PARTIAL_TAG}")
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    if accelerator.is_main_process:
        (tmp / TRAINER_STATE).write_text(json.dumps(trainer_state, indent=1))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        old = sorted(final.parent.glob("step-*"))
        for p in old[:-KEEP_STATES]:
            shutil.rmtree(p, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def find_state(output: Path, which: str) -> Path:
    """``latest`` -> the newest complete state folder of ``output``; else the given folder."""
    if which != "latest":
        p = Path(which)
        if not (p / TRAINER_STATE).is_file():
            raise FileNotFoundError(f"--resume_from_checkpoint {p}: not a training state folder "
                                    f"(no {TRAINER_STATE})")
        return p
    found = sorted(p for p in (output / STATE_DIR).glob("step-*")
                   if (p / TRAINER_STATE).is_file())
    if not found:
        raise FileNotFoundError(f"--resume_from_checkpoint latest: no saved state in "
                                f"{output / STATE_DIR}")
    return found[-1]


def load_state(accelerator, folder: Path) -> dict:
    accelerator.load_state(str(folder))
    state = json.loads((folder / TRAINER_STATE).read_text())
    log.info("resumed from %s (step %d)", folder, state["step"])
    return state


def remove_stale_partials(output: Path) -> None:
    """Remove what a killed earlier run left half-written in ``output`` (temporary weight files,
    state folders) when the process that wrote it is gone (with a notice)."""
    for folder in (output, output / STATE_DIR):
        for f in _remove(folder):
            log.info("removed %s, left by an interrupted earlier run", f)
