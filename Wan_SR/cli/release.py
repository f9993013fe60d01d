"""Options of the published release's scripts that have no option of their own here
(docs/method.md, "The release's options").

The release's commands (its README, ``train_base.sh``, ``train_draft.sh``,
``inference_step_1.sh``, ...) run here as written. Options that work here are ordinary options
of our parsers (``--denoising_strength``, ``--model_paths``, ``--gradient_accumulation_steps``,
...). The rest are listed below, accepted with the release's value syntax, and either

- **checked** (:data:`CHECK`): only the value that makes sense here is accepted (leaving the
  option out is fine); another value stops the run before any model loads, naming what is
  supported; or
- **noticed** (:data:`NOTICE`): when given, the run logs one line naming the option and why it
  has no effect here, and continues.

Nothing is silently ignored. Their parsed values live under ``release_<name>`` so they never
reach a config.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

CHECK, NOTICE = "check", "notice"

log = logging.getLogger("Wan_SR.cli.release")


@dataclass(frozen=True)
class ReleaseOption:
    name: str
    kind: str                     # CHECK or NOTICE
    why: str                      # CHECK: what is supported; NOTICE: why it has no effect
    allowed: tuple = ()           # CHECK: the accepted values
    type: Callable = str
    flag: bool = False            # store_true in the release

    @property
    def dest(self) -> str:
        return f"release_{self.name}"

    def accepted(self) -> str:
        """The accepted values in words."""
        return " or ".join(repr(a) if a else "an empty value" for a in self.allowed)

    def help(self) -> str:
        if self.kind == CHECK:
            return f"release option, checked: only {self.accepted()} ({self.why})"
        return f"release option, no effect here: {self.why}"


_TILES = "tiles stay in memory; no temporary files are written"
_NO_REG = "the draft trainer has no regulariser"
_NO_DISC = "the draft trainer has no discriminator"
_FROM_FILE = "the base's LoRA rank and layers are read from --load_model_base_from"

STEP1 = (
    ReleaseOption("temp_dir", NOTICE, _TILES),
    ReleaseOption("keep_temp", NOTICE, _TILES, flag=True),
)
STEP2 = STEP1

_TRAINING = (
    ReleaseOption("lora_model_base", CHECK, "LoRA goes on the base DiT", allowed=("dit",)),
    ReleaseOption("remove_prefix_in_ckpt", CHECK,
                  "checkpoints hold the DiT's own key names, as the release writes them",
                  allowed=("dit.",)),
    ReleaseOption("remove_prefix_in_ckpt_reg", CHECK,
                  "the regulariser checkpoint holds the DiT's own key names, as the release "
                  "writes them", allowed=("dit_update.",)),
    ReleaseOption("trainable_models", CHECK,
                  "no model is trained whole: the base trains its LoRA, patch embedding and "
                  "head (the release's default, unset)", allowed=("",)),
    ReleaseOption("extra_inputs", NOTICE,
                  "the model inputs are fixed ([x, z_L] and the prompt); the release ignores "
                  "it too"),
    ReleaseOption("use_gradient_checkpointing_offload", NOTICE,
                  "the release ignores it too; --gradient_checkpointing auto|full|none|N "
                  "chooses recomputation here", flag=True),
)

TRAIN_BASE = _TRAINING + (
    ReleaseOption("lora_model_reg", CHECK, "the regulariser's LoRA goes on dit_update",
                  allowed=("dit_update",)),
    ReleaseOption("trainable_models_reg", CHECK,
                  "no model is trained whole: dit_update trains its LoRA, patch embedding and "
                  "head (the release's default, unset)", allowed=("",)),
    ReleaseOption("k_select", NOTICE,
                  "the base step records no draft features here (the release records them and "
                  "never uses them); train_draft.py --k_select chooses the draft's blocks",
                  type=float),
    ReleaseOption("timestep_draft_list", NOTICE,
                  "the base trainer makes no draft steps (train_draft.py uses the list)"),
)

TRAIN_DRAFT = _TRAINING + (
    ReleaseOption("lora_model_reg", NOTICE, _NO_REG),
    ReleaseOption("trainable_models_reg", NOTICE, _NO_REG),
    ReleaseOption("load_model_reg_from", NOTICE, _NO_REG),
    ReleaseOption("alpha_reg", NOTICE, _NO_REG, type=float),
    ReleaseOption("cfg_scale", NOTICE, _NO_REG + " (the guidance belongs to it)", type=float),
    ReleaseOption("negative_prompt", NOTICE, _NO_REG + " (the guidance belongs to it)"),
    ReleaseOption("start_adv_step", NOTICE, _NO_DISC, type=int),
    ReleaseOption("alpha_adv", NOTICE, _NO_DISC, type=float),
    ReleaseOption("alpha_perc", NOTICE, _NO_DISC, type=float),
    ReleaseOption("lora_rank", NOTICE, _FROM_FILE, type=int),
    ReleaseOption("lora_target_modules", NOTICE, _FROM_FILE),
)

BY_SCRIPT = {"inference_step_1.py": STEP1, "inference_step_2.py": STEP2,
             "train_base.py": TRAIN_BASE, "train_draft.py": TRAIN_DRAFT}


def add_release_options(parser, script: str) -> None:
    """The release's options of ``script`` that have no option of their own here."""
    g = parser.add_argument_group(
        "options of the published release (accepted so its commands run as written; "
        "docs/method.md, \"The release's options\")")
    for o in BY_SCRIPT[script]:
        if o.flag:
            g.add_argument(f"--{o.name}", dest=o.dest, action="store_true", default=None,
                           help=o.help())
        else:
            g.add_argument(f"--{o.name}", dest=o.dest, type=o.type, default=None,
                           metavar=o.name.upper(), help=o.help())


def check_release_options(parser, args, script: str) -> list[str]:
    """Stop (``parser.error``) on a checked option with a value not supported here; log one
    line per given no-effect option. Returns the logged lines. Call after logging is set up."""
    lines = []
    for o in BY_SCRIPT[script]:
        value = getattr(args, o.dest, None)
        if value is None:
            continue
        if o.kind == CHECK:
            if str(value).strip() not in o.allowed:
                parser.error(f"--{o.name} {value!r}: {script} supports only {o.accepted()} here "
                             f"({o.why})")
            continue
        shown = "" if o.flag else f" {value}"
        lines.append(f"--{o.name}{shown}: no effect in {script} ({o.why})")
    for line in lines:
        log.info("%s", line)
    return lines
