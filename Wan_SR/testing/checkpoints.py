"""Random-weight checkpoints in exactly the official file layouts (docs/method.md §8).

    python -m Wan_SR.tools.make_tiny_checkpoints --out DIR [--size tiny|real] [--no_ram]

writes::

    DIR/dependent_models/Wan2.1-T2V-1.3B/diffusion_pytorch_model.safetensors   (original Wan keys)
    DIR/dependent_models/Wan2.1-T2V-1.3B/Wan2.1_VAE.pth
    DIR/dependent_models/Wan2.1-T2V-1.3B/models_t5_umt5-xxl-enc-bf16.pth
    DIR/dependent_models/Wan2.1-T2V-1.3B/google/umt5-xxl/                    (a T5 tokenizer)
    DIR/dependent_models/ram_swin_large_14m.pth                                (RAM tagger, {"model": sd})
    DIR/dependent_models/DAPE.pth                                              (DAPE LoRA pairs)
    DIR/checkpoints/pretrained_models/base.safetensors                         (LoRA + full tensors)
    DIR/checkpoints/pretrained_models/draft.safetensors                        (pruned draft)

(in Python: :func:`make_checkpoints`). The files go through the same public loaders as the real
ones. ``--size real`` writes the real Wan2.1-1.3B shapes (bf16) for GPU benchmarks; its 11 GB
text encoder is skipped unless ``--text_encoder`` is given, and a random prompt embedding is put
in the prompt cache instead. The RAM tagger files (real: Swin-L shapes, fp32, about 0.9 GB) are
skipped with ``--no_ram``.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import diffsynth
import torch
from diffsynth.models.wan_video_dit import WanModel
from diffsynth.models.wan_video_text_encoder import WanTextEncoder
from diffsynth.models.wan_video_vae import VideoVAE_
from transformers import AutoTokenizer

from ..core.files import save_safetensors_atomic
from ..core.options import DEFAULT_NEGATIVE_PROMPT, DEFAULT_PROMPT
from ..models.draft import build_draft, save_draft
from ..models.lora import export_base_state_dict, inject_lora, merge_lora_state_dict
from ..models.ram import DAPE_FILE, RAM_FILE
from ..models.text import store_cached_context
from ..models.wan import (WAN_DIT_FILE, WAN_T5_FILE, WAN_TOKENIZER_DIR, WAN_VAE_FILE, build_dit,
                          widen_patch_embedding)
from .ram import write_tiny_dape, write_tiny_ram

TINY_DIT = dict(dim=64, in_dim=16, ffn_dim=128, out_dim=16, text_dim=32, freq_dim=256, eps=1e-6,
                patch_size=(1, 2, 2), num_heads=2, num_layers=6, has_image_input=False)
REAL_DIT = dict(dim=1536, in_dim=16, ffn_dim=8960, out_dim=16, text_dim=4096, freq_dim=256,
                eps=1e-6, patch_size=(1, 2, 2), num_heads=12, num_layers=30, has_image_input=False)
TINY_VAE = dict(dim=8, z_dim=16, num_res_blocks=1)
REAL_VAE = dict(dim=96, z_dim=16, num_res_blocks=2)
TINY_T5 = dict(dim=32, dim_attn=32, dim_ffn=64, num_heads=2, num_layers=2, num_buckets=32)
REAL_T5 = dict(vocab=256384, dim=4096, dim_attn=4096, dim_ffn=10240, num_heads=64, num_layers=24,
               num_buckets=32)
TINY_DISCRIMINATOR = dict(channels=(4, 4, 8, 8, 8), hidden=8)  # release: VGG16 widths, hidden 1024
TINY_LORA_RANK = 4
REAL_LORA_RANK = 32


def wan_folder(root) -> Path:
    """Where the factory puts the Wan2.1 files under ``root`` (the repository's layout)."""
    return Path(root) / "dependent_models" / "Wan2.1-T2V-1.3B"


def checkpoint_folder(root) -> Path:
    """Where the factory puts ``base.safetensors`` and ``draft.safetensors`` under ``root``."""
    return Path(root) / "checkpoints" / "pretrained_models"


@dataclass(frozen=True)
class _Plan:
    """What to write where: one value for every step of :func:`make_checkpoints`."""
    out: Path
    real: bool
    dtype: torch.dtype  # bf16 for real shapes, fp32 for tiny ones
    dit_cfg: dict
    seed: int
    k_select: float
    lora_scale: float

    @property
    def wan_dir(self) -> Path:
        return wan_folder(self.out)

    @property
    def ckpt_dir(self) -> Path:
        return checkpoint_folder(self.out)

    @property
    def dit_metadata(self) -> dict:
        return {"num_heads": str(self.dit_cfg["num_heads"])}


def _tokenizer_source() -> Path:
    return Path(diffsynth.__file__).parent / "tokenizer_configs" / "flux" / "tokenizer_2"


def _save_st(sd: dict, path: Path, metadata: dict | None = None) -> None:
    save_safetensors_atomic(path, {k: v.detach() for k, v in sd.items()}, metadata)


def write_dit(plan: _Plan) -> tuple[Path, dict]:
    """The DiT in original Wan key names; returns its file and state dict."""
    sd = {k: v.to(plan.dtype) for k, v in WanModel(**plan.dit_cfg).state_dict().items()}
    path = plan.wan_dir / WAN_DIT_FILE
    _save_st(sd, path, plan.dit_metadata)
    return path, sd


def write_vae(plan: _Plan) -> Path:
    """The VAE as ``.pth``, original keys without the ``model.`` prefix."""
    vae = VideoVAE_(**(REAL_VAE if plan.real else TINY_VAE))
    path = plan.wan_dir / WAN_VAE_FILE
    torch.save({k: v.to(plan.dtype) for k, v in vae.state_dict().items()}, path)
    return path


def write_tokenizer(plan: _Plan) -> Path:
    """A T5 tokenizer folder (diffsynth's copy of the one the umT5 encoder uses)."""
    tok_dir = plan.wan_dir / WAN_TOKENIZER_DIR
    if not tok_dir.exists():
        shutil.copytree(_tokenizer_source(), tok_dir)
    return tok_dir


def write_text_encoder(plan: _Plan, tok_dir: Path) -> Path:
    """The umT5 encoder (bf16), its vocabulary the tokenizer's for tiny shapes."""
    path = plan.wan_dir / WAN_T5_FILE
    if plan.real:  # 5.7B values: drawn in bf16 straight away (the module's own init is slow)
        with torch.device("meta"):
            t5 = WanTextEncoder(**REAL_T5)
        g = torch.Generator().manual_seed(plan.seed)
        sd = {k: (torch.ones(v.shape, dtype=torch.bfloat16) if k.split(".")[-2].startswith("norm")
                  else torch.randn(v.shape, generator=g, dtype=torch.bfloat16) * 0.02)
              for k, v in t5.state_dict().items()}
        torch.save(sd, path)
        return path
    t5 = WanTextEncoder(vocab=len(AutoTokenizer.from_pretrained(str(tok_dir))), **TINY_T5)
    torch.save({k: v.to(torch.bfloat16) for k, v in t5.state_dict().items()}, path)
    return path


def cache_random_prompts(plan: _Plan, g: torch.Generator) -> Path:
    """Instead of the encoder: random embeddings of the default prompts in the prompt cache,
    keyed by the encoder file they stand for."""
    path = plan.wan_dir / WAN_T5_FILE
    for p in (DEFAULT_PROMPT, DEFAULT_NEGATIVE_PROMPT):
        ctx = torch.randn(1, 512, plan.dit_cfg["text_dim"], generator=g).to(torch.bfloat16)
        store_cached_context(p, path, ctx)
    return path


def write_base(plan: _Plan, dit_sd: dict, g: torch.Generator) -> tuple[Path, dict]:
    """base.safetensors in the train-time layout (peft LoRA + widened patch embedding +
    head.head), every trained tensor moved off its start; returns its file and state dict."""
    base = build_dit(dict(dit_sd), metadata=plan.dit_metadata, dtype=torch.float32)
    widen_patch_embedding(base, 32)
    with torch.no_grad():
        base.patch_embedding.weight[:, 16:].normal_(0, 0.02, generator=g)
        base.head.head.weight.add_(torch.randn(base.head.head.weight.shape, generator=g) * 0.02)
    inject_lora(base, REAL_LORA_RANK if plan.real else TINY_LORA_RANK)
    with torch.no_grad():
        for name, p in base.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * plan.lora_scale)
    base_sd = {k: v.to(plan.dtype) for k, v in export_base_state_dict(base).items()}
    path = plan.ckpt_dir / "base.safetensors"
    _save_st(base_sd, path)
    return path, base_sd


def write_draft(plan: _Plan, dit_sd: dict, base_sd: dict, g: torch.Generator) -> Path:
    """draft.safetensors, built from the merged base, fc layers perturbed away from identity."""
    merged = build_dit(dict(dit_sd), metadata=plan.dit_metadata, dtype=torch.float32)
    merge_lora_state_dict(merged, base_sd)
    draft = build_draft(merged, plan.k_select)
    with torch.no_grad():
        for fc in draft.fc_layers:
            fc.weight.add_(torch.randn(fc.weight.shape, generator=g) * 0.02)
    draft.to(plan.dtype)
    path = plan.ckpt_dir / "draft.safetensors"
    save_draft(draft, path)
    return path


def write_tiny_discriminator(path: str | Path, seed: int = 0) -> Path:
    """A ``latest_discriminator.safetensors``-layout file (the release's keys, float32) of a
    narrow discriminator, for ``train_base.py --load_model_discriminator_from`` in tests: the
    release-size one makes every saved training state ~470 MB."""
    from ..training.discriminator import LatentDiscriminator

    torch.manual_seed(seed)
    sd = LatentDiscriminator(**TINY_DISCRIMINATOR).state_dict()
    return save_safetensors_atomic(Path(path), sd)


def make_checkpoints(out: str | Path, size: str = "tiny", seed: int = 0,
                     text_encoder: bool | None = None, k_select: float = 1.5,
                     lora_scale: float = 0.02, ram: bool = True,
                     log: Callable[[str], object] = print) -> dict:
    """Write all files; returns their paths (``"ram"`` / ``"dape"`` with ``ram``).
    Deterministic for a given seed."""
    real = size == "real"
    plan = _Plan(Path(out), real, torch.bfloat16 if real else torch.float32,
                 REAL_DIT if real else TINY_DIT, seed, k_select, lora_scale)
    plan.wan_dir.mkdir(parents=True, exist_ok=True)
    plan.ckpt_dir.mkdir(parents=True, exist_ok=True)
    g = torch.manual_seed(seed)
    paths = {}
    log(f"DiT ({'1.3B' if real else 'tiny'}) ...")
    paths["dit"], dit_sd = write_dit(plan)
    log("VAE ...")
    paths["vae"] = write_vae(plan)
    paths["tokenizer"] = write_tokenizer(plan)
    if text_encoder is None:
        text_encoder = not real
    if text_encoder:
        log("umT5 encoder ...")
        paths["t5"] = write_text_encoder(plan, paths["tokenizer"])
    else:
        log("umT5 encoder skipped: random prompt embeddings go to the prompt cache instead")
        paths["t5"] = cache_random_prompts(plan, g)
    log("base.safetensors ...")
    paths["base"], base_sd = write_base(plan, dit_sd, g)
    log("draft.safetensors ...")
    paths["draft"] = write_draft(plan, dit_sd, base_sd, g)
    if ram:
        log("RAM tagger + DAPE ...")
        paths["ram"] = write_tiny_ram(plan.out / "dependent_models" / RAM_FILE, seed, size)
        paths["dape"] = write_tiny_dape(plan.out / "dependent_models" / DAPE_FILE, seed, size)
    log(f"wrote {plan.out}")
    return paths
