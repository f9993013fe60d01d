"""Where does step 1's GPU memory go? The weights of every model, and the peak above them of each
phase of one step-1 window (encode, base step, draft steps, each decode, fusion), the text
encoder's and the tagger's own peaks, and the host-to-device copy speed (pinned and pageable
memory) that offloading pays. Random weights of the real sizes, bf16, no compile.

    python benchmarks/inference/memory_profile.py --light
    python benchmarks/inference/memory_profile.py --quick
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository
from benchmarks import wan_sr as ws  # noqa: E402
from benchmarks.common import (add_clip_shape, default_device, parse, parser,  # noqa: E402
                               record, save, sync)

NAME = "inference/memory_profile"
GIB = 2 ** 30


def nbytes(module) -> float:
    """GiB of a module's parameters and buffers."""
    return sum(t.numel() * t.element_size()
               for t in list(module.parameters()) + list(module.buffers())) / GIB


def phase(device, fn) -> tuple:
    """``(result, {"s", "peak_above_gib", "kept_gib"})`` of ``fn()``: the peak allocated above
    what was allocated before, and what it left allocated."""
    sync(device)
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    info = {"s": round(time.perf_counter() - t0, 4)}
    if cuda:
        info["peak_above_gib"] = round((torch.cuda.max_memory_allocated(device) - before) / GIB, 3)
        info["kept_gib"] = round((torch.cuda.memory_allocated(device) - before) / GIB, 3)
    return out, info


def copy_speed(device, gib: float) -> dict:
    """GB/s of host-to-device copies of ``gib`` GiB, from pinned and from pageable memory."""
    if torch.device(device).type != "cuda":
        return {}
    n = int(gib * GIB) // 2
    out = {}
    for name, pin in (("pinned", True), ("pageable", False)):
        host = torch.empty(n, dtype=torch.bfloat16, pin_memory=pin)
        dev = torch.empty(n, dtype=torch.bfloat16, device=device)
        dev.copy_(host, non_blocking=pin)
        sync(device)
        t0 = time.perf_counter()
        for _ in range(3):
            dev.copy_(host, non_blocking=pin)
        sync(device)
        out[f"{name}_gb_per_s"] = round(3 * n * 2 / (time.perf_counter() - t0) / 1e9, 2)
        del host, dev
    return out


def window_phases(pipe, frames, device) -> dict:
    res = {}
    padded, (T, H, W) = ws.pad_tile(frames)
    with torch.no_grad(), ws.pipeline_attention(pipe):
        z_l, res["encode"] = phase(device, lambda: pipe.encode(padded))
        b, res["base_step"] = phase(device, lambda: ws.base_step(
            pipe.base, z_l, pipe.context, pipe.timeline, record_blocks=pipe.config.record_blocks))
        res["recorded_features_gib"] = round(sum(f.numel() * f.element_size()
                                                 for f in b.features) / GIB, 3)
        tl = list(pipe.config.timestep_draft_list)
        (x0s, _), res["draft_steps"] = phase(device, lambda: ws.draft_steps(
            pipe.draft, b.z_next, z_l, pipe.context, b.features, pipe.timeline, tl))
        x0_base = b.x0
        del b
        base_px, res["decode_base"] = phase(device, lambda: pipe.decode(x0_base))
        last_px, res["decode_last"] = phase(device, lambda: pipe.decode(x0s[-1]))
        _, res["fusion"] = phase(device, lambda: ws.fuse_video(base_px[:T], last_px[:T]))
    return res


def main(argv=None):
    p = parser(__doc__, repeats=1, unit="unused", quick="tiny models, a 5-frame 64x64 window")
    add_clip_shape(p)
    p.add_argument("--no_text", action="store_true", help="skip the text encoder (11 GB)")
    args = parse(p, argv)
    device = default_device()
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    size = "tiny" if args.quick else "real"
    T, H, W = (5, 64, 64) if args.quick else (args.frames, args.height, args.width)
    res = record(args, device)
    base, draft, vae, ctx = ws.random_models(size, device, dtype)
    res["weights_gib"] = {"base": round(nbytes(base), 3), "base_block": round(nbytes(base.blocks[0]), 4),
                          "base_blocks": len(base.blocks), "draft": round(nbytes(draft), 3),
                          "draft_blocks": len(draft.blocks), "vae": round(nbytes(vae), 3)}
    pipe = ws.optimize(ws.make_pipeline(base, draft, vae, ctx, device, dtype, fast=True),
                       compile=False)
    frames = torch.rand(T, 3, H, W, device=device)
    window_phases(pipe, frames, device)  # warm-up (kernel choice)
    res["window"] = window_phases(pipe, frames, device)
    res["window_shape"] = [T, H, W]
    if device == "cuda":
        res["allocated_after_window_gib"] = round(torch.cuda.memory_allocated() / GIB, 3)
        res["reserved_gib"] = round(torch.cuda.max_memory_reserved() / GIB, 3)
    res["copy"] = copy_speed(device, 0.25 if args.quick else 2.0)
    tagger, res["tagger_load"] = phase(device, lambda: ws.random_tagger(size, device, dtype))
    res["weights_gib"]["tagger"] = round(nbytes(tagger), 3)
    img = torch.rand(3, H, W, device=device)
    with torch.no_grad():
        tagger.tags(img)
        _, res["tagger_tags"] = phase(device, lambda: tagger.tags(img))
    del tagger
    if not args.no_text:
        enc = ws.random_text_encoder(size, "cpu", dtype)
        res["weights_gib"]["text"] = round(nbytes(enc), 3)
        res["weights_gib"]["text_embedding"] = round(nbytes(enc.token_embedding), 3)
        res["weights_gib"]["text_block"] = round(nbytes(enc.blocks[0]), 4)
        enc, res["text_to_device"] = phase(device, lambda: enc.to(device))
        ids = torch.randint(0, 1000, (1, 512), device=device)
        mask = torch.ones(1, 512, dtype=torch.long, device=device)
        with torch.no_grad():
            enc(ids, mask)
            _, res["text_encode"] = phase(device, lambda: enc(ids, mask))
    return save(res, args, NAME)


if __name__ == "__main__":
    main()
