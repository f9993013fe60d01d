"""What both trainers share (docs/method.md §9): the accelerate set-up, the data (dataset,
per-epoch order, degradation on the device), prompt embeddings, encoding a batch, the guarded
update (NaN/Inf skip on every process, clipping), the step loop with exact resume, logging and
saving. ``base.py`` and ``draft.py`` supply their models and one step function each.

Every random draw of a step comes from :func:`step_generator` (seed, step, process), so a resumed
run repeats exactly what an uninterrupted one does.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Callable, Optional

import torch

from Wan_SR.core.files import save_safetensors_atomic
from Wan_SR.core.log import progress
from Wan_SR.models.wan import load_vae, resolve_wan_files, vae_encode
from Wan_SR.sampling.speed import attention_context
from Wan_SR.sampling.timeline import FlowTimeline
from . import checkpoints

log = logging.getLogger(__name__)

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "no": torch.float32}


def step_generator(seed: int, step: int, rank: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed((int(seed) * 1_000_003 + int(step) * 7_919 + int(rank) * 104_729) % (2 ** 63))
    return g


def adamw(params, lr: float) -> torch.optim.Optimizer:
    """AdamW as published: betas 0.9/0.999, eps 1e-8, weight decay 0.01."""
    return torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)


def warmup_scheduler(optimizer, warmup_steps: int):
    """Linear warm-up over ``warmup_steps`` updates, then a constant learning rate."""
    n = max(0, int(warmup_steps))
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / n) if n else 1.0)


def zero_loss(params) -> torch.Tensor:
    """A loss of value 0 that touches every parameter (keeps data-parallel backward in step
    when an update is skipped)."""
    return sum(p.sum() * 0.0 for p in params)


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


class ContextBank:
    """Prompt -> text context, from the on-disk prompt cache. The main process encodes the
    prompts not cached yet (loading the umT5 encoder once, then freeing it) before training.
    With ``resident`` (tagged prompts, known only per sample) the encoder stays loaded and
    every process encodes its new prompts as they come (``offload``: kept on the CPU)."""

    def __init__(self, files, cache_dir, device, dtype, resident: bool = False,
                 offload: bool = False):
        from Wan_SR.models.text import PromptEncoder

        self.enc = PromptEncoder(files.t5, files.tokenizer, cache_dir=cache_dir, device=device,
                                 offload=offload)
        self.device, self.dtype, self.resident = device, dtype, resident
        self._mem: dict = {}

    def fill(self, prompts, is_main: bool) -> int:
        missing = sorted({p for p in prompts if not self.enc.cache_path(p).exists()})
        if is_main and missing:
            log.info("encoding %d prompt(s) not in the prompt cache yet", len(missing))
            for p in missing:
                self.enc.encode(p)
            if not self.resident:
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


def as_video(x: torch.Tensor) -> torch.Tensor:
    """(B,T,3,H,W) in [0,1] -> (B,3,T,H,W) in [-1,1]."""
    return x.permute(0, 2, 1, 3, 4) * 2 - 1


def _to_unit(x, device) -> torch.Tensor:
    x = x.to(device)
    return x.float() / 255.0 if x.dtype == torch.uint8 else x.float()


def flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v if isinstance(v, (int, float, str, bool)) else str(v)
    return out


class Session:
    """One training run's shared parts. Build the models between :func:`open_session` and
    :meth:`start` (which resumes); then :meth:`loop` runs the steps."""

    def __init__(self, cfg, name: str, extra_prompts=()):
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs, set_seed

        from Wan_SR.data.dataset import SkipReport, VideoDataset, collate_clips
        from Wan_SR.data.degradation import Degradation

        d, m, opt, out = cfg.data, cfg.model, cfg.optim, cfg.out
        self.cfg, self.name = cfg, name
        self.output = Path(out.output_path)
        self.report = None if out.report_to in (None, "", "none") else out.report_to
        self.acc = Accelerator(
            mixed_precision=opt.mixed_precision, log_with=self.report,
            project_dir=str(self.output), step_scheduler_with_optimizer=False,
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=False)])
        set_seed(opt.seed)
        self.dev, self.dtype = self.acc.device, DTYPES[opt.mixed_precision]
        self.rank, self.seed = self.acc.process_index, opt.seed
        self.output.mkdir(parents=True, exist_ok=True)
        keys = [k.strip() for k in d.data_file_keys.split(",") if k.strip()]
        self.dataset = VideoDataset(d.dataset_base_path, d.dataset_metadata_path,
                                    num_frames=d.num_frames, height=d.height or None,
                                    width=d.width or None, max_pixels=d.max_pixels,
                                    repeat=d.dataset_repeat, seed=opt.seed, data_file_keys=keys)
        self.sampler = EpochPermutation(len(self.dataset), opt.seed)
        self.loader = torch.utils.data.DataLoader(self.dataset, batch_size=1, sampler=self.sampler,
                                                  num_workers=d.dataloader_num_workers,
                                                  collate_fn=collate_clips)
        self.degrade = Degradation(d.deg_file_path)
        self.skips = SkipReport()
        self.files = resolve_wan_files(m.wan_model_dir, m.dit_path, m.vae_path, m.umt5_path,
                                       m.tokenizer_path)
        from Wan_SR.models.tagger import load_tagger

        self.tagger = load_tagger(m.ram_path, m.DAPE_path, enabled=not m.no_tags,
                                  device=self.dev, dtype=self.dtype, offload=m.low_memory)
        self.tag_source = m.tag_source
        self.contexts = ContextBank(self.files, m.prompt_cache_dir, self.dev, self.dtype,
                                    resident=self.tagger is not None, offload=m.low_memory)
        with self.acc.main_process_first():  # tagged prompts are encoded as they come
            rows = [] if self.tagger is not None else [r.prompt for r in self.dataset.rows]
            self.contexts.fill(rows + list(extra_prompts), self.acc.is_main_process)
        self.timeline = FlowTimeline()
        self.vae = load_vae(self.files.vae, dtype=self.dtype, device=self.dev).requires_grad_(False)
        self.state = {"step": 0, "nan_skipped": 0, "samples_skipped": 0}
        self.history: Optional[LossHistory] = None

    # ------------------------------------------------------------------ pieces of a step
    def lpips(self, loss_opts):
        """The frozen LPIPS network when the pixel LPIPS loss is on, else None."""
        if self.pixel(loss_opts) and loss_opts.alpha_pixel_lpips > 0:
            from .lpips import load_lpips

            return load_lpips(loss_opts.lpips_weights, device=self.dev)
        return None

    @staticmethod
    def pixel(o) -> bool:
        return o.train_video_pixel and (o.alpha_pixel_l2 > 0 or o.alpha_pixel_lpips > 0)

    @torch.no_grad()
    def encode(self, batch, g: torch.Generator):
        """HQ and LQ encoded once: ``(hq, z_h, z_l, context)``; ``hq`` (B,3,T,H,W) in [-1,1].
        LQ: the row's paired clip, else the degradation of the HQ clip (drawn from ``g``)."""
        hq01 = _to_unit(batch["video"], self.dev)
        lq = batch["LQ_video"]
        lq01 = _to_unit(lq, self.dev) if isinstance(lq, torch.Tensor) else \
            self.degrade(hq01, generator=g).to(self.dev)
        hq = as_video(hq01).to(self.dtype)
        z_h = vae_encode(self.vae, hq)
        z_l = vae_encode(self.vae, as_video(lq01).to(self.dtype))
        prompts = self.tagged_prompts(batch["prompt"], hq01 if self.tag_source == "hq" else lq01,
                                      g)
        return hq, z_h, z_l, self.contexts.get(prompts)

    def tagged_prompts(self, prompts, clips: torch.Tensor, g: torch.Generator) -> list:
        """``"<prompt>, <tags>"`` per sample, the tags of one frame drawn from ``g`` of its clip
        (B,T,3,H,W) in [0,1]; the prompts alone without a tagger."""
        if self.tagger is None:
            return list(prompts)
        from Wan_SR.models.tagger import pick_frame, prompt_with_tags

        return [prompt_with_tags(p, self.tagger.tags(clips[b, pick_frame(clips.shape[1], g)]))
                for b, p in enumerate(prompts)]

    def any_process(self, flag: bool) -> bool:
        if self.acc.num_processes == 1:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self.acc.device)
        return bool(self.acc.reduce(t, reduction="sum").item() > 0)

    def update(self, loss, params, optimizer, scheduler, step: int, what: str) -> bool:
        """Backward, clip at ``--max_grad_norm`` and step, unless the loss is NaN/Inf on any
        process: then every process skips together (counted, logged). Returns True if applied."""
        acc, max_norm = self.acc, self.cfg.optim.max_grad_norm
        if self.any_process(not bool(torch.isfinite(loss.detach()).all())):
            self.state["nan_skipped"] += 1
            log.warning("step %d: non-finite %s loss, update skipped (%d so far)", step, what,
                        self.state["nan_skipped"])
            acc.backward(zero_loss(params))
            optimizer.zero_grad(set_to_none=True)
            return False
        acc.backward(loss)
        if max_norm > 0:
            acc.clip_grad_norm_(params, max_norm)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        return True

    def mean_over_processes(self, logs: dict) -> dict:
        if self.acc.num_processes == 1:
            return logs
        out = {}
        for k, v in logs.items():
            t = torch.tensor([v], device=self.acc.device, dtype=torch.float64)
            out[k] = float(self.acc.reduce(t, reduction="mean").item())
        return out

    # ------------------------------------------------------------------ run
    def start(self) -> int:
        """Resume (``--resume_from_checkpoint``), open the loss history and trackers. Call
        after every model, optimiser and scheduler is prepared / registered. Returns the total
        number of steps."""
        opt, out = self.cfg.optim, self.cfg.out
        if out.resume_from_checkpoint:
            self.state = checkpoints.load_state(
                self.acc, checkpoints.find_state(self.output, out.resume_from_checkpoint))
        self.history = LossHistory(self.output / "losses.jsonl", self.acc.is_main_process,
                                   self.state["step"])
        if self.report:
            self.acc.init_trackers(out.project_name, config=flat(dataclasses.asdict(self.cfg)))
        self.steps_per_epoch = len(self.loader)
        total = opt.max_train_steps or opt.num_epochs * self.steps_per_epoch
        log.info("%s: %d steps (%d per epoch, %d process(es)), from step %d", self.name, total,
                 self.steps_per_epoch, self.acc.num_processes, self.state["step"])
        return total

    def loop(self, total: int, step_fn: Callable, save_fn: Callable) -> dict:
        """Run steps ``state['step']+1 .. total``: ``step_fn(step, batch, g) -> logs`` (floats,
        ``loss`` among them), then logging, and ``save_fn(step)`` every ``--save_steps`` and at
        the end (followed by the accelerate state)."""
        acc, out = self.acc, self.cfg.out
        step = self.state["step"]
        bar = progress(total=total, initial=step, desc=self.name, unit="step", leave=True)
        last: dict = {}
        while step < total:
            epoch, offset = divmod(step, self.steps_per_epoch)
            self.sampler.use_epoch(epoch)
            self.dataset.set_epoch(epoch)
            batches = acc.skip_first_batches(self.loader, offset) if offset else self.loader
            for batch in batches:
                if step >= total:
                    break
                step += 1
                self.state["samples_skipped"] += self.skips.add(batch)
                if not batch["name"]:
                    continue
                # cuDNN attention first, for the forward and the backward (recomputation matches)
                t0 = time.perf_counter()
                with attention_context("auto", self.dev):
                    logs = step_fn(step, batch, step_generator(self.seed, step, self.rank))
                log.debug("step %d: %.3f s", step, time.perf_counter() - t0)
                logs = self.mean_over_processes(logs)
                last = logs
                self.history.add(step, logs)
                if self.report:
                    acc.log(logs, step=step)
                bar.update(1)
                bar.set_postfix_str(f"loss {logs.get('loss', float('nan')):.4g}")
                if step % out.save_steps == 0 or step == total:
                    acc.wait_for_everyone()
                    if acc.is_main_process:
                        save_fn(step)
                    checkpoints.save_state(acc, self.output, step, dict(self.state, step=step))
        bar.close()
        if self.report:
            acc.end_training()
        if self.state["nan_skipped"]:
            log.warning("%d update(s) skipped for non-finite losses", self.state["nan_skipped"])
        if self.skips.count:
            log.warning("%s", self.skips.summary())
        if self.tagger is not None and self.tagger.calls:
            enc = self.contexts.enc
            log.info("tags: %d sample(s), %.2f s tagging + %.2f s encoding %d new prompt(s)",
                     self.tagger.calls, self.tagger.seconds, enc.seconds, enc.encodes)
        return {"step": step, "nan_skipped": self.state["nan_skipped"], "last": last,
                "output": str(self.output), "accelerator": acc}

    def save_weights(self, step: int, parts: dict, metadata: dict) -> None:
        paths = checkpoints.save_weights(self.output, step, self.cfg.out.save_latest, parts,
                                         metadata)
        log.info("step %d: saved %s", step, ", ".join(p.name for p in paths))

    def dump_rank_weights(self, state_dict: dict) -> None:
        """Debugging aid (``PSSR_DUMP_RANK_WEIGHTS=prefix``): every process writes its trainable
        weights, to check that data-parallel processes agree."""
        dump = os.environ.get("PSSR_DUMP_RANK_WEIGHTS")
        if dump:
            save_safetensors_atomic(f"{dump}{self.rank}.safetensors", state_dict)
        self.acc.wait_for_everyone()
