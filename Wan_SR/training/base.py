"""The base trainer (``train_base.py``; docs/method.md §9, "Base training"), top to bottom:

1. build: data (VideoDataset + degradation), prompt embeddings (from the cache), the frozen VAE,
   the trainable base DiT, the regulariser pair, LPIPS and the discriminator when used;
2. per step: encode HQ and LQ once; the base step at ``--timestep_base``; ``loss_l2``; the pixel
   losses on a decoded latent crop; the regulariser; the adversarial terms after
   ``--start_adv_step``; update the base (clipped); update the discriminator; update the
   regulariser DiT with its flow-matching loss;
3. log every step, save every ``--save_steps`` and at the end.

The generator losses are computed inside :class:`GeneratorLoss.forward`, the module accelerate
prepares, so data-parallel gradients are averaged across processes. Every random draw of a step
comes from a generator seeded by (seed, step, process), so a resumed run repeats exactly what an
uninterrupted one does.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Optional

import torch

from Wan_SR.models.dit import dit_forward
from Wan_SR.models.lora import export_base_state_dict
from Wan_SR.models.wan import vae_decode
from Wan_SR.sampling.speculative import base_step
from Wan_SR.sampling.timeline import FlowTimeline
from . import losses
from .discriminator import (DiscriminatorLoss, LatentDiscriminator, feature_matching_loss,
                            generator_adv_loss)
from .engine import Session, adamw, warmup_scheduler
from .losses import zero_loss
from .models import build_base, build_regulariser, trainable_parameters
from .options import DataOptions, LossOptions, ModelOptions, OptimOptions, OutputOptions

log = logging.getLogger(__name__)

@dataclass
class BaseTrainConfig:
    data: DataOptions = field(default_factory=DataOptions)
    model: ModelOptions = field(default_factory=ModelOptions)
    loss: LossOptions = field(default_factory=LossOptions)
    optim: OptimOptions = field(default_factory=OptimOptions)
    out: OutputOptions = field(default_factory=OutputOptions)



@dataclass
class StepDraws:
    """Every random choice of one step (drawn by :func:`draw_step`, passed to the losses)."""
    crop: Optional[tuple] = None            # (top, left, h, w) latent crop of the pixel losses
    reg_t: Optional[float] = None           # regulariser timestep (as the DiT sees it)
    reg_noise: Optional[torch.Tensor] = None
    diff_t: Optional[float] = None          # flow-matching timestep of the regulariser update
    diff_noise: Optional[torch.Tensor] = None


def draw_step(gen: torch.Generator, latent_shape, timeline: FlowTimeline, dtype,
              opts: LossOptions, pixel: bool, reg: bool) -> StepDraws:
    d = StepDraws()
    if pixel:
        d.crop = losses.crop_box(tuple(latent_shape[-2:]), opts.pixel_crop, gen)
    if reg:
        d.reg_t = losses.draw_reg_timestep(timeline, gen, dtype)
        d.reg_noise = torch.randn(latent_shape, generator=gen)
        d.diff_t = float(timeline.timesteps[int(torch.randint(0, timeline.num_steps, (1,),
                                                                generator=gen))].to(dtype))
        d.diff_noise = torch.randn(latent_shape, generator=gen)
    return d


class GeneratorLoss(torch.nn.Module):
    """The base model's losses (a module so accelerate's data parallelism averages its
    gradients). Only the base DiT is a registered submodule: the frozen models are held as plain
    attributes (not broadcast, not wrapped)."""

    def __init__(self, base, vae, timeline: FlowTimeline, opts: LossOptions, dit_fix=None,
                 dit_update=None, lpips=None, discriminator=None, checkpointing: bool = True):
        super().__init__()
        self.base = base
        object.__setattr__(self, "frozen", dict(vae=vae, dit_fix=dit_fix, dit_update=dit_update,
                                                lpips=lpips, discriminator=discriminator))
        self.timeline, self.opts, self.checkpointing = timeline, opts, checkpointing

    def forward(self, z_l, z_h, hq, context, negative_context, draws: StepDraws,
                adversarial: bool = False) -> dict:
        o, fz = self.opts, self.frozen
        out = {"original_difference": torch.mean((z_l.float() - z_h.float()) ** 2).detach()}
        b = base_step(self.base, z_l, context, self.timeline, t_base=o.timestep_base,
                      t_next=o.timestep_base, gradient_checkpointing=self.checkpointing)
        x0 = b.x0
        out["x0"] = x0
        out["loss_l2"] = losses.latent_l2(x0, z_h)
        if draws.crop is not None:
            out.update(losses.pixel_losses(lambda z: _decode_native(fz["vae"], z), x0, hq,
                                           draws.crop, fz["lpips"]))
        multi_frame = x0.shape[2] > 1
        if draws.reg_t is not None and multi_frame:
            out["loss_reg"] = self._regulariser(x0, context, negative_context, draws)
        disc = fz["discriminator"]
        if adversarial and multi_frame and disc is not None:
            disc.requires_grad_(False)  # gradients reach x0_base only
            try:
                fake_s, fake_f = disc(x0, return_features=True)
                if o.alpha_adv > 0:
                    out["loss_adv"] = generator_adv_loss(fake_s.float())
                if o.alpha_perc > 0:
                    with torch.no_grad():
                        _, real_f = disc(z_h, return_features=True)
                    out["loss_perc"] = feature_matching_loss(fake_f.float(), real_f.float())
            finally:
                disc.requires_grad_(True)
        return out

    def _regulariser(self, x0, context, negative_context, d: StepDraws) -> torch.Tensor:
        o, tl = self.opts, self.timeline
        fix, upd = self.frozen["dit_fix"], self.frozen["dit_update"]
        t = tl.timestep(d.reg_t, dtype=x0.dtype, device=x0.device)
        s = tl.sigma(t)
        with torch.no_grad():
            x_t = losses.add_noise(x0.detach(), d.reg_noise.to(x0.device, x0.dtype), s)
            x0_u = x_t - s * dit_forward(upd, x_t, t, context)[0]
            v_f = dit_forward(fix, x_t, t, context)[0]
            if o.cfg_scale != 1.0:
                v_n = dit_forward(fix, x_t, t, negative_context)[0]
                v_f = v_n + o.cfg_scale * (v_f - v_n)
            x0_f = x_t - s * v_f
        return losses.regulariser_loss(x0, x0_f, x0_u)


class RegulariserLoss(torch.nn.Module):
    """Flow-matching loss of ``dit_update`` on the (detached) base prediction."""

    def __init__(self, dit_update, timeline: FlowTimeline, checkpointing: bool = True):
        super().__init__()
        self.dit_update, self.timeline, self.checkpointing = dit_update, timeline, checkpointing
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
        v = dit_forward(self.dit_update, losses.add_noise(x0, n, s), t, context,
                        gradient_checkpointing=self.checkpointing)[0]
        return losses.flow_matching_loss(v, n, x0, float(self.weights[i]))


def _decode_native(vae, z: torch.Tensor) -> torch.Tensor:
    """The frozen VAE's decode in its own dtype, outside autocast: under bf16 autocast its
    normalisations would run (and keep their activations for the backward) in float32."""
    with torch.autocast(z.device.type, enabled=False):
        return vae_decode(vae, z)


def weighted_total(out: dict, o: LossOptions, adversarial: bool) -> torch.Tensor:
    """``alpha_l2 loss_l2 + alpha_pixel_l2 ... + alpha_reg loss_reg (+ adversarial terms)``."""
    terms = [("loss_l2", o.alpha_l2), ("loss_pixel_l2", o.alpha_pixel_l2),
             ("loss_pixel_lpips", o.alpha_pixel_lpips), ("loss_reg", o.alpha_reg)]
    if adversarial:
        terms += [("loss_adv", o.alpha_adv), ("loss_perc", o.alpha_perc)]
    total = None
    for k, a in terms:
        if a > 0 and k in out:
            total = out[k] * a if total is None else total + out[k] * a
    return total


def train_base(cfg: BaseTrainConfig, inject_nan_at: tuple = ()) -> dict:
    """Run the base training; returns a summary (steps, skipped updates, last losses).
    ``inject_nan_at``: steps whose loss is replaced by NaN (tests of the NaN guard)."""
    m, o, opt = cfg.model, cfg.loss, cfg.optim
    s = Session(cfg, "train_base", extra_prompts=[o.negative_prompt])
    acc, dev, dtype, timeline = s.acc, s.dev, s.dtype, s.timeline

    # ---------------------------------------------------------------- models
    targets = [t.strip() for t in m.lora_target_modules.split(",") if t.strip()]
    base = build_base(s.files.dit, m.lora_rank, targets, dtype, dev, m.num_heads,
                      m.load_model_base_from)
    dit_fix = dit_update = None
    if o.alpha_reg > 0:
        dit_fix, dit_update = build_regulariser(s.files.dit, m.lora_rank, targets, dtype, dev,
                                                m.num_heads, m.load_model_reg_from)
    disc = LatentDiscriminator().to(dev) if (o.alpha_adv > 0 or o.alpha_perc > 0) else None
    negative = s.contexts.get([o.negative_prompt]) if o.alpha_reg > 0 and o.cfg_scale != 1 \
        else None
    pixel = s.pixel(o)

    # ---------------------------------------------------------------- optimisation
    gen = GeneratorLoss(base, s.vae, timeline, o, dit_fix, dit_update, s.lpips(o), None,
                        opt.gradient_checkpointing)
    opt_base = adamw(trainable_parameters(base), opt.learning_rate)
    sched_base = warmup_scheduler(opt_base, opt.lr_warmup_steps)
    gen, opt_base, s.loader = acc.prepare(gen, opt_base, s.loader)
    acc.register_for_checkpointing(sched_base)
    reg_mod = opt_reg = sched_reg = None
    if dit_update is not None:
        reg_mod = RegulariserLoss(dit_update, timeline, opt.gradient_checkpointing)
        opt_reg = adamw(trainable_parameters(dit_update), opt.learning_rate)
        sched_reg = warmup_scheduler(opt_reg, opt.lr_warmup_steps)
        reg_mod, opt_reg = acc.prepare(reg_mod, opt_reg)
        acc.register_for_checkpointing(sched_reg)
    disc_mod = opt_disc = None
    if disc is not None:
        disc_mod = DiscriminatorLoss(disc)
        opt_disc = torch.optim.AdamW(disc.parameters(), lr=opt.learning_rate_disc)
        disc_mod, opt_disc = acc.prepare(disc_mod, opt_disc)
        acc.unwrap_model(gen).frozen["discriminator"] = acc.unwrap_model(disc_mod).disc
    base_params = trainable_parameters(base)
    total = s.start()

    # ---------------------------------------------------------------- one step
    def step_fn(step: int, batches: list, gens: list) -> list:
        """One update of each model from the step's micro-batches (gradients summed)."""
        adversarial = disc is not None and step > o.start_adv_step
        done = []
        for batch, g in zip(batches, gens):  # 1. the base
            hq, z_h, z_l, context = s.encode(batch, g)
            draws = draw_step(g, z_l.shape, timeline, z_l.dtype, o, pixel,
                              dit_update is not None)
            with s.micro_batch(gen):
                with acc.autocast():
                    res = gen(z_l, z_h, hq, context, negative, draws, adversarial)
                loss = weighted_total(res, o, adversarial)
                if step in inject_nan_at:
                    loss = loss * float("nan")
                s.backward(loss, base_params, step, "base")
            x0 = res.pop("x0").detach()
            logs = {k: float(v.detach().float()) for k, v in res.items()}
            logs["loss"] = float(loss.detach().float())
            done.append((x0, z_h, context, draws, logs))
        s.apply(base_params, opt_base, sched_base, step, "base")
        # 2. the discriminator and 3. the regulariser DiT learn from clips of more than one
        # latent frame; when any process has one, every process takes part (zero loss for the
        # others), so the processes' gradient exchanges stay in step
        multi = [x0.shape[2] > 1 for x0, *_ in done]
        later = s.any_process(any(multi))
        if disc_mod is not None and later:
            params = list(acc.unwrap_model(disc_mod).parameters())
            for (x0, z_h, _, _, logs), ok in zip(done, multi):
                with s.micro_batch(disc_mod):
                    with acc.autocast():
                        loss_d = disc_mod(z_h, x0, active=ok)
                    s.backward(loss_d, params, step, "discriminator")
                if ok:
                    logs["loss_discriminator"] = float(loss_d.detach())
            s.apply(params, opt_disc, None, step, "discriminator")
        if reg_mod is not None and later:
            params = trainable_parameters(dit_update)
            for (x0, _, context, draws, logs), ok in zip(done, multi):
                with s.micro_batch(reg_mod):
                    with acc.autocast():
                        loss_diff = reg_mod(x0, context, draws.diff_t, draws.diff_noise, ok)
                    s.backward(loss_diff, params, step, "regulariser")
                if ok:
                    logs["loss_diff"] = float(loss_diff.detach())
            s.apply(params, opt_reg, sched_reg, step, "regulariser")
        return [logs for *_, logs in done]

    def save_fn(step: int) -> None:
        parts = {"base": export_base_state_dict(acc.unwrap_model(gen).base)}
        if reg_mod is not None:
            parts["reg"] = export_base_state_dict(acc.unwrap_model(reg_mod).dit_update)
        if disc_mod is not None:
            parts["discriminator"] = {k: v.detach().cpu() for k, v in
                                      acc.unwrap_model(disc_mod).disc.state_dict().items()}
        s.save_weights(step, parts, {"lora_rank": m.lora_rank, "trainer": "train_base"})

    result = s.loop(total, step_fn, save_fn)
    s.dump_rank_weights(export_base_state_dict(acc.unwrap_model(gen).base))
    return result
