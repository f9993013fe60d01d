"""How fast is the step-2 fusion (docs/method.md §7)? Frames per second of ``fuse_video`` on one
1280x720 tile, float32, batches of --batch frames, after one warm-up call (mask cache, FFT plans).

    python benchmarks/inference/fusion.py
    python benchmarks/inference/fusion.py --quick
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository
from benchmarks import wan_sr as ws  # noqa: E402
from benchmarks.common import default_device, parse, parser, record, save, timeit  # noqa: E402

NAME = "inference/fusion"


def main(argv=None):
    p = parser(__doc__, repeats=5, unit="one fusion call", quick="2 frames of 64x64")
    p.add_argument("--height", type=int, default=720)
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--batch", type=int, default=8, help="frames per fusion call")
    args = parse(p, argv)
    device = default_device()
    batch, h, w = (2, 64, 64) if args.quick else (args.batch, args.height, args.width)
    g = torch.Generator().manual_seed(0)
    c = torch.rand(batch, 3, h, w, generator=g).to(device)
    s = torch.rand(batch, 3, h, w, generator=g).to(device)
    with torch.inference_mode():
        t = timeit(lambda: ws.fuse_video(c, s), device, args.repeats, warmup=1)
    res = record(args, device)
    res.update(what="fuse_video, float32, one tile", shape=[batch, 3, h, w],
               load_avg_1min=round(os.getloadavg()[0], 2), timing=t,
               frames_per_s=batch / t["median_s"], frames_per_s_best=batch / t["min_s"],
               ms_per_frame=1000 * t["median_s"] / batch)
    return save(res, args, NAME)


if __name__ == "__main__":
    main()
