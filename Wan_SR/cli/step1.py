"""inference_step_1.py: restore a folder of low-quality videos with one base step and a few
draft steps (PS-SR). Writes base/ and base+draft_k/ (and final/ with --final) under
--output_dir, plus run_config.json with the settings used.

Every input, output, option and weight file is checked before any model loads.

Exit status: 0 when every video was restored (or skipped as complete), 1 when a video failed
(the others are still written), 2 for bad options, folders or missing weights."""
from __future__ import annotations

import argparse
import sys

from Wan_SR.core.options import (FINAL, FusionOptions, OutputOptions, PSSRModelOptions,
                                 SamplingOptions, SplitOptions, WindowOptions, branch_names,
                                 parse_fps)
from .common import (HelpFormatter, add_device_arg, add_log_args, add_options, check_device,
                     check_input_dir, check_writable_dir, options_from_args, same_folder,
                     setup_from_args)
from .release import add_release_options, check_release_options

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="inference_step_1.py", description=__doc__,
                                formatter_class=HelpFormatter)
    io = p.add_argument_group("input / output")
    io.add_argument("--input_dir", default="videos_for_test/input",
                    help="folder of videos (any format ffmpeg reads) and/or folders of png/jpg "
                         "frames")
    io.add_argument("--output_dir", default="videos_for_test/output_step_1",
                    help="gets one sub-folder per output branch and run_config.json")
    io.add_argument("--outputs", default=None,
                    help="comma list of branches to write: base, base+draft_1, ..., final "
                         "(default: base and every base+draft_k)")
    io.add_argument("--final", action="store_true",
                    help="also write final/ = the frequency-domain update of base and the last "
                         "draft branch, in the same pass (same fusion options and tiles as "
                         "inference_step_2.py)")
    io.add_argument("--upscale", type=float, default=1.0,
                    help="bicubic resize factor applied to each input before processing; the "
                         "model restores at the size it is given (published inputs are already "
                         "upscaled 1280x720 clips)")
    io.add_argument("--no_audio", action="store_true", help="do not copy the input's audio")
    add_options(io, OutputOptions)
    add_options(p.add_argument_group("models"), PSSRModelOptions)
    s = p.add_argument_group("sampling")
    add_options(s, SamplingOptions)
    s.add_argument("--window_space", default="pixel", choices=["pixel", "latent"],
                   help="pixel: the published method, every window x tile is encoded and decoded "
                        "on its own and blended in pixels. latent (opt-in, not the published "
                        "method): encode each clip once, run the DiT on latent windows blended on "
                        "latents, decode each branch once (docs/method.md, 'Latent windows')")
    add_options(p.add_argument_group("sliding windows"), WindowOptions)
    add_options(p.add_argument_group("frequency-domain update (with --final or --outputs final)"),
                FusionOptions)
    add_options(p.add_argument_group("several processes (torchrun / accelerate launch)"),
                SplitOptions)
    sp = p.add_argument_group("device and speed")
    add_device_arg(sp)
    sp.add_argument("--attention", default="auto",
                    choices=["auto", "cudnn", "flash", "efficient", "math"],
                    help="scaled-dot-product attention kernel of the DiT (auto: cuDNN first)")
    sp.add_argument("--compile", action="store_true",
                    help="torch.compile the DiT blocks (about 10 s once per run, ~13%% faster DiT)")
    sp.add_argument("--deterministic", action="store_true",
                    help="the same output bits in every run and with any number of GPUs: cuDNN "
                         "picks convolution kernels by rule instead of timing them per process "
                         "(about 6%% slower on long clips, faster on short ones)")
    sp.add_argument("--no_channels_last", action="store_true",
                    help="keep the VAE in channels-first layout (channels-last is ~20%% faster on "
                         "GPU)")
    sp.add_argument("--low_memory", action="store_true",
                    help="for 24 GB cards and 1080p: VAE in spatial tiles (slightly different "
                         "values near tile seams) and the DiTs kept on the CPU between steps "
                         "(pixel windows only); with tags, the tagger and the text encoder wait "
                         "on the CPU between clips")
    add_log_args(p)
    add_release_options(p, "inference_step_1.py")
    return p


def resolve_outputs(parser, args) -> list:
    names = branch_names(len(args.timestep_draft_list))
    outputs = [o.strip() for o in args.outputs.split(",") if o.strip()] if args.outputs else \
        list(names)
    if args.final and FINAL not in outputs:
        outputs.append(FINAL)
    bad = [o for o in outputs if o not in names + [FINAL]]
    if bad:
        parser.error(f"--outputs: unknown branch(es) {bad}; choose from {names + [FINAL]}")
    if FINAL in outputs and not args.timestep_draft_list:
        parser.error("'final' needs at least one draft step (--timestep_draft_list is empty)")
    return outputs


def validate(parser, args):
    """Every check that needs no model: options, folders, inputs, device, weight files.
    Returns (inputs, outputs)."""
    from Wan_SR.data import video_io

    check_release_options(parser, args, "inference_step_1.py")
    for cls in (SamplingOptions, WindowOptions, FusionOptions, OutputOptions):
        try:
            options_from_args(cls, args).validate()
        except ValueError as e:
            parser.error(str(e))
    if args.upscale <= 0:
        parser.error("--upscale must be positive")
    if args.low_memory and args.window_space == "latent":
        parser.error("--low_memory works with pixel windows only (drop --window_space latent)")
    outputs = resolve_outputs(parser, args)
    check_input_dir(parser, args.input_dir, "--input_dir")
    try:
        inputs, skipped = video_io.scan_inputs(args.input_dir, sort=args.sort_files)
    except video_io.VideoError as e:
        parser.error(str(e))
    if not inputs:
        parser.error(f"--input_dir {args.input_dir}: holds no videos or frame folders"
                     + (f" (not videos: {', '.join(p.name for p in skipped[:5])})" if skipped
                        else ""))
    if skipped:
        import logging

        logging.getLogger("Wan_SR.cli.step1").warning(
            "not videos, skipped: %s", ", ".join(p.name for p in skipped))
    if same_folder(args.input_dir, args.output_dir) or any(
            same_folder(args.input_dir, f"{args.output_dir}/{o}") for o in outputs):
        parser.error("--output_dir: an output folder would be the input folder; choose another")
    check_writable_dir(parser, args.output_dir, "--output_dir")
    check_device(parser, args.device)
    return inputs, outputs


def check_weights(args) -> None:
    """Raise MissingWeightsError listing every missing file (the text encoder only when the
    prompt embeddings are not cached yet)."""
    from Wan_SR.models.tagger import will_tag
    from Wan_SR.models.text import PromptEncoder
    from Wan_SR.models.wan import require_files, wan_files_of

    files = wan_files_of(options_from_args(PSSRModelOptions, args))
    enc = PromptEncoder(files.t5, files.tokenizer, cache_dir=args.prompt_cache_dir)
    prompts = [args.prompt] + ([args.negative_prompt] if args.cfg_scale != 1.0 else [])
    # tagged prompts are only known per clip: tagging needs the encoder
    need_encoder = will_tag(args.ram_path, not args.no_tags) or not all(
        enc.cache_path(pr).exists() for pr in prompts)
    require_files(files, args.lora_base_path, args.lora_draft_path, text_encoder=need_encoder)
    return files


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_from_args(args)
    inputs, outputs = validate(parser, args)
    import logging

    import torch

    from Wan_SR.core.devices import parse_dtype, resolve_device
    from Wan_SR.core.distributed import exit_status, init as init_processes
    from Wan_SR.models.tagger import load_tagger
    from Wan_SR.models.wan import MissingWeightsError
    from Wan_SR.runs.step1 import RestoreOptions, restore_folder
    from Wan_SR.sampling.pipeline import PSSRPipeline, SamplingConfig

    log = logging.getLogger("Wan_SR.cli.step1")
    try:
        files = check_weights(args)
    except MissingWeightsError as e:
        log.error("%s", e)
        return 2
    sampling = options_from_args(SamplingOptions, args)
    torch.manual_seed(sampling.seed)
    init_processes()
    device = resolve_device(args.device)
    dtype = parse_dtype(sampling.torch_dtype)
    try:
        tagger = load_tagger(args.ram_path, args.DAPE_path, enabled=not args.no_tags,
                             device=device, dtype=dtype)
        pipe = PSSRPipeline.from_files(
            files, args.lora_base_path, args.lora_draft_path, prompt=sampling.prompt,
            negative_prompt=sampling.negative_prompt, config=SamplingConfig.from_options(sampling),
            device=device, dtype=dtype, cache_dir=args.prompt_cache_dir,
            num_heads=args.num_heads, attention=args.attention, tagger=tagger)
        pipe.optimize(compile=args.compile, channels_last=not args.no_channels_last,
                      deterministic=args.deterministic)
        if args.low_memory:
            pipe.enable_low_memory()
    except (MissingWeightsError, ValueError) as e:
        log.error("%s", e)
        return 2
    out = options_from_args(OutputOptions, args)
    opts = RestoreOptions(
        outputs=outputs, upscale=args.upscale,
        fps=parse_fps(out.fps) if out.fps is not None else None, save_quality=out.save_quality,
        skip_existing=out.skip_existing, sort_files=out.sort_files, copy_audio=not args.no_audio,
        windows=options_from_args(WindowOptions, args),
        fusion=options_from_args(FusionOptions, args), window_space=args.window_space,
        tag_seed=sampling.seed, split=args.split)
    try:
        return exit_status(restore_folder(pipe, args.input_dir, args.output_dir, opts,
                                          inputs=inputs))
    except ValueError as e:
        log.error("%s", e)
        return 2


if __name__ == "__main__":
    sys.exit(main())
