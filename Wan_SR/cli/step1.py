"""inference_step_1.py: restore a folder of low-quality videos with one base step and a few
draft steps (PS-SR). Writes base/ and base+draft_k/ (and final/ with --final) under
--output_dir, plus run_config.json with the settings used.

Every input, output, option and weight file is checked before any model loads.

Exit status: 0 when every video was restored (or skipped as complete), 1 when a video failed
(the others are still written), 2 for bad options, folders or missing weights."""
from __future__ import annotations

import argparse
import logging
import sys

from Wan_SR.core.options import (FolderOptions, FusionOptions, OutputOptions, PSSRModelOptions,
                                 SamplingOptions, SpeedOptions, SplitOptions, Step1Config,
                                 Step1Options, WindowOptions)
from .common import (HelpFormatter, add_log_args, add_options, check_device, check_input_dir,
                     check_writable_dir, config_from_args, same_folder, setup_from_args)
from .release import add_release_options, check_release_options

# The layers below the command line (torch, diffsynth, the models and the runs) are imported
# inside the functions that use them, so that `--help` and option errors answer at once.

log = logging.getLogger("Wan_SR.cli.step1")

# (argument group, options) of the command line: the fields of Step1Config
GROUPS = (("input / output", (FolderOptions, Step1Options, OutputOptions)),
          ("models", (PSSRModelOptions,)),
          ("sampling", (SamplingOptions,)),
          ("sliding windows", (WindowOptions,)),
          ("frequency-domain update (with --final or --outputs final)", (FusionOptions,)),
          ("several processes (torchrun / accelerate launch)", (SplitOptions,)),
          ("device and speed", (SpeedOptions,)))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="inference_step_1.py", description=__doc__,
                                formatter_class=HelpFormatter)
    for title, classes in GROUPS:
        group = p.add_argument_group(title)
        for cls in classes:
            add_options(group, cls)
    add_log_args(p)
    add_release_options(p, "inference_step_1.py")
    return p


def validate(parser, args):
    """Every check that needs no model: options, folders, inputs, device (exit status 2 with
    the reason). Returns (config, inputs)."""
    from Wan_SR.data import video_io

    check_release_options(parser, args, "inference_step_1.py")
    cfg = config_from_args(Step1Config, args)
    try:
        cfg.validate()
    except ValueError as e:
        parser.error(str(e))
    folders = cfg.folders
    check_input_dir(parser, folders.input_dir, "--input_dir")
    try:
        inputs, skipped = video_io.scan_inputs(folders.input_dir, sort=cfg.output.sort_files)
    except video_io.VideoError as e:
        parser.error(str(e))
    if not inputs:
        parser.error(f"--input_dir {folders.input_dir}: holds no videos or frame folders"
                     + (f" (not videos: {', '.join(p.name for p in skipped[:5])})" if skipped
                        else ""))
    if skipped:
        log.warning("not videos, skipped: %s", ", ".join(p.name for p in skipped))
    outputs = cfg.step1.resolve_outputs(len(cfg.sampling.timestep_draft_list))
    if same_folder(folders.input_dir, folders.output_dir) or any(
            same_folder(folders.input_dir, f"{folders.output_dir}/{o}") for o in outputs):
        parser.error("--output_dir: an output folder would be the input folder; choose another")
    check_writable_dir(parser, folders.output_dir, "--output_dir")
    check_device(parser, cfg.speed.device)
    return cfg, inputs


def check_weights(cfg: Step1Config):
    """The resolved Wan2.1 files; raise MissingWeightsError listing every missing file (the
    text encoder only when the prompt embeddings are not cached yet)."""
    from Wan_SR.models.tagger import will_tag
    from Wan_SR.models.text import PromptEncoder
    from Wan_SR.models.wan import require_files, wan_files_of

    m, s = cfg.models, cfg.sampling
    files = wan_files_of(m)
    enc = PromptEncoder(files.t5, files.tokenizer, cache_dir=m.prompt_cache_dir)
    prompts = [s.prompt] + ([s.negative_prompt] if s.cfg_scale != 1.0 else [])
    # tagged prompts are only known per clip: tagging needs the encoder
    need_encoder = will_tag(m.ram_path, not m.no_tags) or not all(
        enc.cache_path(pr).exists() for pr in prompts)
    require_files(files, m.lora_base_path, m.lora_draft_path, text_encoder=need_encoder)
    return files


def load_checked(cfg: Step1Config, before_load=None, largest=None):
    """The weights checked, the seed set, ``before_load()`` called, then the models of ``cfg``
    ((pipeline, prompts); ``largest``: (frames, height, width) of the largest clip, for the
    memory plan); None after logging why when a weight file is missing or wrong, or when no
    setting fits the memory budget."""
    import torch

    from Wan_SR.models.wan import MissingWeightsError
    from Wan_SR.runs.step1.load import load_models

    try:
        files = check_weights(cfg)
        torch.manual_seed(cfg.sampling.seed)
        if before_load is not None:
            before_load()
        return load_models(cfg, files, largest)
    except (MissingWeightsError, ValueError) as e:
        log.error("%s", e)
        return None


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_from_args(args)
    cfg, inputs = validate(parser, args)
    # heavy imports after the checks (--help and bad options stay fast)
    from Wan_SR.core.distributed import exit_status, init as init_processes
    from Wan_SR.runs.step1 import restore_folder

    from Wan_SR.runs.step1.plan import largest_clip, probe_inputs

    # the memory plan needs the largest clip (the run probes each input again when it comes to
    # it; reusing these probes changed the timing the kill-and-resume tests rely on)
    largest = largest_clip(probe_inputs(inputs, cfg), cfg)
    loaded = load_checked(cfg, before_load=init_processes, largest=largest)
    if loaded is None:
        return 2
    pipe, prompts = loaded
    from Wan_SR.core.profile import profiled
    try:
        with profiled(cfg.speed.profile, pipe.device):
            status = restore_folder(pipe, cfg.folders.input_dir, cfg.folders.output_dir, cfg,
                                    inputs=inputs, prompts=prompts)
        return exit_status(status)
    except ValueError as e:
        log.error("%s", e)
        return 2


if __name__ == "__main__":
    sys.exit(main())
