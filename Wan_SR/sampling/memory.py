"""Step 1 within a GPU memory budget (docs/method.md, "GPU memory").

:func:`plan_memory` picks, for a budget in GiB and the largest window of a run, the settings
with the least slow-down that fit, from what it knows each part takes:

- the weights: the VAE and the DiTs' small parts always on the device; DiT blocks on the
  device (``resident``) or streamed from pinned host memory through two slots per DiT
  (:class:`Wan_SR.models.offload.BlockStream`, the copies overlap the compute); the tagger on
  the device or visiting it per clip;
- the work of one window tile: the VAE's encode and decode (their causal caches at full
  resolution; split into exact tiles, :mod:`Wan_SR.models.vae_tiles`, when they do not fit),
  the base and draft steps (per latent token), the fusion, and the window's pixel buffers.

The per-unit costs below were measured on an H200 in bf16 (``benchmarks/inference/
memory_profile.py``; ``benchmarks/results/inference/memory_profile_h200.json``) and scale with
the dtype's size. Every mode computes the same values as the default: only where the weights
wait and how the VAE's work is cut change.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

GIB = 2 ** 30
ENCODE_PER_PIXEL = 6.93e-6    # GiB per pixel of an encoder tile (caches and activations)
DECODE_PER_PIXEL = 7.86e-6    # GiB per pixel of a decoder tile
BASE_PER_TOKEN = 6.8e-5       # GiB per latent token: base step with its recorded features
FEATURES_PER_TOKEN = 2.87e-5  # GiB per latent token: the recorded features (kept for drafts)
DRAFT_PER_TOKEN = 4.3e-5      # GiB per latent token: a draft step, above the features
FUSION_PER_VALUE = 1.49e-8    # GiB per output value (frames x 3 x pixels) of the fusion
TILE_BUFFERS = 2              # float32 tile-sized buffers besides the decoded branches (the
                              # tile's frames, padded)
MARGIN = 1.08                 # on the estimate: allocator rounding and small tensors
MAX_TILES = 6                 # VAE tiles per side at most


class MemoryBudgetError(ValueError):
    """No setting fits the budget."""


@dataclass(frozen=True)
class ModelBytes:
    """GiB of the weights the plan places (from the loaded models)."""
    vae: float
    base_other: float
    base_block: float
    base_blocks: int
    draft_other: float
    draft_block: float
    draft_blocks: int
    tagger: float = 0.0


@dataclass(frozen=True)
class WindowShape:
    """The largest window of the run: frames, and the tile and frame sizes in pixels."""
    frames: int
    tile_h: int
    tile_w: int
    frame_h: int
    frame_w: int
    decoded: int = 2         # branches decoded per window
    bytes_per_value: int = 2  # the models' dtype


@dataclass(frozen=True)
class MemoryPlan:
    """Where the weights wait and how the VAE is cut; ``estimate_gib``: the planned peak."""
    budget_gib: Optional[float]
    base_resident: int
    draft_resident: int
    vae_tiles: tuple = (1, 1)
    tagger_on_host: bool = False
    estimate_gib: float = 0.0

    def describe(self, sizes: ModelBytes) -> str:
        streamed = (sizes.base_blocks - self.base_resident) + (sizes.draft_blocks -
                                                              self.draft_resident)
        parts = [f"DiT blocks streamed from host memory: {streamed} of "
                 f"{sizes.base_blocks + sizes.draft_blocks}"]
        if self.vae_tiles != (1, 1):
            parts.append(f"VAE in {self.vae_tiles[0]}x{self.vae_tiles[1]} exact tiles")
        if self.tagger_on_host:
            parts.append("tagger visits per clip")
        return "; ".join(parts)


def _tile_pixels(n: int, tiles: int, halo: int) -> int:
    core = math.ceil(n / tiles)
    return min(n, core + (2 * halo if tiles > 1 else 0))


def vae_tile_pixels(shape: WindowShape, tiles: tuple, halo_px: int) -> int:
    return (_tile_pixels(shape.tile_h, tiles[0], halo_px) *
            _tile_pixels(shape.tile_w, tiles[1], halo_px))


def work_gib(shape: WindowShape, tiles: tuple, enc_halo: int, dec_halo: int) -> float:
    """The largest working set of one window above the weights (GiB)."""
    s = shape.bytes_per_value / 2
    tokens = (1 + (shape.frames - 1 + 3) // 4) * (shape.tile_h // 16) * (shape.tile_w // 16)
    values = shape.frames * 3 * shape.tile_h * shape.tile_w
    window = shape.frames * 3 * shape.frame_h * shape.frame_w * 4 / GIB
    tile = values * 4 / GIB
    phases = (ENCODE_PER_PIXEL * s * vae_tile_pixels(shape, tiles, enc_halo),
              max(BASE_PER_TOKEN, FEATURES_PER_TOKEN + DRAFT_PER_TOKEN) * s * tokens,
              DECODE_PER_PIXEL * s * vae_tile_pixels(shape, tiles, dec_halo),
              FUSION_PER_VALUE * values)  # in float32 whatever the models' dtype
    return max(phases) + pixel_buffers_gib(shape, window, tile)


def pixel_buffers_gib(shape: WindowShape, window: float, tile: float) -> float:
    """The window's float32 pixel buffers: its frames, per decoded branch the temporal blend and,
    when the window has several spatial tiles, their accumulator; the tile's own buffers."""
    several = shape.tile_h < shape.frame_h or shape.tile_w < shape.frame_w
    return (window * (1 + shape.decoded * (2 if several else 1)) +
            tile * (TILE_BUFFERS + shape.decoded))


def weights_gib(sizes: ModelBytes, base_resident: int, draft_resident: int,
                tagger_on_host: bool) -> float:
    slots = 2 * (sizes.base_block * (base_resident < sizes.base_blocks) +
                 sizes.draft_block * (draft_resident < sizes.draft_blocks))
    return (sizes.vae + sizes.base_other + sizes.draft_other + slots +
            sizes.base_block * base_resident + sizes.draft_block * draft_resident +
            (0 if tagger_on_host else sizes.tagger))


def tile_choices(shape: WindowShape, halo_px: int) -> list:
    """Tile grids ordered by the pixels the decoder then processes (its cost)."""
    grid = [(r, c) for r in range(1, MAX_TILES + 1) for c in range(1, MAX_TILES + 1)
            if r * 32 <= shape.tile_h and c * 32 <= shape.tile_w]
    return sorted(grid, key=lambda t: (t[0] * t[1] * vae_tile_pixels(shape, t, halo_px), t))


def plan_memory(budget_gib: Optional[float], sizes: ModelBytes, shape: WindowShape,
                enc_halo: int = 88, dec_halo: int = 112) -> MemoryPlan:
    """The fastest :class:`MemoryPlan` whose estimated peak fits ``budget_gib`` (None: no budget,
    everything on the device). Raises :class:`MemoryBudgetError` naming the smallest budget
    that fits when none does."""
    full = weights_gib(sizes, sizes.base_blocks, sizes.draft_blocks, False)
    untiled = work_gib(shape, (1, 1), enc_halo, dec_halo)
    if budget_gib is None or (full + untiled) * MARGIN <= budget_gib:
        return MemoryPlan(budget_gib, sizes.base_blocks, sizes.draft_blocks, (1, 1), False,
                          round((full + untiled) * MARGIN, 2))
    least = None
    for tiles in tile_choices(shape, dec_halo):
        work = work_gib(shape, tiles, enc_halo, dec_halo)
        for on_host in (False, True):
            lean = (weights_gib(sizes, 0, 0, on_host) + work) * MARGIN
            least = lean if least is None else min(least, lean)
            if lean > budget_gib:
                continue
            spare = budget_gib / MARGIN - weights_gib(sizes, 0, 0, on_host) - work
            base = min(sizes.base_blocks, int(spare // sizes.base_block)) \
                if sizes.base_block else sizes.base_blocks
            spare -= base * sizes.base_block
            draft = min(sizes.draft_blocks, int(spare // sizes.draft_block)) \
                if sizes.draft_block and base == sizes.base_blocks else 0
            est = (weights_gib(sizes, base, draft, on_host) + work) * MARGIN
            return MemoryPlan(budget_gib, base, draft, tiles, on_host, round(est, 2))
    raise MemoryBudgetError(
        f"--vram_budget {budget_gib:g}: a {shape.frames}x{shape.tile_h}x{shape.tile_w} window "
        f"needs at least {math.ceil(least * 10) / 10:g} GiB here; give a larger budget or "
        "smaller windows (--window_h/--window_w/--window_t)")
