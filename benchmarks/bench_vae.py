"""Wan VAE speed: the fast path (Wan_SR/models/vae_fast.py) against the reference (diffsynth's
forward), in ONE run, real-size random weights, bf16, channels-last weights as the pipeline
sets them (issue 17).

Measures (medians): encode and decode of a 33x720x1280 clip with each path; the first fast call
of this process (Triton kernels built or read from the cache); PSNR of the fast path's decoded
frames against the reference's on a random latent and on a smooth latent; the kernels that take
the fast decode's time (profiler). Writes benchmarks/results/vae_speed_<gpu>.json.

    python benchmarks/bench_vae.py [--out PATH] [--repeats 3]
"""
from __future__ import annotations

import argparse
import math
import os
import time

import torch

from common import environment, light_diffsynth, results_path, sync, timeit, write_json


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two videos in [-1, 1], on the [0, 1] scale."""
    mse = ((a.float() - b.float()) / 2).pow(2).mean().item()
    return float("inf") if mse == 0 else 10 * math.log10(1.0 / mse)


def smooth_latent(frames: int, h: int, w: int, device, dtype) -> torch.Tensor:
    """Low-frequency latents (a few random cosines per channel), like those of a natural clip."""
    g = torch.Generator(device="cpu").manual_seed(1)
    t = torch.linspace(0, 1, frames)[:, None, None]
    y = torch.linspace(0, 1, h)[None, :, None]
    x = torch.linspace(0, 1, w)[None, None, :]
    chans = []
    for _ in range(16):
        f = torch.rand(3, generator=g) * 3
        ph = torch.rand(3, generator=g) * 6.28
        chans.append(torch.cos(f[0] * 6.28 * x + ph[0]) * torch.cos(f[1] * 6.28 * y + ph[1])
                     * torch.cos(f[2] * 3.14 * t + ph[2]))
    return torch.stack(chans)[None].to(device, dtype)


def top_kernels(fn, n: int = 15) -> list:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    rows = []
    total = 0.0
    for ev in prof.key_averages():
        t = getattr(ev, "device_time_total", None) or getattr(ev, "cuda_time_total", 0)
        total += t
        rows.append((t, ev.key, ev.count))
    rows.sort(reverse=True)
    return [{"kernel": k[:120], "ms": round(t / 1000, 2), "share": round(t / total, 3),
             "calls": c} for t, k, c in rows[:n]]


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=33)
    ap.add_argument("--height", type=int, default=720)
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=None)
    ap.add_argument("--first_call_only", action="store_true",
                    help="only time this process's first fast encode + decode (cache check)")
    a = ap.parse_args()
    light_diffsynth()
    from diffsynth.models.wan_video_vae import VideoVAE_, WanVideoVAE

    from Wan_SR.models.wan import vae_decode, vae_encode
    from Wan_SR.sampling.speed import vae_channels_last
    from Wan_SR.testing.checkpoints import REAL_VAE

    dev, dt = "cuda", torch.bfloat16
    torch.manual_seed(0)
    with torch.device(dev):
        vae = WanVideoVAE(z_dim=16)
        vae.model = VideoVAE_(**REAL_VAE)
    vae = vae.to(dt).eval().requires_grad_(False)
    vae_channels_last(vae)
    torch.backends.cudnn.benchmark = os.environ.get("PSSR_CUDNN_BENCHMARK", "1") == "1"
    cl = torch.channels_last_3d
    T, H, W = a.frames, a.height, a.width
    video = (torch.rand(1, 3, T, H, W, device=dev, dtype=dt) * 2 - 1).contiguous(memory_format=cl)
    env = environment(dev)
    res = {"env": env, "settings": vars(a), "cache_dirs": {
        k: os.environ.get(k) for k in ("TRITON_CACHE_DIR", "TORCHINDUCTOR_CACHE_DIR")}}
    with torch.no_grad():
        t0 = time.perf_counter()
        z = vae_encode(vae, video, fast=True)
        sync(dev)
        res["first_fast_encode_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        vae_decode(vae, z, fast=True)
        sync(dev)
        res["first_fast_decode_s"] = time.perf_counter() - t0
        if a.first_call_only:
            t0 = time.perf_counter()
            vae_decode(vae, z, fast=True)
            sync(dev)
            res["second_fast_decode_s"] = time.perf_counter() - t0
            print(res)
            return
        z_ref = vae_encode(vae, video, fast=False)
        res["encode_max_abs_diff"] = (z.float() - z_ref.float()).abs().max().item()
        res["encode_rel_l2"] = ((z.float() - z_ref.float()).norm() / z_ref.float().norm()).item()
        z = z_ref.contiguous(memory_format=cl)
        R = {}
        R["encode_ref"] = timeit(lambda: vae_encode(vae, video, fast=False), dev, a.repeats, 1)
        R["encode_fast"] = timeit(lambda: vae_encode(vae, video, fast=True), dev, a.repeats, 1)
        R["decode_ref"] = timeit(lambda: vae_decode(vae, z, fast=False), dev, a.repeats, 1)
        R["decode_fast"] = timeit(lambda: vae_decode(vae, z, fast=True), dev, a.repeats, 1)
        res["timings"] = R
        res["psnr_db_random_latent"] = psnr(vae_decode(vae, z, fast=True),
                                            vae_decode(vae, z, fast=False))
        zs = smooth_latent(z.shape[2], z.shape[3], z.shape[4], dev, dt).contiguous(memory_format=cl)
        res["psnr_db_smooth_latent"] = psnr(vae_decode(vae, zs, fast=True),
                                            vae_decode(vae, zs, fast=False))
        # what bf16 costs at all: both paths against the same weights in float32 (reference
        # forward), and the reference against itself with other cuDNN algorithms
        import copy

        from Wan_SR.models import vae_fast

        vae32 = copy.deepcopy(vae).float()
        for name, lat in (("random", z), ("smooth", zs)):
            truth = vae_decode(vae32, lat.float(), fast=False)
            ref = vae_decode(vae, lat, fast=False)
            res[f"psnr_db_{name}_ref_vs_fp32"] = psnr(ref, truth)
            res[f"psnr_db_{name}_fast_vs_fp32"] = psnr(vae_decode(vae, lat, fast=True), truth)
            vae_fast.EMULATE_ROUNDING = False
            once = vae_decode(vae, lat, fast=True)
            vae_fast.EMULATE_ROUNDING = True
            res[f"psnr_db_{name}_fast_round_once_vs_fp32"] = psnr(once, truth)
            res[f"psnr_db_{name}_fast_round_once_vs_ref"] = psnr(once, ref)
            torch.backends.cudnn.benchmark = False
            res[f"psnr_db_{name}_ref_heuristic_algos_vs_ref"] = psnr(
                vae_decode(vae, lat, fast=False), ref)
            torch.backends.cudnn.benchmark = True
            del truth, ref, once
        del vae32
        torch.backends.cudnn.benchmark = False
        R["encode_fast_no_autotune"] = timeit(lambda: vae_encode(vae, video, fast=True), dev,
                                              a.repeats, 1)
        R["decode_fast_no_autotune"] = timeit(lambda: vae_decode(vae, z, fast=True), dev,
                                              a.repeats, 1)
        torch.backends.cudnn.benchmark = True
        res["decode_fast_top_kernels"] = top_kernels(lambda: vae_decode(vae, z, fast=True))
        res["decode_ref_top_kernels"] = top_kernels(lambda: vae_decode(vae, z, fast=False))
        res["peak_gib"] = torch.cuda.max_memory_allocated() / 2 ** 30
    res.update(encode_s=R["encode_fast"]["median_s"], decode_s=R["decode_fast"]["median_s"],
               encode_ref_s=R["encode_ref"]["median_s"], decode_ref_s=R["decode_ref"]["median_s"],
               psnr_db=min(res["psnr_db_random_latent"], res["psnr_db_smooth_latent"]))
    res["speedup_encode"] = res["encode_ref_s"] / res["encode_s"]
    res["speedup_decode"] = res["decode_ref_s"] / res["decode_s"]
    write_json(res, a.out or results_path("vae_speed", env))


if __name__ == "__main__":
    main()
