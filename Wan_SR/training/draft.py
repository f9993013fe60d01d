"""The draft trainer (``train_draft.py``; docs/method.md §9, "Draft training").

:func:`train_draft` builds the run (``build.py``: data, inputs; :func:`build_models`: the frozen
base with ``--load_model_base_from`` merged, the draft built from it: blocks chosen by
``--k_select``, fc layers passing the base feature through, the whole draft trainable in fp32)
and runs :func:`train_step` in the loop of ``engine.py``. Per step: encode HQ and LQ once; the
frozen base step (the features of the kept blocks and the draft's start z); then for each draft
timestep (:func:`Wan_SR.sampling.speculative.draft_schedule`) a draft step of every sample from
its current z, ``alpha_l2 * mse(x0_k, z_H)`` + the pixel losses (a fresh crop per step), one
optimiser step per draft timestep (the samples' gradients summed), and each z advanced with the
stop-gradient Euler step. ``latest_draft.safetensors`` records k_select, the block ids and the
condition in its metadata.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Optional

import torch

from Wan_SR.models.draft import build_draft, load_draft, save_draft
from Wan_SR.models.lora import load_base_checkpoint
from Wan_SR.models.wan import load_dit
from Wan_SR.sampling.speculative import base_step, draft_schedule, draft_step
from Wan_SR.sampling.timeline import FlowTimeline
from . import checkpoints, losses
from .build import Inputs, Parts, build_parts, build_pixel_loss
from .engine import Loop, Trained, Updates, dump_rank_weights, prepare_trained
from .models import compile_dits, upcast_trainable, wants_compile
from .options import DraftOptions, DraftTrainConfig, LossOptions
from .recompute import FULL, Recompute

log = logging.getLogger(__name__)


def condition(z_l: torch.Tensor, kind: str) -> torch.Tensor:
    """The condition half of the draft's input: zeros (the release's training) or z_L."""
    return torch.zeros_like(z_l) if kind == "zeros" else z_l


class DraftStep(torch.nn.Module):
    """The draft as accelerate prepares it: its forward is one draft step
    (:func:`Wan_SR.sampling.speculative.draft_step`), ``(x0, z_next)``."""

    def __init__(self, draft, timeline: FlowTimeline,
                 recompute: Recompute = FULL):
        super().__init__()
        self.draft, self.timeline = draft, timeline
        self.recompute = recompute

    def forward(self, z, cond, context, features, t: float, t_next: float):
        ck = self.recompute.policy("draft", len(self.draft.blocks))
        return draft_step(self.draft, z, cond, context, features, self.timeline, t, t_next,
                          gradient_checkpointing=ck)


@dataclass
class DraftModels:
    """What a draft step trains and uses."""
    draft: Trained                    # module: DraftStep
    base: torch.nn.Module             # frozen, the trained base merged
    timeline: FlowTimeline
    pixel: Optional[losses.PixelLoss]  # with the pixel losses, else None


def build_models(p: Parts, cfg: DraftTrainConfig) -> DraftModels:
    """The frozen base with the trained base merged, and the draft (built from it, or
    warm-started from ``--load_model_draft_from``), trainable in fp32, prepared with its
    optimiser."""
    m, dr, opt = cfg.model, cfg.draft, cfg.optim
    base = load_dit(p.files.dit, dtype=p.dtype, device=p.acc.device, num_heads=m.num_heads)
    load_base_checkpoint(base, dr.load_model_base_from)
    base = base.to(p.acc.device, p.dtype).requires_grad_(False).eval()
    if dr.load_model_draft_from:
        draft = load_draft(dr.load_model_draft_from, dr.k_select, len(base.blocks),
                           num_heads=base.config["num_heads"], dtype=p.dtype,
                           device=p.acc.device)
    else:
        draft = build_draft(base, dr.k_select)
    draft = draft.to(p.acc.device).train().requires_grad_(True)
    upcast_trainable(draft)
    log.info("draft: %d of %d blocks %s (k_select %g), condition %s", len(draft.block_ids),
             len(base.blocks), draft.block_ids, dr.k_select, dr.draft_condition)
    if wants_compile(opt.compile, p.acc.device):
        compile_dits(base, draft)
    tl = FlowTimeline()
    pixel = build_pixel_loss(cfg.loss, opt.cuda_graphs, p.inputs.vae, p.acc.device)
    module = DraftStep(draft, tl, p.recompute)
    trained = prepare_trained(p.acc, module, draft, opt.learning_rate, opt.lr_warmup_steps)
    return DraftModels(trained, base, tl, pixel)


@dataclass
class Rollout:
    """One micro-batch's draft roll-out: its inputs, its current z, its logs."""
    hq: torch.Tensor
    z_h: torch.Tensor
    g: torch.Generator
    context: torch.Tensor
    cond: torch.Tensor
    features: list
    z: torch.Tensor
    logs: dict = field(default_factory=dict)
    loss: object = 0.0  # the sum of its steps' losses (a tensor once a step ran)


def train_step(m: DraftModels, inputs: Inputs, u: Updates, o: LossOptions, dr: DraftOptions,
               step: int, batches: list, gens: list, inject_nan_at: tuple = ()) -> list[dict]:
    """One update per draft timestep from the step's micro-batches (gradients summed)."""
    rolls = []
    for batch, g in zip(batches, gens):
        # 1. encode; the frozen base step: the draft's start z, the features of its blocks
        hq, z_h, z_l, context = inputs.encode(batch, g)
        u.mark("encode")
        with torch.no_grad():
            b = base_step(m.base, z_l, context, m.timeline, t_base=o.timestep_base,
                          t_next=dr.timestep_draft_list[0], record_blocks=m.draft.net.block_ids)
        u.mark("frozen base step")
        rolls.append(Rollout(hq, z_h, g, context, condition(z_l, dr.draft_condition),
                             b.features, b.z_next))
    for k, (t, t_next) in enumerate(draft_schedule(dr.timestep_draft_list), 1):
        for r in rolls:
            crop = losses.crop_box(tuple(r.z.shape[-2:]), o.pixel_crop, r.g) if o.pixel() \
                else None
            with u.micro_batch(m.draft.module):
                with u.autocast():
                    # 2. draft step k from the current z (the data-parallel module); accelerate
                    # hands float32 back under mixed precision: x0 in the dtype of z again
                    x0, z_next = m.draft.module(r.z, r.cond, r.context, r.features, t, t_next)
                    x0 = x0.to(r.z.dtype)
                    u.mark("draft forward")
                    # 3. the losses, each with its weight
                    terms = [("loss_l2", o.alpha_l2, losses.latent_l2(x0, r.z_h))]
                    if crop is not None:
                        terms += m.pixel.terms(x0, r.hq, crop, o.alpha_pixel_l2,
                                               o.alpha_pixel_lpips)
                        u.mark("pixel losses (VAE decode, LPIPS)")
                loss = losses.weighted_sum(terms)
                if step in inject_nan_at:  # tests of the NaN guard
                    loss = loss * float("nan")
                u.backward(loss, m.draft, step, f"draft step {k}")
            # logged as tensors: the numbers are read after the step (no host synchronisation)
            r.logs[f"original_difference_draft_{k}"] = losses.latent_l2(r.z, r.z_h).detach()
            r.logs.update({f"{name}_draft_{k}": v.detach().float() for name, _, v in terms})
            r.loss = r.loss + loss.detach().float()
            # 4. the stop-gradient Euler step, in the latents' dtype (accelerate hands float32
            # back under mixed precision): the next step's timestep is rounded as the release's
            # and inference's are (bf16: 499 -> 500, 399 -> 400)
            r.z = z_next.detach().to(r.z.dtype)
        u.apply(m.draft, step, f"draft step {k}")  # 5. one update per draft timestep
    return [dict(r.logs, loss=r.loss / len(dr.timestep_draft_list)) for r in rolls]


def save(m: DraftModels, cfg: DraftTrainConfig, dtype, step: int) -> None:
    """``latest_draft.safetensors`` in the frozen weights' precision (bf16 under mixed
    precision), with the training condition in its metadata."""
    path = checkpoints.weights_name(Path(cfg.out.output_path), "draft", step,
                                    cfg.out.save_latest)
    save_draft(m.draft.net, path, dtype=dtype,
               extra_metadata={"draft_condition": cfg.draft.draft_condition,
                               "trainer": "train_draft", "step": step})
    log.info("step %d: saved %s", step, path.name)


def train_draft(cfg: DraftTrainConfig, inject_nan_at: tuple = ()) -> dict:
    """Run the draft training; returns a summary (steps, skipped updates, last losses)."""
    p = build_parts(cfg)
    m = build_models(p, cfg)
    loop = Loop(p, cfg, "train_draft")
    total = loop.start()
    step = partial(train_step, m, p.inputs, loop.updates, cfg.loss, cfg.draft,
                   inject_nan_at=inject_nan_at)
    result = loop.run(total, step, partial(save, m, cfg, p.dtype))
    p.inputs.log_summary()
    dump_rank_weights(p.acc, {k: v.detach() for k, v in m.draft.net.state_dict().items()})
    return result
