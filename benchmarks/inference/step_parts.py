"""What step 1's parts cost on their own, and what each candidate speed-up buys, in ONE run:
real-size random weights, bf16, one 33x720x1280 window (9 latents of 45x80 tokens: 32,400).

- attention (the self-attention of one DiT block): cuDNN's and flash bf16 kernels against the
  FP8 kernel of ``Wan_SR/models/fp8_attention.py`` (with its quantisation, and the kernel alone
  for each of a few block shapes), TFLOP/s; its error against float32 beside bf16's, and the
  kernel against its float32 emulation on a shorter sequence;
- the DiT's linear shapes: bf16 against FP8 with per-row scales (``--fp8``'s) and with one
  scale per tensor;
- the VAE: decoding with 1, 2 or 4 latents per decoder step and encoding 4, 8 or 16 frames per
  encoder step (the same math: the largest difference to one latent / 4 frames is reported);
- one base step and one draft step (uncompiled): bf16, FP8 linears, FP8 linears + attention,
  with the x0's error against bf16;
- the same steps compiled (``--compile``), with their GPU time by kernel category, then with the
  rotary embedding in float32 real arithmetic instead of diffsynth's complex128 products.

    python benchmarks/inference/step_parts.py --light
    python benchmarks/inference/step_parts.py --quick   # tiny models on the CPU (the code paths)
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository
from benchmarks import wan_sr as ws  # noqa: E402
from benchmarks.common import (add_clip_shape, default_device, parse, parser, peak_gib,  # noqa: E402
                               record, reset_peak, save, timeit, top_kernels)
from benchmarks.inference import fp8_attention as fa  # noqa: E402
from benchmarks.vae.timing import random_video  # noqa: E402

NAME = "inference/step_parts"


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b|| in float32."""
    a, b = a.float(), b.float()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def sdpa(q, k, v, heads):
    B, L, HD = q.shape
    h = [x.view(B, L, heads, HD // heads).transpose(1, 2) for x in (q, k, v)]
    return F.scaled_dot_product_attention(*h).transpose(1, 2).reshape(B, L, HD)


def attention_part(args, device, dtype, L, heads, D) -> dict:
    g = torch.Generator(device=device).manual_seed(0)
    q, k, v = (torch.randn(1, L, heads * D, device=device, generator=g, dtype=dtype)
               for _ in range(3))
    k = k + 0.3  # a shared offset, as real keys have
    flop = 4 * L * L * heads * D
    out = {"tokens": L, "heads": heads, "head_dim": D, "flop_per_call": flop}
    timings = {}
    if device == "cuda":
        for name, backend in (("bf16_cudnn", ws.SDPBackend.CUDNN_ATTENTION),
                              ("bf16_flash", ws.SDPBackend.FLASH_ATTENTION)):
            with ws.sdpa_kernel([backend]):
                timings[name] = timeit(lambda: sdpa(q, k, v, heads), device, args.repeats)
    if fa.available(device) or device == "cpu":
        timings["fp8_with_quantize"] = timeit(lambda: fa.attention_fp8(q, k, v, heads), device,
                                              args.repeats)
        ops = fa.quantize(q, k, v, heads)
        timings["fp8_quantize_only"] = timeit(lambda: fa.quantize(q, k, v, heads), device,
                                              args.repeats)
        if device == "cuda":
            configs = {}
            keep = (fa.BLOCK_N, fa.NUM_WARPS, fa.NUM_STAGES)
            for bn, warps, stages in ((128, 8, 3), (128, 8, 2), (64, 4, 3), (64, 8, 4),
                                      (128, 4, 3)):
                fa.BLOCK_N, fa.NUM_WARPS, fa.NUM_STAGES = bn, warps, stages
                try:
                    t = timeit(lambda: fa._fp8_attention(*ops, L, 1, dtype), device,
                               args.repeats)
                    configs[f"BN{bn}_w{warps}_s{stages}"] = t["median_s"]
                except Exception as e:  # a shape the compiler refuses: say so
                    configs[f"BN{bn}_w{warps}_s{stages}"] = f"{type(e).__name__}: {e}"[:200]
            fa.BLOCK_N, fa.NUM_WARPS, fa.NUM_STAGES = keep
            out["fp8_kernel_configs_s"] = configs
        # errors against float32 (efficient attention takes float32)
        ref = sdpa(q.float(), k.float(), v.float(), heads)
        out["rel_err_vs_fp32"] = {"fp8": rel(fa.attention_fp8(q, k, v, heads), ref)}
        if device == "cuda":
            out["rel_err_vs_fp32"]["bf16_cudnn"] = rel(sdpa(q, k, v, heads), ref)
        del ref
        # the kernel against its emulation (same operands) on a shorter sequence
        n = min(L, 2000)
        small = fa.quantize(q[:, :n], k[:, :n], v[:, :n], heads)
        out["kernel_vs_emulation_rel"] = rel(fa._fp8_attention(*small, n, 1, dtype),
                                             fa.emulate(*small, n, 1))
    out["seconds"] = {k_: t["median_s"] for k_, t in timings.items()}
    out["tflops"] = {k_: flop / t["median_s"] / 1e12 for k_, t in timings.items()
                     if "quantize_only" not in k_}
    return out


def linear_part(args, device, dtype, M, shapes) -> dict:
    fp8 = ws.fp8
    out = {}
    if device != "cuda" or not fp8.has_fp8() or not fp8.gpu_has_fp8(device):
        return {"skipped": "no FP8 GPU"}
    for K, N in shapes:
        x = torch.randn(M, K, device=device, dtype=dtype)
        w = torch.randn(N, K, device=device, dtype=dtype) / math.sqrt(K)
        qw, sw = fp8.quantize_rows(w)
        sw = sw.t().contiguous()
        qx, sx = fp8.quantize_rows(x)
        tw = (w.abs().amax().float() / 448)
        tx = (x.abs().amax().float() / 448)
        qwt, qxt = (w / tw).to(fp8.E4M3), (x / tx).to(fp8.E4M3)
        flop = 2 * M * K * N

        def rowwise_with_quantize():  # what FP8Linear does per call (unfused here)
            q, scale = fp8.quantize_rows(x)
            return torch._scaled_mm(q, qw.t(), scale_a=scale, scale_b=sw, out_dtype=dtype)

        t = {
            "bf16": timeit(lambda: F.linear(x, w), device, args.repeats),
            "fp8_rowwise_mm_only": timeit(lambda: torch._scaled_mm(
                qx, qw.t(), scale_a=sx, scale_b=sw, out_dtype=dtype), device, args.repeats),
            "fp8_rowwise_with_quantize": timeit(rowwise_with_quantize, device, args.repeats),
            "fp8_tensorwise_mm_only": timeit(lambda: torch._scaled_mm(
                qxt, qwt.t(), scale_a=tx, scale_b=tw, out_dtype=dtype), device, args.repeats),
        }
        out[f"{K}x{N}"] = {k: {"s": v["median_s"], "tflops": flop / v["median_s"] / 1e12}
                           for k, v in t.items()}
    return out


def vae_part(args, device, dtype, vae, T, H, W) -> dict:
    vf = ws.vae_fast
    video = random_video(T, H, W, device, dtype, channels_last=device == "cuda")

    def sweep(fn, sizes, unit):  # fn(n) for each step size: time, peak, difference to the first
        res, ref = {}, fn(sizes[0])
        for n in sizes:
            reset_peak(device)
            t = timeit(lambda: fn(n), device, args.repeats, warmup=1)
            res[f"{n}_{unit}_per_step"] = {"s": t["median_s"], "peak_gib": peak_gib(device),
                                           f"max_abs_diff_to_{sizes[0]}":
                                               float((fn(n) - ref).abs().max())}
        return res

    with torch.no_grad():
        z = vf.encode(vae, video)
        out = {"encode": sweep(lambda n: vf.encode(vae, video, n), (4, 8, 16), "frames"),
               "decode": sweep(lambda n: vf.decode(vae, z, n), (1, 2, 4), "latents")}
        z2 = torch.cat([z, z.flip(-1)])
        t = timeit(lambda: vf.decode(vae, z2, 1), device, args.repeats, warmup=1)
        out["decode"]["batch_of_2_1_latent_per_step"] = {"s": t["median_s"]}
    return out


def window_pipeline(device, dtype, size, T, H, W, compile: bool = False):
    """A step-1 pipeline on random models (``compile``: step 1's GPU switches, blocks
    compiled) and the latents of one T x H x W window."""
    base, draft, vae, context = ws.random_models(size, device, dtype)
    pipe = ws.make_pipeline(base, draft, vae, context, device, dtype, fast=True)
    if compile:
        ws.optimize(pipe)
    g = torch.Generator(device=device).manual_seed(0)
    z_l = torch.randn(1, 16, (T - 1) // 4 + 1, H // 8, W // 8, device=device, generator=g,
                      dtype=dtype)
    return pipe, z_l


def steps_part(args, device, dtype, size, T, H, W) -> dict:
    pipe, z_l = window_pipeline(device, dtype, size, T, H, W)
    out = {}
    x0s = {}
    variants = [("bf16", lambda: None),
                ("fp8_linears", lambda: [ws.fp8.use_fp8(m) for m in (pipe.base, pipe.draft)]),
                ("fp8_linears_attention",
                 lambda: [fa.use_fp8_attention(m) for m in (pipe.base, pipe.draft)])]
    for name, switch in variants:
        switch()
        base_fn, draft_fn, x0 = ws.window_steps(pipe, z_l)
        with ws.pipeline_attention(pipe), torch.no_grad():
            out[name] = {"base_s": timeit(base_fn, device, args.repeats, warmup=1)["median_s"],
                         "draft_s": timeit(draft_fn, device, args.repeats, warmup=1)["median_s"]}
        x0s[name] = x0
        if name != "bf16":
            out[name]["base_x0_rel_err_vs_bf16"] = rel(x0, x0s["bf16"])
        if device == "cpu" and name == "fp8_linears":
            break  # the FP8 attention kernel needs a GPU; its emulation is timed above
    return out


CATEGORIES = (("attention", ("fmha", "flash", "cudnn", "attn")),
              ("gemm", ("gemm", "nvjet", "xmma", "cutlass", "_mm_", "scaled_mm")),
              ("fused (triton)", ("triton",)),)


def kernel_shares(fn) -> dict:
    """GPU seconds of one ``fn()`` by kernel category, and the top kernels."""
    rows = top_kernels(fn, n=10 ** 6)
    cats = {}
    for r in rows:
        name = r["kernel"].lower()
        cat = next((c for c, keys in CATEGORIES if any(k in name for k in keys)), "other")
        cats[cat] = cats.get(cat, 0.0) + r["ms"] / 1e3
    return {"seconds": cats, "top": rows[:12]}


def rope_float32(x: torch.Tensor, freqs: torch.Tensor, num_heads: int) -> torch.Tensor:
    """diffsynth's ``rope_apply`` (complex128 products) in float32 real arithmetic: the pairs
    (a, b) of each head rotated by (cos, sin) of ``freqs``; differs from it by float32 rounding
    before the cast to ``x``'s dtype."""
    B, S, C = x.shape
    pairs = x.view(B, S, num_heads, C // num_heads // 2, 2).float()
    f = torch.view_as_real(freqs.to(torch.complex64))      # (S, 1, D/2, 2)
    cos, sin = f[..., 0], f[..., 1]
    a, b = pairs[..., 0], pairs[..., 1]
    return torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1).flatten(2).to(x.dtype)


def compiled_part(args, device, dtype, size, T, H, W) -> dict:
    """The base and draft steps with ``--compile`` (any token count, as step 1 compiles them),
    where their GPU time goes, and the same with the rotary embedding in float32."""
    pipe, z_l = window_pipeline(device, dtype, size, T, H, W, compile=True)
    out, x0s = {}, {}
    for name in ("diffsynth_rope", "float32_rope"):
        if name == "float32_rope":
            ws.set_rope(rope_float32)
            torch._dynamo.reset()
        base_fn, draft_fn, x0s[name] = ws.window_steps(pipe, z_l)
        with ws.pipeline_attention(pipe), torch.no_grad():
            out[name] = {"base_s": timeit(base_fn, device, args.repeats, warmup=2)["median_s"],
                         "draft_s": timeit(draft_fn, device, args.repeats, warmup=2)["median_s"]}
            if device == "cuda":
                out[name]["base_kernels"] = kernel_shares(base_fn)
    ws.set_rope(None)
    out["float32_rope"]["base_x0_max_abs_diff"] = float(
        (x0s["float32_rope"] - x0s["diffsynth_rope"]).abs().max())
    out["float32_rope"]["base_x0_rel_err"] = rel(x0s["float32_rope"], x0s["diffsynth_rope"])
    return out


def main(argv=None):
    p = parser(__doc__, repeats=5, unit="calls of each part",
               quick="tiny models and a 9x64x64 window on the CPU")
    add_clip_shape(p)
    p.add_argument("--parts", default="attention,linear,vae,steps,compiled",
                   help="which parts to measure (default: all)")
    args = parse(p, argv)
    device = default_device()
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    if device == "cuda":
        torch.backends.cudnn.benchmark = True
    T, H, W = (9, 64, 64) if args.quick else (args.frames, args.height, args.width)
    size = "tiny" if args.quick else "real"
    parts = args.parts.split(",")
    L = ((T - 1) // 4 + 1) * (H // 16) * (W // 16)
    heads, D = (2, 128) if args.quick else (12, 128)
    result = record(args, device)
    if "attention" in parts:
        result["attention"] = attention_part(args, device, dtype, L, heads, D)
    if "linear" in parts:
        result["linear"] = linear_part(args, device, dtype, L, [(1536, 1536), (1536, 8960),
                                                                 (8960, 1536)])
    if "vae" in parts:
        vae = ws.random_vae(size, device, dtype)
        if device == "cuda":
            ws.vae_channels_last(vae)
        result["vae"] = vae_part(args, device, dtype, vae, T, H, W)
        del vae
    if "steps" in parts:
        result["steps"] = steps_part(args, device, dtype, size, T, H, W)
    if "compiled" in parts:
        result["compiled"] = compiled_part(args, device, dtype, size, T, H, W)
    save(result, args, NAME)
    return result


if __name__ == "__main__":
    main()
