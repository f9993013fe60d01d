"""The networks of DOVER and FasterVQA (:mod:`Wan_SR.metrics.vqa`), written for this repository
from the published architectures, with the official key names so that the released files
(``DOVER.pth``, ``FAST_VQA_3D_1*1.pth``) load strictly:

- :class:`Swin3D` - the video Swin Transformer with gated relative position biases ("GRPB") of
  FAST-VQA: shifted 3D windows (default 8x7x7), and in the stages that have a
  ``fragment_position_bias_table`` the bias of a token pair is
  ``g * relative_bias + (1 - g) * fragment_bias`` with ``g = |dt| + |dy| + |dx|`` the L1
  distance of the two tokens' fragment cells (a (1, Wh, Ww) grid stretched over the padded
  feature map by nearest-neighbour resizing, cyclically shifted with the window shift). When a
  feature map is not larger than the window in a dimension, the window shrinks to it, the shift
  in that dimension is 0 and the first ``N x N`` entries of the bias index are used (as the
  official code does);
- :class:`ConvNeXt3D` - the inflated ConvNeXt of DOVER's aesthetic branch (stem 2x4x4, depthwise
  kernels T x 7 x 7 with T read per block from the file);
- :class:`VQAHead` - two 1x1x1 convolutions with a GELU between, applied at every position.

Every size (widths, depths, heads, MLP ratio, window, temporal kernels) is read from the state
dict (:func:`swin_config`, :func:`convnext_config`); :func:`load_strict` names every missing,
unexpected or mis-shaped key.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F


class WeightLayoutError(ValueError):
    """A weight file whose keys or shapes are not those of the expected network."""


# ----------------------------------------------------------------------------- Swin3D (GRPB)

def relative_index(ws: tuple[int, int, int]) -> torch.Tensor:
    """(N, N) index into a ((2Wd-1)(2Wh-1)(2Ww-1), heads) bias table, N = Wd*Wh*Ww."""
    grid = torch.stack(torch.meshgrid(*[torch.arange(w) for w in ws], indexing="ij")).flatten(1)
    rel = (grid[:, :, None] - grid[:, None, :]).permute(1, 2, 0)
    rel = rel + torch.tensor([w - 1 for w in ws])
    return rel[..., 0] * (2 * ws[1] - 1) * (2 * ws[2] - 1) + rel[..., 1] * (2 * ws[2] - 1) \
        + rel[..., 2]


def fit_window(size, window, shift):
    """Window and shift for a (D, H, W) map: a dimension not larger than the window uses the
    whole dimension and no shift."""
    ws, sh = list(window), list(shift)
    for i, s in enumerate(size):
        if s <= window[i]:
            ws[i], sh[i] = s, 0
    return tuple(ws), tuple(sh)


def to_windows(x: torch.Tensor, ws) -> torch.Tensor:
    """(B, D, H, W, C) -> (B * windows, Wd*Wh*Ww, C)."""
    b, d, h, w, c = x.shape
    x = x.view(b, d // ws[0], ws[0], h // ws[1], ws[1], w // ws[2], ws[2], c)
    return x.permute(0, 1, 3, 5, 2, 4, 6, 7).reshape(-1, ws[0] * ws[1] * ws[2], c)


def from_windows(x: torch.Tensor, ws, b: int, d: int, h: int, w: int) -> torch.Tensor:
    x = x.view(b, d // ws[0], h // ws[1], w // ws[2], ws[0], ws[1], ws[2], -1)
    return x.permute(0, 1, 4, 2, 5, 3, 6, 7).reshape(b, d, h, w, -1)


@functools.lru_cache(maxsize=64)
def shift_mask(dims, ws, shift, device) -> torch.Tensor:
    """(windows, N, N) additive mask (0 / -100) of shifted windows: tokens from different
    regions of the rolled map do not attend to each other."""
    img = torch.zeros((1, *dims, 1), device=device)
    cnt = 0
    cuts = [(slice(-w), slice(-w, -s), slice(-s, None)) for w, s in zip(ws, shift)]
    for a in cuts[0]:
        for b in cuts[1]:
            for c in cuts[2]:
                img[:, a, b, c, :] = cnt
                cnt += 1
    win = to_windows(img, ws).squeeze(-1)
    diff = win.unsqueeze(1) - win.unsqueeze(2)
    return diff.masked_fill(diff != 0, -100.0).masked_fill(diff == 0, 0.0)


@functools.lru_cache(maxsize=64)
def fragment_gate(dims, ws, shift, device) -> torch.Tensor:
    """(windows, N, N) gate ``|dt| + |dy| + |dx|`` between the fragment cells of two tokens."""
    cells = torch.stack(torch.meshgrid(torch.arange(1), torch.arange(ws[1]), torch.arange(ws[2]),
                                       indexing="ij")).float()
    coords = F.interpolate(cells[None].to(device), size=tuple(dims)).long().permute(0, 2, 3, 4, 1)
    coords = torch.roll(coords, shifts=tuple(-s for s in shift), dims=(1, 2, 3))
    win = to_windows(coords, ws).to(torch.int16)
    gate = torch.zeros((win.shape[0], win.shape[1], win.shape[1]), dtype=torch.int16,
                       device=device)
    for d in range(3):  # one coordinate at a time: small integers, little memory
        gate += (win[:, None, :, d] - win[:, :, None, d]).abs()
    return gate.float()


class WindowAttention(nn.Module):
    def __init__(self, dim: int, window, heads: int, frag_bias: bool):
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        n_rel = (2 * window[0] - 1) * (2 * window[1] - 1) * (2 * window[2] - 1)
        self.relative_position_bias_table = nn.Parameter(torch.zeros(n_rel, heads))
        if frag_bias:
            self.fragment_position_bias_table = nn.Parameter(torch.zeros(n_rel, heads))
        self.register_buffer("relative_position_index", relative_index(window))
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def _bias(self, table: torch.Tensor, n: int) -> torch.Tensor:
        idx = self.relative_position_index[:n, :n].reshape(-1)
        return table[idx].reshape(n, n, -1).permute(2, 0, 1)

    def forward(self, x, mask: Optional[torch.Tensor], gate: torch.Tensor) -> torch.Tensor:
        bw, n, c = x.shape
        qkv = self.qkv(x).reshape(bw, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        attn = (qkv[0] * self.scale) @ qkv[1].transpose(-2, -1)
        bias = self._bias(self.relative_position_bias_table, n).unsqueeze(0)
        nw = gate.shape[0]
        if hasattr(self, "fragment_position_bias_table"):
            frag = self._bias(self.fragment_position_bias_table, n)
            bias = frag + (bias - frag) * gate.unsqueeze(1)  # g * rel + (1 - g) * frag
        attn = (attn.view(bw // nw, nw, self.heads, n, n) + bias.unsqueeze(0)).view(-1, self.heads,
                                                                                  n, n)
        if mask is not None:
            nm = mask.shape[0]
            attn = (attn.view(bw // nm, nm, self.heads, n, n) + mask.unsqueeze(1).unsqueeze(0))
            attn = attn.view(-1, self.heads, n, n)
        x = (attn.softmax(-1) @ qkv[2]).transpose(1, 2).reshape(bw, n, c)
        return self.proj(x)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class SwinBlock(nn.Module):
    def __init__(self, dim: int, heads: int, window, shift, hidden: int, frag_bias: bool):
        super().__init__()
        self.window, self.shift = window, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window, heads, frag_bias)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, hidden)

    def _attend(self, x, mask):
        b, d, h, w, c = x.shape
        ws, shift = fit_window((d, h, w), self.window, self.shift)
        x = self.norm1(x)
        pads = [(ws[i] - s % ws[i]) % ws[i] for i, s in enumerate((d, h, w))]
        x = F.pad(x, (0, 0, 0, pads[2], 0, pads[1], 0, pads[0]))
        dims = tuple(x.shape[1:4])
        shifted = any(s > 0 for s in shift)
        if shifted:
            x = torch.roll(x, shifts=tuple(-s for s in shift), dims=(1, 2, 3))
        gate = fragment_gate(dims, ws, shift, x.device)
        out = self.attn(to_windows(x, ws), mask if shifted else None, gate)
        x = from_windows(out.view(-1, *ws, c), ws, b, *dims)
        if shifted:
            x = torch.roll(x, shifts=tuple(shift), dims=(1, 2, 3))
        return x[:, :d, :h, :w, :].contiguous()

    def forward(self, x, mask):
        x = x + self._attend(x, mask)
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x):
        _, _, h, w, _ = x.shape
        if h % 2 or w % 2:
            x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        x = torch.cat([x[:, :, 0::2, 0::2], x[:, :, 1::2, 0::2], x[:, :, 0::2, 1::2],
                       x[:, :, 1::2, 1::2]], -1)
        return self.reduction(self.norm(x))


class SwinStage(nn.Module):
    def __init__(self, dim, depth, heads, window, hidden, frag_bias, merge: bool):
        super().__init__()
        self.window = window
        self.shift = tuple(w // 2 for w in window)
        self.blocks = nn.ModuleList(
            SwinBlock(dim, heads, window, (0, 0, 0) if i % 2 == 0 else self.shift, hidden,
                      frag_bias) for i in range(depth))
        self.downsample = PatchMerging(dim) if merge else None

    def forward(self, x):
        b, c, d, h, w = x.shape
        ws, shift = fit_window((d, h, w), self.window, self.shift)
        x = x.permute(0, 2, 3, 4, 1)
        padded = tuple(-(-s // ws[i]) * ws[i] for i, s in enumerate((d, h, w)))
        mask = shift_mask(padded, ws, shift, x.device)
        for blk in self.blocks:
            x = blk(x, mask)
        if self.downsample is not None:
            x = self.downsample(x)
        return x.permute(0, 4, 1, 2, 3)


class PatchEmbed(nn.Module):
    def __init__(self, patch, dim: int):
        super().__init__()
        self.patch = patch
        self.proj = nn.Conv3d(3, dim, kernel_size=patch, stride=patch)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x):
        _, _, d, h, w = x.shape
        p = self.patch
        x = F.pad(x, (0, (p[2] - w % p[2]) % p[2], 0, (p[1] - h % p[1]) % p[1],
                      0, (p[0] - d % p[0]) % p[0]))
        x = self.proj(x)
        return self.norm(x.permute(0, 2, 3, 4, 1)).permute(0, 4, 1, 2, 3)


@dataclass(frozen=True)
class SwinConfig:
    embed_dim: int
    depths: tuple
    heads: tuple
    hidden: tuple
    window: tuple
    frag_bias: tuple
    patch: tuple


class Swin3D(nn.Module):
    """Video Swin with GRPB; input (B, 3, T, H, W) normalised frames -> (B, C, T', H', W')."""

    def __init__(self, cfg: SwinConfig):
        super().__init__()
        self.patch_embed = PatchEmbed(cfg.patch, cfg.embed_dim)
        self.layers = nn.ModuleList(
            SwinStage(cfg.embed_dim * 2 ** i, cfg.depths[i], cfg.heads[i], cfg.window,
                      cfg.hidden[i], cfg.frag_bias[i], i < len(cfg.depths) - 1)
            for i in range(len(cfg.depths)))
        self.norm = nn.LayerNorm(cfg.embed_dim * 2 ** (len(cfg.depths) - 1))

    def forward(self, x):
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x.contiguous())
        return self.norm(x.permute(0, 2, 3, 4, 1)).permute(0, 4, 1, 2, 3)


def _window_from(table_len: int, n: int) -> tuple[int, int, int]:
    """The window (Wd, Wh, Ww), Wh == Ww, with (2Wd-1)(2Wh-1)(2Ww-1) = table_len and
    Wd*Wh*Ww = n."""
    for wh in range(1, 64):
        if n % (wh * wh) == 0:
            wd = n // (wh * wh)
            if (2 * wd - 1) * (2 * wh - 1) ** 2 == table_len:
                return wd, wh, wh
    raise WeightLayoutError(f"no window matches a bias table of {table_len} rows and {n} tokens")


def _count(sd: dict, pattern: str) -> int:
    found = {int(m.group(1)) for k in sd for m in [re.match(pattern, k)] if m}
    return max(found) + 1 if found else 0


def swin_config(sd: dict, prefix: str) -> SwinConfig:
    """The sizes of a :class:`Swin3D` stored under ``prefix`` in ``sd``."""
    key = prefix + "patch_embed.proj.weight"
    if key not in sd:
        raise WeightLayoutError(f"missing key '{key}'")
    embed, _, *patch = sd[key].shape
    n_layers = _count(sd, re.escape(prefix) + r"layers\.(\d+)\.")
    depths, heads, hidden, frag = [], [], [], []
    for i in range(n_layers):
        lp = f"{prefix}layers.{i}.blocks."
        depths.append(_count(sd, re.escape(lp) + r"(\d+)\."))
        heads.append(sd[lp + "0.attn.relative_position_bias_table"].shape[1])
        hidden.append(sd[lp + "0.mlp.fc1.weight"].shape[0])
        frag.append(lp + "0.attn.fragment_position_bias_table" in sd)
    a = f"{prefix}layers.0.blocks.0.attn."
    window = _window_from(sd[a + "relative_position_bias_table"].shape[0],
                          sd[a + "relative_position_index"].shape[0])
    return SwinConfig(embed, tuple(depths), tuple(heads), tuple(hidden), window, tuple(frag),
                      tuple(patch))


# ----------------------------------------------------------------------------- ConvNeXt3D

class ChannelNorm(nn.Module):
    """LayerNorm over dim 1 (channels first), eps 1e-6."""

    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x):
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + 1e-6)
        return self.weight[:, None, None, None] * x + self.bias[:, None, None, None]


class ConvNeXtBlock(nn.Module):
    def __init__(self, dim: int, t_kernel: int):
        super().__init__()
        self.dwconv = nn.Conv3d(dim, dim, kernel_size=(t_kernel, 7, 7),
                                padding=(t_kernel // 2, 3, 3), groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        y = self.dwconv(x).permute(0, 2, 3, 4, 1)
        y = self.gamma * self.pwconv2(F.gelu(self.pwconv1(self.norm(y))))
        return x + y.permute(0, 4, 1, 2, 3)


class ConvNeXt3D(nn.Module):
    """Input (B, 3, T, H, W) -> (B, C, T/2, H/32, W/32), channel-normalised at the end."""

    def __init__(self, dims: tuple, kernels: tuple):
        super().__init__()
        self.downsample_layers = nn.ModuleList([nn.Sequential(
            nn.Conv3d(3, dims[0], kernel_size=(2, 4, 4), stride=(2, 4, 4)), ChannelNorm(dims[0]))])
        for i in range(len(dims) - 1):
            self.downsample_layers.append(nn.Sequential(
                ChannelNorm(dims[i]),
                nn.Conv3d(dims[i], dims[i + 1], kernel_size=(1, 2, 2), stride=(1, 2, 2))))
        self.stages = nn.ModuleList(nn.Sequential(*[ConvNeXtBlock(dims[i], k) for k in ks])
                                    for i, ks in enumerate(kernels))
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)

    def forward(self, x):
        for down, stage in zip(self.downsample_layers, self.stages):
            x = stage(down(x))
        return self.norm(x.permute(0, 2, 3, 4, 1)).permute(0, 4, 1, 2, 3)


def convnext_config(sd: dict, prefix: str) -> tuple[tuple, tuple]:
    """(dims, temporal kernel of every block per stage) of a :class:`ConvNeXt3D`."""
    n = _count(sd, re.escape(prefix) + r"stages\.(\d+)\.")
    if n == 0:
        raise WeightLayoutError(f"no '{prefix}stages.*' keys")
    dims, kernels = [], []
    for i in range(n):
        sp = f"{prefix}stages.{i}."
        depth = _count(sd, re.escape(sp) + r"(\d+)\.")
        dims.append(sd[sp + "0.dwconv.weight"].shape[0])
        kernels.append(tuple(sd[f"{sp}{j}.dwconv.weight"].shape[2] for j in range(depth)))
    return tuple(dims), tuple(kernels)


# ----------------------------------------------------------------------------- head, loading

class VQAHead(nn.Module):
    """1x1x1 conv -> GELU -> 1x1x1 conv to one score per position (dropout is off in eval)."""

    def __init__(self, in_ch: int, hidden: int):
        super().__init__()
        self.fc_hid = nn.Conv3d(in_ch, hidden, (1, 1, 1))
        self.fc_last = nn.Conv3d(hidden, 1, (1, 1, 1))

    def forward(self, x):
        return self.fc_last(F.gelu(self.fc_hid(x)))


def head_for(sd: dict, prefix: str) -> VQAHead:
    key = prefix + "fc_hid.weight"
    if key not in sd:
        raise WeightLayoutError(f"missing key '{key}'")
    hidden, in_ch = sd[key].shape[:2]
    return VQAHead(in_ch, hidden)


def load_strict(module: nn.Module, sd: dict, what: str) -> None:
    """Load ``sd`` into ``module``; every missing, unexpected or mis-shaped key is named."""
    own = module.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    shapes = sorted(k for k in set(own) & set(sd) if tuple(own[k].shape) != tuple(sd[k].shape))
    problems = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", shapes)):
        if keys:
            problems.append(f"{len(keys)} {label} key(s): {', '.join(keys[:5])}"
                            + (" ..." if len(keys) > 5 else ""))
    if problems:
        raise WeightLayoutError(f"{what}: not the expected layout ({'; '.join(problems)})")
    module.load_state_dict(sd, strict=True)
