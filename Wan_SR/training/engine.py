"""What both trainers share (docs/method.md §9): the accelerate set-up, the data (dataset,
per-epoch order, degradation on the device), prompt embeddings, encoding a batch, the guarded
update (gradient accumulation, NaN/Inf skip on every process, clipping), the step loop with exact
resume, logging and saving. ``base.py`` and ``draft.py`` supply their models and one step
function each.

A step is one optimiser update: ``--gradient_accumulation_steps`` micro-batches (one sample
each) per process, their gradients summed by accelerate's accumulation. Every random draw of a
micro-batch comes from :func:`step_generator` (seed, step, virtual process), so a resumed run
repeats exactly what an uninterrupted one does, and N micro-batches on one process draw what N
processes of one micro-batch each draw.

Every decision that touches a collective is the same on every process: a step whose batch
holds no sample is skipped by every process together (the dataset replaces unreadable rows, so
that only happens when many rows in a row fail), and a non-finite loss skips the update on
every process. A :class:`Wan_SR.core.distributed.Watchdog` turns any remaining hang into an
error naming the step and the process.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np
import torch

from Wan_SR.core.distributed import Watchdog
from Wan_SR.core.files import save_safetensors_atomic
from Wan_SR.core.log import progress
from Wan_SR.models.wan import load_vae, vae_encode
from Wan_SR.sampling.speed import attention_context
from Wan_SR.sampling.timeline import FlowTimeline
from . import checkpoints
from .losses import zero_loss

log = logging.getLogger(__name__)

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "no": torch.float32}
MAX_EMPTY_STEPS = 10  # steps in a row with no sample before the run stops


def step_generator(seed: int, step: int, rank: int) -> torch.Generator:
    """The generator of one micro-batch: ``rank`` is the virtual process
    ``micro * processes + process`` (the process itself without accumulation)."""
    g = torch.Generator()
    g.manual_seed((int(seed) * 1_000_003 + int(step) * 7_919 + int(rank) * 104_729) % (2 ** 63))
    return g


class TrainingDataError(RuntimeError):
    """Too many steps in a row had no readable sample."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training: where it stopped and the last state it can resume from."""

    def __init__(self, step: int, saved: Optional[int]):
        super().__init__(step, saved)
        self.step, self.saved = step, saved


def adamw(params, lr: float) -> torch.optim.Optimizer:
    """AdamW as published: betas 0.9/0.999, eps 1e-8, weight decay 0.01."""
    return torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)


def warmup_scheduler(optimizer, warmup_steps: int):
    """Linear warm-up over ``warmup_steps`` updates, then a constant learning rate."""
    n = max(0, int(warmup_steps))
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / n) if n else 1.0)


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
    """One training run's shared parts. Build the models after creating it, then call
    :meth:`start` (which resumes) and :meth:`loop` (which runs the steps)."""

    def __init__(self, cfg, name: str, extra_prompts=()):
        from accelerate import Accelerator
        from accelerate.utils import (DistributedDataParallelKwargs, GradientAccumulationPlugin,
                                      set_seed)

        from Wan_SR.data.dataset import SkipReport, VideoDataset, collate_clips
        from Wan_SR.data.degradation import Degradation

        d, m, opt, out = cfg.data, cfg.model, cfg.optim, cfg.out
        self.cfg, self.name = cfg, name
        self.output = Path(out.output_path)
        self.report = None if out.report_to in (None, "", "none") else out.report_to
        self.micro = int(opt.gradient_accumulation_steps)
        # accumulation counts our micro-batches, not the loader's end (sync_with_dataloader)
        self.acc = Accelerator(
            mixed_precision=opt.mixed_precision, log_with=self.report,
            project_dir=str(self.output), step_scheduler_with_optimizer=False,
            gradient_accumulation_plugin=GradientAccumulationPlugin(
                num_steps=self.micro, sync_with_dataloader=False),
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=False)])
        set_seed(opt.seed)
        self.dev, self.dtype = self.acc.device, DTYPES[opt.mixed_precision]
        self.rank, self.seed = self.acc.process_index, opt.seed
        self.output.mkdir(parents=True, exist_ok=True)
        if self.acc.is_main_process:
            checkpoints.remove_stale_partials(self.output)
        keys = [k.strip() for k in d.data_file_keys.split(",") if k.strip()]
        self.dataset = VideoDataset(d.dataset_base_path, d.dataset_metadata_path,
                                    num_frames=d.num_frames, height=d.height or None,
                                    width=d.width or None, max_pixels=d.max_pixels,
                                    repeat=d.dataset_repeat, seed=opt.seed, data_file_keys=keys,
                                    quiet=True)  # the command line's checks reported it
        self.sampler = EpochPermutation(len(self.dataset), opt.seed)
        self.loader = torch.utils.data.DataLoader(self.dataset, batch_size=1, sampler=self.sampler,
                                                  num_workers=d.dataloader_num_workers,
                                                  collate_fn=collate_clips)
        self.degrade = Degradation(d.deg_file_path)
        self.skips = SkipReport()
        self.files = m.wan_files()
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
        self.state = {"step": 0, "nan_skipped": 0, "samples_skipped": 0, "empty_steps": 0,
                      "empty_steps_in_a_row": 0}
        self.history: Optional[LossHistory] = None
        self._bad_loss = False
        self._saved: Optional[int] = None

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
        """True when ``flag`` is true on some process (a collective: every process calls it)."""
        if self.acc.num_processes == 1:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self.acc.device)
        return bool(self.acc.reduce(t, reduction="sum").item() > 0)

    def micro_batch(self, *modules):
        """The context of one micro-batch's forward and backward through ``modules`` (the
        prepared ones): accelerate's accumulation, which keeps data-parallel gradients local
        until the step's last micro-batch. Enter it once per micro-batch, for every micro-batch
        of the step."""
        return self.acc.accumulate(*modules)

    def backward(self, loss: torch.Tensor, params, step: int, what: str) -> None:
        """Add this micro-batch's gradients (accelerate divides ``loss`` by the number of
        micro-batches). A loss that is NaN/Inf on any process adds nothing and marks the step's
        update as skipped on every process (counted and logged by :meth:`apply`)."""
        if self.any_process(not bool(torch.isfinite(loss.detach()).all())):
            if not self._bad_loss:
                log.warning("step %d: non-finite %s loss, update skipped", step, what)
            self._bad_loss = True
            loss = zero_loss(params)  # every parameter still takes part in the backward
        self.acc.backward(loss)

    def apply(self, params, optimizer, scheduler, step: int, what: str) -> bool:
        """After the step's last micro-batch: clip at ``--max_grad_norm`` and step, unless a
        loss of the step was non-finite (then every process skips the update together).
        Returns True if the update was applied."""
        assert self.acc.sync_gradients, "apply() before the step's last micro-batch"
        bad, self._bad_loss = self._bad_loss, False
        if bad:
            self.state["nan_skipped"] += 1
            log.warning("step %d: %s update skipped (%d so far)", step, what,
                        self.state["nan_skipped"])
        else:
            max_norm = self.cfg.optim.max_grad_norm
            if max_norm > 0:
                self.acc.clip_grad_norm_(params, max_norm)
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        return not bad

    def gather(self, obj) -> list:
        """``obj`` of every process, in process order (a collective: every process calls it)."""
        if self.acc.num_processes == 1:
            return [obj]
        import torch.distributed as dist

        everyone = [None] * self.acc.num_processes
        dist.all_gather_object(everyone, obj)
        return everyone

    def mean_logs(self, logs: list) -> dict:
        """The mean of each logged value over the micro-batches and processes that have it
        (one collective, whatever keys each process has)."""
        logs = [d for part in self.gather(logs) for d in part]
        keys = list(dict.fromkeys(k for d in logs for k in d))
        return {k: float(np.mean([d[k] for d in logs if k in d])) for k in keys}

    # ------------------------------------------------------------------ run
    def start(self) -> int:
        """Resume (``--resume_from_checkpoint``), open the loss history and trackers. Call
        after every model, optimiser and scheduler is prepared / registered. Returns the total
        number of steps."""
        opt, out = self.cfg.optim, self.cfg.out
        if out.resume_from_checkpoint:
            self.state = dict(self.state, **checkpoints.load_state(
                self.acc, checkpoints.find_state(self.output, out.resume_from_checkpoint)))
            self._saved = self.state["step"]
        self.history = LossHistory(self.output / "losses.jsonl", self.acc.is_main_process,
                                   self.state["step"])
        if self.report:
            # a resumed run drops the logged steps after the resumed one, as losses.jsonl does
            kw = {"tensorboard": {"purge_step": self.state["step"] + 1}} \
                if self.report == "tensorboard" and self.state["step"] else {}
            self.acc.init_trackers(out.project_name, config=flat(dataclasses.asdict(self.cfg)),
                                   init_kwargs=kw)
        per_process = len(self.loader)
        self.steps_per_epoch = per_process // self.micro
        if self.steps_per_epoch < 1:
            raise ValueError(f"--gradient_accumulation_steps {self.micro} is more than the "
                             f"{per_process} sample(s) per process of an epoch")
        if per_process % self.micro:
            log.info("the last %d sample(s) of each epoch's share of a process are not used "
                     "(%d is not a multiple of --gradient_accumulation_steps %d)",
                     per_process % self.micro, per_process, self.micro)
        total = opt.max_train_steps or opt.num_epochs * self.steps_per_epoch
        log.info("%s: %d steps (%d per epoch, %d process(es) x %d sample(s) per step), from "
                 "step %d", self.name, total, self.steps_per_epoch, self.acc.num_processes,
                 self.micro, self.state["step"])
        return total

    def loop(self, total: int, step_fn: Callable, save_fn: Callable) -> dict:
        """Run steps ``state['step']+1 .. total``: ``step_fn(step, batches, generators) ->
        [logs per micro-batch]`` (floats, ``loss`` among them), then logging, and
        ``save_fn(step)`` every ``--save_steps`` and at the end (followed by the accelerate
        state), whatever the step's samples were. Ctrl-C raises :class:`TrainingInterrupted`."""
        step = self.state["step"]
        bar = progress(total=total, initial=step, desc=self.name, unit="step", leave=True)
        last: dict = {}
        try:
            while step < total:
                epoch, offset = divmod(step, self.steps_per_epoch)
                self.sampler.use_epoch(epoch)
                self.dataset.set_epoch(epoch)
                loader = self.acc.skip_first_batches(self.loader, offset * self.micro) \
                    if offset else self.loader
                batches = iter(loader)
                for _ in range(offset, self.steps_per_epoch):
                    if step >= total:
                        break
                    step += 1
                    last = self._one_step(step, batches, step_fn) or last
                    bar.update(1)
                    bar.set_postfix_str(f"loss {last.get('loss', float('nan')):.4g}")
                    if step % self.cfg.out.save_steps == 0 or step == total:
                        self._save(step, save_fn)
        except KeyboardInterrupt:
            raise TrainingInterrupted(step, self._saved) from None
        finally:
            bar.close()
        return self._finish(step, last)

    def _one_step(self, step: int, batches: Iterator, step_fn: Callable) -> Optional[dict]:
        """Fetch the step's micro-batches and train on them (under the watchdog); log. Returns
        the logged values, None for a step with no sample on some process."""
        seconds = self.cfg.optim.collective_timeout * self.micro
        with Watchdog().watch(f"step {step}", seconds):
            micro = [next(batches) for _ in range(self.micro)]
            # every process learns whether each has a sample, and which rows failed where
            parts = self.gather((all(b["name"] for b in micro),
                                 [s for b in micro for s in b["skipped"]]))
            skipped = [s for _, part in parts for s in part]
            self.state["samples_skipped"] += self.skips.add_entries(skipped)
            if not all(ok for ok, _ in parts):
                self._empty(step, skipped)
                return None
            self.state["empty_steps_in_a_row"] = 0
            procs = self.acc.num_processes
            gens = [step_generator(self.seed, step, j * procs + self.rank)
                    for j in range(self.micro)]
            t0 = time.perf_counter()
            # cuDNN attention first, for the forward and the backward (recomputation matches)
            with attention_context("auto", self.dev):
                logs = self.mean_logs(step_fn(step, micro, gens))
            log.debug("step %d: %.3f s", step, time.perf_counter() - t0)
        self.history.add(step, logs)
        if self.report:
            self.acc.log(logs, step=step)
        return logs

    def _empty(self, step: int, skipped: list) -> None:
        """A step with no sample on some process: every process skips it; too many in a row
        stop the run."""
        self.state["empty_steps"] += 1
        self.state["empty_steps_in_a_row"] += 1
        run = self.state["empty_steps_in_a_row"]
        reasons = "; ".join(f"{n}: {r}" for n, r, _ in skipped[:2])
        log.warning("step %d: no readable sample on some process, nothing trained (%s)", step,
                    reasons)
        if run >= MAX_EMPTY_STEPS:
            raise TrainingDataError(f"{run} steps in a row had no readable sample: the training "
                                    f"data cannot be read (last: {reasons})")

    def _save(self, step: int, save_fn: Callable) -> None:
        self.acc.wait_for_everyone()
        if self.acc.is_main_process:
            save_fn(step)
        checkpoints.save_state(self.acc, self.output, step, dict(self.state, step=step))
        self._saved = step

    def _finish(self, step: int, last: dict) -> dict:
        if self.report:
            self.acc.end_training()
        if self.state["nan_skipped"]:
            log.warning("%d update(s) skipped for non-finite losses", self.state["nan_skipped"])
        if self.state["empty_steps"]:
            log.warning("%d step(s) had no readable sample and trained nothing",
                        self.state["empty_steps"])
        if self.skips.count:
            log.warning("%s", self.skips.summary())
        if self.tagger is not None and self.tagger.calls:
            enc = self.contexts.enc
            log.info("tags: %d sample(s), %.2f s tagging + %.2f s encoding %d new prompt(s)",
                     self.tagger.calls, self.tagger.seconds, enc.seconds, enc.encodes)
        return {"step": step, "nan_skipped": self.state["nan_skipped"],
                "empty_steps": self.state["empty_steps"], "last": last,
                "output": str(self.output), "accelerator": self.acc}

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
