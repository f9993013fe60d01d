"""The draft model (SPEC §4): a pruned copy of the base DiT with one fc layer per kept block."""
from __future__ import annotations

import os
from typing import Optional, Sequence

import torch

from .dit import dit_forward


def select_blocks(num_layers: int, k_select: float) -> list[int]:
    """Blocks ``i`` with ``i % k_select == k_select - 1`` (Python float modulo).

    30 blocks: k_select 1.5 or 3 -> 2,5,...,29; 2 -> 1,3,...,29; 1 -> all.
    """
    if k_select <= 0:
        raise ValueError(f"k_select must be positive, got {k_select}")
    return [i for i in range(num_layers) if i % k_select == k_select - 1]


class DraftMismatchError(ValueError):
    pass


def _draft_class():
    from diffsynth.models.wan_video_dit import WanModel

    class DraftDiT(WanModel):
        """WanModel with ``num_layers`` = kept blocks (renumbered 0..K-1) plus ``fc_layers``."""

        def __init__(self, block_ids: Sequence[int] = (), **cfg):
            super().__init__(**cfg)
            self.block_ids = list(block_ids)
            self.fc_layers = torch.nn.ModuleList(
                [torch.nn.Linear(2 * cfg["dim"], cfg["dim"]) for _ in range(cfg["num_layers"])])

        def forward(self, x, timestep, context, features, gradient_checkpointing=False):
            v, _ = dit_forward(self, x, timestep, context, fc_layers=self.fc_layers,
                               features=features, gradient_checkpointing=gradient_checkpointing)
            return v

    return DraftDiT


def identity_init_fc(fc: torch.nn.Linear) -> None:
    """weight = [I | 0], bias = 0: the layer passes the base feature (first half) through."""
    dim = fc.out_features
    with torch.no_grad():
        fc.weight.zero_()
        fc.weight[:, :dim] = torch.eye(dim, dtype=fc.weight.dtype, device=fc.weight.device)
        fc.bias.zero_()


def build_draft(base_dit, k_select: float):
    """Draft from a (LoRA-merged, widened) base DiT: selected blocks copied in order, fc layers
    identity-initialised, embeddings / patch embedding / head copied."""
    from diffsynth.models.utils import init_weights_on_device

    ids = select_blocks(len(base_dit.blocks), k_select)
    cfg = dict(base_dit.config, num_layers=len(ids))
    cfg["in_dim"] = base_dit.patch_embedding.in_channels
    with init_weights_on_device():
        draft = _draft_class()(block_ids=ids, **cfg)
    sd = {}
    for k, v in base_dit.state_dict().items():
        if k.startswith("blocks."):
            i = int(k.split(".")[1])
            if i in ids:
                sd[f"blocks.{ids.index(i)}." + k.split(".", 2)[2]] = v.clone()
        else:
            sd[k] = v.clone()
    p = base_dit.patch_embedding.weight
    for j in range(len(ids)):
        sd[f"fc_layers.{j}.weight"] = torch.empty(cfg["dim"], 2 * cfg["dim"], dtype=p.dtype, device=p.device)
        sd[f"fc_layers.{j}.bias"] = torch.empty(cfg["dim"], dtype=p.dtype, device=p.device)
    draft.load_state_dict(sd, assign=True, strict=True)
    for fc in draft.fc_layers:
        identity_init_fc(fc)
    draft.config = cfg
    return draft


def save_draft(draft, path: str | os.PathLike) -> None:
    """Complete state dict of the pruned draft (SPEC §8 layout), written atomically."""
    from safetensors.torch import save_file

    sd = {k: v.detach().contiguous().cpu() for k, v in draft.state_dict().items()}
    tmp = f"{path}.partial"
    save_file(sd, tmp, metadata={"block_ids": ",".join(map(str, draft.block_ids)),
                                 "num_heads": str(draft.config["num_heads"])})
    os.replace(tmp, path)


def load_draft(path: str | os.PathLike, k_select: float, base_num_layers: int,
               num_heads: Optional[int] = None, dtype=torch.float32, device="cpu"):
    """Strict load of ``draft.safetensors``; its block count must equal the number of blocks
    ``k_select`` picks from the base's ``base_num_layers``."""
    from diffsynth.models.utils import init_weights_on_device

    from .wan import PSSR_SOURCE, dit_config_from_state_dict, load_safetensors, require_file

    path = require_file(path, "PS-SR draft weights", PSSR_SOURCE)
    sd, meta = load_safetensors(path)
    ids = select_blocks(base_num_layers, k_select)
    cfg = dit_config_from_state_dict(sd, num_heads, meta)
    if cfg["num_layers"] != len(ids):
        raise DraftMismatchError(
            f"{path} holds a draft of {cfg['num_layers']} blocks, but --k_select {k_select} "
            f"selects {len(ids)} of the base's {base_num_layers} blocks")
    with init_weights_on_device():
        draft = _draft_class()(block_ids=ids, **cfg)
    draft.load_state_dict(sd, assign=True, strict=True)
    draft.config = cfg
    return draft.to(dtype=dtype, device=device).eval()
