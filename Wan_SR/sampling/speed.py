"""Speed switches for GPU inference. Every switch is optional and leaves results unchanged
beyond bf16 noise.

- ``attention``: which scaled-dot-product-attention kernel the DiT uses (``auto`` = cuDNN first
  on CUDA, the fastest on Hopper; ``flash``, ``efficient``, ``math`` force one).
- ``compile_blocks``: ``torch.compile`` of each DiT block (one graph shared by all blocks; paid
  once per process, not per video; inference compiles it for any token count, so a clip shorter
  than a window does not compile again).
- ``vae_channels_last``: channels-last-3d memory format for the VAE's 3D convolutions.
- ``convolution_kernels``: cuDNN's autotuner (fastest, but it times candidate kernels in each
  process, so two runs may pick different ones and differ in the last bits) or kernels picked by
  rule (``deterministic``: the same bits in every run and on any number of GPUs).
"""
from __future__ import annotations

import contextlib

import torch
from diffsynth.models.wan_video_vae import RMS_norm
from torch.nn.attention import SDPBackend, sdpa_kernel

ATTENTION_CHOICES = ("auto", "cudnn", "flash", "efficient", "math")


def attention_context(name: str, device) -> contextlib.AbstractContextManager:
    """Context manager that selects the SDPA backend order (no-op on CPU or 'auto' off CUDA)."""
    device = torch.device(device)
    if device.type != "cuda" or name is None:
        return contextlib.nullcontext()

    order = {
        "auto": [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION,
                 SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH],
        "cudnn": [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION,
                  SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH],
        "flash": [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH],
        "efficient": [SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH],
        "math": [SDPBackend.MATH],
    }[name]
    try:
        return sdpa_kernel(order, set_priority=True)
    except TypeError:  # older torch: no priority order, just the allowed set
        return sdpa_kernel(order)


def convolution_kernels(deterministic: bool = False) -> None:
    """How cuDNN picks convolution kernels for this process: timed (autotuner; window and tile
    shapes repeat, so it pays for itself after one window) or, with ``deterministic``, by rule
    and only among kernels that give the same bits every time."""
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cudnn.deterministic = deterministic


def compile_blocks(model, dynamic: bool | None = None) -> None:
    """Compile every transformer block in place (``nn.Module.compile``), except blocks streamed
    from host memory (:class:`Wan_SR.models.offload.BlockStream`: their hooks swap weights).
    ``dynamic``: torch.compile's own (None: one graph per shape until a second shape comes,
    then one for any; True: one graph for any token count from the start)."""
    for block in model.blocks:
        if not hasattr(block, "_pssr_stream_index"):
            block.compile(dynamic=dynamic)


def vae_channels_last(vae) -> None:
    """Channels-last weights for the VAE's Conv3d (3d) and Conv2d (2d) layers."""
    for m in vae.model.modules():
        if isinstance(m, torch.nn.Conv3d):
            m.weight.data = m.weight.data.contiguous(memory_format=torch.channels_last_3d)
        elif isinstance(m, torch.nn.Conv2d):
            m.weight.data = m.weight.data.contiguous(memory_format=torch.channels_last)


def compile_vae_norms(vae) -> None:
    """Compile the VAE's RMS norms (normalise, scale, shift: one fused kernel instead of several
    memory-bound passes over full-resolution activations)."""
    for m in vae.model.modules():
        if isinstance(m, RMS_norm):
            m.compile(dynamic=True)
