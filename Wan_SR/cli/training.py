"""What the two training scripts share: their parsers (built from the trainer's config,
Wan_SR/training/options.py), the checks that run before any model loads, and the run itself
(docs/method.md §9). The modules that import torch are imported inside the functions that need
them, so ``--help`` starts fast."""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import logging
import shlex
import sys
from pathlib import Path

from Wan_SR.training.options import BaseTrainConfig, DraftTrainConfig
from .common import (HelpFormatter, add_log_args, add_options, check_writable_dir,
                     options_from_args, setup_from_args)
from .release import add_release_options, check_release_options

# The layers below the command line (torch, diffsynth, the models and the runs) are imported
# inside the functions that use them, so that `--help` and option errors answer at once.

# The release's --deg_file_path value (a name inside its Wan_SR/degradation/): the chain its code
# really runs with that file is config/degradation_pssr.yml here.
RELEASE_DEG_FILE = "params_realesrgan.yml"

CONFIGS = {"base": BaseTrainConfig, "draft": DraftTrainConfig}

# --help's group of each part of a trainer's config
TITLES = {"data": "data", "model": "models", "draft": "draft", "loss": "losses",
          "optim": "optimisation", "out": "checkpoints and logging"}


def resolve_config_path(path) -> Path:
    """A relative config path that does not exist from here is looked up in the repository
    (so the default config/degradation_pssr.yml works from any folder); the release's
    ``params_realesrgan.yml`` means config/degradation_pssr.yml (with a notice)."""
    p = Path(path)
    if p.is_absolute() or p.exists():
        return p
    repo = Path(__file__).resolve().parents[2]
    if p.as_posix() == RELEASE_DEG_FILE:
        logging.getLogger(__name__).info(
            "--deg_file_path %s (the release's file): config/degradation_pssr.yml, the chain the "
            "release runs with it", RELEASE_DEG_FILE)
        return repo / "config" / "degradation_pssr.yml"
    return repo / p if (repo / p).exists() else p


def str2bool(v) -> bool:
    if isinstance(v, bool):
        return v
    s = str(v).strip().lower()
    if s in ("true", "1", "yes", "on"):
        return True
    if s in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {v!r}")


def training_parser(trainer: str, description: str) -> argparse.ArgumentParser:
    """The parser of ``train_<trainer>.py``: one group per part of the trainer's config (its
    defaults), ``--checkpointing_steps``, the release's options (checked or noticed) and
    logging."""
    p = argparse.ArgumentParser(prog=f"train_{trainer}.py", description=description,
                                formatter_class=HelpFormatter)
    default = CONFIGS[trainer]()
    for f in dataclasses.fields(default):
        part = getattr(default, f.name)
        add_options(p.add_argument_group(TITLES[f.name]), type(part), defaults=part,
                    bools=str2bool)
    p.add_argument("--checkpointing_steps", dest="save_steps", type=int,
                   help="same as --save_steps")
    p.add_argument("--checkpointing", dest="gradient_checkpointing",
                   help="same as --gradient_checkpointing")
    add_release_options(p, f"train_{trainer}.py")
    add_log_args(p)
    return p


def config_from_args(args, trainer: str = "base"):
    """The trainer's config from the parsed arguments (the degradation file resolved)."""
    default = CONFIGS[trainer]()
    cfg = type(default)(**{f.name: options_from_args(type(getattr(default, f.name)), args)
                           for f in dataclasses.fields(default)})
    cfg.data.deg_file_path = str(resolve_config_path(cfg.data.deg_file_path))
    return cfg


def validate(parser, cfg) -> None:
    """Everything before a model loads: the options' own checks, the degradation file, the
    tracker, the data, the output folder; then every missing weight file in one
    :class:`~Wan_SR.models.wan.MissingWeightsError`."""
    from Wan_SR.models.wan import MissingWeightsError

    try:
        cfg.validate()
        check_degradation(cfg.data.deg_file_path)
    except ValueError as e:
        parser.error(str(e))
    report = cfg.out.report_to
    if report != "none" and importlib.util.find_spec(report) is None:
        parser.error(f"--report_to {report}: the package is not installed (pip install {report}, "
                     f"or --report_to none)")
    dataset = check_data(parser, cfg)
    check_output(parser, cfg)
    lines = missing_weights(parser, cfg, {r.prompt for r in dataset.rows})
    if lines:
        raise MissingWeightsError("\n  ".join([f"{len(lines)} file(s) missing:"] + lines)
                                  if len(lines) > 1 else lines[0])


def check_degradation(path: str) -> None:
    from Wan_SR.data.degradation.config import load_config

    if not Path(path).is_file():
        raise ValueError(f"--deg_file_path {path}: no such file")
    try:
        load_config(path)
    except OSError as e:
        raise ValueError(str(e)) from None


def check_data(parser, cfg):
    """The dataset as the run will read it, and enough samples per process for a step."""
    from Wan_SR.core.distributed import env_ranks
    from Wan_SR.data.dataset import DatasetError, VideoDataset

    d, acc_steps = cfg.data, cfg.optim.gradient_accumulation_steps
    try:
        ds = VideoDataset(d.dataset_base_path, d.dataset_metadata_path, num_frames=d.num_frames,
                          height=d.height or None, width=d.width or None,
                          max_pixels=d.max_pixels, repeat=d.dataset_repeat,
                          data_file_keys=d.file_keys())
    except (DatasetError, OSError, ValueError) as e:
        parser.error(str(e))
    procs = env_ranks().size
    per_process = -(-len(ds) // procs)
    if per_process < acc_steps:
        parser.error(f"--gradient_accumulation_steps {acc_steps}: an epoch has only "
                     f"{per_process} sample(s) per process ({len(ds)} samples, {procs} "
                     f"process(es))")
    return ds


def check_output(parser, cfg) -> None:
    """A writable output folder, the state to resume from, warm starts that are files."""
    from Wan_SR.training.checkpoints import find_state

    out = cfg.out
    check_writable_dir(parser, out.output_path, "--output_path")
    if out.resume_from_checkpoint:
        try:
            find_state(Path(out.output_path), out.resume_from_checkpoint)
        except FileNotFoundError as e:
            parser.error(str(e))
    for flag, path, _, _ in cfg.warm_starts():
        if path and Path(path).exists() and not Path(path).is_file():
            parser.error(f"--{flag} {path}: not a file")


def missing_weights(parser, cfg, data_prompts: set) -> list[str]:
    """One line per missing weight file: Wan2.1's, the warm starts, the text encoder when a
    prompt must be encoded (tagged prompts, or not cached yet), LPIPS with its loss."""
    from Wan_SR.models.tagger import will_tag
    from Wan_SR.models.text import PromptEncoder
    from Wan_SR.models.wan import WAN_SOURCE, missing_files

    m, o = cfg.model, cfg.loss
    try:
        files = m.wan_files()
    except ValueError as e:
        parser.error(str(e))
    enc = PromptEncoder(files.t5, files.tokenizer, cache_dir=m.prompt_cache_dir)
    prompts = data_prompts | set(cfg.prompts())
    need_t5 = will_tag(m.ram_path, not m.no_tags) or not all(enc.cache_path(p).exists()
                                                             for p in prompts)
    entries = [(files.dit, "Wan2.1 DiT weights", WAN_SOURCE),
               (files.vae, "Wan2.1 VAE weights", WAN_SOURCE)]
    entries += [(path, what, where) for _, path, what, where in cfg.warm_starts()]
    if need_t5:
        entries += [(files.t5, "umT5 text encoder weights (tagged prompts, or prompts not "
                               "cached yet)", WAN_SOURCE),
                    (files.tokenizer, "umT5 tokenizer folder", WAN_SOURCE)]
    lines = missing_files(entries)
    if o.lpips():
        from Wan_SR.training.lpips import LPIPSWeightsError, resolve_lpips_state_dict

        try:
            if not o.lpips_weights:
                raise LPIPSWeightsError("--alpha_pixel_lpips > 0 needs --lpips_weights")
            resolve_lpips_state_dict(o.lpips_weights)
        except LPIPSWeightsError as e:
            lines.append(str(e))
    return lines


def resume_command(script: str, argv) -> str:
    """The command line that continues this run from its newest saved state."""
    args, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--resume_from_checkpoint":
            skip = True
        elif not a.startswith("--resume_from_checkpoint="):
            args.append(a)
    return " ".join(shlex.quote(a) for a in
                    ["python", script, *args, "--resume_from_checkpoint", "latest"])


def run(parser: argparse.ArgumentParser, argv, trainer: str) -> int:
    """Parse, check everything before a model loads, then train. Returns the exit status:
    0 done, 1 the training stopped (unreadable data, interrupted), 2 bad options or files."""
    from Wan_SR.models.wan import MissingWeightsError

    args = parser.parse_args(argv)
    setup_from_args(args)
    script = f"train_{trainer}.py"
    check_release_options(parser, args, script)
    cfg = config_from_args(args, trainer)
    log = logging.getLogger(f"Wan_SR.cli.train_{trainer}")
    try:
        validate(parser, cfg)
    except MissingWeightsError as e:
        log.error("%s", e)
        return 2
    if trainer == "base":
        from Wan_SR.training.base import train_base as train
    else:
        from Wan_SR.training.draft import train_draft as train
    from Wan_SR.training.engine import TrainingDataError, TrainingInterrupted

    try:
        res = train(cfg)
    except TrainingInterrupted as e:
        saved = f"the last saved state is step {e.saved}; resume with: " + resume_command(
            script, sys.argv[1:] if argv is None else argv) if e.saved is not None else \
            "nothing saved yet (the first save is at --save_steps)"
        log.error("interrupted at step %d: %s", e.step, saved)
        return 130
    except KeyboardInterrupt:
        log.error("interrupted before the first step: nothing trained")
        return 130
    except TrainingDataError as e:
        log.error("%s", e)
        return 1
    empty = f", {res['empty_steps']} with no readable sample" if res.get("empty_steps") else ""
    log.info("done: %d steps%s, %d update(s) skipped, checkpoints in %s", res["step"], empty,
             res["nan_skipped"], res["output"])
    return 0
