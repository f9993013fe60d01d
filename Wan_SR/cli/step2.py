"""PS-SR step 2: frequency-domain update of the two branches written by step 1.

For every video name present in both folders, keeps the low band of the consistent (base)
result and mixes in the high band of the sharp (last draft) result on the luma channel
(docs/method.md, "Frequency-domain update"), and writes <output_dir>/<name>.mp4 with the
input's frame count, fps and audio, plus run_config.json.

Example:
  python inference_step_2.py --consistent_dir out/base --sharp_dir out/base+draft_3 --output_dir out/final
"""
from __future__ import annotations

import argparse
import sys

from Wan_SR.core.options import (FusionOptions, OutputOptions, SplitOptions, WindowOptions,
                                 parse_fps, step2_windows)
from .common import (HelpFormatter, add_device_arg, add_log_args, add_options, check_device,
                     check_input_dir, check_writable_dir, options_from_args, same_folder,
                     setup_from_args)
from .release import add_release_options, check_release_options

# The layers below the command line (torch, diffsynth, the models and the runs) are imported
# inside the functions that use them, so that `--help` and option errors answer at once.


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="inference_step_2.py", description=__doc__, formatter_class=HelpFormatter,
        epilog="Fusion is per frame: the temporal windows only bound memory, and a frame\n"
               "shared by two windows is fused once. Nothing intermediate is written.\n\n"
               "Exit status: 0 when every pair was written (or skipped as complete); 1 when\n"
               "an input had no partner, the two inputs of a pair differ in frame count or\n"
               "size, or a video failed (the other pairs are still written); 2 for bad\n"
               "options or folders.")
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
    add_options(io, OutputOptions)
    add_options(p.add_argument_group("frequency-domain update"), FusionOptions)
    add_options(p.add_argument_group("windows (they bound memory; fusion is per frame)"),
                WindowOptions, defaults=step2_windows())
    add_options(p.add_argument_group("several processes (torchrun / accelerate launch)"),
                SplitOptions)
    add_device_arg(p)
    add_log_args(p)
    add_release_options(p, "inference_step_2.py")
    return p


def main(argv=None) -> int:
    from Wan_SR.core.distributed import exit_status, init as init_processes
    from Wan_SR.runs.step2 import Step2Options, run_step2

    parser = build_parser()
    args = parser.parse_args(argv)
    setup_from_args(args)
    check_release_options(parser, args, "inference_step_2.py")
    windows, fusion = options_from_args(WindowOptions, args), options_from_args(FusionOptions, args)
    out = options_from_args(OutputOptions, args)
    for o in (windows, fusion, out):
        try:
            o.validate()
        except ValueError as e:
            parser.error(str(e))
    check_input_dir(parser, args.consistent_dir, "--consistent_dir")
    check_input_dir(parser, args.sharp_dir, "--sharp_dir")
    for flag in ("consistent_dir", "sharp_dir"):
        if same_folder(args.output_dir, getattr(args, flag)):
            parser.error(f"--output_dir is --{flag}: the outputs would overwrite the inputs; "
                         "choose another folder")
    check_writable_dir(parser, args.output_dir, "--output_dir")
    check_device(parser, args.device)
    opts = Step2Options(windows=windows, fusion=fusion, device=args.device,
                        fps=parse_fps(out.fps) if out.fps is not None else None,
                        sort_files=out.sort_files, skip_existing=out.skip_existing,
                        save_quality=out.save_quality, split=args.split)
    init_processes()
    return exit_status(run_step2(args.consistent_dir, args.sharp_dir, args.output_dir, opts))


if __name__ == "__main__":
    sys.exit(main())
