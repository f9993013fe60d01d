"""Tiny random DOVER / FasterVQA / RAFT weight files in the official layouts (the keys the
official code loads strictly), and the synthetic clips the conformance fixtures were made on."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torchvision.models.optical_flow import raft_large

from ..metrics.vqa_nets import (ConvNeXt3D, SwinConfig, Swin3D, VQAHead)

TINY_SWIN = SwinConfig(embed_dim=8, depths=(2, 2, 2, 2), heads=(1, 2, 2, 4),
                       hidden=(32, 64, 128, 256), window=(8, 7, 7),
                       frag_bias=(True, True, True, False), patch=(2, 4, 4))
TINY_CONVNEXT = ((8, 16, 32, 64), ((1, 3), (1, 3), (1, 3, 1), (1,)))
TINY_HEAD_HIDDEN = 16
RAFT_FILE = "raft_large_C_T_SKHT_V2-ff5fadd5.pth"


def _randomise(module: torch.nn.Module, gen: torch.Generator) -> dict:
    """A state dict of ``module`` with random values of a useful scale (index buffers kept)."""
    sd = {}
    for k, v in module.state_dict().items():
        if "relative_position_index" in k:
            sd[k] = v.clone()
            continue
        r = torch.randn(v.shape, generator=gen)
        if k.endswith("bias_table"):
            sd[k] = 0.5 * r
        elif k.endswith("gamma"):
            sd[k] = 0.5 + 0.1 * r
        elif v.ndim == 1 and ("norm" in k or k.endswith(".1.weight") or k.endswith(".0.weight")):
            sd[k] = (1.0 + 0.1 * r) if k.endswith("weight") else 0.1 * r
        elif v.ndim == 1:
            sd[k] = 0.1 * r
        else:
            fan_in = v[0].numel()
            sd[k] = r / fan_in ** 0.5
    return sd


def _prefixed(prefix: str, sd: dict) -> dict:
    return {f"{prefix}.{k}": v for k, v in sd.items()}


def write_tiny_dover(path: str | Path, seed: int = 0) -> Path:
    """``DOVER.pth`` layout: technical Swin3D (GRPB), aesthetic ConvNeXt3D, two heads."""
    gen = torch.Generator().manual_seed(seed)
    width = TINY_SWIN.embed_dim * 2 ** (len(TINY_SWIN.depths) - 1)
    sd = {}
    sd.update(_prefixed("technical_backbone", _randomise(Swin3D(TINY_SWIN), gen)))
    sd.update(_prefixed("aesthetic_backbone", _randomise(ConvNeXt3D(*TINY_CONVNEXT), gen)))
    sd.update(_prefixed("technical_head", _randomise(VQAHead(width, TINY_HEAD_HIDDEN), gen)))
    sd.update(_prefixed("aesthetic_head", _randomise(
        VQAHead(TINY_CONVNEXT[0][-1], TINY_HEAD_HIDDEN), gen)))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(sd, path)
    return path


def write_tiny_fastervqa(path: str | Path, seed: int = 1) -> Path:
    """``FAST_VQA_3D_1*1.pth`` layout: ``{"state_dict": {fragments_backbone.*, vqa_head.*}}``."""
    gen = torch.Generator().manual_seed(seed)
    width = TINY_SWIN.embed_dim * 2 ** (len(TINY_SWIN.depths) - 1)
    sd = {}
    sd.update(_prefixed("fragments_backbone", _randomise(Swin3D(TINY_SWIN), gen)))
    sd.update(_prefixed("vqa_head", _randomise(VQAHead(width, TINY_HEAD_HIDDEN), gen)))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": sd}, path)
    return path


def write_random_raft(path: str | Path, seed: int = 0) -> Path:
    """torchvision ``raft_large`` with its random initialisation, saved under the file name of
    torchvision's released weights when ``path`` is a folder."""
    torch.manual_seed(seed)
    path = Path(path)
    if path.suffix != ".pth":
        path = path / RAFT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(raft_large(weights=None).state_dict(), path)
    return path


def synthetic_clip(n: int, h: int, w: int, seed: int) -> np.ndarray:
    """(n, h, w, 3) uint8: smooth moving colour waves plus noise, deterministic for ``seed``."""
    rs = np.random.RandomState(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    freq = rs.uniform(0.02, 0.2, size=(3, 2))
    out = np.empty((n, h, w, 3), dtype=np.uint8)
    for t in range(n):
        chans = [127 + 100 * np.sin(freq[c, 0] * (x + 2 * t) + freq[c, 1] * (y - t) + c)
                 for c in range(3)]
        img = np.stack(chans, -1) + rs.normal(0, 12, size=(h, w, 3))
        out[t] = np.clip(np.round(img), 0, 255).astype(np.uint8)
    return out
