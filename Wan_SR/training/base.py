"""The base trainer (``train_base.py``; docs/method.md §9, "Base training").

:func:`train_base` builds the run (``build.py``: data, inputs; :func:`build_models`: the base
DiT, the regulariser pair, the discriminator, LPIPS) and runs :func:`train_step` in the loop of
``engine.py`` (resume, logging, saving). :func:`train_step` reads top to bottom: encode; the base
step; the losses with their weights; update the base; the discriminator; the regulariser DiT.

Each trained network is prepared by accelerate inside a module whose forward is what the step
differentiates (:class:`BaseStep`: the base step; :class:`RegulariserLoss`;
:class:`~.discriminator.DiscriminatorLoss`), so data-parallel gradients are averaged across
processes; the frozen models are passed to the loss functions explicitly. Every random draw of
a step comes from a generator seeded by (seed, step, process), so a resumed run repeats exactly
what an uninterrupted one does.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Optional

import torch

from Wan_SR.models.dit import dit_forward
from Wan_SR.models.lora import export_base_state_dict
from Wan_SR.sampling.speculative import BaseStepOutput, base_step
from Wan_SR.sampling.timeline import FlowTimeline
from . import checkpoints, losses
from .build import Inputs, Parts, build_parts, build_pixel_loss
from .discriminator import (DiscriminatorLoss, LatentDiscriminator, adversarial_terms,
                            load_discriminator)
from .engine import Loop, Trained, Updates, dump_rank_weights, prepare_trained
from .losses import zero_loss
from .models import build_base, build_regulariser, compile_dits, wants_compile
from .recompute import FULL, Recompute
from .options import BaseLossOptions, BaseTrainConfig

log = logging.getLogger(__name__)


class BaseStep(torch.nn.Module):
    """The base DiT as accelerate prepares it: its forward is the base step at
    ``--timestep_base`` (:func:`Wan_SR.sampling.speculative.base_step`). Its output, a
    dataclass, passes accelerate's float32 conversion unchanged: the losses see ``x0`` in the
    dtype the step computes it in."""

    def __init__(self, base, timeline: FlowTimeline, t_base: float,
                 recompute: Recompute = FULL):
        super().__init__()
        self.base = base  # the training state's keys are base.*
        self.timeline, self.t_base = timeline, t_base
        self.recompute = recompute

    def forward(self, z_l: torch.Tensor, context: torch.Tensor) -> BaseStepOutput:
        ck = self.recompute.policy("base", len(self.base.blocks))
        return base_step(self.base, z_l, context, self.timeline, t_base=self.t_base,
                         t_next=self.t_base, gradient_checkpointing=ck)


class RegulariserLoss(torch.nn.Module):
    """``dit_update`` as accelerate prepares it: its forward is its flow-matching loss on the
    (detached) base prediction."""

    def __init__(self, dit_update, timeline: FlowTimeline,
                 recompute: Recompute = FULL):
        super().__init__()
        self.dit_update, self.timeline = dit_update, timeline
        self.recompute = recompute
        self.weights = timeline.training_weights()

    def forward(self, x0, context, t_value: float, noise, active: bool = True) -> torch.Tensor:
        """The loss; ``active=False``: a zero loss that reaches every trainable parameter (a
        sample that cannot have it while another sample of the step can)."""
        if not active:
            return zero_loss(p for p in self.parameters() if p.requires_grad)
        t = self.timeline.timestep(t_value, dtype=x0.dtype, device=x0.device)
        i = self.timeline.index(t)
        s = float(self.timeline.sigmas[i])
        n = noise.to(x0.device, x0.dtype)
        ck = self.recompute.policy("regulariser", len(self.dit_update.blocks))
        v = dit_forward(self.dit_update, losses.add_noise(x0, n, s), t, context,
                        gradient_checkpointing=ck)[0]
        return losses.flow_matching_loss(v, n, x0, float(self.weights[i]))


@dataclass
class BaseModels:
    """What a base step trains and uses: the trained networks (the regulariser DiT and the
    discriminator only when their losses are on) and the frozen models."""
    base: Trained                     # module: BaseStep
    reg: Optional[Trained]            # module: RegulariserLoss, net: dit_update
    disc: Optional[Trained]           # module: DiscriminatorLoss, net: LatentDiscriminator
    timeline: FlowTimeline
    pixel: Optional[losses.PixelLoss]  # with the pixel losses
    dit_fix: Optional[torch.nn.Module]   # the regulariser's frozen DiT
    negative: Optional[torch.Tensor]  # text context of its guidance's negative prompt


def build_discriminator(o: BaseLossOptions, warm_start: Optional[str], device):
    """The discriminator when an adversarial term is on: the release's network, or the one of
    ``--load_model_discriminator_from`` (its widths and weights)."""
    if not o.discriminator():
        if warm_start:
            log.info("--load_model_discriminator_from: no effect (no discriminator: --alpha_adv "
                     "and --alpha_perc are 0)")
        return None
    disc = load_discriminator(warm_start) if warm_start else LatentDiscriminator()
    return disc.to(device)


def build_models(p: Parts, cfg: BaseTrainConfig) -> BaseModels:
    """The base DiT (LoRA, widened patch embedding, head), the regulariser pair and the
    discriminator when their losses are on, LPIPS; each trained network prepared with its
    optimiser (base, regulariser, discriminator: the order of the saved state)."""
    m, o, opt = cfg.model, cfg.loss, cfg.optim
    dev, tl, ck = p.acc.device, FlowTimeline(), p.recompute
    dit = build_base(p.files.dit, m.lora_rank, m.lora_targets(), p.dtype, dev, m.num_heads,
                     m.load_model_base_from)
    fix = upd = None
    if o.alpha_reg > 0:
        fix, upd = build_regulariser(p.files.dit, m.lora_rank, m.lora_targets(), p.dtype, dev,
                                     m.num_heads, m.load_model_reg_from)
    if wants_compile(opt.compile, dev):
        compile_dits(dit, fix, upd)
    disc = build_discriminator(o, m.load_model_discriminator_from, dev)
    negative = p.inputs.contexts.get([o.negative_prompt]) \
        if upd is not None and o.cfg_scale != 1 else None
    pixel = build_pixel_loss(o, opt.cuda_graphs, p.inputs.vae, dev)
    lr, warmup = opt.learning_rate, opt.lr_warmup_steps
    base = prepare_trained(p.acc, BaseStep(dit, tl, o.timestep_base, ck), dit, lr, warmup)
    reg = None if upd is None else \
        prepare_trained(p.acc, RegulariserLoss(upd, tl, ck), upd, lr, warmup)
    disc = None if disc is None else \
        prepare_trained(p.acc, DiscriminatorLoss(disc), disc, opt.learning_rate_disc, None)
    return BaseModels(base, reg, disc, tl, pixel, fix, negative)


@dataclass
class StepDraws:
    """Every random choice of one step's losses (drawn by :func:`draw_step`)."""
    crop: Optional[tuple] = None            # (top, left, h, w) latent crop of the pixel losses
    reg_t: Optional[float] = None           # regulariser timestep (as the DiT sees it)
    reg_noise: Optional[torch.Tensor] = None
    diff_t: Optional[float] = None          # flow-matching timestep of the regulariser update
    diff_noise: Optional[torch.Tensor] = None


def draw_step(gen: torch.Generator, latent_shape, timeline: FlowTimeline, dtype,
              crop: Optional[int], reg: bool, device=None) -> StepDraws:
    """The crop (side ``crop``, None: no pixel losses) and, with ``reg``, the regulariser's
    timesteps and noises, in this order from ``gen``; the noises sent to ``device``."""
    d = StepDraws()
    if crop is not None:
        d.crop = losses.crop_box(tuple(latent_shape[-2:]), crop, gen)
    if reg:
        d.reg_t = losses.draw_reg_timestep(timeline, gen, dtype)
        d.reg_noise = send(torch.randn(latent_shape, generator=gen), device)
        d.diff_t = float(timeline.timesteps[int(torch.randint(0, timeline.num_steps, (1,),
                                                                generator=gen))].to(dtype))
        d.diff_noise = send(torch.randn(latent_shape, generator=gen), device)
    return d


def send(t: torch.Tensor, device) -> torch.Tensor:
    """``t`` on ``device``; to a GPU through pinned memory, so the host does not wait for the
    GPU's queued work (a copy from pageable memory would)."""
    if device is None or torch.device(device).type != "cuda":
        return t
    return t.pin_memory().to(device, non_blocking=True)


@dataclass
class Sample:
    """One micro-batch after the base update: what the discriminator and the regulariser DiT
    learn from (``x0`` detached, in float32), and its logs."""
    x0: torch.Tensor
    z_h: torch.Tensor
    context: torch.Tensor
    draws: StepDraws
    multi_frame: bool  # more than one latent frame: the discriminator and the regulariser need it
    logs: dict


def train_step(m: BaseModels, inputs: Inputs, u: Updates, o: BaseLossOptions, step: int,
               batches: list, gens: list, inject_nan_at: tuple = ()) -> list[dict]:
    """One update of the base, then of the discriminator and of the regulariser DiT, from the
    step's micro-batches (one sample each, their gradients summed). Returns their logs."""
    adversarial = m.disc is not None and step > o.start_adv_step
    samples = []
    for batch, g in zip(batches, gens):
        # 1. encode HQ and LQ once; draw the losses' crop, timesteps and noises from g
        hq, z_h, z_l, context = inputs.encode(batch, g)
        d = draw_step(g, z_l.shape, m.timeline, z_l.dtype, o.pixel_crop if o.pixel() else None,
                      m.reg is not None, z_l.device)
        multi_frame = z_l.shape[2] > 1
        u.mark("encode")
        with u.micro_batch(m.base.module):
            with u.autocast():
                # 2. the base step (the data-parallel module)
                x0 = m.base.module(z_l, context).x0
                u.mark("base forward")
                # 3. the losses, each with its weight (all logged; weight 0: not trained)
                terms = [("loss_l2", o.alpha_l2, losses.latent_l2(x0, z_h))]
                if d.crop is not None:
                    terms += m.pixel.terms(x0, hq, d.crop, o.alpha_pixel_l2,
                                           o.alpha_pixel_lpips)
                    u.mark("pixel losses (VAE decode, LPIPS)")
                if d.reg_t is not None and multi_frame:
                    terms.append(("loss_reg", o.alpha_reg, losses.regulariser(
                        m.dit_fix, m.reg.net, x0, context, m.negative, d.reg_t, d.reg_noise,
                        m.timeline, o.cfg_scale)))
                    u.mark("regulariser loss (frozen and update DiTs)")
                if adversarial and multi_frame:
                    terms += adversarial_terms(m.disc.net, x0, z_h, o.alpha_adv, o.alpha_perc)
            loss = losses.weighted_sum(terms)
            if step in inject_nan_at:  # tests of the NaN guard
                loss = loss * float("nan")
            u.backward(loss, m.base, step, "base")
        # logged as tensors: the numbers are read after the step (no host synchronisation)
        logs = {"original_difference": losses.latent_l2(z_l, z_h).detach(),
                **{name: v.detach().float() for name, _, v in terms},
                "loss": loss.detach().float()}
        samples.append(Sample(x0.detach().float(), z_h, context, d, multi_frame, logs))
    # 4. update the base (clipped; skipped on every process when a loss was NaN/Inf)
    u.apply(m.base, step, "base")
    # 5. and 6. learn from clips of more than one latent frame: when any process has one, every
    # process takes part (a zero loss for the others), so the gradient exchanges stay in step
    if u.any_process(any(s.multi_frame for s in samples)):
        if m.disc is not None:  # 5. the discriminator: hinge loss of z_H against x0
            update_each(u, m.disc, samples, step, "discriminator", "loss_discriminator",
                        lambda s: m.disc.module(s.z_h, s.x0, active=s.multi_frame))
        if m.reg is not None:  # 6. the regulariser DiT: flow matching on x0
            update_each(u, m.reg, samples, step, "regulariser", "loss_diff",
                        lambda s: m.reg.module(s.x0, s.context, s.draws.diff_t,
                                               s.draws.diff_noise, active=s.multi_frame))
    return [s.logs for s in samples]


def update_each(u: Updates, model: Trained, samples: list, step: int, what: str, key: str,
                loss_of: Callable) -> None:
    """One update of ``model`` from ``loss_of(sample)`` of every sample (its prepared module's
    loss), logged as ``key`` for the samples of more than one latent frame."""
    for s in samples:
        with u.micro_batch(model.module):
            with u.autocast():
                loss = loss_of(s)
            u.mark(f"{what} forward")
            u.backward(loss, model, step, what)
        if s.multi_frame:
            s.logs[key] = loss.detach().float()
    u.apply(model, step, what)


def save(m: BaseModels, cfg: BaseTrainConfig, step: int) -> None:
    """``latest_base``, ``latest_reg`` and ``latest_discriminator`` (those trained)."""
    parts = {"base": export_base_state_dict(m.base.net)}
    if m.reg is not None:
        parts["reg"] = export_base_state_dict(m.reg.net)
    if m.disc is not None:
        parts["discriminator"] = {k: v.detach().cpu() for k, v in m.disc.net.state_dict().items()}
    out = cfg.out
    paths = checkpoints.save_weights(Path(out.output_path), step, out.save_latest, parts,
                                     {"lora_rank": cfg.model.lora_rank, "trainer": "train_base"})
    log.info("step %d: saved %s", step, ", ".join(p.name for p in paths))


def train_base(cfg: BaseTrainConfig, inject_nan_at: tuple = ()) -> dict:
    """Run the base training; returns a summary (steps, skipped updates, last losses).
    ``inject_nan_at``: steps whose loss is replaced by NaN (tests of the NaN guard)."""
    p = build_parts(cfg)
    m = build_models(p, cfg)
    loop = Loop(p, cfg, "train_base")
    total = loop.start()
    step = partial(train_step, m, p.inputs, loop.updates, cfg.loss, inject_nan_at=inject_nan_at)
    result = loop.run(total, step, partial(save, m, cfg))
    p.inputs.log_summary()
    dump_rank_weights(p.acc, export_base_state_dict(m.base.net))
    return result
