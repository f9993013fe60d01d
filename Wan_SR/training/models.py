"""The trainable models (docs/method.md §9): the base DiT (LoRA + widened patch embedding + head)
and the regulariser pair (``dit_fix`` frozen, ``dit_update`` = LoRA + its own 16-channel patch
embedding + head). Frozen weights keep the load dtype (bf16 on GPUs); trainable parameters are
fp32, so AdamW's updates are not rounded away."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable

import torch

from Wan_SR.models.lora import CheckpointMismatchError, inject_lora
from Wan_SR.models.wan import load_dit, load_safetensors, require_file, widen_patch_embedding
from Wan_SR.sampling.speed import compile_blocks
from .options import auto_setting

log = logging.getLogger(__name__)


def unfreeze_full_tensors(dit) -> None:
    """The patch embedding and the output head are trained whole, beside the LoRA."""
    dit.patch_embedding.requires_grad_(True)
    dit.head.head.requires_grad_(True)


def upcast_trainable(module: torch.nn.Module) -> None:
    """Trainable parameters to float32 in place (frozen ones keep their dtype)."""
    for p in module.parameters():
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()


def trainable_parameters(module: torch.nn.Module) -> list:
    return [p for p in module.parameters() if p.requires_grad]


def load_trainable_state(dit, path, what: str) -> None:
    """Warm start: copy a saved trainable state (LoRA + full tensors) into ``dit``. Every tensor
    of the file must exist in the model with the same shape."""
    path = require_file(path, what, "an earlier training run (--output_path)")
    sd, _ = load_safetensors(path)
    own = dit.state_dict()
    bad = [k for k, v in sd.items() if k not in own or own[k].shape != v.shape]
    if bad:
        raise CheckpointMismatchError(f"{path}: {len(bad)} tensor(s) do not fit the model, e.g. "
                                      f"{bad[:3]}")
    with torch.no_grad():
        for k, v in sd.items():
            own[k].copy_(v.to(own[k].dtype))
    log.info("warm start: %d tensors from %s", len(sd), path)


def build_base(dit_path, rank: int, targets: Iterable[str], dtype, device, num_heads=None,
               warm_start=None):
    """Base DiT for training: patch embedding widened to 32 channels, LoRA, trainable head."""
    dit = load_dit(dit_path, dtype=dtype, device=device, num_heads=num_heads)
    widen_patch_embedding(dit)
    inject_lora(dit, rank, list(targets))
    unfreeze_full_tensors(dit)
    if warm_start:
        load_trainable_state(dit, warm_start, "base warm start (--load_model_base_from)")
    upcast_trainable(dit)
    return dit.to(device)


def build_regulariser(dit_path, rank: int, targets: Iterable[str], dtype, device, num_heads=None,
                      warm_start=None):
    """``(dit_fix, dit_update)``: the frozen original DiT and its LoRA-trained copy (16-channel
    input, trainable patch embedding and head)."""
    fix = load_dit(dit_path, dtype=dtype, device=device, num_heads=num_heads).requires_grad_(False)
    upd = load_dit(dit_path, dtype=dtype, device=device, num_heads=num_heads)
    inject_lora(upd, rank, list(targets))
    unfreeze_full_tensors(upd)
    if warm_start:
        load_trainable_state(upd, warm_start, "regulariser warm start (--load_model_reg_from)")
    upcast_trainable(upd)
    return fix, upd.to(device)


COMPILE_VARIANTS = 32  # graphs torch.compile may keep per code: every block shares one code


def wants_compile(setting, device) -> bool:
    """Whether ``--compile`` (:func:`~Wan_SR.training.options.auto_setting`) compiles on
    ``device``: auto on CUDA GPUs of compute capability 8.0 or newer."""
    value = auto_setting(setting, "--compile")
    if value != "auto":
        return value
    device = torch.device(device)
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 0)


def compile_dits(*dits) -> None:
    """``--compile``: torch.compile every block of the given DiTs (None skipped), forward and
    backward, as inference does (:func:`Wan_SR.sampling.speed.compile_blocks`). The blocks of
    all DiTs share one code, compiled once per variant (LoRA or not, gradients or not), so the
    number of graphs kept per code is raised for the trainers' variants."""
    config = torch._dynamo.config
    name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
    setattr(config, name, max(getattr(config, name), COMPILE_VARIANTS))
    for dit in dits:
        if dit is not None:
            compile_blocks(dit)
    log.info("--compile: the DiT blocks compile in the first step (their graphs are cached on "
             "disk for later runs)")


def exists(path) -> bool:
    return path is not None and Path(path).exists()
