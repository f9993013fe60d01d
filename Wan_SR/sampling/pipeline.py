"""The PS-SR pipeline: models loaded once, one tile at a time (docs/method.md, "Base step",
"Draft steps", "Sliding windows").

``PSSRPipeline.run_tile`` pads a tile to 4n+1 frames and /16 sizes, encodes it ONCE, makes the
base step and as many draft steps as the requested branches need, decodes only those branches
and crops back. ``encode_streamed`` / ``decode_streamed`` are the same VAE passes over a whole
clip fed chunk by chunk (the latent windows, :mod:`Wan_SR.sampling.latent_windows`).
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Optional, Sequence

import torch
import torch.nn.functional as F

from Wan_SR.core.options import DEFAULT_K_SELECT, SamplingOptions, branch_names
from Wan_SR.core.profile import span
from Wan_SR.models.draft import load_draft, select_blocks
from Wan_SR.models import fp8, vae_tiles
from Wan_SR.models.lora import load_base_checkpoint
from Wan_SR.models.offload import BlockStream
from Wan_SR.models.text import PromptEncoder
from Wan_SR.models.vae_stream import StreamDecoder, decode_in_lockstep, encode_chunks
from Wan_SR.models.wan import load_dit, load_vae, require_files, vae_decode, vae_encode
from .speculative import base_step, draft_steps
from .speed import (attention_context, compile_blocks, compile_vae_norms, convolution_kernels,
                    vae_channels_last)
from .timeline import FlowTimeline


log = logging.getLogger(__name__)
_S = SamplingOptions()


@dataclass
class SamplingConfig:
    """What the pipeline samples with (defaults: :class:`Wan_SR.core.options.SamplingOptions`)."""
    timestep_base: float = _S.timestep_base
    timestep_draft_list: Sequence[float] = tuple(_S.timestep_draft_list)
    k_select: float = _S.k_select
    cfg_scale: float = _S.cfg_scale
    denoising_strength: float = _S.denoising_strength
    record_blocks: list = field(default_factory=list)

    @classmethod
    def from_options(cls, o: SamplingOptions) -> "SamplingConfig":
        return cls(timestep_base=o.timestep_base, timestep_draft_list=tuple(o.timestep_draft_list),
                   k_select=o.k_select, cfg_scale=o.cfg_scale,
                   denoising_strength=o.denoising_strength)


def padded_shape(T: int, H: int, W: int, multiple: int = 16) -> tuple[int, int, int]:
    """(T', H', W') the VAE is fed: T' = 4n+1 >= T, H', W' the next multiples of ``multiple``."""
    return (((T - 1 + 3) // 4) * 4 + 1, -(-H // multiple) * multiple, -(-W // multiple) * multiple)


def pad_frames(video: torch.Tensor, Tp: int, Hp: int, Wp: int) -> torch.Tensor:
    """(T,3,H,W) -> (Tp,3,Hp,Wp): the last frame repeated, the right/bottom edges replicated."""
    T, _, H, W = video.shape
    if Tp > T:
        video = torch.cat([video, video[-1:].expand(Tp - T, -1, -1, -1)], 0)
    if Hp > H or Wp > W:
        video = F.pad(video, (0, Wp - W, 0, Hp - H), mode="replicate")
    return video


def pad_tile(video: torch.Tensor, multiple: int = 16) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """(T,3,H,W) -> padded (T',3,H',W'): T' = 4n+1 (last frame repeated), H', W' multiples of
    ``multiple`` (edge replication). Returns the padded tensor and the original (T, H, W)."""
    T, _, H, W = video.shape
    return pad_frames(video, *padded_shape(T, H, W, multiple)), (T, H, W)


@dataclass
class PipelineStats:
    """How many VAE passes a pipeline made (a streamed pass counts as one): what tests and
    benchmarks count. Only the pipeline's own methods add to it."""
    encodes: int = 0
    decodes: int = 0

    def reset(self) -> None:
        self.encodes = self.decodes = 0


class PSSRPipeline:
    """What sampling one tile needs: the VAE, the base DiT (``base.safetensors`` merged), the
    draft, the prompt context (positive, and negative for guidance), the sampling config, and
    the speed switches of the VAE and the DiTs.

    The prompt of a clip is chosen outside (:class:`Wan_SR.models.tagger.ClipPrompts`); the
    pipeline receives its embedding through :meth:`use_context`. ``prompt`` names the text of
    the current context (None when built from a bare context)."""

    def __init__(self, vae, base_dit, draft, context: torch.Tensor,
                 negative_context: Optional[torch.Tensor], config: SamplingConfig,
                 device="cpu", dtype=torch.float32, attention: str = "auto",
                 prompt: Optional[str] = None, vae_fast: Optional[bool] = None):
        self.vae, self.base, self.draft = vae, base_dit, draft
        self.device, self.dtype = torch.device(device), dtype
        self.prompt = prompt
        self.context = context.to(self.device, dtype)
        self.negative_context = (negative_context.to(self.device, dtype)
                                 if negative_context is not None else None)
        if getattr(draft, "block_ids", None):
            # the draft decides which base features it needs (its file records them)
            config = dataclasses.replace(config, record_blocks=list(draft.block_ids),
                                         k_select=getattr(draft, "k_select", None)
                                         or config.k_select)
        if not config.record_blocks:
            k = DEFAULT_K_SELECT if config.k_select is None else config.k_select
            config = dataclasses.replace(config,
                                         record_blocks=select_blocks(len(base_dit.blocks), k))
        self.config = config
        self.timeline = FlowTimeline(sigma_max=config.denoising_strength)
        self.attention = attention
        self.vae_fast = vae_fast     # None: the fast VAE path on CUDA (models/vae_fast.py)
        self.channels_last = False
        self.vae_tiles = None        # (rows, cols) of the VAE's exact tiles (a memory budget)
        self.streams = {}            # {"base"/"draft": BlockStream} of DiTs streamed from host
        self.memory_plan = None      # the MemoryPlan it works under (None: no budget applied)
        self.fp8 = False             # the DiTs' linear layers in FP8 (use_fp8)
        self.stats = PipelineStats()

    def branch_names(self) -> list[str]:
        """The branches this pipeline makes: base and base+draft_k for every draft step."""
        return branch_names(len(self.config.timestep_draft_list))

    def use_context(self, context: torch.Tensor, prompt: Optional[str] = None) -> None:
        """Sample from now on with the prompt embedding ``context`` (of the text ``prompt``)."""
        self.context = context.to(self.device, self.dtype)
        self.prompt = prompt

    def optimize(self, compile: bool = False, channels_last: bool = True,
                 compile_vae: bool = False, deterministic: bool = False) -> "PSSRPipeline":
        """GPU speed switches (no effect on CPU): cuDNN's autotuner (off with ``deterministic``:
        the same output bits in every run), channels-last VAE convolutions, and with ``compile``
        torch.compile of every DiT block (once per process, for any window length);
        ``compile_vae`` also compiles the VAE's normalisation layers."""
        if self.device.type != "cuda":
            return self
        convolution_kernels(deterministic)
        if channels_last:
            vae_channels_last(self.vae)
            self.channels_last = True
        if compile:  # for any window length: a short clip's window does not compile again
            compile_blocks(self.base, dynamic=True)
            compile_blocks(self.draft, dynamic=True)
        if compile_vae:
            compile_vae_norms(self.vae)
        return self

    def use_fp8(self) -> "PSSRPipeline":
        """FP8 matmuls for the base DiT's and the draft's linear layers
        (:mod:`Wan_SR.models.fp8`); before :meth:`use_memory_plan` (the weights shrink).
        ValueError on a GPU without FP8 tensor cores or a torch without float8."""
        if not fp8.has_fp8():
            raise ValueError(f"--fp8: this torch ({torch.__version__}) has no float8 matmul; "
                             "update torch or run without --fp8")
        if self.device.type == "cuda" and not fp8.gpu_has_fp8(self.device):
            major, minor = torch.cuda.get_device_capability(self.device)
            raise ValueError(f"--fp8: {torch.cuda.get_device_name(self.device)} (compute "
                             f"capability {major}.{minor}) has no FP8 tensor cores (8.9 or newer: "
                             "RTX 40xx, L4/L40, H100/H200, B200); run without --fp8")
        if self.device.type != "cuda":
            log.info("--fp8 on the CPU: the same arithmetic, emulated (slow; for tests)")
        counts = [fp8.use_fp8(m) for m in (self.base, self.draft)]
        log.info("--fp8: %d linear layers of the base DiT and %d of the draft in FP8 (e4m3, "
                 "row-wise scales)", counts[0][0], counts[1][0])
        self.fp8 = True
        return self

    def use_memory_plan(self, plan) -> "PSSRPipeline":
        """Work within a memory budget (:func:`Wan_SR.sampling.memory.plan_memory`): the DiT
        blocks beyond the plan's resident ones stream from pinned host memory, and the VAE runs
        in exact spatial tiles. The values computed do not change."""
        self.memory_plan = plan
        self.vae_tiles = tuple(plan.vae_tiles) if tuple(plan.vae_tiles) != (1, 1) else None
        for name, model, resident in (("base", self.base, plan.base_resident),
                                      ("draft", self.draft, plan.draft_resident)):
            if name not in self.streams and resident < len(model.blocks):
                self.streams[name] = BlockStream(model.blocks, self.device, resident)
        return self

    def streamed_bytes(self) -> int:
        """Bytes of DiT weights copied from host memory so far (memory budgets)."""
        return sum(s.copied_bytes for s in self.streams.values())

    def _memory_format(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last_3d) if self.channels_last else x

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_files(cls, wan_files, base_path, draft_path, *, prompt: str, negative_prompt: str,
                   config: SamplingConfig, device="cpu", dtype=torch.bfloat16,
                   cache_dir: Optional[str] = None, num_heads: Optional[int] = None,
                   attention: str = "auto", text=None):
        """Load the models of the official files and the PS-SR checkpoints, and the embeddings
        of ``prompt`` (and ``negative_prompt`` with guidance). ``text``: the
        :class:`~Wan_SR.models.text.PromptEncoder` to embed with, left loaded for the caller
        (per-clip prompts); default: one made here and freed after these two prompts."""
        # fail early on every missing file at once, before the slow loads
        require_files(wan_files, base_path, draft_path)
        enc = text or PromptEncoder(wan_files.t5, wan_files.tokenizer, cache_dir=cache_dir,
                                    device=device)
        context = enc.encode(prompt)
        negative = enc.encode(negative_prompt) if config.cfg_scale != 1.0 else None
        if enc.encoder_loads:
            log.info("prompt embedding computed and cached")
        if text is None:
            enc.release()
        base = load_dit(wan_files.dit, dtype=dtype, device=device, num_heads=num_heads)
        load_base_checkpoint(base, base_path)
        base.to(dtype=dtype, device=device)
        draft = load_draft(draft_path, config.k_select, base_num_layers=len(base.blocks),
                           num_heads=num_heads or base.config["num_heads"], dtype=dtype,
                           device=device)
        vae = load_vae(wan_files.vae, dtype=dtype, device=device)
        return cls(vae, base, draft, context, negative, config, device=device, dtype=dtype,
                   attention=attention, prompt=prompt)

    # ------------------------------------------------------------------ latents
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """(T,3,H,W) in [0,1] -> latents (1,16,T',H/8,W/8)."""
        self.stats.encodes += 1
        with span("encode"):
            x = (video.to(self.device, self.dtype) * 2 - 1).permute(1, 0, 2, 3).unsqueeze(0)
            if self.vae_tiles:
                x = self._memory_format(x).to(next(self.vae.parameters()).dtype)
                return vae_tiles.encode(self.vae, x, self.vae_tiles).contiguous()
            return vae_encode(self.vae, self._memory_format(x), fast=self.vae_fast).contiguous()

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents -> (T,3,H,W) in [0,1] (float32)."""
        self.stats.decodes += 1
        with span("decode"):
            if self.vae_tiles:
                z = self._memory_format(latents).to(next(self.vae.parameters()).dtype)
                y = vae_tiles.decode(self.vae, z, self.vae_tiles).clamp_(-1, 1)
            else:
                y = vae_decode(self.vae, self._memory_format(latents), fast=self.vae_fast)
            return (y[0].permute(1, 0, 2, 3).float() + 1) / 2

    def encode_streamed(self, chunks: Iterable[torch.Tensor]) -> torch.Tensor:
        """:meth:`encode` of a clip given as chunks (frame 0, then 4 frames at a time; see
        :func:`Wan_SR.models.vae_stream.encode_chunks`), never holding the whole clip."""
        self.stats.encodes += 1
        with span("encode"):
            return encode_chunks(self.vae, chunks, device=self.device, dtype=self.dtype,
                                 memory_format=self._memory_format)

    def decode_streamed(self, volumes: dict, num_frames: int, height: int,
                        width: int) -> Iterator[dict]:
        """:meth:`decode` of the latent volumes {branch: (1,16,T',h,w)} in lockstep, one latent
        frame at a time: {branch: (n,3,H,W)} chunks in [0,1] cropped to ``num_frames`` x
        ``height`` x ``width``."""
        decoders = {}
        for b, z in volumes.items():
            decoders[b] = StreamDecoder(self.vae, z, device=self.device,
                                        memory_format=self._memory_format)
            self.stats.decodes += 1
        return decode_in_lockstep(decoders, num_frames, height, width)

    def sample_latents(self, z_l: torch.Tensor, num_draft_steps: Optional[int] = None) -> list:
        """Base step then ``num_draft_steps`` draft steps; returns [x0_base, x0_draft_1, ...]."""
        with attention_context(self.attention, self.device):
            out = self._sample_latents(z_l, num_draft_steps)
        if self.fp8:
            fp8.forget_inputs()  # the last layer input it kept
        return out

    def _sample_latents(self, z_l, num_draft_steps):
        cfg = self.config
        tlist = list(cfg.timestep_draft_list)
        n = len(tlist) if num_draft_steps is None else num_draft_steps
        t_next = tlist[0] if tlist else 0
        with span("base"):
            b = base_step(self.base, z_l, self.context, self.timeline, t_base=cfg.timestep_base,
                          t_next=t_next, record_blocks=cfg.record_blocks if n else (),
                          cfg_scale=cfg.cfg_scale, negative_context=self.negative_context)
        out = [b.x0]
        if n:
            # steps after the last requested one are skipped: x0_k = z_k - sigma(t_k) v_k does
            # not depend on where step k would move z next
            with span("draft"):
                x0s, _ = draft_steps(self.draft, b.z_next, z_l, self.context, b.features,
                                     self.timeline, tlist[:n], cfg_scale=cfg.cfg_scale,
                                     negative_context=self.negative_context)
            out += x0s
        return out

    @torch.no_grad()
    def run_tile(self, frames: torch.Tensor, branches: Sequence[str]) -> dict:
        """Restore one tile. ``frames``: (T,3,H,W) in [0,1]; returns {branch: (T,3,H,W) in [0,1]}
        for the requested branches (names from :func:`branch_names`)."""
        names = self.branch_names()
        unknown = [b for b in branches if b not in names]
        if unknown:
            raise ValueError(f"unknown branches {unknown}; available: {names}")
        need = max(names.index(b) for b in branches)
        padded, (T, H, W) = pad_tile(frames.to(self.device))
        z_l = self.encode(padded)
        x0s = self.sample_latents(z_l, num_draft_steps=need)
        out = {}
        for b in branches:
            out[b] = self.decode(x0s[names.index(b)])[:T, :, :H, :W]
        return out
