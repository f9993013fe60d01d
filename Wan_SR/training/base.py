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

import dataclasses
import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

from Wan_SR.core.files import save_safetensors_atomic
from Wan_SR.core.log import progress
from Wan_SR.models.dit import dit_forward
from Wan_SR.models.wan import load_vae, resolve_wan_files, vae_decode, vae_encode
from Wan_SR.sampling.speculative import base_step
from Wan_SR.sampling.speed import attention_context
from Wan_SR.sampling.timeline import FlowTimeline
from . import checkpoints, losses
from .discriminator import (LatentDiscriminator, discriminator_hinge_loss, feature_matching_loss,
                            generator_adv_loss)
from .models import build_base, build_regulariser, trainable_parameters, trainable_state_dict
from .options import DataOptions, LossOptions, ModelOptions, OptimOptions, OutputOptions

log = logging.getLogger(__name__)

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "no": torch.float32}


@dataclass
class BaseTrainConfig:
    data: DataOptions = field(default_factory=DataOptions)
    model: ModelOptions = field(default_factory=ModelOptions)
    loss: LossOptions = field(default_factory=LossOptions)
    optim: OptimOptions = field(default_factory=OptimOptions)
    out: OutputOptions = field(default_factory=OutputOptions)

    def to_dict(self) -> dict:
        return {k: dataclasses.asdict(getattr(self, k)) for k in ("data", "model", "loss", "optim",
                                                                  "out")}


@dataclass
class StepDraws:
    """Every random choice of one step (drawn by :func:`draw_step`, passed to the losses)."""
    crop: Optional[tuple] = None            # (top, left, h, w) latent crop of the pixel losses
    reg_t: Optional[float] = None           # regulariser timestep (as the DiT sees it)
    reg_noise: Optional[torch.Tensor] = None
    diff_t: Optional[float] = None          # flow-matching timestep of the regulariser update
    diff_noise: Optional[torch.Tensor] = None


def step_generator(seed: int, step: int, rank: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed((int(seed) * 1_000_003 + int(step) * 7_919 + int(rank) * 104_729) % (2 ** 63))
    return g


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

    def forward(self, x0, context, t_value: float, noise) -> torch.Tensor:
        t = self.timeline.timestep(t_value, dtype=x0.dtype, device=x0.device)
        i = self.timeline.index(t)
        s = float(self.timeline.sigmas[i])
        n = noise.to(x0.device, x0.dtype)
        v = dit_forward(self.dit_update, losses.add_noise(x0, n, s), t, context,
                        gradient_checkpointing=self.checkpointing)[0]
        return losses.flow_matching_loss(v, n, x0, float(self.weights[i]))


def _decode_native(vae, z: torch.Tensor) -> torch.Tensor:
    """The frozen VAE's decode in its own dtype, outside autocast: under bf16 autocast its
    normalisations would run (and keep their activations for the backward) in float32, which
    costs about 20 GB more at 33x720x1280 (measured)."""
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


def zero_loss(params) -> torch.Tensor:
    """A loss of value 0 that touches every parameter (keeps data-parallel backward in step
    when an update is skipped)."""
    return sum(p.sum() * 0.0 for p in params)


class ContextBank:
    """Prompt -> text context, from the on-disk prompt cache. The main process encodes the
    prompts not cached yet (loading the umT5 encoder once, then freeing it) before training."""

    def __init__(self, files, cache_dir, device, dtype):
        from Wan_SR.models.text import PromptEncoder

        self.enc = PromptEncoder(files.t5, files.tokenizer, cache_dir=cache_dir, device=device)
        self.device, self.dtype = device, dtype
        self._mem: dict = {}

    def fill(self, prompts, is_main: bool) -> int:
        missing = sorted({p for p in prompts if not self.enc.cache_path(p).exists()})
        if is_main and missing:
            log.info("encoding %d prompt(s) not in the prompt cache yet", len(missing))
            for p in missing:
                self.enc.encode(p)
            self.enc.release()
        return len(missing)

    def get(self, prompts) -> torch.Tensor:
        out = []
        for p in prompts:
            if p not in self._mem:
                if len(self._mem) > 64:
                    self._mem.clear()
                self._mem[p] = self.enc.encode(p).to(self.device, self.dtype)
            out.append(self._mem[p])
        return torch.cat(out, 0)


def _as_video(x: torch.Tensor) -> torch.Tensor:
    """(B,T,3,H,W) in [0,1] -> (B,3,T,H,W) in [-1,1]."""
    return x.permute(0, 2, 1, 3, 4) * 2 - 1


def train_base(cfg: BaseTrainConfig, inject_nan_at: tuple = ()) -> dict:
    """Run the base training; returns a summary (steps, skipped updates, last losses, files).
    ``inject_nan_at``: steps whose loss is replaced by NaN (tests of the NaN guard)."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, set_seed

    from Wan_SR.data.dataset import SkipReport, VideoDataset, collate_clips
    from Wan_SR.data.degradation import Degradation

    d, m, o, opt, out_o = cfg.data, cfg.model, cfg.loss, cfg.optim, cfg.out
    output = Path(out_o.output_path)
    report = None if out_o.report_to in (None, "", "none") else out_o.report_to
    acc = Accelerator(mixed_precision=opt.mixed_precision, log_with=report,
                      project_dir=str(output), step_scheduler_with_optimizer=False,
                      kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=False)])
    set_seed(opt.seed)
    dev, dtype = acc.device, DTYPES[opt.mixed_precision]
    rank = acc.process_index
    output.mkdir(parents=True, exist_ok=True)

    # ---------------------------------------------------------------- data
    keys = [k.strip() for k in d.data_file_keys.split(",") if k.strip()]
    hw = (d.height or None, d.width or None)
    dataset = VideoDataset(d.dataset_base_path, d.dataset_metadata_path, num_frames=d.num_frames,
                           height=hw[0], width=hw[1], max_pixels=d.max_pixels,
                           repeat=d.dataset_repeat, seed=opt.seed, data_file_keys=keys)
    sampler = EpochPermutation(len(dataset), opt.seed)
    loader = torch.utils.data.DataLoader(dataset, batch_size=1, sampler=sampler,
                                         num_workers=d.dataloader_num_workers,
                                         collate_fn=collate_clips)
    degrade = Degradation(d.deg_file_path)
    skips = SkipReport()

    # ---------------------------------------------------------------- models
    files = resolve_wan_files(m.wan_model_dir, m.dit_path, m.vae_path, m.umt5_path,
                              m.tokenizer_path)
    contexts = ContextBank(files, m.prompt_cache_dir, dev, dtype)
    with acc.main_process_first():
        contexts.fill([r.prompt for r in dataset.rows] + [o.negative_prompt], acc.is_main_process)
    negative = contexts.get([o.negative_prompt]) if o.alpha_reg > 0 and o.cfg_scale != 1 else None
    timeline = FlowTimeline()
    targets = [t.strip() for t in m.lora_target_modules.split(",") if t.strip()]
    vae = load_vae(files.vae, dtype=dtype, device=dev).requires_grad_(False)
    base = build_base(files.dit, m.lora_rank, targets, dtype, dev, m.num_heads,
                      m.load_model_base_from)
    dit_fix = dit_update = None
    if o.alpha_reg > 0:
        dit_fix, dit_update = build_regulariser(files.dit, m.lora_rank, targets, dtype, dev,
                                                m.num_heads, m.load_model_reg_from)
    lpips = None
    pixel = o.train_video_pixel and (o.alpha_pixel_l2 > 0 or o.alpha_pixel_lpips > 0)
    if pixel and o.alpha_pixel_lpips > 0:
        from .lpips import load_lpips

        lpips = load_lpips(o.lpips_weights, device=dev)
    disc = None
    if o.alpha_adv > 0 or o.alpha_perc > 0:
        disc = LatentDiscriminator().to(dev)

    # ---------------------------------------------------------------- optimisation
    def adamw(params, lr):
        return torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)

    def warmup(optimizer):
        n = max(0, opt.lr_warmup_steps)
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / n) if n
                                                 else 1.0)

    gen = GeneratorLoss(base, vae, timeline, o, dit_fix, dit_update, lpips, None,
                        opt.gradient_checkpointing)
    opt_base = adamw(trainable_parameters(base), opt.learning_rate)
    sched_base = warmup(opt_base)
    gen, opt_base, loader = acc.prepare(gen, opt_base, loader)
    acc.register_for_checkpointing(sched_base)
    reg_mod = opt_reg = sched_reg = None
    if dit_update is not None:
        reg_mod = RegulariserLoss(dit_update, timeline, opt.gradient_checkpointing)
        opt_reg = adamw(trainable_parameters(dit_update), opt.learning_rate)
        sched_reg = warmup(opt_reg)
        reg_mod, opt_reg = acc.prepare(reg_mod, opt_reg)
        acc.register_for_checkpointing(sched_reg)
    opt_disc = None
    if disc is not None:
        opt_disc = torch.optim.AdamW(disc.parameters(), lr=opt.learning_rate_disc)
        disc, opt_disc = acc.prepare(disc, opt_disc)
        acc.unwrap_model(gen).frozen["discriminator"] = acc.unwrap_model(disc)

    steps_per_epoch = len(loader)
    total = opt.max_train_steps or opt.num_epochs * steps_per_epoch
    state = {"step": 0, "nan_skipped": 0, "samples_skipped": 0}
    if out_o.resume_from_checkpoint:
        state = checkpoints.load_state(acc, checkpoints.find_state(output,
                                                                   out_o.resume_from_checkpoint))
    history = LossHistory(output / "losses.jsonl", acc.is_main_process, state["step"])
    if report:
        acc.init_trackers(out_o.project_name, config=_flat(cfg.to_dict()))
    log.info("base training: %d steps (%d per epoch, %d process(es)), from step %d", total,
             steps_per_epoch, acc.num_processes, state["step"])

    # ---------------------------------------------------------------- loop
    step = state["step"]
    bar = progress(total=total, initial=step, desc="train_base", unit="step", leave=True)
    last: dict = {}
    while step < total:
        epoch, offset = divmod(step, steps_per_epoch)
        sampler.use_epoch(epoch)
        dataset.set_epoch(epoch)
        batches = acc.skip_first_batches(loader, offset) if offset else loader
        for batch in batches:
            if step >= total:
                break
            step += 1
            state["samples_skipped"] += skips.add(batch)
            if not batch["name"]:
                continue
            g = step_generator(opt.seed, step, rank)
            with torch.no_grad():
                hq01 = _to_unit(batch["video"], dev)
                lq01 = _to_unit(batch["LQ_video"], dev) if isinstance(batch["LQ_video"],
                                                                      torch.Tensor) else \
                    degrade(hq01, generator=g).to(dev)
                hq = _as_video(hq01)
                z_h = vae_encode(vae, hq.to(dtype))
                z_l = vae_encode(vae, _as_video(lq01).to(dtype))
            context = contexts.get(batch["prompt"])
            draws = draw_step(g, z_l.shape, timeline, z_l.dtype, o, pixel, dit_update is not None)
            adversarial = disc is not None and step > o.start_adv_step
            attention = attention_context("auto", dev)  # cuDNN attention first (forward and
            attention.__enter__()                       # backward, so recomputation matches)
            with acc.autocast():
                res = gen(z_l, z_h, hq.to(dtype), context, negative, draws, adversarial)
            loss = weighted_total(res, o, adversarial)
            if step in inject_nan_at:
                loss = loss * float("nan")
            bad = _any_process(acc, not bool(torch.isfinite(loss.detach()).all()))
            if bad:
                state["nan_skipped"] += 1
                log.warning("step %d: non-finite loss, update skipped (%d so far)", step,
                            state["nan_skipped"])
                acc.backward(zero_loss(trainable_parameters(acc.unwrap_model(gen).base)))
                opt_base.zero_grad(set_to_none=True)
            else:
                acc.backward(loss)
                if opt.max_grad_norm > 0:
                    acc.clip_grad_norm_(trainable_parameters(acc.unwrap_model(gen).base),
                                        opt.max_grad_norm)
                opt_base.step()
                sched_base.step()
                opt_base.zero_grad(set_to_none=True)
            x0 = res.pop("x0").detach()
            logs = {k: float(v.detach().float()) for k, v in res.items()}
            logs["loss"] = float(loss.detach().float())
            if opt_disc is not None and x0.shape[2] > 1:
                logs["loss_discriminator"] = _disc_update(acc, disc, opt_disc, z_h, x0)
            if reg_mod is not None and x0.shape[2] > 1:
                logs["loss_diff"] = _reg_update(acc, reg_mod, opt_reg, sched_reg, x0, context,
                                                draws, opt.max_grad_norm, dit_update)
            attention.__exit__(None, None, None)
            logs = {k: _mean_over(acc, v) for k, v in logs.items()}
            last = logs
            history.add(step, logs)
            if report:
                acc.log(logs, step=step)
            bar.update(1)
            bar.set_postfix_str(f"loss {logs['loss']:.4g}")
            if step % out_o.save_steps == 0 or step == total:
                _save(acc, output, step, out_o, gen, reg_mod, disc, state, cfg)
    bar.close()
    if report:
        acc.end_training()
    if state["nan_skipped"]:
        log.warning("%d update(s) skipped for non-finite losses", state["nan_skipped"])
    if skips.count:
        log.warning("%s", skips.summary())
    dump = os.environ.get("PSSR_DUMP_RANK_WEIGHTS")
    if dump:  # debugging aid: every process writes its trainable base weights (they must agree)
        save_safetensors_atomic(f"{dump}{rank}.safetensors",
                                trainable_state_dict(acc.unwrap_model(gen).base))
    acc.wait_for_everyone()
    return {"step": step, "nan_skipped": state["nan_skipped"], "last": last,
            "output": str(output), "accelerator": acc}


def _disc_update(acc, disc, opt_disc, z_h, x0) -> float:
    opt_disc.zero_grad(set_to_none=True)
    with acc.autocast():
        real, fake = disc(z_h), disc(x0)
        loss = discriminator_hinge_loss(real.float(), fake.float())
    acc.backward(loss)
    opt_disc.step()
    opt_disc.zero_grad(set_to_none=True)
    return float(loss.detach())


def _reg_update(acc, reg_mod, opt_reg, sched_reg, x0, context, draws, max_norm, dit_update):
    opt_reg.zero_grad(set_to_none=True)
    with acc.autocast():
        loss = reg_mod(x0, context, draws.diff_t, draws.diff_noise)
    if _any_process(acc, not bool(torch.isfinite(loss.detach()))):
        acc.backward(zero_loss(trainable_parameters(dit_update)))
        opt_reg.zero_grad(set_to_none=True)
        return float("nan")
    acc.backward(loss)
    if max_norm > 0:
        acc.clip_grad_norm_(trainable_parameters(dit_update), max_norm)
    opt_reg.step()
    sched_reg.step()
    opt_reg.zero_grad(set_to_none=True)
    return float(loss.detach())


def _save(acc, output, step, out_o, gen, reg_mod, disc, state, cfg):
    acc.wait_for_everyone()
    if acc.is_main_process:
        parts = {"base": trainable_state_dict(acc.unwrap_model(gen).base)}
        if reg_mod is not None:
            parts["reg"] = trainable_state_dict(acc.unwrap_model(reg_mod).dit_update)
        if disc is not None:
            parts["discriminator"] = {k: v.detach().cpu() for k, v in
                                      acc.unwrap_model(disc).state_dict().items()}
        paths = checkpoints.save_weights(output, step, out_o.save_latest, parts,
                                         {"lora_rank": cfg.model.lora_rank, "trainer": "train_base"})
        log.info("step %d: saved %s", step, ", ".join(p.name for p in paths))
    state = dict(state, step=step)
    checkpoints.save_state(acc, output, step, state)


def _to_unit(x, device) -> torch.Tensor:
    x = x.to(device)
    return x.float() / 255.0 if x.dtype == torch.uint8 else x.float()


def _any_process(acc, flag: bool) -> bool:
    t = torch.tensor([1.0 if flag else 0.0], device=acc.device)
    return bool(acc.reduce(t, reduction="sum").item() > 0) if acc.num_processes > 1 else flag


def _mean_over(acc, v: float) -> float:
    if acc.num_processes == 1:
        return v
    t = torch.tensor([v], device=acc.device, dtype=torch.float64)
    return float(acc.reduce(t, reduction="mean").item())


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v if isinstance(v, (int, float, str, bool)) else str(v)
    return out


class EpochPermutation(torch.utils.data.Sampler):
    """A fresh permutation per epoch from (seed, epoch): the same on every process (accelerate
    shards it), reproducible on resume. The epoch is set with :meth:`use_epoch` only (not
    ``set_epoch``, which accelerate's loader would call with its own count, wrong after a
    resume)."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0

    def use_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self):
        return self.n

    def __iter__(self):
        g = torch.Generator()
        g.manual_seed(self.seed * 10_007 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())


class LossHistory:
    """``losses.jsonl``: one line per step (main process); on resume, lines after the resumed
    step are dropped."""

    def __init__(self, path: Path, main: bool, resumed_step: int):
        self.path, self.main = path, main
        if main and path.exists():
            keep = [ln for ln in path.read_text().splitlines()
                    if ln.strip() and json.loads(ln)["step"] <= resumed_step]
            path.write_text("".join(ln + "\n" for ln in keep))

    def add(self, step: int, logs: dict) -> None:
        if self.main:
            with open(self.path, "a") as f:
                f.write(json.dumps({"step": step, **{k: (v if math.isfinite(v) else None)
                                                      for k, v in logs.items()}}) + "\n")
