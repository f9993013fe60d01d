"""Throughput of the step-2 fusion (docs/method.md §7) on one 1280x720 tile; prints one JSON line.

    python benchmarks/bench_fusion.py [--device cpu|cuda] [--batch 8] [--repeats 5]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from Wan_SR.fusion.frequency import fuse_video  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--height", type=int, default=720)
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--batch", type=int, default=8, help="frames per fusion call")
    p.add_argument("--repeats", type=int, default=5, help="timed calls after one warm-up call")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    shape = (args.batch, 3, args.height, args.width)
    c = torch.rand(shape, generator=g).to(device)
    s = torch.rand(shape, generator=g).to(device)

    def call():
        with torch.inference_mode():
            out = fuse_video(c, s)  # defaults: one 720x1280 tile at this size
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return out

    call()  # warm-up (mask cache, FFT plans)
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    best, mean = min(times), sum(times) / len(times)
    print(json.dumps({
        "what": "fuse_video, float32, one tile",
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "load_avg_1min": round(os.getloadavg()[0], 2),
        "height": args.height, "width": args.width, "batch": args.batch,
        "repeats": args.repeats,
        "frames_per_s_mean": round(args.batch / mean, 2),
        "frames_per_s_best": round(args.batch / best, 2),
        "ms_per_frame_mean": round(1000 * mean / args.batch, 2),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
