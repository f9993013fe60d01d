"""Argument groups shared by the scripts (kept free of heavy imports so --help is fast)."""
from __future__ import annotations

import argparse
import ast


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows defaults and keeps the description's line breaks."""


def add_window_args(p: argparse.ArgumentParser, overlap_t: int) -> None:
    g = p.add_argument_group("sliding windows (SPEC §6)")
    g.add_argument("--window_t", type=int, default=33, help="frames per temporal window")
    g.add_argument("--overlap_t", type=int, default=overlap_t,
                   help="frames shared by consecutive windows")
    g.add_argument("--window_h", type=int, default=720, help="spatial tile height")
    g.add_argument("--overlap_h", type=int, default=128, help="tile overlap in height")
    g.add_argument("--window_w", type=int, default=1280, help="spatial tile width")
    g.add_argument("--overlap_w", type=int, default=128, help="tile overlap in width")


def add_run_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("run")
    g.add_argument("--device", default=None, help="cuda, cuda:N or cpu (default: cuda if available)")
    g.add_argument("--fps", type=float, default=None,
                   help="output frame rate (default: the input's exact rate; 30 for frame folders)")
    g.add_argument("--sort_files", action="store_true", help="process inputs in natural name order")
    g.add_argument("--skip_existing", action="store_true",
                   help="skip outputs that already exist with the input's frame count "
                        "(truncated outputs are redone)")
    g.add_argument("--save_quality", type=float, default=9.0,
                   help="H.264 quality 0..10, 10 best (9 = x264 CRF 5)")
    g.add_argument("--temp_dir", default=None,
                   help="folder for intermediate files (the current version writes none: outputs "
                        "go to a temporary name beside the final file and are renamed when complete)")
    g.add_argument("--keep_temp", action="store_true", help="keep intermediate files (see --temp_dir)")


def validate_run_args(parser: argparse.ArgumentParser, args) -> None:
    """Window, fps and quality checks shared by the scripts (parser.error on a bad value)."""
    for name in ("window_t", "window_h", "window_w"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name} must be positive")
    for name, win in (("overlap_t", "window_t"), ("overlap_h", "window_h"),
                      ("overlap_w", "window_w")):
        if not 0 <= getattr(args, name) < getattr(args, win):
            parser.error(f"--{name} must be >= 0 and smaller than --{win}")
    if args.fps is not None and args.fps <= 0:
        parser.error("--fps must be positive")
    if not 0 <= args.save_quality <= 10:
        parser.error("--save_quality must be in 0..10")


def resolve_device(device):
    import torch

    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def parse_dtype(name: str):
    import torch

    table = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16,
             "fp16": torch.float16, "float32": torch.float32, "fp32": torch.float32}
    if name not in table:
        raise argparse.ArgumentTypeError(f"unknown dtype {name!r}; choose from {sorted(table)}")
    return table[name]


def parse_float_list(text: str) -> list[float]:
    """'[599,499,399]' or '599,499,399' -> [599.0, 499.0, 399.0]."""
    text = text.strip()
    try:
        val = ast.literal_eval(text if text.startswith("[") else f"[{text}]")
        return [float(v) for v in val]
    except (ValueError, SyntaxError, TypeError):
        raise argparse.ArgumentTypeError(f"expected a list of timesteps like [599,499,399], got {text!r}")
