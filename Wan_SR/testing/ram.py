"""Random RAM tagger and DAPE files in the published layouts (``ram_swin_large_14m.pth``,
``DAPE.pth``; docs/method.md §5, "Tags"), for tests and benchmarks: they go through the same
loader as the real files (:func:`Wan_SR.models.ram.load_ram`).

:func:`published_ram_shapes` lists every parameter the tagger uses with its shape, written from
the RAM / Swin sources independently of :mod:`Wan_SR.models.ram`; the random state dicts also
carry the original Swin buffers and a few of the caption-network keys the loader ignores.
``size`` is ``"tiny"`` (:data:`TINY_RAM`: the published layout with tiny widths), ``"real"``
(Swin-L, about 0.9 GB) or a :class:`~Wan_SR.models.ram.RAMSizes`; keyword overrides change
single fields.
"""
from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import torch

from ..core.files import atomic_path
from ..models.ram import (DAPE_RANK, DEFAULT_THRESHOLD, REAL_RAM, RAMSizes, RAMTagger,
                          convert_ram_state_dict, load_tag_vocabulary)

# Same layout (full vocabulary, 384 input, window 12, 4 stages, 2 head layers), tiny widths.
TINY_RAM = RAMSizes(embed_dim=8, depths=(2, 2, 2, 1), num_heads=(1, 1, 2, 2), label_width=16,
                    hidden=16, intermediate=32)


def _resolve_sizes(size, overrides: dict) -> RAMSizes:
    if isinstance(size, RAMSizes):
        base = size
    elif size in ("tiny", "real"):
        base = TINY_RAM if size == "tiny" else REAL_RAM
    else:
        raise ValueError(f"size must be 'tiny', 'real' or a RAMSizes, not {size!r}")
    return replace(base, **overrides) if overrides else base


def published_ram_shapes(sizes=TINY_RAM) -> dict:
    """Every parameter of the published ``ram_swin_large_14m.pth`` layout that the tagger uses,
    with its shape (written from the RAM / Swin sources, independently of our modules)."""
    s = _resolve_sizes(sizes, {})
    e, v, lw, h = s.embed_dim, s.vision_width, s.label_width, s.hidden
    shapes = {"visual_encoder.patch_embed.proj.weight": (e, 3, s.patch_size, s.patch_size),
              "visual_encoder.patch_embed.proj.bias": (e,)}

    def ln(prefix, n):
        return {prefix + ".weight": (n,), prefix + ".bias": (n,)}

    def lin(prefix, n_in, n_out):
        return {prefix + ".weight": (n_out, n_in), prefix + ".bias": (n_out,)}

    shapes.update(ln("visual_encoder.patch_embed.norm", e))
    grid = s.image_size // s.patch_size
    for i, depth in enumerate(s.depths):
        d, w = e * 2 ** i, min(s.window_size, grid >> i)
        for j in range(depth):
            p = f"visual_encoder.layers.{i}.blocks.{j}."
            shapes.update(ln(p + "norm1", d))
            shapes[p + "attn.relative_position_bias_table"] = ((2 * w - 1) ** 2, s.num_heads[i])
            shapes.update(lin(p + "attn.qkv", d, 3 * d))
            shapes.update(lin(p + "attn.proj", d, d))
            shapes.update(ln(p + "norm2", d))
            shapes.update(lin(p + "mlp.fc1", d, int(d * s.mlp_ratio)))
            shapes.update(lin(p + "mlp.fc2", int(d * s.mlp_ratio), d))
        if i < len(s.depths) - 1:  # patch merging at the end of the stage
            shapes.update(ln(f"visual_encoder.layers.{i}.downsample.norm", 4 * d))
            shapes[f"visual_encoder.layers.{i}.downsample.reduction.weight"] = (2 * d, 4 * d)
    shapes.update(ln("visual_encoder.norm", v))
    shapes.update(lin("image_proj", v, lw))
    shapes["label_embed"] = (s.num_tags, lw)
    if s.wordvec_proj:
        shapes.update(lin("wordvec_proj", lw, h))
    for n in range(s.head_layers):
        p = f"tagging_head.encoder.layer.{n}."
        shapes.update(lin(p + "crossattention.self.query", h, h))
        shapes.update(lin(p + "crossattention.self.key", lw, h))
        shapes.update(lin(p + "crossattention.self.value", lw, h))
        shapes.update(lin(p + "crossattention.output.dense", h, h))
        shapes.update(ln(p + "crossattention.output.LayerNorm", h))
        shapes.update(lin(p + "intermediate.dense", h, s.intermediate))
        shapes.update(lin(p + "output.dense", s.intermediate, h))
        shapes.update(ln(p + "output.LayerNorm", h))
    shapes.update(lin("fc", h, 1))
    return shapes


def _random_value(key: str, shape: tuple, g: torch.Generator) -> torch.Tensor:
    x = torch.randn(shape, generator=g)
    if key == "label_embed":
        return x
    if key.endswith("relative_position_bias_table"):
        return x * 0.5
    if len(shape) == 1:  # norm weights around 1, biases around 0
        return 1 + 0.1 * x if "norm" in key.lower() and key.endswith(".weight") else 0.1 * x
    return x / math.sqrt(math.prod(shape[1:]))


def build_ram(sizes=TINY_RAM, seed: int = 0, tag_names=None, thresholds=None) -> RAMTagger:
    """A tagger with the random weights of :func:`random_ram_state_dict` (tests, benchmarks)."""
    sizes = _resolve_sizes(sizes, {})
    if tag_names is None and sizes.num_tags != len(load_tag_vocabulary()[0]):
        tag_names = [f"tag{i}" for i in range(sizes.num_tags)]
        thresholds = torch.full((sizes.num_tags,), DEFAULT_THRESHOLD) if thresholds is None else thresholds
    model = RAMTagger(sizes, tag_names, thresholds)
    ours, _ = convert_ram_state_dict(random_ram_state_dict(sizes, seed), model.state_dict().keys())
    model.load_state_dict(ours)
    return model.eval().requires_grad_(False)


def _relative_position_index(window: int) -> torch.Tensor:
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij"))
    rel = (coords.flatten(1)[:, :, None] - coords.flatten(1)[:, None, :]).permute(1, 2, 0) + (window - 1)
    return rel[..., 0] * (2 * window - 1) + rel[..., 1]


def _shift_mask(res: int, window: int, shift: int) -> torch.Tensor:
    """The original Swin ``attn_mask`` buffer (nW, w*w, w*w) of a shifted block."""
    idx = torch.arange(res)
    region = (idx >= res - window).long() + (idx >= res - shift).long()
    label = region[:, None] * 3 + region[None, :]
    win = label.view(res // window, window, res // window, window).permute(0, 2, 1, 3)
    win = win.reshape(-1, window * window)
    diff = win[:, None, :] - win[:, :, None]
    return torch.zeros(diff.shape).masked_fill(diff != 0, -100.0)


def random_ram_state_dict(size="tiny", seed: int = 0, **overrides) -> dict:
    """Random weights in the published ``ram_swin_large_14m.pth`` layout (the ``model`` dict),
    with the original Swin buffers and a few of the ignored caption-network keys."""
    sizes = _resolve_sizes(size, overrides)
    g = torch.Generator().manual_seed(seed)
    sd = {k: _random_value(k, shape, g) for k, shape in published_ram_shapes(sizes).items()}
    grid = sizes.image_size // sizes.patch_size
    for i, depth in enumerate(sizes.depths):
        res = grid >> i
        window = min(sizes.window_size, res)
        for j in range(depth):
            prefix = f"visual_encoder.layers.{i}.blocks.{j}."
            sd[prefix + "attn.relative_position_index"] = _relative_position_index(window)
            if j % 2 and res > sizes.window_size:
                sd[prefix + "attn_mask"] = _shift_mask(res, window, window // 2)
    for key in ("tag_encoder.encoder.layer.0.crossattention.self.query.weight",
                "tag_encoder.embeddings.position_ids",
                "text_decoder.cls.predictions.bias"):
        sd[key] = torch.randn(sizes.hidden, generator=g)
    return sd


def random_dape_state_dict(size="tiny", seed: int = 0, rank: int = DAPE_RANK, **overrides) -> dict:
    """Random LoRA pairs in the published ``DAPE.pth`` layout for a RAM of these sizes."""
    s = _resolve_sizes(size, overrides)
    g = torch.Generator().manual_seed(seed)

    def pair(prefix, n_in, n_out, groups=1):
        return {prefix + ".lora_A": torch.randn(rank * groups, n_in, generator=g) / math.sqrt(n_in),
                prefix + ".lora_B": torch.randn(n_out * groups, rank, generator=g) * 0.5}

    sd = {}
    for i, depth in enumerate(s.depths):
        dim = s.embed_dim * 2 ** i
        for j in range(depth):
            sd.update(pair(f"visual_encoder.layers.{i}.blocks.{j}.attn.qkv", dim, dim, groups=2))
    for n in range(s.head_layers):
        prefix = f"tagging_head.encoder.layer.{n}.crossattention.self."
        sd.update(pair(prefix + "query", s.hidden, s.hidden))
        sd.update(pair(prefix + "key", s.label_width, s.hidden))
    ignored = pair("tag_encoder.encoder.layer.0.attention.self.query", s.hidden, s.hidden)
    sd.update({k: torch.zeros_like(v) if k.endswith("lora_B") else v for k, v in ignored.items()})
    return sd


def _save(obj, path) -> Path:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def write_tiny_ram(path, seed: int = 0, size="tiny", **sizes) -> Path:
    """Write a random-weight ``ram_swin_large_14m.pth`` (``{"model": state_dict}``); ``size``
    "tiny" (default) or "real" (Swin-L shapes, about 0.9 GB), ``sizes`` override fields."""
    return _save({"model": random_ram_state_dict(size, seed, **sizes)}, path)


def write_tiny_dape(path, seed: int = 0, size="tiny", **sizes) -> Path:
    """Write a random ``DAPE.pth`` (flat dict of LoRA pairs) matching :func:`write_tiny_ram`."""
    return _save(random_dape_state_dict(size, seed, **sizes), path)
