"""Our trainer with the published trainer's structure, to time the two side by side in one run
(``training/trainers.py``: a run ``release`` in ``--base_runs`` / ``--draft_runs``):

    python benchmarks/training/release_structure.py base|draft TRAINER_OPTIONS...

What the release does (and this run does too) where we differ for speed or memory:
- trainable weights and AdamW states in bf16, no autocast (the release's accelerate config only
  autocasts its discriminator), AdamW's default (unfused) kernels;
- every DiT block recomputed in the backward (``--gradient_checkpointing full``);
- torch's default attention kernel order (we put cuDNN's first);
- the pixel losses launched kernel by kernel (``--cuda_graphs False``, set by ``trainers.py``);
- the base step records the hidden states entering every odd block (its ``k_select`` default 2:
  15 clones that base training never uses);
- the 11 GB umT5 encoder resident on the GPU through training (base and draft), and in the draft
  trainer two more unused DiTs (held here as GPU memory of their size).
Not reproduced: the draft trainer's frozen base step runs with autograd on in the release (its
graph is built and discarded); the losses' roundings (bf16 timesteps and loss_reg in bf16). The
losses of these runs are not the release's: only the time and the memory are compared.
"""
from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository
from Wan_SR.cli import train_base, train_draft  # noqa: E402
from Wan_SR.training import base, build, draft, engine, models  # noqa: E402

GIB = 2 ** 30
TEXT_ENCODER_GIB = 10.6  # the umT5-xxl encoder's bf16 weights
DIT_GIB = 2.64           # one Wan2.1-1.3B DiT in bf16


def unfused_adamw(params, lr: float) -> torch.optim.Optimizer:
    return torch.optim.AdamW(list(params), lr=lr, betas=(0.9, 0.999), eps=1e-8,
                             weight_decay=0.01)


def with_resident_models(build_parts, gib: float):
    """``build_parts`` that also holds ``gib`` GiB of the GPU for the run (resident models that
    the release keeps and never uses in the step)."""
    def wrapped(cfg):
        parts = build_parts(cfg)
        if parts.acc.device.type == "cuda":
            parts.resident = torch.empty(int(gib * GIB), dtype=torch.uint8,
                                         device=parts.acc.device)
        return parts
    return wrapped


def recording_base_forward(self, z_l, context):
    """The base step recording the 15 odd blocks' inputs, as the release's base training does."""
    n = len(self.base.blocks)
    out = base.base_step(self.base, z_l, context, self.timeline, t_base=self.t_base,
                         t_next=self.t_base, record_blocks=range(1, n, 2),
                         gradient_checkpointing=self.recompute.policy("base", n))
    out.features = [f.clone().detach() for f in out.features]
    return out


def bf16_regulariser_update(forward):
    """The regulariser update from ``x0`` in bf16 (our step keeps it in float32 for autocast)."""
    def wrapped(self, x0, *args, **kw):
        return forward(self, x0.to(torch.bfloat16), *args, **kw)
    return wrapped


def patch(trainer: str) -> None:
    """Make our trainer follow the release's structure (see the module's text)."""
    build.DTYPES["no"] = torch.bfloat16  # --mixed_precision no: bf16 weights, no autocast
    models.upcast_trainable = draft.upcast_trainable = lambda module: None
    engine.adamw = unfused_adamw
    engine.attention_context = lambda name, device: contextlib.nullcontext()
    base.BaseStep.forward = recording_base_forward
    base.RegulariserLoss.forward = bf16_regulariser_update(base.RegulariserLoss.forward)
    extra = TEXT_ENCODER_GIB + (2 * DIT_GIB if trainer == "draft" else 0.0)
    for module in (base, draft):
        module.build_parts = with_resident_models(build.build_parts, extra)


def main(argv: list) -> int:
    if not argv or argv[0] not in ("base", "draft"):
        raise SystemExit(__doc__)
    trainer, options = argv[0], argv[1:]
    patch(trainer)
    options += ["--mixed_precision", "no", "--gradient_checkpointing", "full"]
    return (train_base if trainer == "base" else train_draft).main(options)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
