"""PS-SR inference benchmark on one window, real-size random-weight models (issue 6).

Times in ONE run, with warm-up and repeats (median):
  (a)  our PS-SR path producing the final fused window (encode once, base, 3 draft steps,
       decode base + last draft only, fusion), with the speed switches on;
  (a0) the same path with the speed switches off (PyTorch's default attention, no compile,
       channels-first VAE);
  (b)  one-step: encode, base step, one decode;
  (c)  a path shaped like the published release: the input encoded twice, base + 3 draft
       steps, all four branches decoded, then the fusion; timed with the release's kernels
       (as (a0)) and with ours (as (a));
  (d)  N-step base sampling, N = 4 and 50, extrapolated from the measured components;
and each component (encode, base step, draft step, decode, fusion), the peak GPU memory of (a)
and the DiT's TFLOP/s. Writes JSON to --out.

    python benchmarks/bench_inference.py --out benchmarks/results/inference_h100.json
"""
from __future__ import annotations

import argparse
import time

import torch

from common import build_models, dit_flops, environment, light_diffsynth, timeit, write_json


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=33)
    ap.add_argument("--height", type=int, default=720)
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--size", default="real", choices=["real", "tiny"])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--no_compile", action="store_true")
    ap.add_argument("--compile_vae", action="store_true", help="also compile the VAE's norms")
    ap.add_argument("--out", required=True)
    ap.add_argument("--first_call_only", action="store_true",
                    help="time only this process's first compiled window (compile-cache check: "
                         "run twice, the second process reads the caches)")
    a = ap.parse_args()
    light_diffsynth()
    from Wan_SR.core.caches import configure_compile_caches

    caches = configure_compile_caches()

    from Wan_SR.fusion.frequency import fuse_video
    from Wan_SR.sampling.pipeline import PSSRPipeline, SamplingConfig, pad_tile
    from Wan_SR.sampling.speculative import base_step, draft_step
    from Wan_SR.sampling.speed import attention_context

    dev = torch.device(a.device)
    dt = getattr(torch, a.dtype)
    cuda = dev.type == "cuda"
    base, draft, vae, ctx = build_models(a.size, dev, dt)
    res = {"env": environment(dev), "settings": vars(a), "components": {}, "paths": {}}
    C, P = res["components"], res["paths"]
    frames = torch.rand(a.frames, 3, a.height, a.width, device=dev)
    reps = dict(repeats=a.repeats, warmup=a.warmup)

    def make_pipe(fast: bool) -> PSSRPipeline:
        pipe = PSSRPipeline(vae, base, draft, ctx, None, SamplingConfig(), device=dev, dtype=dt,
                            attention="auto" if fast else None)
        return pipe

    fast = make_pipe(True)
    slow = make_pipe(False)
    slow.vae_fast = False  # the release's VAE forward
    tl = fast.timeline
    ids = fast.config.record_blocks
    last = f"base+draft_{len(fast.config.timestep_draft_list)}"

    def ours(pipe):
        out = pipe.run_tile(frames, ["base", last])
        return fuse_video(out["base"], out[last])

    def one_step(pipe):
        return pipe.run_tile(frames, ["base"])["base"]

    def published_shape(pipe):
        padded, (T, H, W) = pad_tile(frames)
        pipe.encode(padded)                 # the release encodes the input twice
        z_l = pipe.encode(padded)
        x0s = pipe.sample_latents(z_l)
        outs = [pipe.decode(x)[:T, :, :H, :W] for x in x0s]
        return fuse_video(outs[0], outs[-1])

    res["caches"] = caches
    with torch.no_grad():
        if a.first_call_only:
            torch.backends.cudnn.benchmark = cuda
            t0 = time.perf_counter()
            fast.optimize(compile=not a.no_compile, channels_last=True)
            ours(fast)
            if cuda:
                torch.cuda.synchronize()
            res["first_call_with_compile_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            ours(fast)
            if cuda:
                torch.cuda.synchronize()
            res["second_call_s"] = time.perf_counter() - t0
            write_json(res, a.out)
            return
        # ---------------- before the speed switches: (a0), and (c) with the release's kernels
        P["a0_ours_final_unoptimised"] = timeit(lambda: ours(slow), dev, **reps)
        P["c_published_shape_release_kernels"] = timeit(lambda: published_shape(slow), dev, **reps)
        # ---------------- switch on: channels-last VAE, cuDNN-first attention, compiled blocks
        if cuda:
            torch.backends.cudnn.benchmark = True
        t0 = time.perf_counter()
        fast.optimize(compile=not a.no_compile, channels_last=True,
                      compile_vae=a.compile_vae)
        ours(fast)  # first call compiles
        if cuda:
            torch.cuda.synchronize()
        res["first_call_with_compile_s"] = time.perf_counter() - t0
        P["a_ours_final"] = timeit(lambda: ours(fast), dev, **reps)
        if cuda:
            torch.cuda.reset_peak_memory_stats(dev)
            ours(fast)
            P["a_peak_gib"] = torch.cuda.max_memory_allocated(dev) / 2**30
        P["b_one_step"] = timeit(lambda: one_step(fast), dev, **reps)
        fast.vae_fast = False  # the same with the reference VAE forward (issue 17)
        P["a_ours_final_reference_vae"] = timeit(lambda: ours(fast), dev, **reps)
        P["b_one_step_reference_vae"] = timeit(lambda: one_step(fast), dev, **reps)
        C["encode_reference_vae"] = timeit(lambda: fast.encode(pad_tile(frames)[0]), dev, **reps)
        fast.vae_fast = None
        P["c_published_shape"] = timeit(lambda: published_shape(fast), dev, **reps)

        # ---------------- components (fast settings)
        padded, _ = pad_tile(frames)
        z_l = fast.encode(padded)
        C["encode"] = timeit(lambda: fast.encode(padded), dev, **reps)
        with attention_context(fast.attention, dev):
            b = base_step(base, z_l, fast.context, tl, record_blocks=ids)
            C["base_step"] = timeit(lambda: base_step(base, z_l, fast.context, tl, record_blocks=ids),
                                    dev, **reps)
            C["draft_step"] = timeit(lambda: draft_step(draft, b.z_next, z_l, fast.context, b.features,
                                                        tl, 599, 499), dev, **reps)
        C["decode"] = timeit(lambda: fast.decode(b.x0), dev, **reps)
        from Wan_SR.models.wan import vae_decode

        two = fast._memory_format(torch.cat([b.x0, b.x0], 0))
        C["decode_batch_of_2"] = timeit(lambda: vae_decode(vae, two), dev, **reps)
        x = fast.decode(b.x0)
        C["fusion"] = timeit(lambda: fuse_video(x, x), dev, **reps)
        tokens = z_l.shape[2] * (z_l.shape[3] // 2) * (z_l.shape[4] // 2)
        flops = dit_flops(tokens, ctx.shape[1], base.dim, base.config["ffn_dim"], len(base.blocks))
        res["dit_tflop_per_forward"] = flops / 1e12
        res["dit_tflops_per_s"] = flops / C["base_step"]["median_s"] / 1e12

    med = {k: v["median_s"] for k, v in C.items()}
    for n in (4, 50):
        P[f"d_{n}_step_base_extrapolated_s"] = med["encode"] + n * med["base_step"] + med["decode"]
    a_s = P["a_ours_final"]["median_s"]
    res["ratios"] = {
        "a_over_b": a_s / P["b_one_step"]["median_s"],
        "c_over_a": P["c_published_shape_release_kernels"]["median_s"] / a_s,
        "c_fast_kernels_over_a": P["c_published_shape"]["median_s"] / a_s,
        "a0_over_a": P["a0_ours_final_unoptimised"]["median_s"] / a_s,
        "a_reference_vae_over_a": P["a_ours_final_reference_vae"]["median_s"] / a_s,
        "a_over_b_reference_vae": (P["a_ours_final_reference_vae"]["median_s"]
                                   / P["b_one_step_reference_vae"]["median_s"]),
        "d4_over_a": P["d_4_step_base_extrapolated_s"] / a_s,
        "d50_over_a": P["d_50_step_base_extrapolated_s"] / a_s,
    }
    write_json(res, a.out)


if __name__ == "__main__":
    main()
