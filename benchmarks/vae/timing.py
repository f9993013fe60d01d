"""The one VAE timing of the benchmarks (``vae/speed.py`` and ``inference/window.py`` call it)."""
from __future__ import annotations

import torch

from benchmarks import wan_sr
from benchmarks.common import timeit


def random_video(frames: int, height: int, width: int, device, dtype,
                 channels_last: bool) -> torch.Tensor:
    """A (1, 3, T, H, W) clip in [-1, 1], in the memory format step 1 feeds the VAE."""
    video = torch.rand(1, 3, frames, height, width, device=device, dtype=dtype) * 2 - 1
    return video.contiguous(memory_format=torch.channels_last_3d) if channels_last else video


def vae_timings(vae, video: torch.Tensor, latent: torch.Tensor, device, repeats: int,
                warmup: int = 1, fast=None) -> dict:
    """``{"encode", "decode"}``: :func:`benchmarks.common.timeit` of encoding ``video`` and of
    decoding ``latent``; ``fast``: True the fused path, False the reference, None the default."""
    with torch.no_grad():
        return {"encode": timeit(lambda: wan_sr.vae_encode(vae, video, fast=fast), device,
                                 repeats, warmup),
                "decode": timeit(lambda: wan_sr.vae_decode(vae, latent, fast=fast), device,
                                 repeats, warmup)}
