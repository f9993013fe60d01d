"""LoRA for the base model (docs/method.md §3, §8): peft injection for training, export in the
``base.safetensors`` layout, and the inference loader that merges such a file into a plain DiT."""
from __future__ import annotations

import os
from typing import Iterable

import torch
from peft import LoraConfig, inject_adapter_in_model

from .wan import PSSR_SOURCE, load_safetensors, require_file

LORA_TARGETS = ["q", "k", "v", "o", "ffn.0", "ffn.2"]
# Full tensors trained alongside the LoRA and stored in base.safetensors.
BASE_FULL_TENSORS = ["patch_embedding.weight", "patch_embedding.bias", "head.head.weight",
                     "head.head.bias"]


class CheckpointMismatchError(ValueError):
    pass


def inject_lora(dit, rank: int, targets: Iterable[str] = LORA_TARGETS, adapter: str = "default"):
    """Add peft LoRA adapters (alpha = rank, i.e. scale 1) to every block's q,k,v,o,ffn.0,ffn.2.

    Only the LoRA weights become trainable; callers unfreeze extra tensors themselves.
    """
    dit.requires_grad_(False)
    cfg = LoraConfig(r=rank, lora_alpha=rank, init_lora_weights=True,
                     target_modules=list(targets))
    dit = inject_adapter_in_model(cfg, dit, adapter_name=adapter)
    return dit


def lora_state_dict(model, prefix_to_strip: str = "") -> dict:
    """The LoRA tensors (``...lora_A.default.weight`` / ``lora_B``) of a peft-injected model."""
    out = {}
    for k, v in model.state_dict().items():
        if ".lora_A." in k or ".lora_B." in k:
            if prefix_to_strip and k.startswith(prefix_to_strip):
                k = k[len(prefix_to_strip):]
            out[k] = v.detach().contiguous().cpu()
    return out


def export_base_state_dict(dit) -> dict:
    """``base.safetensors`` content: LoRA tensors + widened patch embedding + head.head."""
    sd = lora_state_dict(dit)
    full = dit.state_dict()
    for k in BASE_FULL_TENSORS:
        sd[k] = full[k].detach().contiguous().cpu()
    return sd


def merge_lora_state_dict(dit, sd: dict, scale: float = 1.0, strict: bool = True) -> int:
    """``W += scale * B @ A`` for every LoRA pair in ``sd``; full tensors in ``sd`` replace the
    model's (the patch embedding may be 32-channel; the model's is replaced whole).

    Any tensor that matches nothing in the model raises :class:`CheckpointMismatchError`.
    Returns the number of merged LoRA pairs.
    """
    modules = dict(dit.named_modules())
    params = dict(dit.named_parameters())
    unmatched, merged = [], 0
    for k, a in sd.items():
        if ".lora_B." in k:
            continue
        if ".lora_A." in k:
            mod_name = k.split(".lora_A.")[0]
            b_key = k.replace(".lora_A.", ".lora_B.")
            mod = modules.get(mod_name)
            if mod is None or not isinstance(mod, torch.nn.Linear) or b_key not in sd:
                unmatched.append(k)
                continue
            b = sd[b_key]
            delta = (b.float() @ a.float()) * scale
            if delta.shape != mod.weight.shape:
                raise CheckpointMismatchError(
                    f"{k}: LoRA product {tuple(delta.shape)} does not fit {mod_name}.weight "
                    f"{tuple(mod.weight.shape)}")
            with torch.no_grad():
                mod.weight.copy_((mod.weight.float() + delta.to(mod.weight.device)).to(mod.weight.dtype))
            merged += 1
        elif k in params:
            p = params[k]
            mod_name, attr = k.rsplit(".", 1)
            mod = modules[mod_name]
            new = torch.nn.Parameter(a.to(dtype=p.dtype, device=p.device).clone(),
                                     requires_grad=p.requires_grad)
            if new.shape != p.shape:
                if k == "patch_embedding.weight":
                    mod.in_channels = new.shape[1]
                    dit.in_dim = new.shape[1]
                    if hasattr(dit, "config"):
                        dit.config["in_dim"] = new.shape[1]
                else:
                    raise CheckpointMismatchError(
                        f"{k}: shape {tuple(new.shape)} in the file, {tuple(p.shape)} in the model")
            setattr(mod, attr, new)
        else:
            unmatched.append(k)
    orphan_b = [k for k in sd if ".lora_B." in k and k.replace(".lora_B.", ".lora_A.") not in sd]
    unmatched += orphan_b
    if unmatched and strict:
        raise CheckpointMismatchError(
            f"{len(unmatched)} tensor(s) in the checkpoint match nothing in the DiT, e.g. "
            f"{unmatched[:3]}")
    return merged


def load_base_checkpoint(dit, path: str | os.PathLike) -> int:
    """Merge a published ``base.safetensors`` into a plain (16-channel) DiT for inference."""
    path = require_file(path, "PS-SR base weights", PSSR_SOURCE)
    sd, _ = load_safetensors(path)
    return merge_lora_state_dict(dit, sd)
