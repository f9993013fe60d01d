"""How fast is the Wan VAE, and how close is the fused path (Wan_SR/models/vae_fast.py) to the
reference (diffsynth's forward)? Both in ONE run, random weights of the real sizes, bf16,
channels-last weights as step 1 sets them.

Measures (medians): encode and decode of a 33x720x1280 clip with each path; this process's first
fused calls (Triton kernels built or read from the cache); PSNR of the fused path's decoded frames
against the reference's on a random and on a smooth latent, and of both against float32; the
fused timings without cuDNN's autotuner; the kernels that take the decode's time (profiler).

--sweep adds the switches around the VAE: channels-first or channels-last weights, cuDNN's
autotuner off or on, for the reference and the default path; one decode of a batch of two; peak
memory of one encode and one decode; the normalisation layers compiled (reference path).
--first_call_only times only this process's first fused encode and decode (run twice: the second
process reads the kernel caches). Without a GPU only the reference path runs.

    python benchmarks/vae/speed.py --light
    python benchmarks/vae/speed.py --light --sweep
    python benchmarks/vae/speed.py --quick
"""
from __future__ import annotations

import copy
import math
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository
from benchmarks import wan_sr as ws  # noqa: E402
from benchmarks.common import (add_clip_shape, default_device, parse, parser, peak_gib, record,  # noqa: E402
                               reset_peak, save, sync, top_kernels)
from benchmarks.vae.timing import random_video, vae_timings  # noqa: E402

NAME = "vae/vae_speed"
CL = torch.channels_last_3d


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two videos in [-1, 1], on the [0, 1] scale."""
    mse = ((a.float() - b.float()) / 2).pow(2).mean().item()
    return float("inf") if mse == 0 else 10 * math.log10(1.0 / mse)


def smooth_latent(like: torch.Tensor) -> torch.Tensor:
    """Low-frequency latents shaped like ``like`` (a few random cosines per channel), like those
    of a natural clip."""
    frames, h, w = like.shape[2:]
    g = torch.Generator(device="cpu").manual_seed(1)
    t = torch.linspace(0, 1, frames)[:, None, None]
    y = torch.linspace(0, 1, h)[None, :, None]
    x = torch.linspace(0, 1, w)[None, None, :]
    chans = []
    for _ in range(like.shape[1]):
        f = torch.rand(3, generator=g) * 3
        ph = torch.rand(3, generator=g) * 6.28
        chans.append(torch.cos(f[0] * 6.28 * x + ph[0]) * torch.cos(f[1] * 6.28 * y + ph[1])
                     * torch.cos(f[2] * 3.14 * t + ph[2]))
    return torch.stack(chans)[None].to(like.device, like.dtype).contiguous(memory_format=CL)


def first_calls(vae, video, device, second: bool) -> dict:
    """Seconds of this process's first fused encode and decode (and a second decode)."""
    out = {}
    t0 = time.perf_counter()
    z = ws.vae_encode(vae, video, fast=True)
    sync(device)
    out["first_fast_encode_s"] = time.perf_counter() - t0
    for key in ("first_fast_decode_s", "second_fast_decode_s")[:1 + second]:
        t0 = time.perf_counter()
        ws.vae_decode(vae, z, fast=True)
        sync(device)
        out[key] = time.perf_counter() - t0
    return out


def against_float32(vae, latents: dict) -> dict:
    """What bf16 costs at all: both paths against the same weights in float32 (reference
    forward), the fused path rounding once, and the reference with other cuDNN algorithms."""
    out = {}
    vae32 = copy.deepcopy(vae).float()
    for name, lat in latents.items():
        truth = ws.vae_decode(vae32, lat.float(), fast=False)
        ref = ws.vae_decode(vae, lat, fast=False)
        out[f"psnr_db_{name}_ref_vs_fp32"] = psnr(ref, truth)
        out[f"psnr_db_{name}_fast_vs_fp32"] = psnr(ws.vae_decode(vae, lat, fast=True), truth)
        ws.vae_round_once(True)
        once = ws.vae_decode(vae, lat, fast=True)
        ws.vae_round_once(False)
        out[f"psnr_db_{name}_fast_round_once_vs_fp32"] = psnr(once, truth)
        out[f"psnr_db_{name}_fast_round_once_vs_ref"] = psnr(once, ref)
        torch.backends.cudnn.benchmark = False
        out[f"psnr_db_{name}_ref_heuristic_algos_vs_ref"] = psnr(
            ws.vae_decode(vae, lat, fast=False), ref)
        torch.backends.cudnn.benchmark = True
    return out


def fused_against_reference(vae, video, device, repeats) -> dict:
    """The fused path against the reference on the GPU: encode difference, timings with and
    without cuDNN's autotuner, PSNRs, kernels, peak memory."""
    z_fast = ws.vae_encode(vae, video, fast=True)
    z = ws.vae_encode(vae, video, fast=False).contiguous(memory_format=CL)
    res = {"encode_max_abs_diff": (z_fast.float() - z.float()).abs().max().item(),
           "encode_rel_l2": ((z_fast.float() - z.float()).norm() / z.float().norm()).item()}
    ref = vae_timings(vae, video, z, device, repeats, fast=False)
    fast = vae_timings(vae, video, z, device, repeats, fast=True)
    R = res["timings"] = {"encode_ref": ref["encode"], "encode_fast": fast["encode"],
                          "decode_ref": ref["decode"], "decode_fast": fast["decode"]}
    latents = {"random": z, "smooth": smooth_latent(z)}
    for name, lat in latents.items():
        res[f"psnr_db_{name}_latent"] = psnr(ws.vae_decode(vae, lat, fast=True),
                                             ws.vae_decode(vae, lat, fast=False))
    res.update(against_float32(vae, latents))
    torch.backends.cudnn.benchmark = False
    plain = vae_timings(vae, video, z, device, repeats, fast=True)
    torch.backends.cudnn.benchmark = True
    R["encode_fast_no_autotune"], R["decode_fast_no_autotune"] = plain["encode"], plain["decode"]
    res["decode_fast_top_kernels"] = top_kernels(lambda: ws.vae_decode(vae, z, fast=True), 15)
    res["decode_ref_top_kernels"] = top_kernels(lambda: ws.vae_decode(vae, z, fast=False), 15)
    res["peak_gib"] = peak_gib(device)
    res.update(encode_s=R["encode_fast"]["median_s"], decode_s=R["decode_fast"]["median_s"],
               encode_ref_s=R["encode_ref"]["median_s"], decode_ref_s=R["decode_ref"]["median_s"],
               psnr_db=min(res["psnr_db_random_latent"], res["psnr_db_smooth_latent"]))
    res["speedup_encode"] = res["encode_ref_s"] / res["encode_s"]
    res["speedup_decode"] = res["decode_ref_s"] / res["decode_s"]
    return res


def sweep(size, shape, device, dtype, repeats) -> dict:
    """The switches around the VAE, on a fresh VAE (channels-first weights first)."""
    vae = ws.random_vae(size, device, dtype)
    paths = {"reference": False, "default": None} if torch.device(device).type == "cuda" else \
        {"reference": False}  # without a GPU the default is the reference
    out = {}
    with torch.no_grad():
        for fmt in ("channels_first", "channels_last"):
            if fmt == "channels_last":
                ws.vae_channels_last(vae)
            video = random_video(*shape, device, dtype, channels_last=fmt == "channels_last")
            z = ws.vae_encode(vae, video, fast=False)
            z = z.contiguous(memory_format=CL) if fmt == "channels_last" else z
            for autotune in (False, True):
                torch.backends.cudnn.benchmark = autotune
                for path, fast in paths.items():
                    key = f"{path}_{fmt}_{'autotune' if autotune else 'heuristic'}"
                    out[key] = vae_timings(vae, video, z, device, repeats, fast=fast)
        zz = torch.cat([z, z], 0).contiguous(memory_format=CL)
        out["decode_batch_of_2"] = vae_timings(vae, video, zz, device, repeats)["decode"]
        for what, fn in (("encode", lambda: ws.vae_encode(vae, video)),
                         ("decode", lambda: ws.vae_decode(vae, z))):
            reset_peak(device)
            fn()
            out[f"{what}_peak_gib"] = peak_gib(device)
        out.update(compiled_norms(vae, video, z, device, repeats))
    return out


def compiled_norms(vae, video, z, device, repeats) -> dict:
    """The reference path with its normalisation layers compiled: first decode, difference to
    eager, timings (channels-last weights)."""
    eager = ws.vae_decode(vae, z, fast=False).float()
    ws.compile_vae_norms(vae)
    t0 = time.perf_counter()
    out = ws.vae_decode(vae, z, fast=False).float()
    sync(device)
    res = {"compile_first_decode_s": time.perf_counter() - t0,
           "compiled_vs_eager_max_abs_diff": (out - eager).abs().max().item()}
    t = vae_timings(vae, video, z, device, repeats, fast=False)
    res["encode_channels_last_compiled_norms"] = t["encode"]
    res["decode_channels_last_compiled_norms"] = t["decode"]
    return res


def main(argv=None):
    p = parser(__doc__, repeats=3, unit="one encode or one decode",
               quick="a tiny VAE on a 5x64x64 clip")
    add_clip_shape(p)
    p.add_argument("--sweep", action="store_true",
                   help="also the switches: memory format, autotuner, batch of two, compiled norms")
    p.add_argument("--first_call_only", action="store_true",
                   help="only this process's first fused encode and decode (kernel-cache check)")
    args = parse(p, argv)
    device = default_device()
    cuda = device == "cuda"
    size, dtype = ("tiny" if args.quick else "real"), (torch.bfloat16 if cuda else torch.float32)
    shape = (5, 64, 64) if args.quick else (args.frames, args.height, args.width)
    res = record(args, device)
    res["shape"] = "x".join(map(str, shape))
    torch.backends.cudnn.benchmark = os.environ.get("PSSR_CUDNN_BENCHMARK", "1") == "1"
    vae = ws.random_vae(size, device, dtype)
    ws.vae_channels_last(vae)
    video = random_video(*shape, device, dtype, channels_last=True)
    with torch.no_grad():
        if cuda:
            res.update(first_calls(vae, video, device, args.first_call_only))
        if args.first_call_only:
            return save(res, args, NAME + "_first_call")
        if cuda:
            res.update(fused_against_reference(vae, video, device, args.repeats))
        else:  # the fused kernels need a GPU: the reference alone
            z = ws.vae_encode(vae, video, fast=False)
            t = vae_timings(vae, video, z, device, args.repeats, fast=False)
            res["timings"] = {"encode_ref": t["encode"], "decode_ref": t["decode"]}
    if args.sweep:
        res["sweep"] = sweep(size, shape, device, dtype, args.repeats)
    return save(res, args, NAME)


if __name__ == "__main__":
    main()
