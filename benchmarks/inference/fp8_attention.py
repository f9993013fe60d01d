"""An FP8 self-attention for the DiTs: an experiment that ``step_parts.py`` measures, not used by
step 1 (docs/method.md, "FP8": on an H200 it ran at 0.93x cuDNN's bf16 attention, with ~25x its
error, so ``--fp8`` keeps attention in bf16).

Why try: attention is about 70% of a DiT block's arithmetic at video lengths (32,400 tokens for a
33-frame 720p window), so FP8 matmuls on the linear layers alone leave most of the work in bf16.
Here both products of attention run on FP8 tensor cores:

- ``S = Q K^T``: Q and K in float8 e4m3 with one scale per token and head (``amax / 448``). Before
  quantising, K's mean over the tokens is subtracted per head and channel: a query's scores then
  all move by one constant, which the softmax ignores, and K's values shrink to what differs
  between tokens, so fewer bits are lost to a shared offset.
- ``O = P V``: the softmax's probabilities (in [0, 1]) times 448 in e4m3, V less its mean over
  the tokens (added back at the end: the probabilities sum to 1) in e4m3 with one scale per head
  and channel; float32 accumulation; the row sums that normalise ``O`` are kept in float32 from
  the unquantised probabilities.

:func:`quantize` makes the FP8 operands (plain torch); :func:`attention_fp8` runs a
flash-attention-style Triton kernel on them (one program per 128 queries of one head, online
softmax over blocks of keys); :func:`emulate` is the same arithmetic in float32 torch ops (CPU,
and the reference the kernel is checked against). :class:`FP8Attention` replaces diffsynth's
``AttentionModule`` of the self-attention (:func:`use_fp8_attention`).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

E4M3 = torch.float8_e4m3fn
E4M3_MAX = 448.0
LOG2E = 1.4426950408889634
BLOCK_M, BLOCK_N = 128, 128   # queries per program, keys per step
NUM_WARPS, NUM_STAGES = 8, 3

try:  # Triton exists where CUDA does; without it the kernel is unavailable (emulate() runs)
    import triton
    import triton.language as tl
except Exception:  # pragma: no cover - no Triton here
    triton = None

if triton is not None:
    @triton.jit
    def _step(acc, l_i, m_i, q, qs, k_ptrs, ks_ptrs, v_ptrs, n, L, MASK: tl.constexpr):
        k = tl.load(k_ptrs)                      # (BN, D) e4m3
        ks = tl.load(ks_ptrs)                    # (BN,) float32
        s = tl.dot(q, tl.trans(k)) * qs[:, None] * ks[None, :]   # log2-scaled scores
        if MASK:
            s = tl.where((n < L)[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        p = tl.math.exp2(s - m_new[:, None])
        alpha = tl.math.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None]
        v = tl.load(v_ptrs)                      # (D, BN) e4m3: V transposed
        acc = tl.dot((p * 448.0).to(tl.float8e4nv, fp_downcast_rounding="rtne"), tl.trans(v), acc)
        return acc, l_i, m_new

    @triton.jit
    def attn_fwd(Q, K, VT, QS, KS, VS, VM, O, L, LP, H, stride_ob, stride_ol,
                 BM: tl.constexpr, BN: tl.constexpr, D: tl.constexpr):
        pid_m = tl.program_id(0)
        bh = tl.program_id(1).to(tl.int64)
        b = bh // H
        h = bh % H
        offs_m = pid_m * BM + tl.arange(0, BM)
        offs_d = tl.arange(0, D)
        offs_n = tl.arange(0, BN)
        q = tl.load(Q + bh * LP * D + offs_m[:, None] * D + offs_d[None, :])
        qs = tl.load(QS + bh * LP + offs_m)
        m_i = tl.full([BM], float("-inf"), tl.float32)
        l_i = tl.zeros([BM], tl.float32)
        acc = tl.zeros([BM, D], tl.float32)
        k_base = K + bh * LP * D
        ks_base = KS + bh * LP
        v_base = VT + bh * D * LP
        n_full = (L // BN) * BN
        for start in range(0, n_full, BN):
            n = start + offs_n
            acc, l_i, m_i = _step(acc, l_i, m_i, q, qs,
                                  k_base + n[:, None] * D + offs_d[None, :], ks_base + n,
                                  v_base + offs_d[:, None] * LP + n[None, :], n, L, False)
        if n_full < L:
            n = n_full + offs_n
            acc, l_i, m_i = _step(acc, l_i, m_i, q, qs,
                                  k_base + n[:, None] * D + offs_d[None, :], ks_base + n,
                                  v_base + offs_d[:, None] * LP + n[None, :], n, L, True)
        vs = tl.load(VS + bh * D + offs_d)
        vm = tl.load(VM + bh * D + offs_d)
        out = acc / l_i[:, None] * vs[None, :] + vm[None, :]
        o_ptrs = O + b * stride_ob + offs_m[:, None] * stride_ol + h * D + offs_d[None, :]
        tl.store(o_ptrs, out.to(O.dtype.element_ty), mask=(offs_m < L)[:, None])


def _kernel():
    """``(triton, kernel)``, or None when Triton cannot be imported."""
    return (triton, attn_fwd) if triton is not None else None


def available(device) -> bool:
    """Whether the FP8 attention kernel can run on ``device``: a CUDA GPU with FP8 tensor cores
    (compute capability 8.9+) and Triton."""
    device = torch.device(device)
    return (device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 9)
            and _kernel() is not None)


def _padded(L: int) -> int:
    return -(-L // BLOCK_M) * BLOCK_M


def _scale(amax: torch.Tensor) -> torch.Tensor:
    """``amax / 448`` in float32, 1 where ``amax`` is 0 (an all-zero row stays zero)."""
    amax = amax.float()
    return torch.where(amax > 0, amax / E4M3_MAX, torch.ones_like(amax))


def quantize(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> tuple:
    """(B, L, heads*D) q, k, v -> the FP8 operands, each head's tokens padded with zeros to a
    multiple of 128: ``q8, k8`` (B*heads, LP, D) e4m3 with ``qs, ks`` (B*heads, LP) float32
    per-token scales (``qs`` also holds the softmax's ``log2(e)/sqrt(D)``); ``vt8`` (B*heads,
    D, LP) e4m3 (V less its mean over the tokens, transposed) with ``vs`` (B*heads, D)
    per-channel scales (``/ 448`` for P's scale included) and ``vm`` (B*heads, D) that mean."""
    B, L, HD = q.shape
    D = HD // heads
    LP = _padded(L)

    def heads_first(x):  # (B*heads, L, D) float32
        return x.reshape(B, L, heads, D).transpose(1, 2).reshape(B * heads, L, D).float()

    qf, kf, vf = heads_first(q), heads_first(k), heads_first(v)
    kf = kf - kf.mean(dim=1, keepdim=True)     # the softmax ignores a per-query constant
    vm = vf.mean(dim=1, keepdim=True)          # the probabilities sum to 1: added back after
    vf = vf - vm
    qs = _scale(qf.abs().amax(dim=-1))
    ks = _scale(kf.abs().amax(dim=-1))
    vs = _scale(vf.abs().amax(dim=1))          # (B*heads, D)
    pad = (0, 0, 0, LP - L)
    q8 = torch.nn.functional.pad((qf / qs[..., None]).to(E4M3), pad)
    k8 = torch.nn.functional.pad((kf / ks[..., None]).to(E4M3), pad)
    vt8 = torch.nn.functional.pad((vf / vs[:, None, :]).to(E4M3), pad).transpose(1, 2)
    qs = torch.nn.functional.pad(qs * (LOG2E / math.sqrt(D)), (0, LP - L))
    ks = torch.nn.functional.pad(ks, (0, LP - L))
    return q8, qs, k8, ks, vt8.contiguous(), vs / E4M3_MAX, vm[:, 0]


def emulate(q8, qs, k8, ks, vt8, vs, vm, L: int, B: int) -> torch.Tensor:
    """The kernel's arithmetic in float32 torch ops: (B, L, heads*D). Scores, softmax and the
    quantised probabilities are those of the kernel up to the order of float32 additions."""
    BH, LP, D = q8.shape
    s = (q8[:, :L].float() * qs[:, :L, None]) @ (k8[:, :L].float() * ks[:, :L, None]
                                                   ).transpose(1, 2)   # log2-scaled
    m = s.amax(dim=-1, keepdim=True)
    p = torch.exp2(s - m)
    l_sum = p.sum(dim=-1, keepdim=True)
    p8 = (p * E4M3_MAX).to(E4M3).float()
    o = (p8 @ vt8[:, :, :L].float().transpose(1, 2)) / l_sum * vs[:, None, :] + vm[:, None, :]
    heads = BH // B
    return o.reshape(B, heads, L, D).transpose(1, 2).reshape(B, L, heads * D)


@torch.library.custom_op("pssr::fp8_attention", mutates_args=())
def _fp8_attention(q8: torch.Tensor, qs: torch.Tensor, k8: torch.Tensor, ks: torch.Tensor,
                   vt8: torch.Tensor, vs: torch.Tensor, vm: torch.Tensor, L: int, B: int,
                   out_dtype: torch.dtype) -> torch.Tensor:
    BH, LP, D = q8.shape
    heads = BH // B
    out = torch.empty((B, L, heads * D), dtype=out_dtype, device=q8.device)
    if q8.device.type != "cuda":
        return out.copy_(emulate(q8, qs, k8, ks, vt8, vs, vm, L, B))
    triton, kern = _kernel()
    grid = (triton.cdiv(L, BLOCK_M), BH)
    kern[grid](q8, k8, vt8, qs, ks, vs, vm, out, L, LP, heads, out.stride(0), out.stride(1),
               BM=BLOCK_M, BN=BLOCK_N, D=D, num_warps=NUM_WARPS, num_stages=NUM_STAGES)
    return out


@_fp8_attention.register_fake
def _(q8, qs, k8, ks, vt8, vs, vm, L, B, out_dtype):
    BH, _LP, D = q8.shape
    return q8.new_empty((B, L, BH // B * D), dtype=out_dtype)


def attention_fp8(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """Softmax attention of (B, L, heads*D) q, k, v (no mask, scale ``1/sqrt(D)``) with FP8
    products (module docstring): (B, L, heads*D) in q's dtype."""
    B, L, _ = q.shape
    return _fp8_attention(*quantize(q, k, v, heads), L, B, q.dtype)


class FP8Attention(nn.Module):
    """Drop-in for diffsynth's ``AttentionModule`` (``forward(q, k, v)`` on (B, L, heads*D))."""

    def __init__(self, num_heads: int):
        super().__init__()
        self.num_heads = num_heads

    def forward(self, q, k, v):
        return attention_fp8(q, k, v, self.num_heads)

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}, fp8=e4m3"


def use_fp8_attention(dit: nn.Module) -> int:
    """Swap the self-attention of every block of ``dit`` for :class:`FP8Attention`; returns how
    many were swapped (cross-attention, over the 512 prompt tokens, stays as it is)."""
    n = 0
    for block in dit.blocks:
        attn = getattr(getattr(block, "self_attn", None), "attn", None)
        if attn is not None and hasattr(attn, "num_heads"):
            block.self_attn.attn = FP8Attention(attn.num_heads)
            n += 1
    return n
