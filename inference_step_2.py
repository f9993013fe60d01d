"""PS-SR step 2: frequency-domain update of the two branches written by step 1.

For every video name present in both folders, keeps the low band of the consistent (base)
result and mixes in the high band of the sharp (last draft) result on the luma channel
(SPEC §7), and writes <output_dir>/<name>.mp4 with the input's frame count, fps and audio.

Example:
  python inference_step_2.py --consistent_dir out/base --sharp_dir out/base+draft_3 --output_dir out/final
"""
from __future__ import annotations

import argparse
import sys

from Wan_SR.cli.common import HelpFormatter, add_run_args, add_window_args, validate_run_args
from Wan_SR.fusion.step2 import Step2Options, run_step2


def build_parser() -> argparse.ArgumentParser:
    d = Step2Options()
    p = argparse.ArgumentParser(
        prog="inference_step_2.py", description=__doc__,
        formatter_class=HelpFormatter,
        epilog="Fusion is per frame: the temporal windows only bound memory, and a frame\n"
               "shared by two windows is fused once. Step 2 writes no intermediate files:\n"
               "--temp_dir and --keep_temp are accepted for symmetry with step 1, no effect.\n\n"
               "Exit status: 0 when every pair was written (or skipped as complete); 1 when\n"
               "an input had no partner, the two inputs of a pair differ in frame count or\n"
               "size, or a video failed (the other pairs are still written); 2 when a folder\n"
               "is missing.")
    io = p.add_argument_group("inputs and output")
    io.add_argument("--consistent_dir", required=True,
                    help="folder of consistent (base branch) results: videos or folders of "
                         "png/jpg frames")
    io.add_argument("--sharp_dir", required=True,
                    help="folder of sharp (last draft branch) results, paired with "
                         "--consistent_dir by base name (a.mp4 <-> a.mp4 or a/)")
    io.add_argument("--output_dir", required=True,
                    help="where <name>.mp4 is written (created if missing); fps and audio come "
                         "from the consistent input")

    fu = p.add_argument_group("frequency update (SPEC section 7)")
    fu.add_argument("--fc", type=float, default=d.fc,
                    help="Butterworth cut-off, in cycles per pixel on the centred spectrum ")
    fu.add_argument("--alpha", type=float, default=d.alpha,
                    help="strength of the high band: Y = L_c + alpha * (w Hf_s + (1-w) Hf_c) " "(1 keeps the full detail)")
    fu.add_argument("--border", type=int, default=d.border,
                    help="outer pixels that keep the consistent luma")
    fu.add_argument("--order", type=int, default=d.order,
                    help="Butterworth order")
    fu.add_argument("--eps", type=float, default=d.eps,
                    help="stabiliser of the weight |Hf_s| / (|Hf_s| + |Hf_c| + eps) ")
    add_window_args(p, overlap_t=d.overlap_t)
    add_run_args(p)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    validate_run_args(parser, args)
    if args.fc <= 0 or args.order <= 0 or args.border < 0 or args.eps < 0:
        parser.error("--fc and --order must be positive, --border and --eps not negative")
    # --temp_dir / --keep_temp: accepted, nothing intermediate is written
    opts = Step2Options(**{k: v for k, v in vars(args).items()
                           if k not in ("consistent_dir", "sharp_dir", "output_dir", "temp_dir",
                                        "keep_temp")})
    return run_step2(args.consistent_dir, args.sharp_dir, args.output_dir, opts)


if __name__ == "__main__":
    sys.exit(main())
