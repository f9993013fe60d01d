"""Write random-weight checkpoints in exactly the official file layouts (docs/method.md §8).

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

The files go through the same public loaders as the real ones. ``--size real`` writes the real
Wan2.1-1.3B shapes (bf16) for GPU benchmarks; its 11 GB text encoder is skipped unless
``--text_encoder`` is given, and a random prompt embedding is put in the prompt cache instead.
The RAM tagger files (real: Swin-L shapes, fp32, about 0.9 GB) are skipped with ``--no_ram``.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import torch

TINY_DIT = dict(dim=64, in_dim=16, ffn_dim=128, out_dim=16, text_dim=32, freq_dim=256, eps=1e-6,
                patch_size=(1, 2, 2), num_heads=2, num_layers=6, has_image_input=False)
REAL_DIT = dict(dim=1536, in_dim=16, ffn_dim=8960, out_dim=16, text_dim=4096, freq_dim=256,
                eps=1e-6, patch_size=(1, 2, 2), num_heads=12, num_layers=30, has_image_input=False)
TINY_VAE = dict(dim=8, z_dim=16, num_res_blocks=1)
REAL_VAE = dict(dim=96, z_dim=16, num_res_blocks=2)
TINY_T5 = dict(dim=32, dim_attn=32, dim_ffn=64, num_heads=2, num_layers=2, num_buckets=32)
REAL_T5 = dict(vocab=256384, dim=4096, dim_attn=4096, dim_ffn=10240, num_heads=64, num_layers=24,
               num_buckets=32)
TINY_LORA_RANK = 4
REAL_LORA_RANK = 32


def _tokenizer_source() -> Path:
    import diffsynth

    return Path(diffsynth.__file__).parent / "tokenizer_configs" / "flux" / "tokenizer_2"


def _save_st(sd: dict, path: Path, metadata: dict | None = None) -> None:
    from Wan_SR.core.files import save_safetensors_atomic

    save_safetensors_atomic(path, {k: v.detach() for k, v in sd.items()}, metadata)


def make_checkpoints(out: str | Path, size: str = "tiny", seed: int = 0,
                     text_encoder: bool | None = None, k_select: float = 1.5,
                     lora_scale: float = 0.02, ram: bool = True, log=print) -> dict:
    """Write all files; returns their paths (``"ram"`` / ``"dape"`` with ``ram``).
    Deterministic for a given seed."""
    from diffsynth.models.wan_video_dit import WanModel
    from diffsynth.models.wan_video_text_encoder import WanTextEncoder
    from diffsynth.models.wan_video_vae import VideoVAE_

    from Wan_SR.models.draft import build_draft, save_draft
    from Wan_SR.models.lora import export_base_state_dict, inject_lora, merge_lora_state_dict
    from Wan_SR.core.options import DEFAULT_NEGATIVE_PROMPT, DEFAULT_PROMPT
    from Wan_SR.models.text import store_cached_context
    from Wan_SR.models.wan import (WAN_DIT_FILE, WAN_T5_FILE, WAN_TOKENIZER_DIR, WAN_VAE_FILE,
                                   build_dit, widen_patch_embedding)

    real = size == "real"
    if text_encoder is None:
        text_encoder = not real
    dtype = torch.bfloat16 if real else torch.float32
    out = Path(out)
    wan_dir = out / "dependent_models" / "Wan2.1-T2V-1.3B"
    ckpt_dir = out / "checkpoints" / "pretrained_models"
    wan_dir.mkdir(parents=True, exist_ok=True)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    g = torch.manual_seed(seed)
    paths = {}

    # DiT in original Wan key names
    cfg = REAL_DIT if real else TINY_DIT
    log(f"DiT ({'1.3B' if real else 'tiny'}) ...")
    dit = WanModel(**cfg)
    sd = {k: v.to(dtype) for k, v in dit.state_dict().items()}
    paths["dit"] = wan_dir / WAN_DIT_FILE
    _save_st(sd, paths["dit"], {"num_heads": str(cfg["num_heads"])})

    # VAE (.pth, original keys without the 'model.' prefix)
    log("VAE ...")
    vae = VideoVAE_(**(REAL_VAE if real else TINY_VAE))
    paths["vae"] = wan_dir / WAN_VAE_FILE
    torch.save({k: v.to(dtype) for k, v in vae.state_dict().items()}, paths["vae"])
    del vae

    # tokenizer folder + umT5 encoder
    tok_dir = wan_dir / WAN_TOKENIZER_DIR
    if not tok_dir.exists():
        shutil.copytree(_tokenizer_source(), tok_dir)
    paths["tokenizer"] = tok_dir
    paths["t5"] = wan_dir / WAN_T5_FILE
    if text_encoder:
        log("umT5 encoder ...")
        if real:
            t5 = WanTextEncoder(**REAL_T5)
        else:
            from transformers import AutoTokenizer

            vocab = len(AutoTokenizer.from_pretrained(str(tok_dir)))
            t5 = WanTextEncoder(vocab=vocab, **TINY_T5)
        torch.save({k: v.to(torch.bfloat16) for k, v in t5.state_dict().items()}, paths["t5"])
        del t5
    else:
        log("umT5 encoder skipped: random prompt embeddings go to the prompt cache instead")
        for p in (DEFAULT_PROMPT, DEFAULT_NEGATIVE_PROMPT):
            ctx = torch.randn(1, 512, cfg["text_dim"], generator=g).to(torch.bfloat16)
            store_cached_context(p, paths["t5"], ctx)

    # base.safetensors: train-time layout (peft LoRA + widened patch embedding + head.head)
    log("base.safetensors ...")
    base = build_dit(dict(sd), metadata={"num_heads": str(cfg["num_heads"])}, dtype=torch.float32)
    widen_patch_embedding(base, 32)
    with torch.no_grad():
        base.patch_embedding.weight[:, 16:].normal_(0, 0.02, generator=g)
        base.head.head.weight.add_(torch.randn(base.head.head.weight.shape, generator=g) * 0.02)
    inject_lora(base, REAL_LORA_RANK if real else TINY_LORA_RANK)
    with torch.no_grad():
        for name, p in base.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * lora_scale)
    base_sd = {k: v.to(dtype) for k, v in export_base_state_dict(base).items()}
    paths["base"] = ckpt_dir / "base.safetensors"
    _save_st(base_sd, paths["base"])
    del base

    # draft.safetensors: built from the merged base, fc layers perturbed away from identity
    log("draft.safetensors ...")
    merged = build_dit(dict(sd), metadata={"num_heads": str(cfg["num_heads"])}, dtype=torch.float32)
    merge_lora_state_dict(merged, base_sd)
    draft = build_draft(merged, k_select)
    with torch.no_grad():
        for fc in draft.fc_layers:
            fc.weight.add_(torch.randn(fc.weight.shape, generator=g) * 0.02)
    draft.to(dtype)
    paths["draft"] = ckpt_dir / "draft.safetensors"
    save_draft(draft, paths["draft"])

    if ram:
        from Wan_SR.models.ram import DAPE_FILE, RAM_FILE, write_tiny_dape, write_tiny_ram

        log("RAM tagger + DAPE ...")
        paths["ram"] = write_tiny_ram(out / "dependent_models" / RAM_FILE, seed, size)
        paths["dape"] = write_tiny_dape(out / "dependent_models" / DAPE_FILE, seed, size)
    log(f"wrote {out}")
    return paths


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output root (gets dependent_models/ and checkpoints/)")
    ap.add_argument("--size", choices=["tiny", "real"], default="tiny",
                    help="tiny (tests, seconds on CPU) or real Wan2.1-1.3B shapes (GPU benchmarks)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--k_select", type=float, default=1.5, help="block selection of the draft")
    ap.add_argument("--text_encoder", action="store_true",
                    help="with --size real, also write the 11 GB random umT5 encoder")
    ap.add_argument("--ram", dest="ram", action="store_true", default=True,
                    help="write the RAM tagger and DAPE files (default)")
    ap.add_argument("--no_ram", dest="ram", action="store_false",
                    help="skip the RAM tagger and DAPE files")
    a = ap.parse_args(argv)
    make_checkpoints(a.out, a.size, a.seed, text_encoder=True if a.text_encoder else None,
                     k_select=a.k_select, ram=a.ram)


if __name__ == "__main__":
    sys.exit(main())
