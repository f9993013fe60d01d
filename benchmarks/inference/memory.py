"""What does each GPU memory budget cost? Step 1 (``inference_step_1.py --outputs final``, tags
on, a prompt cache of its own so every clip's tagged prompt is new) on smaller cards emulated on
the big GPU: the caching allocator capped at the card's budget (``light_run.py --memory_cap``)
and ``--vram_budget`` set to it; at 720p and 1080p (``--upscale 1.5``, the default 720x1280
tiles). Per run: peak reserved and allocated memory, frames/s of the clip, the ratio to the
uncapped default, whether it ran out of memory, the plan step 1 chose, and the bytes it copied
from host memory per window tile (so the cost on a desktop's PCIe link can be worked out).

Before the runs, in this process: the VAE's exact tiles against the untiled VAE on one window
(float32 and bf16; the budget modes compute the same values, only kernel choices may differ),
beside bf16's own distance from float32.

    python benchmarks/inference/memory.py --light --out benchmarks/results/memory_h200.json
    python benchmarks/inference/memory.py --quick
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository
from benchmarks import wan_sr as ws  # noqa: E402
from benchmarks.commands import prepare  # noqa: E402
from benchmarks.common import ROOT, default_device, parse, parser, record, save  # noqa: E402
from benchmarks.inference.e2e import speed  # noqa: E402
from benchmarks.vae.speed import psnr  # noqa: E402  (of videos in [-1, 1])

NAME = "inference/memory"
# card (GB) -> the GiB its budget leaves to PyTorch (the CUDA context takes the rest)
CARDS = {"24": 22.5, "16": 14.5, "12": 10.5, "8": 6.5}
SIZES = {"720p": 1.0, "1080p": 1.5}  # --upscale of the 720p clip
PLAN_LINE = re.compile(r"GPU memory: budget ([\d.]+) GiB, planned peak ([\d.]+) GiB; (.*)")
STREAM_LINE = re.compile(r"DiT weights streamed from host memory: ([\d.]+) GiB "
                         r"\(([\d.]+) GiB per window tile\)")
TEXT_LINE = re.compile(r"text encoder: ([\d.]+) GiB streamed")
PCIE4_GB_S = 25.0


def vae_values(device, quick: bool) -> dict:
    """The VAE's exact tiles (the smallest card's (1, 4)) against the untiled VAE on one window,
    in bf16 and float32, beside the bf16 floor (bf16 against float32, untiled)."""
    from Wan_SR.models import vae_tiles

    size, (t, h, w) = ("tiny", (3, 8, 12)) if quick else ("real", (9, 90, 160))
    torch.manual_seed(0)
    z = torch.randn(1, 16, t, h, w, device=device)
    out = {}
    for dtype in (torch.float32, torch.bfloat16):
        vae = ws.random_vae(size, device, dtype)
        with torch.no_grad():
            full = ws.vae_decode(vae, z.to(dtype)).float()
            tiled = vae_tiles.decode(vae, z.to(dtype), (1, 4)).clamp_(-1, 1).float()
            video = full.to(dtype)
            enc_full = ws.vae_encode(vae, video).float()
            enc_tiled = vae_tiles.encode(vae, video, (1, 4)).float()
        name = str(dtype).replace("torch.", "")
        out[name] = {"decode_psnr_db_tiles_vs_untiled": psnr(tiled, full),
                     "decode_max_abs": (tiled - full).abs().max().item(),
                     "encode_max_abs": (enc_tiled - enc_full).abs().max().item()}
        out.setdefault("_decoded", {})[name] = full
    d = out.pop("_decoded")
    out["bf16_floor_psnr_db"] = psnr(d["bfloat16"], d["float32"])
    return out


def one_run(launch, clip_dir: Path, name: str, extra: list, cap, prompts, quick: bool,
            timeout: float) -> dict:
    """One step-1 run (``prompts``: a prompt cache of its own and tags on; None: no tags)."""
    out_dir = launch.work / f"out_{name}"
    root = launch.root / "dependent_models"
    tags = ["--no_tags"] if prompts is None else [
        "--ram_path", root / "ram_swin_large_14m.pth", "--DAPE_path", root / "DAPE.pth",
        "--prompt_cache_dir", prompts]
    script = [ROOT / "inference_step_1.py", "--input_dir", clip_dir, "--output_dir", out_dir,
              "--outputs", "final", "--no_progress", "--wan_model_dir", launch.wan_dir,
              "--lora_base_path", launch.base_checkpoint, "--lora_draft_path",
              launch.draft_checkpoint, *tags, *extra]
    if quick:
        script += ["--device", "cpu", "--torch_dtype", "float32"]
    r = launch.run(script, memory_cap=cap, timeout=timeout)
    s = speed(r.log, 1)
    res = {"returncode": r.returncode, "frames_per_s": s["frames_per_s"],
           "peak_reserved_gib": r.summary()["peak_reserved_gib"],
           "peak_allocated_gib": r.summary()["peak_gib"],
           "oom": "out of GPU memory" in r.log or "OutOfMemoryError" in r.log,
           "budget_gib": cap}
    m = PLAN_LINE.search(r.log)
    if m:
        res.update(planned_peak_gib=float(m.group(2)), plan=m.group(3))
    m = STREAM_LINE.search(r.log)
    per_tile = float(m.group(2)) if m else 0.0
    res["dit_gib_per_window_tile"] = per_tile
    res["pcie4_s_per_window_tile"] = round(per_tile * 2 ** 30 / (PCIE4_GB_S * 1e9), 3)
    m = TEXT_LINE.search(r.log)
    res["text_encoder_gib_per_clip"] = float(m.group(1)) if m else 0.0
    if r.returncode:
        res["log_tail"] = r.log[-1200:]
    print(f"{name}: {json.dumps({k: v for k, v in res.items() if k != 'log_tail'})}", flush=True)
    return res


def main(argv=None):
    p = parser(__doc__, repeats=1, unit="unused",
               quick="tiny checkpoints on the CPU, a 9-frame 160x90 clip")
    p.add_argument("--clip", default=str(ROOT / "videos_for_test" / "input" / "3.mp4"))
    p.add_argument("--sizes", default="720p,1080p")
    p.add_argument("--cards", default=",".join(CARDS), help="cards to emulate (GB)")
    p.add_argument("--timeout", type=float, default=150, help="seconds per run at most")
    p.add_argument("--no_check", action="store_true", help="skip the in-process VAE check")
    p.add_argument("--no_default", action="store_true",
                   help="skip the uncapped runs (their numbers come from another result)")
    p.add_argument("--no_warmup", action="store_true",
                   help="skip the first, untimed run (it fills the kernel caches that every later "
                        "run reads, so the first measured run is not slower for building them)")
    p.add_argument("--no_tags", action="store_true",
                   help="runs without the tagger and the text encoder (no 11 GB file to write)")
    p.add_argument("--work", default="/tmp/pssr_memory")
    args = parse(p, argv)
    device = "cpu" if args.quick else default_device()
    launch = prepare(args.work, args.quick, args.light, tags=not args.no_tags)
    clip_dir = launch.work / "clip"
    clip_dir.mkdir(parents=True, exist_ok=True)
    src = Path(args.clip).resolve()
    link = clip_dir / src.name
    if not link.exists():
        link.symlink_to(src)
    res = record(args, device)
    if not args.no_check:
        try:
            res["vae_values"] = vae_values(device, args.quick)
        except Exception as e:  # noqa: BLE001  (the runs below still tell their story)
            res["vae_values"] = {"error": repr(e)[:500]}
        save(res, args, NAME)
    if not args.no_warmup:
        warm = one_run(launch, clip_dir, "warmup", ["--upscale", "0.125" if args.quick else "1"],
                       None, None, args.quick, args.timeout)
        res["warmup"] = {k: warm[k] for k in ("returncode", "frames_per_s")}
    for size in args.sizes.split(","):
        runs = res.setdefault(size, {})
        extra = ["--upscale", f"{SIZES[size] * (0.125 if args.quick else 1):g}"]
        for card in ([] if args.no_default else ["default"]) + args.cards.split(","):
            cap = None if card == "default" else CARDS[card]
            runs[card] = one_run(launch, clip_dir, f"{size}_{card}",
                                 extra + ([] if cap is None else ["--vram_budget", str(cap)]),
                                 cap, None if args.no_tags else
                                 launch.work / f"prompts_{size}_{card}", args.quick, args.timeout)
            if card == "default" and size == "720p":  # the same again: every prompt cached
                cached = one_run(launch, clip_dir, "720p_default_cached", extra, None,
                                 None if args.no_tags else launch.work / f"prompts_{size}_{card}",
                                 args.quick, args.timeout)
                res["default_cached_fps"] = cached["frames_per_s"]
                res["default_cached"] = cached
            base = runs.get("default", {}).get("frames_per_s")
            runs[card]["ratio_to_default"] = runs[card]["frames_per_s"] / base if base else None
            save(res, args, NAME)
    return save(res, args, NAME)


if __name__ == "__main__":
    main()
