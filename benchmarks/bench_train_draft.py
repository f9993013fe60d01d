"""Seconds per batch (three draft updates) and peak GPU memory of the draft trainer (issue 13),
real Wan2.1-1.3B shapes with random weights, k_select 1.5 (10 of 30 blocks), bf16 frozen weights,
fp32 draft (masters and AdamW states), gradient checkpointing, published loss weights (latent l2
+ pixel l2 + 2 LPIPS with random VGG weights), cuDNN attention first.

    python benchmarks/bench_train_draft.py            # GPU: 33x720x1280
    python benchmarks/bench_train_draft.py --quick    # tiny shapes, CPU too

One batch = encode HQ and LQ, the frozen base step (no grad, features of the kept blocks), then
for each of 599/499/399: a draft step, its losses, backward, clipped AdamW update.
Writes benchmarks/results/train_draft_<gpu>.json (s_per_batch, peak_gib).
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


def bench(shape, quick, device, repeats, warmup, lpips_dir):
    light_diffsynth()
    from diffsynth.models.wan_video_dit import WanModel
    from diffsynth.models.wan_video_vae import VideoVAE_, WanVideoVAE

    from Wan_SR.models.draft import build_draft
    from Wan_SR.models.wan import vae_encode, widen_patch_embedding
    from Wan_SR.sampling.speculative import base_step
    from Wan_SR.sampling.speed import attention_context
    from Wan_SR.sampling.timeline import FlowTimeline
    from Wan_SR.testing.checkpoints import REAL_DIT, REAL_VAE, TINY_DIT, TINY_VAE
    from Wan_SR.training import losses
    from Wan_SR.training.draft import DraftLoss, condition, weighted
    from Wan_SR.training.lpips import load_lpips
    from Wan_SR.training.models import trainable_parameters, upcast_trainable
    from Wan_SR.training.options import LossOptions

    cfg = dict(TINY_DIT if quick else REAL_DIT)
    with torch.device(device):
        base = WanModel(**cfg)
        vae = WanVideoVAE(z_dim=16)
        vae.model = VideoVAE_(**(TINY_VAE if quick else REAL_VAE))
    base.config = dict(cfg)
    with torch.no_grad():
        for blk in base.blocks:
            blk.modulation.mul_(0.1)
    widen_patch_embedding(base)
    base = base.to(torch.bfloat16).requires_grad_(False).eval()
    vae = vae.to(torch.bfloat16).requires_grad_(False).eval()
    draft = build_draft(base, 1.5).to(device).train().requires_grad_(True)
    upcast_trainable(draft)
    opts = LossOptions(pixel_crop=2 if quick else 20, alpha_reg=0.0)
    tl = FlowTimeline()
    module = DraftLoss(draft, vae, tl, opts, load_lpips(lpips_dir, device=device), True)
    params = trainable_parameters(draft)
    optimizer = torch.optim.AdamW(params, lr=5e-5, weight_decay=0.01)
    T, H, W = shape
    g = torch.Generator().manual_seed(0)
    hq = (torch.rand(1, 3, T, H, W, generator=g) * 2 - 1).to(device, torch.bfloat16)
    lq = (torch.rand(1, 3, T, H, W, generator=g) * 2 - 1).to(device, torch.bfloat16)
    ctx = torch.randn(1, 512, cfg["text_dim"], generator=g).to(device, torch.bfloat16)
    tlist = [599.0, 499.0, 399.0]

    def batch(k):
        gg = torch.Generator().manual_seed(k)
        with attention_context("auto", device):
            with torch.no_grad():
                z_h, z_l = vae_encode(vae, hq), vae_encode(vae, lq)
                b = base_step(base, z_l, ctx, tl, t_base=699, t_next=tlist[0],
                              record_blocks=draft.block_ids)
            z, cond = b.z_next, condition(z_l, "zeros")
            for i, t in enumerate(tlist):
                t_next = tlist[i + 1] if i + 1 < len(tlist) else 0.0
                crop = losses.crop_box(tuple(z_l.shape[-2:]), opts.pixel_crop, gg)
                with torch.autocast(device.type, dtype=torch.bfloat16):
                    res, z = module(z, cond, ctx, b.features, t, t_next, z_h, hq, crop)
                weighted(res, opts).backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)

    for k in range(warmup):
        batch(k)
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    ts = []
    for k in range(repeats):
        t0 = time.perf_counter()
        batch(100 + k)
        sync(device)
        ts.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else None
    return {"s_per_batch": round(statistics.median(ts), 3), "runs": [round(t, 3) for t in ts],
            "peak_gib": round(peak, 2) if peak is not None else None,
            "draft_blocks": len(draft.block_ids),
            "draft_params_m": round(sum(p.numel() for p in params) / 1e6, 1)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    from Wan_SR.testing.lpips import write_random_lpips_weights

    lpips_dir = tempfile.mkdtemp()
    write_random_lpips_weights(lpips_dir)
    shape = (9, 32, 48) if a.quick else (33, 720, 1280)
    res = {"env": environment(device), "quick": a.quick, "k_select": 1.5,
           "shape": "x".join(map(str, shape)),
           "result": bench(shape, a.quick, device, a.repeats, a.warmup, lpips_dir)}
    print(res["result"], flush=True)
    write_json(res, a.out or results_path("train_draft", res["env"], a.quick))


if __name__ == "__main__":
    main()
