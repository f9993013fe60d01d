"""Seconds per step and peak GPU memory of the base trainer's step (issue 12), real Wan2.1-1.3B
shapes with random weights, bf16 frozen weights, gradient checkpointing, published loss weights
(latent l2 + pixel l2 + 2 LPIPS with random VGG weights + regulariser with cfg 5).

    python benchmarks/bench_train_base.py                  # GPU: 33x720x1280 and 17x480x832
    python benchmarks/bench_train_base.py --quick          # tiny shapes, CPU too

Two structures in one run:
- ``ours``: the trainer's own modules (:class:`Wan_SR.training.base.GeneratorLoss`,
  :class:`RegulariserLoss`), fp32 trainable parameters and AdamW states, bf16 autocast, cuDNN
  attention first, nothing recorded, prompt embeddings from the cache (no text encoder on the
  GPU);
- ``published``: the release's structure on the same machine: pure bf16 trainable parameters and
  AdamW states, no autocast, the 11 GB umT5 encoder resident on the GPU, and the 15 feature maps
  of k_select 2 recorded during the base step (unused), torch's default attention choice.
One step = encode HQ and LQ, base forward + backward, clipped base update, regulariser update.
Writes benchmarks/results/train_base_<gpu>.json (per shape and structure: s_per_step, peak_gib).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time

import torch

from common import ROOT, environment, light_diffsynth, results_path, sync, write_json

sys.path.insert(0, str(ROOT))


def build(size: str, device, published: bool):
    light_diffsynth()
    from diffsynth.models.wan_video_dit import WanModel
    from diffsynth.models.wan_video_vae import VideoVAE_, WanVideoVAE

    from Wan_SR.models.lora import inject_lora
    from Wan_SR.models.wan import widen_patch_embedding
    from Wan_SR.testing.checkpoints import REAL_DIT, REAL_VAE, TINY_DIT, TINY_VAE
    from Wan_SR.training.models import unfreeze_full_tensors, upcast_trainable

    real = size == "real"
    cfg = dict(REAL_DIT if real else TINY_DIT)
    targets = ["q", "k", "v", "o", "ffn.0", "ffn.2"]
    rank = 32 if real else 4

    def dit(trainable: bool, widen: bool):
        with torch.device(device):
            m = WanModel(**cfg)
        m.config = dict(cfg)
        with torch.no_grad():
            for blk in m.blocks:
                blk.modulation.mul_(0.1)
        m = m.to(torch.bfloat16).requires_grad_(False)
        if widen:
            widen_patch_embedding(m)
        if trainable:
            inject_lora(m, rank, targets)
            unfreeze_full_tensors(m)
            if not published:
                upcast_trainable(m)
        return m.to(device)

    base, fix, upd = dit(True, True), dit(False, False), dit(True, False)
    with torch.device(device):
        vae = WanVideoVAE(z_dim=16)
        vae.model = VideoVAE_(**(REAL_VAE if real else TINY_VAE))
    vae = vae.to(torch.bfloat16).eval().requires_grad_(False)
    t5 = None
    if published and real:  # the release keeps the umT5-xxl encoder on the GPU
        from diffsynth.models.wan_video_text_encoder import WanTextEncoder

        from Wan_SR.testing.checkpoints import REAL_T5

        with torch.device(device):
            t5 = WanTextEncoder(**REAL_T5).to(torch.bfloat16).requires_grad_(False)
    return base, fix, upd, vae, t5, cfg


def bench(shape, size, device, published, repeats, warmup, lpips_dir, **loss_over):
    from Wan_SR.models.wan import vae_encode
    from Wan_SR.sampling.timeline import FlowTimeline
    from Wan_SR.training import base as tb
    from Wan_SR.training.lpips import load_lpips
    from Wan_SR.training.models import trainable_parameters
    from Wan_SR.training.options import LossOptions

    torch.cuda.empty_cache() if device.type == "cuda" else None
    base, fix, upd, vae, t5, cfg = build(size, device, published)
    opts = LossOptions(pixel_crop=20 if size == "real" else 2, **loss_over)
    tl = FlowTimeline()
    lp = load_lpips(lpips_dir, device=device)
    gen = tb.GeneratorLoss(base, vae, tl, opts, fix, upd, lp, None, checkpointing=True)
    reg = tb.RegulariserLoss(upd, tl)
    if published:  # 15 unused feature maps recorded in the base step (k_select 2)
        import functools

        import Wan_SR.training.base as mod

        orig = mod.base_step
        mod.base_step = functools.partial(orig, record_blocks=list(range(1, len(base.blocks), 2)))
    adamw = lambda ps: torch.optim.AdamW(ps, lr=5e-5, weight_decay=0.01)  # noqa: E731
    opt_b, opt_r = adamw(trainable_parameters(base)), adamw(trainable_parameters(upd))
    T, H, W = shape
    g = torch.Generator().manual_seed(0)
    hq = (torch.rand(1, 3, T, H, W, generator=g) * 2 - 1).to(device, torch.bfloat16)
    lq = (torch.rand(1, 3, T, H, W, generator=g) * 2 - 1).to(device, torch.bfloat16)
    ctx = torch.randn(1, 512, cfg["text_dim"], generator=g).to(device, torch.bfloat16)
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if not published
                else torch.autocast(device.type, enabled=False))

    from Wan_SR.sampling.speed import attention_context

    def step(k):
        with attention_context("auto" if not published else None, device):
            return _step(k)

    def _step(k):
        with torch.no_grad():
            z_h, z_l = vae_encode(vae, hq), vae_encode(vae, lq)
        pixel = opts.train_video_pixel and (opts.alpha_pixel_l2 > 0 or opts.alpha_pixel_lpips > 0)
        d = tb.draw_step(torch.Generator().manual_seed(k), z_l.shape, tl, z_l.dtype, opts, pixel,
                         opts.alpha_reg > 0)
        with autocast:
            res = gen(z_l, z_h, hq, ctx, ctx, d)
        loss = tb.weighted_total(res, opts, False)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable_parameters(base), 1.0)
        opt_b.step()
        opt_b.zero_grad(set_to_none=True)
        if opts.alpha_reg > 0:
            with autocast:
                ld = reg(res["x0"].detach(), ctx, d.diff_t, d.diff_noise)
            ld.backward()
            torch.nn.utils.clip_grad_norm_(trainable_parameters(upd), 1.0)
            opt_r.step()
            opt_r.zero_grad(set_to_none=True)
        return float(loss)

    for k in range(warmup):
        step(k)
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    ts, losses = [], []
    for k in range(repeats):
        t0 = time.perf_counter()
        losses.append(step(100 + k))
        sync(device)
        ts.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else None
    if published:
        mod.base_step = orig
    del base, fix, upd, vae, t5, gen, reg, opt_b, opt_r
    return {"s_per_step": round(statistics.median(ts), 3), "runs": [round(t, 3) for t in ts],
            "peak_gib": round(peak, 2) if peak is not None else None,
            "loss_finite": all(map(lambda v: v == v, losses))}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny shapes (CPU works)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--structures", default="ours,published")
    p.add_argument("--out", default=None)
    p.add_argument("--ablate", action="store_true",
                   help="also time 'ours' at the first shape without pixel losses, without "
                        "LPIPS and without the regulariser (where the memory goes)")
    a = p.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    size = "tiny" if a.quick else "real"
    shapes = [(9, 32, 48)] if a.quick else [(33, 720, 1280), (17, 480, 832)]
    from Wan_SR.testing.lpips import write_random_lpips_weights

    lpips_dir = tempfile.mkdtemp()
    write_random_lpips_weights(lpips_dir)
    res = {"env": environment(device), "quick": a.quick, "lora_rank": 32 if not a.quick else 4,
           "shapes": {}}
    for shape in shapes:
        key = "x".join(map(str, shape))
        res["shapes"][key] = {}
        for s in a.structures.split(","):
            t0 = time.perf_counter()
            r = bench(shape, size, device, s == "published", a.repeats, a.warmup, lpips_dir)
            r["wall_s"] = round(time.perf_counter() - t0, 1)
            res["shapes"][key][s] = r
            print(key, s, r, flush=True)
        sh = res["shapes"][key]
        if "ours" in sh and "published" in sh:
            sh["published_over_ours_time"] = round(sh["published"]["s_per_step"]
                                                   / sh["ours"]["s_per_step"], 3)
            if sh["ours"]["peak_gib"]:
                sh["published_over_ours_memory"] = round(sh["published"]["peak_gib"]
                                                         / sh["ours"]["peak_gib"], 3)
    if a.ablate:
        shape = shapes[0]
        res["ablation"] = {}
        for name, over in (("no_pixel", dict(train_video_pixel=False)),
                           ("no_lpips", dict(alpha_pixel_lpips=0.0)),
                           ("no_regulariser", dict(alpha_reg=0.0)),
                           ("encode_and_base_only", dict(train_video_pixel=False, alpha_reg=0.0))):
            r = bench(shape, size, device, False, 2, 1, lpips_dir, **over)
            res["ablation"][name] = r
            print("ablation", name, r, flush=True)
    write_json(res, a.out or results_path("train_base", res["env"], a.quick))


if __name__ == "__main__":
    main()
