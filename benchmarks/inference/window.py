"""What does one step-1 window cost, and where does the time go? One 33x720x1280 window in one
process, random weights of the real sizes, bf16; warm-up, then the median of the repeats of:

  (a)  the PS-SR path to the final fused window (encode once, base, 3 draft steps, decode the base
       and the last draft only, fusion), with the speed switches on;
  (a0) the same with the speed switches off (PyTorch's default attention, no compile,
       channels-first weights, the reference VAE forward);
  (b)  one step: encode, base step, one decode;
  (c)  a path shaped like the published release: the input encoded twice, base + 3 draft steps,
       all four branches decoded, then the fusion; with the release's kernels (as (a0)) and with
       ours (as (a));
  (d)  N-step base sampling, N = 4 and 50, extrapolated from the measured components;

(a) and (b) also with the reference VAE forward; each component (VAE encode and decode, timed by
benchmarks/vae/timing.py; base step; draft step; fusion), the peak GPU memory of (a), the DiT's
TFLOP/s. --sweep adds the base and draft steps under each attention backend, before compiling.
--first_call_only times only this process's first compiled window (compile-cache check: run it
twice, the second process reads the caches the first one wrote).

    python benchmarks/inference/window.py --light
    python benchmarks/inference/window.py --light --first_call_only --out OUT.json
    python benchmarks/inference/window.py --quick
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository
from benchmarks import wan_sr as ws  # noqa: E402
from benchmarks.common import (add_clip_shape, default_device, parse, parser, peak_gib, record,  # noqa: E402
                               reset_peak, save, sync, timeit)
from benchmarks.vae.timing import random_video, vae_timings  # noqa: E402

NAME = "inference/inference"
BACKENDS = ("cudnn", "flash", "efficient", "math")


def dit_flops(tokens: int, ctx_len: int, dim: int, ffn: int, blocks: int) -> float:
    """Matmul FLOPs of one DiT forward (2 per multiply-add): projections, FFN, attention."""
    per = (4 * tokens * dim * dim * 2            # self-attn q,k,v,o
           + 2 * tokens * dim * dim * 2          # cross-attn q,o
           + 2 * ctx_len * dim * dim * 2         # cross-attn k,v on the text
           + 2 * tokens * dim * ffn * 2          # ffn
           + 2 * tokens * tokens * dim * 2       # self-attention QK^T and AV
           + 2 * tokens * ctx_len * dim * 2)     # cross-attention
    return per * blocks


def first_window(pipe, frames, device, compile: bool, compile_vae: bool = False) -> dict:
    """Seconds of the first window after switching the speed switches on (compile included),
    and of the second."""
    t0 = time.perf_counter()
    ws.optimize(pipe, compile=compile, compile_vae=compile_vae)
    ws.final_window(pipe, frames)
    sync(device)
    out = {"first_call_with_compile_s": time.perf_counter() - t0}
    t0 = time.perf_counter()
    ws.final_window(pipe, frames)
    sync(device)
    out["second_call_s"] = time.perf_counter() - t0
    return out


def attention_sweep(pipe, frames, device, reps) -> dict:
    """The base and draft steps under each attention backend (an error where one is missing)."""
    out = {}
    base, draft, _ = ws.window_steps(pipe, ws.encode_window(pipe, frames))
    for name in BACKENDS:
        try:
            with ws.attention_context(name, device):
                out[f"base_step_{name}"] = timeit(base, device, **reps)
                out[f"draft_step_{name}"] = timeit(draft, device, **reps)
        except RuntimeError as e:  # backend not available for these shapes or on this GPU
            out[f"base_step_{name}"] = {"error": str(e)[:200]}
    return out


def paths(slow, fast, frames, device, args, reps) -> tuple[dict, dict]:
    """The whole-window paths (a0), (c) with the release's kernels, then the switches on, (a),
    (b), both with the reference VAE, and (c) with ours. Returns (paths, first call)."""
    P = {"a0_ours_final_unoptimised": timeit(lambda: ws.final_window(slow, frames), device, **reps),
         "c_published_shape_release_kernels": timeit(lambda: ws.published_shape(slow, frames),
                                                     device, **reps)}
    torch.backends.cudnn.benchmark = torch.device(device).type == "cuda"
    first = first_window(fast, frames, device, args.compile, args.compile_vae)
    P["a_ours_final"] = timeit(lambda: ws.final_window(fast, frames), device, **reps)
    reset_peak(device)
    ws.final_window(fast, frames)
    P["a_peak_gib"] = peak_gib(device)
    P["b_one_step"] = timeit(lambda: ws.one_step(fast, frames), device, **reps)
    ws.use_reference_vae(fast, True)
    P["a_ours_final_reference_vae"] = timeit(lambda: ws.final_window(fast, frames), device, **reps)
    P["b_one_step_reference_vae"] = timeit(lambda: ws.one_step(fast, frames), device, **reps)
    ws.use_reference_vae(fast, False)
    P["c_published_shape"] = timeit(lambda: ws.published_shape(fast, frames), device, **reps)
    return P, first


def components(pipe, vae, frames, device, dtype, args, reps) -> tuple[dict, float]:
    """Each part of the window with the speed switches on; returns (components, DiT FLOPs)."""
    z_l = ws.encode_window(pipe, frames)
    video = random_video(4 * (z_l.shape[2] - 1) + 1, 8 * z_l.shape[3], 8 * z_l.shape[4], device,
                         dtype, channels_last=True)
    coder = vae_timings(vae, video, z_l, device, args.repeats, args.warmup)
    C = {"encode": coder["encode"]}
    base, draft, _ = ws.window_steps(pipe, z_l)
    with ws.pipeline_attention(pipe):
        C["base_step"] = timeit(base, device, **reps)
        C["draft_step"] = timeit(draft, device, **reps)
    C["decode"] = coder["decode"]
    C["fusion"] = timeit(lambda: ws.fuse_video(frames, frames), device, **reps)
    s = ws.dit_sizes(pipe)
    tokens = z_l.shape[2] * (z_l.shape[3] // 2) * (z_l.shape[4] // 2)
    return C, dit_flops(tokens, s["ctx_len"], s["dim"], s["ffn"], s["blocks"])


def ratios(P: dict, C: dict) -> dict:
    """(d) extrapolated, and the ratios the README quotes."""
    med = {k: v["median_s"] for k, v in C.items()}
    for n in (4, 50):
        P[f"d_{n}_step_base_extrapolated_s"] = med["encode"] + n * med["base_step"] + med["decode"]
    a = P["a_ours_final"]["median_s"]
    return {"a_over_b": a / P["b_one_step"]["median_s"],
            "c_over_a": P["c_published_shape_release_kernels"]["median_s"] / a,
            "c_fast_kernels_over_a": P["c_published_shape"]["median_s"] / a,
            "a0_over_a": P["a0_ours_final_unoptimised"]["median_s"] / a,
            "a_reference_vae_over_a": P["a_ours_final_reference_vae"]["median_s"] / a,
            "a_over_b_reference_vae": (P["a_ours_final_reference_vae"]["median_s"]
                                       / P["b_one_step_reference_vae"]["median_s"]),
            "d4_over_a": P["d_4_step_base_extrapolated_s"] / a,
            "d50_over_a": P["d_50_step_base_extrapolated_s"] / a}


def main(argv=None):
    p = parser(__doc__, repeats=5, unit="one window or one component",
               quick="tiny models on a 5x64x64 window")
    add_clip_shape(p)
    p.add_argument("--warmup", type=int, default=2, help="untimed calls before the repeats")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    p.add_argument("--no_compile", dest="compile", action="store_false",
                   help="no torch.compile of the DiT blocks (off anyway without a GPU)")
    p.add_argument("--compile_vae", action="store_true", help="also compile the VAE's norms")
    p.add_argument("--sweep", action="store_true", help="also each attention backend")
    p.add_argument("--first_call_only", action="store_true",
                   help="only this process's first compiled window (compile-cache check)")
    args = parse(p, argv)
    caches = ws.configure_compile_caches()  # before anything compiles
    device = default_device()
    cuda = device == "cuda"
    args.compile = args.compile and cuda
    dtype = getattr(torch, args.dtype) if cuda else torch.float32
    T, H, W = (5, 64, 64) if args.quick else (args.frames, args.height, args.width)
    models = ws.random_models("tiny" if args.quick else "real", device, dtype)
    res = record(args, device)
    res.update(shape=f"{T}x{H}x{W}", caches=caches)
    frames = torch.rand(T, 3, H, W, device=device)
    fast = ws.make_pipeline(*models, device, dtype, fast=True)
    reps = dict(repeats=args.repeats, warmup=args.warmup)
    with torch.no_grad():
        if args.first_call_only:
            torch.backends.cudnn.benchmark = cuda
            res.update(first_window(fast, frames, device, args.compile))
            return save(res, args, "inference/compile_cache")
        if args.sweep:
            res["attention_sweep"] = attention_sweep(fast, frames, device, reps)
        slow = ws.make_pipeline(*models, device, dtype, fast=False)
        res["paths"], first = paths(slow, fast, frames, device, args, reps)
        res.update(first)
        res["components"], flops = components(fast, models[2], frames, device, dtype, args, reps)
    res["dit_tflop_per_forward"] = flops / 1e12
    res["dit_tflops_per_s"] = flops / res["components"]["base_step"]["median_s"] / 1e12
    res["ratios"] = ratios(res["paths"], res["components"])
    return save(res, args, NAME)


if __name__ == "__main__":
    main()
