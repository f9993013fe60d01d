"""What do CUDA graphs give the trainers' pixel losses, and do they change a number? The pixel
losses of one 33x720x1280 sample (Wan_SR.training.losses.PixelLoss: the 20x20-latent crop
decoded by the Wan VAE with gradients, LPIPS-VGG), forward and backward under bf16 autocast as the
trainers run them, random weights of the real sizes, in ONE process: without graphs (every kernel
launched by Python) and replayed from graphs (--cuda_graphs, the trainers' GPU default).

Measures: seconds per forward+backward (median over --repeats, after the graphed path's capture),
the first graphed call (three warm-up runs and the capture), the peak memory of each path, and
how far the graphed values and gradients are from the plain ones over the same random crops.

    python benchmarks/training/pixel_graphs.py --light
    python benchmarks/training/pixel_graphs.py --quick     # tiny sizes; graphs need a GPU
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository
from benchmarks import wan_sr as ws  # noqa: E402
from benchmarks.common import (add_clip_shape, parse, parser, peak_gib,  # noqa: E402
                               record, reset_peak, save, sync, timeit)
from Wan_SR.training.losses import PixelLoss, crop_box  # noqa: E402
from Wan_SR.training.lpips import load_lpips  # noqa: E402

NAME = "training/pixel_graphs"


def one_pass(pl: PixelLoss, leaf: torch.Tensor, hq: torch.Tensor, box, dtype) -> tuple:
    """The trainers' pixel losses of ``box`` (published weights 1 and 2), backward to ``leaf``:
    (loss values, the gradient)."""
    leaf.grad = None
    with torch.autocast(leaf.device.type, dtype=dtype, enabled=dtype != torch.float32):
        x0 = leaf.to(dtype)  # as the DiT's output: a non-leaf in the activations' dtype
        terms = pl.terms(x0, hq, box, 1.0, 2.0)
    sum(w * v for _, w, v in terms).backward()
    return [v.detach().clone() for _, _, v in terms], leaf.grad.clone()


def main(argv=None):
    p = parser(__doc__, repeats=20, unit="forward+backward passes",
               quick="tiny VAE, 9x64x64 clip, CPU without a GPU")
    add_clip_shape(p)
    p.add_argument("--crop", type=int, default=20, help="latent crop side (default: 20)")
    args = parse(p, argv)
    device, (frames, height, width), dtype, vae = ws.training_vae(args)
    with tempfile.TemporaryDirectory() as tmp:
        ws.write_random_lpips_weights(Path(tmp) / "lpips")
        lpips = load_lpips(Path(tmp) / "lpips", device=device)
    g = torch.Generator().manual_seed(0)
    lat = (1, 16, (frames - 1) // 4 + 1, height // 8, width // 8)
    leaf = (torch.randn(lat, generator=g)).to(device).requires_grad_(True)
    hq = (torch.rand(1, 3, frames, height, width, generator=g) * 2 - 1).to(device, dtype)
    boxes = [crop_box(lat[-2:], args.crop, g) for _ in range(args.repeats)]
    result = record(args, device)

    plain, graphed = PixelLoss(vae, lpips), PixelLoss(vae, lpips, graphs=True)
    one_pass(plain, leaf, hq, boxes[0], dtype)  # cuDNN's autotuning, outside the timings
    reset_peak(device)
    it = iter(boxes * 2)
    plain_s = timeit(lambda: one_pass(plain, leaf, hq, next(it), dtype), device, args.repeats,
                     warmup=0)
    plain_peak = peak_gib(device)
    reset_peak(device)
    t0 = time.perf_counter()
    one_pass(graphed, leaf, hq, boxes[0], dtype)
    sync(device)
    first_graphed = time.perf_counter() - t0
    it = iter(boxes * 2)
    graphed_s = timeit(lambda: one_pass(graphed, leaf, hq, next(it), dtype), device, args.repeats,
                       warmup=0)
    graphed_peak = peak_gib(device)

    # the same crops through both paths: values and gradients
    worst_value = worst_grad = 0.0
    for box in boxes:
        (va, ga), (vb, gb) = one_pass(plain, leaf, hq, box, dtype), \
            one_pass(graphed, leaf, hq, box, dtype)
        worst_value = max([worst_value] + [((a - b).abs() / b.abs().clamp_min(1e-12)).item()
                                           for a, b in zip(va, vb)])
        worst_grad = max(worst_grad, ((ga - gb).norm() / gb.norm().clamp_min(1e-30)).item())
    runner = graphed.run
    result.update({
        "shape": [frames, height, width], "latent_crop": args.crop,
        "graphs_used": getattr(runner, "replays", 0) > 0,
        "captures": getattr(runner, "captures", 0),
        "plain_s": plain_s, "graphed_s": graphed_s,
        "first_graphed_call_s": round(first_graphed, 3),
        "graphed_over_plain": graphed_s["median_s"] / plain_s["median_s"],
        "plain_peak_gib": plain_peak, "graphed_peak_gib": graphed_peak,
        "max_rel_diff_losses": worst_value, "max_rel_diff_gradient_norm": worst_grad,
    })
    save(result, args, NAME)


if __name__ == "__main__":
    main()
