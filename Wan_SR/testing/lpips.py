"""Random LPIPS-VGG weights in the formats ``--lpips_weights`` accepts
(:mod:`Wan_SR.training.lpips`), for tests and GPU timing."""
from __future__ import annotations

from pathlib import Path

import torch

from ..training.lpips import (LEVEL_CHANNELS, LPIPS_LINEAR_FILE, LPIPSVGG, SLICE_OF_INDEX,
                              TORCHVISION_VGG16_FILE, VGG_CONV_INDICES, PathLike)


def _random_backbone(gen: torch.Generator) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """{feature index: (weight, bias)} of the VGG16 convolutions, torchvision's VGG init
    (Kaiming-normal fan_out, zero bias), shapes read off :class:`LPIPSVGG`."""
    with torch.device("meta"):
        features = LPIPSVGG().features
    backbone = {}
    for idx in VGG_CONV_INDICES:
        shape = tuple(features[idx].weight.shape)  # (c_out, c_in, 3, 3)
        w = torch.randn(shape, generator=gen) * (2.0 / (shape[0] * 9)) ** 0.5
        backbone[idx] = (w, torch.zeros(shape[0]))
    return backbone


def write_random_lpips_weights(path_or_dir: PathLike, seed: int = 0) -> list[Path]:
    """Write random LPIPS-VGG weights in an accepted ``--lpips_weights`` format; returns the files.

    * a folder (a path without a ``.pth`` suffix, created if needed): ``vgg16-397923af.pth``
      (torchvision key names, feature-stack entries only) and ``vgg.pth`` (``lin{k}.model.1.weight``
      as in the lpips package);
    * a ``.pth`` file: one whole LPIPS state dict with the lpips/pyiqa key names
      (``net.slice{k}.{i}.*``, ``lin{k}.model.1.weight``).

    The backbone uses torchvision's VGG init (Kaiming-normal fan_out, zero bias); the linear
    weights are uniform in [0, 1) / C_k (non-negative, like trained LPIPS).
    """
    gen = torch.Generator().manual_seed(int(seed))
    backbone = _random_backbone(gen)
    lins = {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1, generator=gen) / c
            for k, c in enumerate(LEVEL_CHANNELS)}
    p = Path(path_or_dir)
    if p.suffix == ".pth":
        p.parent.mkdir(parents=True, exist_ok=True)
        sd = {}
        for idx, (w, b) in backbone.items():
            sd[f"net.slice{SLICE_OF_INDEX[idx]}.{idx}.weight"] = w
            sd[f"net.slice{SLICE_OF_INDEX[idx]}.{idx}.bias"] = b
        torch.save({**sd, **lins}, p)
        return [p]
    p.mkdir(parents=True, exist_ok=True)
    tv = {}
    for idx, (w, b) in backbone.items():
        tv[f"features.{idx}.weight"] = w
        tv[f"features.{idx}.bias"] = b
    torch.save(tv, p / TORCHVISION_VGG16_FILE)
    torch.save(lins, p / LPIPS_LINEAR_FILE)
    return [p / TORCHVISION_VGG16_FILE, p / LPIPS_LINEAR_FILE]
