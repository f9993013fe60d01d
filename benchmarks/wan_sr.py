"""Every ``Wan_SR`` name the benchmarks use, imported here and nowhere else in ``benchmarks/``, and
the few adapters that touch the pipeline's attributes: when the package changes, this is the one
file to fix. (The benchmarks that time a whole command run the project's scripts instead:
``benchmarks/commands.py``.)

``benchmarks.common`` is imported first: it applies ``--light`` before the ``diffsynth`` imports
below (which would otherwise load diffsynth's package ``__init__``).
"""
from __future__ import annotations

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from benchmarks import common  # noqa: F401  (first: --light, see above)
from diffsynth.models.wan_video_dit import WanModel
from diffsynth.models.wan_video_text_encoder import WanTextEncoder
from diffsynth.models.wan_video_vae import VideoVAE_, WanVideoVAE

from Wan_SR.core.caches import configure_compile_caches
from Wan_SR.core.options import DEFAULT_PROMPT
from Wan_SR.data.degradation import Degradation
from Wan_SR.data.video_io import iter_frames, read_video, write_video
from Wan_SR.fusion.frequency import fuse_video
from Wan_SR.models import fp8, vae_fast
from Wan_SR.models.draft import build_draft, load_draft, select_blocks
from Wan_SR.models.lora import load_base_checkpoint
from Wan_SR.models.offload import HostCopy, stream_text_encoder
from Wan_SR.models.ram import REAL_RAM, RAMTagger
from Wan_SR.models.wan import (load_dit, load_safetensors, place_latent_scale, vae_decode,
                               vae_encode, widen_patch_embedding)
from Wan_SR.sampling.pipeline import PSSRPipeline, SamplingConfig, pad_tile
from Wan_SR.sampling.speculative import base_step, draft_step, draft_steps
from Wan_SR.sampling.speed import attention_context, compile_vae_norms, vae_channels_last
from Wan_SR.sampling.timeline import FlowTimeline
from Wan_SR.testing.checkpoints import (REAL_DIT, REAL_T5, REAL_VAE, TINY_DIT, TINY_T5,
                                        TINY_VAE, checkpoint_folder, wan_folder)
from Wan_SR.testing.lpips import write_random_lpips_weights
from Wan_SR.testing.ram import TINY_RAM

__all__ = [  # what the benchmarks take from here besides the adapters below
    "DEFAULT_PROMPT", "Degradation", "SDPBackend", "fp8", "sdpa_kernel",
    "vae_fast", "FlowTimeline", "HostCopy", "stream_text_encoder",
    "attention_context", "base_step", "compile_vae_norms", "configure_compile_caches",
    "draft_steps", "fuse_video",
    "iter_frames", "load_base_checkpoint", "load_dit", "load_draft", "load_safetensors",
    "read_video", "select_blocks", "vae_channels_last", "vae_decode", "vae_encode", "write_video",
    "write_random_lpips_weights", "wan_folder", "checkpoint_folder"]


# --------------------------------------------------------------------------- random models

def random_vae(size: str, device, dtype) -> torch.nn.Module:
    """The Wan VAE with random weights: ``real`` Wan2.1 sizes or ``tiny``."""
    with torch.device(device):
        vae = WanVideoVAE(z_dim=16)
        vae.model = VideoVAE_(**(REAL_VAE if size == "real" else TINY_VAE))
    place_latent_scale(vae, device)
    return vae.to(dtype).eval().requires_grad_(False)


def training_vae(args) -> tuple:
    """What the training benchmarks measure on: ``(device, (frames, height, width), dtype,
    vae)``: a real-size random VAE in bf16 with cuDNN's autotuner on a GPU (the trainers'
    settings), a tiny one in float32 on a 9x64x64 clip with ``--quick``."""
    device = common.default_device()
    shape = (9, 64, 64) if args.quick else (args.frames, args.height, args.width)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    torch.backends.cudnn.benchmark = device == "cuda"
    return device, shape, dtype, random_vae("tiny" if args.quick else "real", device, dtype)


def random_models(size: str, device, dtype, k_select: float = 1.5, seed: int = 0):
    """Random-weight base DiT (widened), draft, VAE and a prompt context with the real Wan2.1-1.3B
    shapes (``real``) or tiny ones: ``(base, draft, vae, context)``."""
    torch.manual_seed(seed)
    cfg = dict(REAL_DIT if size == "real" else TINY_DIT)
    with torch.device(device):
        base = WanModel(**cfg)
    base.config = cfg
    widen_patch_embedding(base, 32)
    with torch.no_grad():  # keep random-weight activations in a sane range
        for blk in base.blocks:
            blk.modulation.mul_(0.1)
    base = base.to(dtype).eval().requires_grad_(False)
    draft = build_draft(base, k_select).to(dtype).eval().requires_grad_(False)
    context = torch.randn(1, 512, cfg["text_dim"], device=device, dtype=dtype)
    return base, draft, random_vae(size, device, dtype), context


def random_text_encoder(size: str, device, dtype) -> torch.nn.Module:
    """The umT5-xxl encoder (``real``) or a tiny one, random weights."""
    with torch.device(device):
        enc = WanTextEncoder(**REAL_T5) if size == "real" else WanTextEncoder(vocab=1000, **TINY_T5)
    return enc.to(dtype).eval().requires_grad_(False)


def random_tagger(size: str, device, dtype) -> torch.nn.Module:
    """The RAM Swin-L tagger (``real``) or a tiny one, random weights."""
    with torch.device(device):
        ram = RAMTagger(REAL_RAM if size == "real" else TINY_RAM)
    return ram.to(dtype).eval().requires_grad_(False)


# --------------------------------------------------------------------------- the pipeline

def make_pipeline(base, draft, vae, context, device, dtype, fast: bool) -> PSSRPipeline:
    """A step-1 pipeline on the given models; ``fast`` False: PyTorch's default attention and
    the reference VAE forward (the release's kernels)."""
    pipe = PSSRPipeline(vae, base, draft, context, None, SamplingConfig(), device=device,
                        dtype=dtype, attention="auto" if fast else None,
                        vae_fast=None if fast else False)
    return pipe


def optimize(pipe, compile: bool = True, compile_vae: bool = False) -> PSSRPipeline:
    """The speed switches of step 1: channels-last VAE, cuDNN's autotuner, compiled blocks."""
    return pipe.optimize(compile=compile, channels_last=True, compile_vae=compile_vae)


def use_reference_vae(pipe, reference: bool) -> None:
    """The pipeline's VAE forward: the reference (diffsynth's) or the default (fused on CUDA)."""
    pipe.vae_fast = False if reference else None


def last_branch(pipe) -> str:
    """The branch name of the last draft step (``base+draft_3`` with the default timesteps)."""
    return f"base+draft_{len(pipe.config.timestep_draft_list)}"


def final_window(pipe, frames: torch.Tensor, window=None) -> torch.Tensor:
    """One window to the final output, as step 1 makes it: encode once, base and draft steps,
    decode the base and the last draft branch, fuse. ``window``: the fusion's (h, w) tile."""
    last = last_branch(pipe)
    out = pipe.run_tile(frames, ["base", last])
    tile = dict(window_h=window[0], window_w=window[1]) if window else {}
    return fuse_video(out["base"], out[last], **tile)


def one_step(pipe, frames: torch.Tensor) -> torch.Tensor:
    """Encode, the base step, one decode."""
    return pipe.run_tile(frames, ["base"])["base"]


def published_shape(pipe, frames: torch.Tensor) -> torch.Tensor:
    """A window shaped like the published release: the input encoded twice, base and every draft
    step, all branches decoded, then the fusion."""
    padded, (T, H, W) = pad_tile(frames)
    pipe.encode(padded)  # the release encodes the input twice
    z_l = pipe.encode(padded)
    outs = [pipe.decode(x)[:T, :, :H, :W] for x in pipe.sample_latents(z_l)]
    return fuse_video(outs[0], outs[-1])


def encode_window(pipe, frames: torch.Tensor) -> torch.Tensor:
    """The latents of one (padded) window."""
    return pipe.encode(pad_tile(frames)[0])


def window_steps(pipe, z_l: torch.Tensor):
    """``(base, draft, x0)``: one base step and one draft step (599 -> 499) of ``pipe`` on
    ``z_l`` as functions (run them inside an attention context), and the base step's x0."""
    ids = pipe.config.record_blocks
    with pipeline_attention(pipe):
        b = base_step(pipe.base, z_l, pipe.context, pipe.timeline, record_blocks=ids)

    def base():
        return base_step(pipe.base, z_l, pipe.context, pipe.timeline, record_blocks=ids)

    def draft():
        return draft_step(pipe.draft, b.z_next, z_l, pipe.context, b.features, pipe.timeline,
                          599, 499)

    return base, draft, b.x0


def dit_sizes(pipe) -> dict:
    """The base DiT's width, FFN width, block count and the prompt's length (for FLOP counts)."""
    return {"dim": pipe.base.dim, "ffn": pipe.base.config["ffn_dim"],
            "blocks": len(pipe.base.blocks), "ctx_len": pipe.context.shape[1]}


def pipeline_attention(pipe):
    """The attention choice ``pipe`` samples with, as a context."""
    return attention_context(pipe.attention, pipe.device)


def set_rope(fn) -> None:
    """Replace diffsynth's ``rope_apply`` (used by every self-attention) with ``fn``; None puts
    diffsynth's own back."""
    from diffsynth.models import wan_video_dit

    if not hasattr(wan_video_dit, "_pssr_rope"):
        wan_video_dit._pssr_rope = wan_video_dit.rope_apply
    wan_video_dit.rope_apply = fn or wan_video_dit._pssr_rope


def vae_round_once(flag: bool) -> None:
    """The fused VAE kernels round once (True) or as the reference does (False, the default)."""
    vae_fast.EMULATE_ROUNDING = not flag
