"""Peak GPU memory and time of one PS-SR window (final output: base + last draft decoded, fused)
with and without the low-memory mode (tiled VAE, DiT offload), at 720p and as one 1080p tile.

    python benchmarks/bench_low_memory.py --out benchmarks/results/low_memory_h100.json
"""
import argparse
import copy

import torch

from common import build_models, environment, timeit, write_json


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--frames", type=int, default=33)
    a = ap.parse_args()
    from Wan_SR.fusion.frequency import fuse_video
    from Wan_SR.sampling.pipeline import PSSRPipeline, SamplingConfig

    dev, dt = torch.device("cuda"), torch.bfloat16
    base, draft, vae, ctx = build_models("real", dev, dt)
    fast = PSSRPipeline(vae, base, draft, ctx, None, SamplingConfig(), device=dev, dtype=dt).optimize()
    res = {"env": environment(dev), "results": {}}
    for h, w in ((720, 1280), (1080, 1920)):
        frames = torch.rand(a.frames, 3, h, w, device=dev)
        for mode in ("default", "low_memory"):
            pipe = fast if mode == "default" else copy.copy(fast).enable_low_memory()

            def run():
                out = pipe.run_tile(frames, ["base", "base+draft_3"])
                return fuse_video(out["base"], out["base+draft_3"], window_h=h, window_w=w)

            with torch.no_grad():
                try:
                    t = timeit(run, dev, repeats=2, warmup=1)
                    torch.cuda.reset_peak_memory_stats(dev)
                    run()
                    t["peak_gib"] = torch.cuda.max_memory_allocated(dev) / 2**30
                except torch.OutOfMemoryError as e:
                    t = {"error": str(e)[:200]}
            if mode == "low_memory":  # models back on the device for the next size
                base.to(dev)
                draft.to(dev)
            res["results"][f"{h}p_{mode}"] = t
            print(f"{h}p {mode}: {t}", flush=True)
    write_json(res, a.out)


if __name__ == "__main__":
    main()
