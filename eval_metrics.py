#!/usr/bin/env python
"""Full-reference, no-reference and temporal metrics for videos and frame folders (SPEC 10).

Example::

    python eval_metrics.py --gt videos/gt --pred videos/out --metrics psnr,ssim,lpips,ewarp \\
        --crop 4 --test_y_channel

The work is done in :mod:`Wan_SR.metrics.evaluate` (heavy imports happen only after parsing).
"""
import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Score predicted videos / frame folders with pyiqa metrics and the "
                    "flow-warping error 'ewarp'. Writes metrics_<names>.json.")
    p.add_argument("--gt", default=None,
                   help="ground truth: folder of videos / frame folders (or one of them), paired "
                        "with --pred by base name; needed by full-reference metrics")
    p.add_argument("--pred", required=True,
                   help="predictions: folder of videos / frame folders (or one of them)")
    p.add_argument("--out", default=None,
                   help="folder for the JSON (default: the prediction folder)")
    p.add_argument("--metrics", default="psnr,ssim",
                   help="comma list of pyiqa metric names plus 'ewarp' (default: psnr,ssim)")
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
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, "
                                                  "else cpu)")
    p.add_argument("--weights_dir", default=None,
                   help="local folder holding metric weight files (searched recursively by file "
                        "name) for machines without internet access")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from Wan_SR.metrics.evaluate import main as run

    return run(args)


if __name__ == "__main__":
    sys.exit(main())
