"""FP8 matmuls for the DiTs' linear layers (``--fp8``; docs/method.md, "FP8").

:class:`FP8Linear` keeps a linear layer's weight in float8 e4m3 with one scale per output row
(``amax / 448``, quantised once) and quantises its input per row (per token) at every call the
same way; ``torch._scaled_mm`` multiplies them (FP8 tensor cores on GPUs that have them, float32
accumulation) and applies both scales to the bf16 result; the bias is added after.
:func:`use_fp8` swaps them into a DiT's blocks: every linear layer whose sides are multiples of
16, but the cross-attention's keys and values (they see the 512 text tokens only; their cost
is small and their error would reach every token). Attention, normalisation, the embeddings and
the head stay in the model's dtype.

An input is quantised in two passes (its rows' largest magnitudes, then the scaled cast), and
once for the layers that take the same tensor (self-attention's q, k and v): the last input's
quantised form is kept (with the tensor itself and its version counter, so it can only be
reused for the very same values).
"""
from __future__ import annotations

import logging
import threading

import torch
import torch.nn as nn

log = logging.getLogger(__name__)
E4M3 = torch.float8_e4m3fn
E4M3_MAX = 448.0
SKIP = ("cross_attn.k", "cross_attn.v", "cross_attn.k_img", "cross_attn.v_img")


def has_fp8() -> bool:
    """Whether this torch has float8 and ``_scaled_mm``."""
    return hasattr(torch, "float8_e4m3fn") and hasattr(torch, "_scaled_mm")


def gpu_has_fp8(device) -> bool:
    """Whether ``device`` (CUDA) has FP8 tensor cores (compute capability 8.9 or newer)."""
    return torch.cuda.get_device_capability(torch.device(device)) >= (8, 9)


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(M, K) -> (M, K) e4m3 values and (M, 1) float32 scales: ``x ~= q * scale``, each row's
    largest magnitude mapped to 448 (an all-zero row gets the scale 1)."""
    amax = torch.linalg.vector_norm(x, float("inf"), dim=1, keepdim=True).float()
    scale = torch.where(amax > 0, amax / E4M3_MAX, torch.ones_like(amax))
    return torch.div(x, scale).to(E4M3), scale  # x / scale in float32, then one cast


_last = threading.local()  # the last input quantised on this thread: (tensor, version, q, scale)


def quantize_input(x: torch.Tensor, in_features: int) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`quantize_rows` of ``x`` as (rows, ``in_features``), reused when the previous call
    got this very tensor unchanged (module docstring); plain under torch.compile."""
    if torch.compiler.is_compiling():
        return quantize_rows(x.reshape(-1, in_features))
    got = getattr(_last, "entry", None)
    if got is not None and got[0] is x and got[1] == x._version:
        return got[2], got[3]
    q, scale = quantize_rows(x.reshape(-1, in_features))
    _last.entry = (x, x._version, q, scale)
    return q, scale


def forget_inputs() -> None:
    """Drop the kept quantised input (its memory)."""
    _last.entry = None


class FP8Linear(nn.Module):
    """``linear`` with its matmul in FP8 (module docstring). ``weight`` (e4m3, out x in) and
    ``weight_scale`` (float32, 1 x out) are buffers: they move with the module."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        q, scale = quantize_rows(linear.weight.detach())
        self.register_buffer("weight", q)
        self.register_buffer("weight_scale", scale.t().contiguous())
        bias = linear.bias.detach() if linear.bias is not None else None
        self.register_buffer("bias", bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        q, scale = quantize_input(x, self.in_features)
        y = torch._scaled_mm(q, self.weight.t(), scale_a=scale, scale_b=self.weight_scale,
                             out_dtype=torch.bfloat16).to(x.dtype)
        if self.bias is not None:
            y = y + self.bias.to(x.dtype)
        return y.reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, fp8=e4m3"


def use_fp8(dit: nn.Module) -> tuple[int, int]:
    """Swap the linear layers of ``dit.blocks`` for :class:`FP8Linear` (module docstring).
    Returns (layers swapped, linear layers left as they were)."""
    swapped = kept = 0
    for block in dit.blocks:
        for name, module in list(block.named_modules()):
            if not isinstance(module, nn.Linear):
                continue
            if name.endswith(SKIP) or module.in_features % 16 or module.out_features % 16:
                kept += 1
                continue
            parent_name, _, child = name.rpartition(".")
            parent = block.get_submodule(parent_name) if parent_name else block
            setattr(parent, child, FP8Linear(module))
            swapped += 1
    return swapped, kept
