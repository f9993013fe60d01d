"""Command line of the paired-test-set maker (the work is in :mod:`Wan_SR.runs.degrade`).

    python -m Wan_SR.tools.degrade --input_dir HQ --output_dir LQ [--config FILE] [--seed N]
                                   [--keep_size | --scale 4] [--device cuda] [--log_level info]
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Optional

# The layers below the command line (torch, diffsynth, the models and the runs) are imported
# inside the functions that use them, so that `--help` and option errors answer at once.

DESCRIPTION = """\
Degrade every video (or frame folder) of --input_dir with the training degradation and write
the LQ videos to --output_dir: same frame count and frame rate, audio dropped, H.264. Beside
each LQ video, <name>_contact.png shows HQ and LQ crops of a few frames side by side.

The default config is config/degradation_pssr.yml (the chain the PS-SR release trains on);
config/degradation_realesrgan.yml is the full Real-ESRGAN second-order distribution. The same
--seed gives the same LQ on the same device.

By default the LQ has the HQ size (degraded at 1/scale and resized back, as in training and as
the published test inputs); --scale N writes it at 1/N of the HQ size instead (feed those to
inference_step_1.py with --upscale N).

example (make LQ, restore it, score the restoration against the HQ):
  python -m Wan_SR.tools.degrade --input_dir videos_hq --output_dir videos_lq --seed 0
  python inference_step_1.py --input_dir videos_lq --output_dir results_lq --final
  python eval_metrics.py --gt videos_hq --pred results_lq/final --metrics psnr,ssim,lpips
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m Wan_SR.tools.degrade", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input_dir", required=True,
                   help="folder of HQ videos (mp4/mov/avi/mkv/webm/m4v) or frame folders")
    p.add_argument("--output_dir", required=True,
                   help="folder for the LQ videos, contact sheets and run_config.json "
                        "(created; existing files of the same names are replaced)")
    p.add_argument("--config", default=None,
                   help="degradation YAML (default: config/degradation_pssr.yml)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--keep_size", action="store_true",
                      help="write the LQ at the HQ size (the default)")
    size.add_argument("--scale", type=int, default=None, metavar="N",
                      help="write the LQ at 1/N of the HQ size, degraded with a xN down-scale "
                           "(the config's 'scale' is replaced by N)")
    p.add_argument("--clip_frames", type=int, default=33,
                   help="frames degraded together; per-clip random choices (resize modes, the "
                        "gray-noise field) are redrawn every this many frames (default: 33, a "
                        "training clip)")
    p.add_argument("--sheet_frames", type=int, default=4,
                   help="frames shown on each contact sheet (default: 4)")
    p.add_argument("--save_quality", type=float, default=9.0,
                   help="H.264 quality 0..10, 10 best (default: 9 = x264 CRF 5)")
    p.add_argument("--device", default=None,
                   help="cuda, cuda:N or cpu (default: cuda when available)")
    p.add_argument("--log_level", default="info", choices=("debug", "info", "warning", "error"),
                   help="how much to log (default: info)")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    return p


def main(argv: Optional[list[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)

    if not Path(args.input_dir).is_dir():
        parser.error(f"--input_dir not found or not a folder: {args.input_dir}")
    if args.config is not None and not Path(args.config).is_file():
        parser.error(f"--config not found: {args.config}")
    if args.scale is not None and not 1 <= args.scale <= 16:
        parser.error(f"--scale must be in 1..16, got {args.scale}")
    if args.clip_frames < 1 or args.sheet_frames < 1:
        parser.error("--clip_frames and --sheet_frames must be >= 1")
    if not 0 <= args.save_quality <= 10:
        parser.error("--save_quality must be in 0..10")

    from Wan_SR.core.devices import DeviceError, resolve_device
    from Wan_SR.core.log import setup_logging
    from Wan_SR.data.degradation import DegradationConfigError
    from Wan_SR.data.video_io import VideoError
    from Wan_SR.runs.degrade import DegradeOptions, degrade_folder

    setup_logging(args.log_level, progress=not args.no_progress)
    try:
        resolve_device(args.device)
    except DeviceError as e:
        parser.error(str(e))
    opts = DegradeOptions(config=args.config, seed=args.seed, keep_size=args.scale is None,
                          scale=args.scale, device=args.device, clip_frames=args.clip_frames,
                          sheet_frames=args.sheet_frames, save_quality=args.save_quality)
    try:
        return degrade_folder(args.input_dir, args.output_dir, opts)
    except (DegradationConfigError, VideoError, ValueError) as e:
        logging.getLogger("Wan_SR.tools.degrade").error("%s", e)
        return 2


if __name__ == "__main__":
    sys.exit(main())
