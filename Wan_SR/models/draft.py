"""The draft model (docs/method.md, "Draft model"): a pruned copy of the base DiT with one fc
layer per kept block. ``draft.safetensors`` records ``k_select``, the kept ``block_ids`` and
``num_heads`` in its metadata; loading checks them."""
from __future__ import annotations

import os
from typing import Optional, Sequence

import torch
from diffsynth.models.utils import init_weights_on_device
from diffsynth.models.wan_video_dit import WanModel

from Wan_SR.core.files import save_safetensors_atomic
from Wan_SR.core.options import DEFAULT_K_SELECT
from .dit import dit_forward
from .wan import PSSR_SOURCE, dit_config_from_state_dict, load_safetensors, require_file


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
    class DraftDiT(WanModel):
        """WanModel with ``num_layers`` = kept blocks (renumbered 0..K-1) plus ``fc_layers``."""

        def __init__(self, block_ids: Sequence[int] = (), k_select: Optional[float] = None,
                     **cfg):
            super().__init__(**cfg)
            self.block_ids = list(block_ids)
            self.k_select = k_select
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
    ids = select_blocks(len(base_dit.blocks), k_select)
    cfg = dict(base_dit.config, num_layers=len(ids))
    cfg["in_dim"] = base_dit.patch_embedding.in_channels
    with init_weights_on_device():
        draft = _draft_class()(block_ids=ids, k_select=k_select, **cfg)
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


def save_draft(draft, path: str | os.PathLike, extra_metadata: Optional[dict] = None,
               dtype: Optional[torch.dtype] = None) -> None:
    """Complete state dict of the pruned draft (docs/method.md layout), written atomically, with
    ``k_select``, ``block_ids`` and ``num_heads`` (and ``extra_metadata``) in the metadata;
    floating tensors cast to ``dtype`` when given."""
    sd = {k: (v.detach().to(dtype) if dtype is not None and v.is_floating_point() else v.detach())
          .cpu() for k, v in draft.state_dict().items()}
    meta = {"block_ids": ",".join(map(str, draft.block_ids)),
            "num_heads": str(draft.config["num_heads"])}
    if getattr(draft, "k_select", None) is not None:
        meta["k_select"] = repr(float(draft.k_select))
    meta.update({k: str(v) for k, v in (extra_metadata or {}).items()})
    save_safetensors_atomic(path, sd, metadata=meta)


def _recorded(meta: dict, path) -> tuple[Optional[float], Optional[list[int]]]:
    try:
        k = float(meta["k_select"]) if meta.get("k_select") else None
        ids = [int(i) for i in meta["block_ids"].split(",")] if meta.get("block_ids") else None
    except ValueError:
        raise DraftMismatchError(f"{path}: unreadable k_select/block_ids metadata "
                                 f"({meta.get('k_select')!r}, {meta.get('block_ids')!r})") from None
    return k, ids


def load_draft(path: str | os.PathLike, k_select: Optional[float], base_num_layers: int,
               num_heads: Optional[int] = None, dtype=torch.float32, device="cpu"):
    """Strict load of ``draft.safetensors``.

    A file that records its ``block_ids`` (and ``k_select``) needs no ``k_select``: the recorded
    blocks are used, and a given ``k_select`` must select the same blocks. A file without that
    metadata (the published one) uses ``k_select`` (default 1.5). Either way the block count must
    match the weights, else :class:`DraftMismatchError` names both numbers."""
    path = require_file(path, "PS-SR draft weights", PSSR_SOURCE)
    sd, meta = load_safetensors(path)
    rec_k, rec_ids = _recorded(meta, path)
    cfg = dit_config_from_state_dict(sd, num_heads, meta)
    if rec_ids is not None:
        if len(rec_ids) != cfg["num_layers"]:
            raise DraftMismatchError(f"{path}: metadata lists {len(rec_ids)} blocks but the "
                                     f"weights hold {cfg['num_layers']}")
        if k_select is not None and select_blocks(base_num_layers, k_select) != rec_ids:
            want = select_blocks(base_num_layers, k_select)
            raise DraftMismatchError(
                f"{path} holds a draft of {len(rec_ids)} blocks {rec_ids} (k_select "
                f"{rec_k if rec_k is not None else '?'}), but --k_select {k_select} selects "
                f"{len(want)} of the base's {base_num_layers} blocks {want}; drop --k_select to "
                "use the file's")
        ids, k = rec_ids, rec_k if rec_k is not None else k_select
    else:
        k = DEFAULT_K_SELECT if k_select is None else k_select
        ids = select_blocks(base_num_layers, k)
        if cfg["num_layers"] != len(ids):
            raise DraftMismatchError(
                f"{path} holds a draft of {cfg['num_layers']} blocks, but --k_select {k} "
                f"selects {len(ids)} of the base's {base_num_layers} blocks")
    if ids and max(ids) >= base_num_layers:
        raise DraftMismatchError(f"{path}: block ids {ids} do not fit a base of "
                                 f"{base_num_layers} blocks")
    with init_weights_on_device():
        draft = _draft_class()(block_ids=ids, k_select=k, **cfg)
    draft.load_state_dict(sd, assign=True, strict=True)
    draft.config = cfg
    return draft.to(dtype=dtype, device=device).eval()
