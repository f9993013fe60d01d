"""app.py: a local web app on PS-SR. Loads the models once, then serves a page on this
machine (127.0.0.1 by default) with three tabs:

  Restore  upload a video (or pick one from --input_dir), run step 1, see the input and each
           output side by side (synchronised players, a frame slider, a before/after
           comparison), download the outputs;
  Tune     move alpha, fc, order and border and see the fused frame at once; fuse the whole
           clip (the same frames inference_step_2.py writes with those values);
  Compare  two folders matched by name as eval_metrics.py matches them, with per-frame PSNR
           and SSIM plots and the frames side by side.

The options below set the defaults the page starts with; the page lets you change the outputs,
upscale, tags, window space, memory setting and seed per job. One job runs at a time.

Safe by default: listens on localhost, serves only the files it made and the folders given
here, caps uploads (--max_upload_mb) and clip length (--max_frames), and removes its temporary
files on exit.

Example:
  python app.py --wan_model_dir dependent_models/Wan2.1-T2V-1.3B \\
      --lora_base_path checkpoints/pretrained_models/base.safetensors \\
      --lora_draft_path checkpoints/pretrained_models/draft.safetensors
"""
from __future__ import annotations

import argparse
import logging
import sys

from Wan_SR.app.options import AppOptions
from Wan_SR.core.options import Step1Config
from .common import (HelpFormatter, add_log_args, add_options, check_device, check_input_dir,
                     config_from_args, options_from_args, setup_from_args)
from .step1 import GROUPS, load_checked

# The layers below the command line (torch, gradio, the models and the app) are imported
# inside the functions that use them, so that `--help` and option errors answer at once.

log = logging.getLogger("Wan_SR.cli.app")
# step 1's options the app starts with; the folders, the process split and the choice of
# outputs do not apply (each job picks its outputs in the page and writes a new run folder)
NOT_HERE = ("FolderOptions", "SplitOptions")
SKIP = ("outputs", "final", "skip_existing", "sort_files")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="app.py", description=__doc__,
                                formatter_class=HelpFormatter)
    app = p.add_argument_group("the app")
    add_options(app, AppOptions, skip=("compare_dir",))
    app.add_argument("--compare_dir", action="append", default=[],
                     help=AppOptions.__dataclass_fields__["compare_dir"].metadata["help"])
    for title, classes in GROUPS:
        classes = [c for c in classes if c.__name__ not in NOT_HERE]
        if classes:
            group = p.add_argument_group(title)
            for cls in classes:
                add_options(group, cls, skip=SKIP)
    add_log_args(p)
    return p


def validate(parser, args) -> tuple[Step1Config, AppOptions]:
    """Every check that needs no model (exit status 2 with the reason)."""
    cfg = config_from_args(Step1Config, args)
    options = options_from_args(AppOptions, args)
    try:
        cfg.validate()
        options.validate()
    except ValueError as e:
        parser.error(str(e))
    if options.input_dir:
        check_input_dir(parser, options.input_dir, "--input_dir")
    for d in options.compare_dir:
        check_input_dir(parser, d, "--compare_dir")
    check_device(parser, cfg.speed.device)
    return cfg, options


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_from_args(args)
    cfg, options = validate(parser, args)
    # heavy imports after the checks (--help and bad options stay fast)
    from Wan_SR.app.launch import start

    loaded = load_checked(cfg)
    if loaded is None:
        return 2
    try:
        start(*loaded, cfg, options)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
