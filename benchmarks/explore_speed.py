"""Component timings under different switches (attention backend, compile, VAE memory format,
cudnn.benchmark), to choose the defaults of the fast path. Writes JSON to --out.

    python benchmarks/explore_speed.py --out benchmarks/results/explore_<gpu>.json
"""
from __future__ import annotations

import argparse

import torch

from common import build_models, dit_flops, environment, timeit, write_json


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=33)
    ap.add_argument("--height", type=int, default=720)
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--size", default="real")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--profile_decode", action="store_true")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    from Wan_SR.models.dit import dit_forward
    from Wan_SR.models.wan import vae_decode, vae_encode
    from Wan_SR.sampling.speed import attention_context, compile_blocks, vae_channels_last

    dev, dt = a.device, torch.bfloat16
    base, draft, vae, ctx = build_models(a.size, dev, dt)
    res = {"env": environment(dev), "settings": vars(a), "results": {}}
    R = res["results"]
    video = torch.rand(1, 3, a.frames, a.height, a.width, device=dev, dtype=dt) * 2 - 1
    with torch.no_grad():
        z = vae_encode(vae, video)
        x_in = torch.cat([z, z], 1)
        t = torch.tensor([700.0], device=dev, dtype=dt)
        tokens = z.shape[2] * (z.shape[3] // 2) * (z.shape[4] // 2)
        flops = dit_flops(tokens, ctx.shape[1], base.dim, base.config["ffn_dim"], len(base.blocks))
        res["dit_tflop_per_forward"] = flops / 1e12
        feats = [torch.randn(1, tokens, base.dim, device=dev, dtype=dt) for _ in draft.blocks]
        for name in ("cudnn", "flash", "efficient"):
            try:
                with attention_context(name, dev):
                    r = timeit(lambda: dit_forward(base, x_in, t, ctx), dev, a.repeats)
                    r["tflops"] = flops / r["median_s"] / 1e12
                    R[f"dit_{name}"] = r
                    R[f"draft_{name}"] = timeit(lambda: draft(x_in, t, ctx, feats), dev, a.repeats)
            except Exception as e:  # backend not available
                R[f"dit_{name}"] = {"error": str(e)[:200]}
        torch.backends.cudnn.benchmark = False
        R["vae_encode_default"] = timeit(lambda: vae_encode(vae, video), dev, 3, 1)
        R["vae_decode_default"] = timeit(lambda: vae_decode(vae, z), dev, 3, 1)
        torch.backends.cudnn.benchmark = True
        R["vae_encode_cudnn_benchmark"] = timeit(lambda: vae_encode(vae, video), dev, 3, 1)
        R["vae_decode_cudnn_benchmark"] = timeit(lambda: vae_decode(vae, z), dev, 3, 1)
        zz = torch.cat([z, z], 0)
        R["vae_decode_batch2_cudnn_benchmark"] = timeit(lambda: vae_decode(vae, zz), dev, 2, 1)
        torch.cuda.reset_peak_memory_stats()
        vae_decode(vae, z)
        R["vae_decode_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
        torch.cuda.reset_peak_memory_stats()
        vae_encode(vae, video)
        R["vae_encode_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
        if a.profile_decode:
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                vae_decode(vae, z)
                torch.cuda.synchronize()
            table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=15)
            print(table)
            res["decode_profile_top"] = table
        write_json(res, a.out)
        vae_channels_last(vae)
        v_cl = video.contiguous(memory_format=torch.channels_last_3d)
        z_cl = z.contiguous(memory_format=torch.channels_last_3d)
        R["vae_encode_channels_last_cudnn_benchmark"] = timeit(lambda: vae_encode(vae, v_cl), dev, 3, 1)
        R["vae_decode_channels_last_cudnn_benchmark"] = timeit(lambda: vae_decode(vae, z_cl), dev, 3, 1)
        if a.compile:
            compile_blocks(base)
            import time

            t0 = time.perf_counter()
            with attention_context("cudnn", dev):
                dit_forward(base, x_in, t, ctx)
                torch.cuda.synchronize()
                res["compile_first_call_s"] = time.perf_counter() - t0
                r = timeit(lambda: dit_forward(base, x_in, t, ctx), dev, a.repeats)
                r["tflops"] = flops / r["median_s"] / 1e12
                R["dit_cudnn_compiled"] = r
    write_json(res, a.out)


if __name__ == "__main__":
    main()
