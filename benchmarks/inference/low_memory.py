"""What does the low-memory mode (`--low_memory`: tiled VAE, DiTs on the CPU between steps) save
and cost? Peak GPU memory and seconds of one step-1 window to the final output (base + last draft
decoded, fused), with and without it, at 720p and as one 1080p tile; random weights of the real
sizes, bf16, no compile.

    python benchmarks/inference/low_memory.py --light
    python benchmarks/inference/low_memory.py --quick
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository
from benchmarks import wan_sr as ws  # noqa: E402
from benchmarks.common import (default_device, parse, parser, peak_gib, record,  # noqa: E402
                               reset_peak, save, timeit)

NAME = "inference/low_memory"


def window_cost(pipe, frames, window, device, repeats) -> dict:
    """Seconds and peak GPU memory of one final window (an error when it runs out of memory)."""
    def run():
        return ws.final_window(pipe, frames, window)

    with torch.no_grad():
        try:
            t = timeit(run, device, repeats=repeats, warmup=1)
            reset_peak(device)
            run()
            t["peak_gib"] = peak_gib(device)
        except torch.OutOfMemoryError as e:
            t = {"error": str(e)[:200]}
    return t


def main(argv=None):
    p = parser(__doc__, repeats=2, unit="one window",
               quick="tiny models, 5-frame 64x64 and 96x128 windows")
    p.add_argument("--frames", type=int, default=33)
    args = parse(p, argv)
    device = default_device()
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    models = ws.random_models("tiny" if args.quick else "real", device, dtype)
    fast = ws.optimize(ws.make_pipeline(*models, device, dtype, fast=True), compile=False)
    sizes = ((64, 64), (96, 128)) if args.quick else ((720, 1280), (1080, 1920))
    frames_n = 5 if args.quick else args.frames
    res = record(args, device)
    res["results"] = {}
    for h, w in sizes:
        frames = torch.rand(frames_n, 3, h, w, device=device)
        for mode in ("default", "low_memory"):
            pipe = fast if mode == "default" else ws.low_memory_copy(fast)
            t = window_cost(pipe, frames, (h, w), device, args.repeats)
            if mode == "low_memory":  # the models back on the device for the next size
                ws.models_to(fast, device)
            res["results"][f"{h}p_{mode}"] = t
            print(f"{h}p {mode}: {t}", flush=True)
    return save(res, args, NAME)


if __name__ == "__main__":
    main()
