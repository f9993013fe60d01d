"""What the two training scripts share: their options (built from Wan_SR/training/options.py),
the checks that run before any model loads, and the run itself (docs/method.md §9)."""
from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

from .common import (HelpFormatter, add_log_args, add_options, options_from_args,
                     parse_float_list, setup_from_args)
from .release import add_release_options, check_release_options


REPORTERS = ("tensorboard", "wandb", "swanlab", "none")


# The release's --deg_file_path value (a name inside its Wan_SR/degradation/): the chain its code
# really runs with that file is config/degradation_pssr.yml here.
RELEASE_DEG_FILE = "params_realesrgan.yml"


def resolve_config_path(path) -> Path:
    """A relative config path that does not exist from here is looked up in the repository
    (so the default config/degradation_pssr.yml works from any folder); the release's
    ``params_realesrgan.yml`` means config/degradation_pssr.yml (with a notice)."""
    p = Path(path)
    if p.is_absolute() or p.exists():
        return p
    repo = Path(__file__).resolve().parents[2]
    if p.as_posix() == RELEASE_DEG_FILE:
        import logging

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


# Options the draft trainer does not use: the release's parser has most of them, so they are
# added back by add_release_options, each with its notice (none is silently ignored).
DRAFT_SKIPS = {"ModelOptions": ("lora_rank", "lora_target_modules", "load_model_base_from",
                                "load_model_reg_from"),
               "LossOptions": ("alpha_reg", "cfg_scale", "negative_prompt", "start_adv_step",
                               "alpha_adv", "alpha_perc"),
               "OptimOptions": ("learning_rate_disc",)}


def add_training_options(p: argparse.ArgumentParser, trainer: str = "base") -> None:
    from Wan_SR.training.options import (DataOptions, DraftOptions, LossOptions, ModelOptions,
                                         OptimOptions, OutputOptions)

    groups = [("data", DataOptions), ("models", ModelOptions), ("losses", LossOptions),
              ("optimisation", OptimOptions), ("checkpoints and logging", OutputOptions)]
    if trainer == "draft":
        groups.insert(2, ("draft", DraftOptions))
    skips = DRAFT_SKIPS if trainer == "draft" else {}
    for title, cls in groups:
        add_options(p.add_argument_group(title), cls, bools=str2bool,
                    skip=skips.get(cls.__name__, ()),
                    types={"timestep_draft_list": parse_float_list})
    p.add_argument("--checkpointing_steps", dest="save_steps", type=int,
                   help="same as --save_steps")
    add_release_options(p, f"train_{trainer}.py")


def training_parser(trainer: str, description: str) -> argparse.ArgumentParser:
    """The parser of ``train_<trainer>.py``: every option of the trainer, logging options, the
    default ``--output_path ./experiments/train_<trainer>``."""
    p = argparse.ArgumentParser(prog=f"train_{trainer}.py", description=description,
                                formatter_class=HelpFormatter)
    add_training_options(p, trainer=trainer)
    add_log_args(p)
    p.set_defaults(output_path=f"./experiments/train_{trainer}")
    return p


def config_from_args(args, trainer: str = "base"):
    from Wan_SR.training.options import (DataOptions, DraftOptions, LossOptions, ModelOptions,
                                         OptimOptions, OutputOptions)

    parts = [options_from_args(c, args) for c in (DataOptions, ModelOptions, LossOptions,
                                                  OptimOptions, OutputOptions)]
    if trainer == "draft":
        from Wan_SR.training.draft import DraftTrainConfig

        parts[2].alpha_reg = parts[2].alpha_adv = parts[2].alpha_perc = 0.0
        parts[1].load_model_base_from = parts[1].load_model_reg_from = None  # the draft's own
        return DraftTrainConfig(*parts, options_from_args(DraftOptions, args))
    from Wan_SR.training.base import BaseTrainConfig

    return BaseTrainConfig(*parts)


def validate(parser, cfg, trainer: str = "base") -> None:
    """Everything that needs no model: numbers, folders, data, weight files, trackers."""
    from Wan_SR.cli.common import check_writable_dir
    from Wan_SR.data.dataset import DatasetError, VideoDataset, valid_num_frames
    from Wan_SR.models.tagger import will_tag
    from Wan_SR.models.text import PromptEncoder
    from Wan_SR.models.wan import MissingWeightsError, missing_files

    d, m, o, opt, out = cfg.data, cfg.model, cfg.loss, cfg.optim, cfg.out
    if not d.dataset_base_path:
        parser.error("--dataset_base_path is required")
    if not valid_num_frames(d.num_frames):
        parser.error(f"--num_frames must be 4n+1 (e.g. 33), got {d.num_frames}")
    for name in ("learning_rate", "learning_rate_disc"):
        if getattr(opt, name) <= 0:
            parser.error(f"--{name} must be positive")
    if opt.num_epochs < 1 or (opt.max_train_steps is not None and opt.max_train_steps < 1):
        parser.error("--num_epochs and --max_train_steps must be >= 1")
    if opt.gradient_accumulation_steps < 1:
        parser.error("--gradient_accumulation_steps must be >= 1")
    if opt.collective_timeout <= 0:
        parser.error("--collective_timeout must be positive")
    if out.save_steps < 1:
        parser.error("--save_steps must be >= 1")
    if m.lora_rank < 1:
        parser.error("--lora_rank must be >= 1")
    if not 0 < o.timestep_base <= 1000:
        parser.error("--timestep_base must lie in (0, 1000]")
    weights = {k: getattr(o, k) for k in ("alpha_l2", "alpha_pixel_l2", "alpha_pixel_lpips",
                                          "alpha_reg", "alpha_adv", "alpha_perc")}
    negative = [k for k, v in weights.items() if v < 0]
    if negative:
        parser.error(f"loss weights must not be negative: {', '.join('--' + k for k in negative)}")
    pixel_on = o.train_video_pixel and (o.alpha_pixel_l2 > 0 or o.alpha_pixel_lpips > 0)
    if not (o.alpha_l2 > 0 or pixel_on or o.alpha_reg > 0):
        parser.error("no generator loss is on: set --alpha_l2, the pixel losses or --alpha_reg")
    if o.pixel_crop < 1:
        parser.error("--pixel_crop must be >= 1")
    for name in ("dataloader_num_workers",):
        if getattr(d, name) < 0:
            parser.error(f"--{name} must be >= 0")
    if opt.max_grad_norm < 0 or opt.lr_warmup_steps < 0:
        parser.error("--max_grad_norm and --lr_warmup_steps must be >= 0")
    if m.num_heads is not None and m.num_heads < 1:
        parser.error("--num_heads must be >= 1")
    unknown = [t for t in m.lora_target_modules.split(",")
               if t.strip() and t.strip() not in ("q", "k", "v", "o", "ffn.0", "ffn.2")]
    if unknown:
        parser.error(f"--lora_target_modules: unknown layer(s) {unknown}; choose from "
                     "q,k,v,o,ffn.0,ffn.2")
    if out.report_to not in REPORTERS:
        parser.error(f"--report_to must be one of {', '.join(REPORTERS)}")
    d.deg_file_path = str(resolve_config_path(d.deg_file_path))
    if not Path(d.deg_file_path).is_file():
        parser.error(f"--deg_file_path {d.deg_file_path}: no such file")
    try:
        from Wan_SR.data.degradation.config import load_config

        load_config(d.deg_file_path)
    except (ValueError, OSError) as e:
        parser.error(str(e))
    if out.report_to != "none" and importlib.util.find_spec(out.report_to) is None:
        parser.error(f"--report_to {out.report_to}: the package is not installed "
                     f"(pip install {out.report_to}, or --report_to none)")
    keys = [k.strip() for k in d.data_file_keys.split(",") if k.strip()]
    try:
        ds = VideoDataset(d.dataset_base_path, d.dataset_metadata_path, num_frames=d.num_frames,
                          height=d.height or None, width=d.width or None,
                          max_pixels=d.max_pixels, repeat=d.dataset_repeat, data_file_keys=keys)
    except (DatasetError, OSError, ValueError) as e:
        parser.error(str(e))
    from Wan_SR.core.distributed import env_ranks

    procs = env_ranks().size
    if -(-len(ds) // procs) < opt.gradient_accumulation_steps:
        parser.error(f"--gradient_accumulation_steps {opt.gradient_accumulation_steps}: an epoch "
                     f"has only {-(-len(ds) // procs)} sample(s) per process ({len(ds)} samples, "
                     f"{procs} process(es))")
    check_writable_dir(parser, out.output_path, "--output_path")
    if out.resume_from_checkpoint:
        from Wan_SR.training.checkpoints import find_state

        try:
            find_state(Path(out.output_path), out.resume_from_checkpoint)
        except FileNotFoundError as e:
            parser.error(str(e))
    for flag in ("load_model_base_from", "load_model_reg_from"):
        p = getattr(cfg.draft if trainer == "draft" and flag == "load_model_base_from" else m,
                    flag, None)
        if p and Path(p).exists() and not Path(p).is_file():
            parser.error(f"--{flag} {p}: not a file")
    if trainer == "draft":
        from Wan_SR.core.options import validate_timesteps

        dr = cfg.draft
        if not dr.load_model_base_from:
            parser.error("--load_model_base_from (the trained latest_base.safetensors) is required")
        if dr.k_select < 1:
            parser.error("--k_select must be >= 1")
        try:
            validate_timesteps(o.timestep_base, dr.timestep_draft_list)
        except ValueError as e:
            parser.error(str(e))
        if not dr.timestep_draft_list:
            parser.error("--timestep_draft_list needs at least one timestep")
    try:
        files = m.wan_files()
    except ValueError as e:
        parser.error(str(e))
    enc = PromptEncoder(files.t5, files.tokenizer, cache_dir=m.prompt_cache_dir)
    prompts = {r.prompt for r in ds.rows} | ({o.negative_prompt} if trainer == "base" else set())
    # tagged prompts are only known per sample: tagging needs the encoder
    need_t5 = will_tag(m.ram_path, not m.no_tags) or not all(enc.cache_path(pr).exists()
                                                             for pr in prompts)
    src = "an earlier training run (--output_path)"
    entries = [(files.dit, "Wan2.1 DiT weights", "https://huggingface.co/Wan-AI/Wan2.1-T2V-1.3B"),
               (files.vae, "Wan2.1 VAE weights", "https://huggingface.co/Wan-AI/Wan2.1-T2V-1.3B"),
               (m.load_model_base_from, "base warm start", src),
               (m.load_model_reg_from, "regulariser warm start", src)]
    if trainer == "draft":
        entries += [(cfg.draft.load_model_base_from, "trained base (--load_model_base_from)",
                     "train_base.py (its --output_path)"),
                    (cfg.draft.load_model_draft_from, "draft warm start", src)]
    if need_t5:
        entries += [(files.t5, "umT5 text encoder weights (tagged prompts, or prompts not "
                               "cached yet)",
                     "https://huggingface.co/Wan-AI/Wan2.1-T2V-1.3B"),
                    (files.tokenizer, "umT5 tokenizer folder",
                     "https://huggingface.co/Wan-AI/Wan2.1-T2V-1.3B")]
    pixel = o.train_video_pixel and (o.alpha_pixel_l2 > 0 or o.alpha_pixel_lpips > 0)
    lines = missing_files(entries)
    if pixel and o.alpha_pixel_lpips > 0:
        from Wan_SR.training.lpips import LPIPSWeightsError, resolve_lpips_state_dict

        try:
            if not o.lpips_weights:
                raise LPIPSWeightsError("--alpha_pixel_lpips > 0 needs --lpips_weights")
            resolve_lpips_state_dict(o.lpips_weights)
        except LPIPSWeightsError as e:
            lines.append(str(e))
    if lines:
        raise MissingWeightsError("\n  ".join([f"{len(lines)} file(s) missing:"] + lines)
                                  if len(lines) > 1 else lines[0])


def resume_command(script: str, argv) -> str:
    """The command line that continues this run from its newest saved state."""
    import shlex

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
    import logging
    import sys

    from Wan_SR.models.wan import MissingWeightsError

    args = parser.parse_args(argv)
    setup_from_args(args)
    script = f"train_{trainer}.py"
    check_release_options(parser, args, script)
    cfg = config_from_args(args, trainer)
    log = logging.getLogger(f"Wan_SR.cli.train_{trainer}")
    try:
        validate(parser, cfg, trainer)
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
