"""eval_metrics.py: full-reference, no-reference and temporal metrics for videos and frame
folders (docs/method.md, "Evaluation").

Example::

    python eval_metrics.py --gt videos/gt --pred videos/out --metrics psnr,ssim,lpips,ewarp \\
        --crop 4 --test_y_channel

Writes metrics_<names>.json (per_sample, average, count, settings, notes, errors) into --out
(default: the prediction folder). Several methods at once::

    python eval_metrics.py --gt UDM10/GT --pred PS-SR=out/pssr --pred DOVE=out/dove \\
        --metrics psnr,ssim,lpips,dists,clipiqa,musiq,dover,fastervqa,ewarp_raft \\
        --crop 4 --out tables/udm10 --plots

Exit status: 0 ok, 1 a sample or a metric of a sample failed (named in the log and in "errors";
the rest is scored), 2 nothing scored (bad options, missing weights; nothing is written).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from Wan_SR.core.options import path_or_none

from .common import (HelpFormatter, add_device_arg, add_log_args, check_device,
                     check_writable_dir, setup_from_args)

# The layers below the command line (torch, diffsynth, the models and the runs) are imported
# inside the functions that use them, so that `--help` and option errors answer at once.


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="eval_metrics.py", description=__doc__,
                                formatter_class=HelpFormatter)
    p.add_argument("--gt", default=None, type=path_or_none,
                   help="ground truth: folder of videos / frame folders (or one of them), paired "
                        "with --pred by base name; needed by full-reference metrics ('': none)")
    p.add_argument("--pred", required=True, action="append",
                   help="predictions: folder of videos / frame folders (or one of them). Give "
                        "it several times (PATH or NAME=PATH) to compare methods: one JSON per "
                        "method in OUT/NAME/ and a table OUT/table_<metrics>.md/.csv/.tex of "
                        "their averages, best in bold")
    p.add_argument("--out", default=None, type=path_or_none,
                   help="folder for the JSON (default, or '': the prediction folder; with "
                        "several --pred: their common parent folder); created only when the "
                        "JSON is written")
    p.add_argument("--metrics", default="psnr,ssim",
                   help="comma list of pyiqa metric names plus ours: 'ewarp' (DIS flow), "
                        "'ewarp_raft' (E*warp with RAFT, needs "
                        "raft_large_C_T_SKHT_V2-ff5fadd5.pth), 'dover', 'dover_technical', "
                        "'dover_aesthetic' (need DOVER.pth), 'fastervqa' (needs "
                        "FAST_VQA_3D_1_1.pth); see README, 'Metrics'")
    p.add_argument("--plots", action="store_true",
                   help="also write per-video PNG curves of the per-frame metrics and ewarp "
                        "(step-1 window seams marked when the run's run_config.json is found) "
                        "to OUT/plots/")
    p.add_argument("--crop", type=int, default=0,
                   help="pixels removed from every border before full-reference metrics")
    p.add_argument("--test_y_channel", action="store_true",
                   help="psnr/ssim on Y = .257R + .504G + .098B + .0625 instead of RGB")
    p.add_argument("--is_center", action="store_true",
                   help="cut GT and prediction to their common size around the centre "
                        "(default: top-left)")
    p.add_argument("--batch_mode", action="store_true",
                   help="score --batch_size frames per metric call (default: one at a time)")
    p.add_argument("--batch_size", type=int, default=8, help="frames per batch with --batch_mode")
    add_device_arg(p)
    p.add_argument("--weights_dir", default=None,
                   help="local folder holding metric weight files, found by name at any depth "
                        "and linked into the folders pyiqa and torch read (docs/method.md §10), "
                        "for machines without internet access")
    add_log_args(p)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_from_args(args)
    paths = [Path(p.split("=", 1)[1] if "=" in p and not Path(p).exists() else p)
             for p in args.pred]  # PATH or NAME=PATH
    for path in paths:
        if not path.exists():
            parser.error(f"--pred {path}: no such file or folder")
    if args.gt is not None and not Path(args.gt).exists():
        parser.error(f"--gt {args.gt}: no such file or folder")
    if len(paths) == 1:
        pred = paths[0]
        out = args.out if args.out is not None else (pred if pred.is_dir() else pred.parent)
        check_writable_dir(parser, out, "--out", create=False)
    elif args.out is not None:
        check_writable_dir(parser, args.out, "--out", create=False)
    check_device(parser, args.device)
    from Wan_SR.core.distributed import exit_status, init as init_processes
    from Wan_SR.runs.compare import main as run

    init_processes()
    return exit_status(run(args))


if __name__ == "__main__":
    sys.exit(main())
