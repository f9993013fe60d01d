"""The draft trainer (``train_draft.py``; docs/method.md §9, "Draft training"), top to bottom:

1. build (shared with the base trainer: :class:`Wan_SR.training.engine.Session`): data, prompt
   embeddings, the frozen VAE; the frozen base (the Wan DiT with ``--load_model_base_from``
   merged); the draft built from it (blocks chosen by ``--k_select``, fc layers passing the base
   feature through), the whole draft trainable in fp32;
2. per step (``--gradient_accumulation_steps`` samples per process): encode HQ and LQ once; the
   frozen base step under ``no_grad`` (the features of the kept blocks and ``z_next``); then for
   each draft timestep a draft step of every sample from its current z, ``alpha_l2 * mse(x0_k,
   z_H)`` + the pixel losses (a fresh crop per step), one optimiser step per draft timestep (the
   samples' gradients summed), and each z advanced with the stop-gradient Euler step;
3. log every batch, save ``latest_draft.safetensors`` (with k_select, block ids and the
   condition in its metadata) every ``--save_steps`` and at the end.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

from Wan_SR.models.draft import build_draft, load_draft, save_draft
from Wan_SR.models.lora import load_base_checkpoint
from Wan_SR.models.wan import load_dit
from Wan_SR.sampling.speculative import base_step, draft_step
from Wan_SR.sampling.timeline import FlowTimeline
from . import checkpoints, losses
from .base import _decode_native
from .engine import Session, adamw, warmup_scheduler
from .models import trainable_parameters, upcast_trainable
from .options import (DataOptions, DraftOptions, LossOptions, ModelOptions, OptimOptions,
                      OutputOptions)

log = logging.getLogger(__name__)


@dataclass
class DraftTrainConfig:
    data: DataOptions = field(default_factory=DataOptions)
    model: ModelOptions = field(default_factory=ModelOptions)
    loss: LossOptions = field(default_factory=lambda: LossOptions(alpha_reg=0.0))
    optim: OptimOptions = field(default_factory=OptimOptions)
    out: OutputOptions = field(default_factory=lambda: OutputOptions(
        output_path="./experiments/train_draft"))
    draft: DraftOptions = field(default_factory=DraftOptions)



def condition(z_l: torch.Tensor, kind: str) -> torch.Tensor:
    """The condition half of the draft's input: zeros (the release's training) or z_L."""
    return torch.zeros_like(z_l) if kind == "zeros" else z_l


class DraftLoss(torch.nn.Module):
    """One draft step and its losses (the prepared, data-parallel module)."""

    def __init__(self, draft, vae, timeline: FlowTimeline, opts: LossOptions, lpips=None,
                 checkpointing: bool = True):
        super().__init__()
        self.draft = draft
        object.__setattr__(self, "frozen", dict(vae=vae, lpips=lpips))
        self.timeline, self.opts, self.checkpointing = timeline, opts, checkpointing

    def forward(self, z, cond, context, features, t: float, t_next: float, z_h, hq, crop):
        x0, z_new = draft_step(self.draft, z, cond, context, features, self.timeline, t, t_next,
                               gradient_checkpointing=self.checkpointing)
        out = {"original_difference": torch.mean((z.float() - z_h.float()) ** 2).detach(),
               "loss_l2": losses.latent_l2(x0, z_h)}
        if crop is not None:
            out.update(losses.pixel_losses(lambda q: _decode_native(self.frozen["vae"], q), x0,
                                           hq, crop, self.frozen["lpips"]))
        return out, z_new.detach()


def weighted(out: dict, o: LossOptions) -> torch.Tensor:
    total = out["loss_l2"] * o.alpha_l2
    for k, a in (("loss_pixel_l2", o.alpha_pixel_l2), ("loss_pixel_lpips", o.alpha_pixel_lpips)):
        if a > 0 and k in out:
            total = total + out[k] * a
    return total


def build_models(s: Session, cfg: DraftTrainConfig):
    """``(base, draft)``: the frozen base with the trained base merged, and the draft (built from
    it, or warm-started from ``--load_model_draft_from``), trainable in fp32."""
    m, dr = cfg.model, cfg.draft
    base = load_dit(s.files.dit, dtype=s.dtype, device=s.dev, num_heads=m.num_heads)
    load_base_checkpoint(base, dr.load_model_base_from)
    base = base.to(s.dev, s.dtype).requires_grad_(False).eval()
    if dr.load_model_draft_from:
        draft = load_draft(dr.load_model_draft_from, dr.k_select, len(base.blocks),
                           num_heads=base.config["num_heads"], dtype=s.dtype, device=s.dev)
    else:
        draft = build_draft(base, dr.k_select)
    draft = draft.to(s.dev).train().requires_grad_(True)
    upcast_trainable(draft)
    log.info("draft: %d of %d blocks %s (k_select %g), condition %s", len(draft.block_ids),
             len(base.blocks), draft.block_ids, dr.k_select, dr.draft_condition)
    return base, draft


def train_draft(cfg: DraftTrainConfig, inject_nan_at: tuple = ()) -> dict:
    """Run the draft training; returns a summary (steps, skipped updates, last losses)."""
    o, opt, dr = cfg.loss, cfg.optim, cfg.draft
    s = Session(cfg, "train_draft")
    acc, timeline = s.acc, s.timeline
    base, draft = build_models(s, cfg)
    tlist = [float(t) for t in dr.timestep_draft_list]
    pixel = s.pixel(o)

    module = DraftLoss(draft, s.vae, timeline, o, s.lpips(o), opt.gradient_checkpointing)
    optimizer = adamw(trainable_parameters(draft), opt.learning_rate)
    scheduler = warmup_scheduler(optimizer, opt.lr_warmup_steps)
    module, optimizer, s.loader = acc.prepare(module, optimizer, s.loader)
    acc.register_for_checkpointing(scheduler)
    params = trainable_parameters(draft)
    total = s.start()

    def step_fn(step: int, batches: list, gens: list) -> list:
        """One update per draft timestep from the step's micro-batches (gradients summed)."""
        rolls = []
        for batch, g in zip(batches, gens):  # the frozen base step of every micro-batch
            hq, z_h, z_l, context = s.encode(batch, g)
            with torch.no_grad():
                b = base_step(base, z_l, context, timeline, t_base=o.timestep_base,
                              t_next=tlist[0], record_blocks=draft.block_ids)
            rolls.append(dict(hq=hq, z_h=z_h, hw=tuple(z_l.shape[-2:]), g=g, context=context,
                              cond=condition(z_l, dr.draft_condition), features=b.features,
                              z=b.z_next, logs={}, loss=0.0))
        for k, t in enumerate(tlist):  # each micro-batch's draft roll-out, one update per step
            t_next = tlist[k + 1] if k + 1 < len(tlist) else 0.0
            for r in rolls:
                crop = losses.crop_box(r["hw"], o.pixel_crop, r["g"]) if pixel else None
                with s.micro_batch(module):
                    with acc.autocast():
                        res, z_new = module(r["z"], r["cond"], r["context"], r["features"], t,
                                            t_next, r["z_h"], r["hq"], crop)
                    loss = weighted(res, o)
                    if step in inject_nan_at:
                        loss = loss * float("nan")
                    s.backward(loss, params, step, f"draft step {k + 1}")
                r["logs"].update({f"{name}_draft_{k + 1}": float(v.detach().float())
                                  for name, v in res.items()})
                r["loss"] += float(loss.detach())
                r["z"] = z_new
            s.apply(params, optimizer, scheduler, step, f"draft step {k + 1}")
        return [dict(r["logs"], loss=r["loss"] / len(tlist)) for r in rolls]

    def save_fn(step: int) -> None:
        path = checkpoints.weights_name(s.output, "draft", step, cfg.out.save_latest)
        # the published file holds the frozen weights' precision (bf16 under mixed precision)
        save_draft(acc.unwrap_model(module).draft, path, dtype=s.dtype,
                   extra_metadata={"draft_condition": dr.draft_condition,
                                   "trainer": "train_draft", "step": step})
        log.info("step %d: saved %s", step, path.name)

    result = s.loop(total, step_fn, save_fn)
    s.dump_rank_weights({k: v.detach() for k, v in acc.unwrap_model(module).draft.state_dict()
                         .items()})
    return result
