"""inference_step_1.py: restore a folder of low-quality videos with one base step and a few
draft steps (PS-SR). Writes base/ and base+draft_k/ (and final/ with --final)."""
from __future__ import annotations

import argparse
import sys

from .common import HelpFormatter, add_run_args, add_window_args, parse_float_list, validate_run_args


def build_parser() -> argparse.ArgumentParser:
    from ..models.prompts import DEFAULT_NEGATIVE_PROMPT, DEFAULT_PROMPT

    p = argparse.ArgumentParser(
        prog="inference_step_1.py", description=__doc__,
        formatter_class=HelpFormatter)
    io = p.add_argument_group("input / output")
    io.add_argument("--input_dir", default="videos_for_test/input",
                    help="folder of videos (mp4/mov/avi/mkv/webm) and/or folders of png/jpg frames")
    io.add_argument("--output_dir", default="videos_for_test/output_step_1",
                    help="gets one sub-folder per output branch")
    io.add_argument("--outputs", default=None,
                    help="comma list of branches to write: base, base+draft_1, ..., final "
                         "(default: base and every base+draft_k)")
    io.add_argument("--final", action="store_true",
                    help="also write final/ = the step-2 frequency fusion of base and the last "
                         "draft branch, in the same pass (default fusion settings)")
    io.add_argument("--upscale", type=float, default=1.0,
                    help="bicubic resize factor applied to each input before processing; the "
                         "model restores at the size it is given (published inputs are already "
                         "upscaled 1280x720 clips)")
    io.add_argument("--no_audio", action="store_true", help="do not copy the input's audio")
    m = p.add_argument_group("models")
    m.add_argument("--wan_model_dir", default="dependent_models/Wan2.1-T2V-1.3B",
                   help="folder with the official Wan2.1-T2V-1.3B files")
    m.add_argument("--dit_path", default=None, help="override: diffusion_pytorch_model.safetensors")
    m.add_argument("--vae_path", default=None, help="override: Wan2.1_VAE.pth")
    m.add_argument("--umt5_path", default=None, help="override: models_t5_umt5-xxl-enc-bf16.pth")
    m.add_argument("--tokenizer_path", default=None, help="override: google/umt5-xxl tokenizer folder")
    m.add_argument("--lora_base_path", default="checkpoints/pretrained_models/base.safetensors")
    m.add_argument("--lora_draft_path", default="checkpoints/pretrained_models/draft.safetensors")
    m.add_argument("--ram_path", default="dependent_models/ram_swin_large_14m.pth",
                   help="RAM Swin-L tagger weights (optional)")
    m.add_argument("--DAPE_path", default="dependent_models/DAPE.pth",
                   help="DAPE degradation-aware tagger weights (optional)")
    m.add_argument("--prompt_cache_dir", default=None,
                   help="where prompt embeddings are cached (default ~/.cache/ps_sr)")
    m.add_argument("--num_heads", type=int, default=None,
                   help="attention heads of the DiT when not derivable (default: from the file)")
    s = p.add_argument_group("sampling")
    s.add_argument("--prompt", default=DEFAULT_PROMPT)
    s.add_argument("--negative_prompt", default=DEFAULT_NEGATIVE_PROMPT,
                   help="used only when --cfg_scale != 1")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--torch_dtype", default="bfloat16",
                   choices=["bfloat16", "float16", "float32"])
    s.add_argument("--cfg_scale", type=float, default=1.0)
    s.add_argument("--timestep_base", type=float, default=699)
    s.add_argument("--timestep_draft_list", type=parse_float_list, default=[599.0, 499.0, 399.0],
                   help='draft timesteps, e.g. "[599,499,399]"')
    s.add_argument("--k_select", type=float, default=1.5,
                   help="draft block selection: blocks i with i %% k == k-1")
    s.add_argument("--window_space", default="pixel", choices=["pixel", "latent"],
                   help="pixel: the published method, every window x tile is encoded and decoded "
                        "on its own and blended in pixels (SPEC 6). latent (opt-in, not the "
                        "published method): encode each clip once, run the DiT on latent windows "
                        "blended on latents, decode each branch once (fewer VAE passes; see "
                        "Wan_SR/sampling/latent_windows.py for the differences)")
    sp = p.add_argument_group("speed (GPU)")
    sp.add_argument("--attention", default="auto",
                    choices=["auto", "cudnn", "flash", "efficient", "math"],
                    help="scaled-dot-product attention kernel of the DiT (auto: cuDNN first)")
    sp.add_argument("--compile", action="store_true",
                    help="torch.compile the DiT blocks (about 10 s once per run, ~13%% faster DiT)")
    sp.add_argument("--no_channels_last", action="store_true",
                    help="keep the VAE in channels-first layout (channels-last is ~20%% faster on GPU)")
    sp.add_argument("--low_memory", action="store_true",
                    help="for 24 GB cards and 1080p: VAE in spatial tiles (slightly different "
                         "values near tile seams) and the DiTs kept on the CPU between steps "
                         "(pixel windows only)")
    add_run_args(p)
    add_window_args(p, overlap_t=16)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    validate_run_args(parser, args)
    if args.upscale <= 0:
        parser.error("--upscale must be positive")
    import torch

    from ..models.tagger import load_tagger
    from ..models.wan import MissingWeightsError, resolve_wan_files
    from ..sampling.pipeline import PSSRPipeline, SamplingConfig
    from ..sampling.restore import FINAL, RestoreOptions, WindowOptions, restore_folder
    from .common import parse_dtype, resolve_device

    outputs = [o.strip() for o in args.outputs.split(",")] if args.outputs else None
    if args.final:
        from ..sampling.pipeline import branch_names

        outputs = (outputs or branch_names(len(args.timestep_draft_list))) + [FINAL]
    torch.manual_seed(args.seed)
    device = resolve_device(args.device)
    dtype = parse_dtype(args.torch_dtype)
    # RAM/DAPE tags would be appended per clip (prompt_with_tags); until the tagger exists,
    # load_tagger says so once and the prompt is used alone.
    load_tagger(args.ram_path, args.DAPE_path)
    prompt = args.prompt
    files = resolve_wan_files(args.wan_model_dir, args.dit_path, args.vae_path, args.umt5_path,
                              args.tokenizer_path)
    cfg = SamplingConfig(timestep_base=args.timestep_base,
                         timestep_draft_list=list(args.timestep_draft_list),
                         k_select=args.k_select, cfg_scale=args.cfg_scale)
    try:
        pipe = PSSRPipeline.from_files(files, args.lora_base_path, args.lora_draft_path,
                                       prompt=prompt, negative_prompt=args.negative_prompt,
                                       config=cfg, device=device, dtype=dtype,
                                       cache_dir=args.prompt_cache_dir, num_heads=args.num_heads,
                                       attention=args.attention)
        pipe.optimize(compile=args.compile, channels_last=not args.no_channels_last)
        if args.low_memory:
            if args.window_space == "latent":
                raise ValueError("--low_memory works with pixel windows only "
                                 "(drop --window_space latent)")
            pipe.enable_low_memory()
    except (MissingWeightsError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    opts = RestoreOptions(
        outputs=outputs, upscale=args.upscale, fps=args.fps, save_quality=args.save_quality,
        skip_existing=args.skip_existing, sort_files=args.sort_files, copy_audio=not args.no_audio,
        windows=WindowOptions(args.window_t, args.overlap_t, args.window_h, args.overlap_h,
                              args.window_w, args.overlap_w),
        window_space=args.window_space)
    try:
        return restore_folder(pipe, args.input_dir, args.output_dir, opts)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
