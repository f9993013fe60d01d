"""What both trainers run (docs/method.md §9): the guarded update (:class:`Updates`) and the step
loop (:class:`Loop`: resume, the steps' micro-batches, logging, saving). ``base.py`` and
``draft.py`` build their parts (``build.py``) and models and supply one step function each.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np
import torch
import torch.distributed as dist

from Wan_SR.core import profile as prof
from Wan_SR.core.distributed import Watchdog
from Wan_SR.core.files import save_safetensors_atomic
from Wan_SR.core.log import progress
from Wan_SR.sampling.speed import attention_context
from . import checkpoints
from .build import Parts
from .models import trainable_parameters

log = logging.getLogger(__name__)

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
    """AdamW as published: betas 0.9/0.999, eps 1e-8, weight decay 0.01; the fused kernel on
    GPUs and CPUs (one launch for every parameter; the same update up to rounding), which can
    also skip an update on the device (:meth:`Updates.apply`)."""
    params = list(params)
    fused = bool(params) and all(p.device.type in ("cuda", "cpu") for p in params)
    return torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01,
                             fused=fused or None)


def warmup_scheduler(optimizer, warmup_steps: int):
    """Linear warm-up over ``warmup_steps`` updates, then a constant learning rate."""
    n = max(0, int(warmup_steps))
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / n) if n else 1.0)


@dataclass
class Trained:
    """One trained network: ``module``, the module accelerate prepared for data parallelism
    (its forward is what the step differentiates), ``net`` the network itself, its trainable
    ``params``, their optimiser and learning-rate schedule."""
    module: torch.nn.Module
    net: torch.nn.Module
    params: list
    optimizer: torch.optim.Optimizer
    scheduler: Optional[object] = None


def prepare_trained(acc, module: torch.nn.Module, net: torch.nn.Module, lr: float,
                    warmup_steps: Optional[int]) -> Trained:
    """AdamW on the trainable parameters of ``net`` (held by ``module``), with the warm-up
    schedule unless ``warmup_steps`` is None, prepared by accelerate; the schedule is saved with
    the training state. Prepare in a fixed order: the state's file names follow it."""
    params = trainable_parameters(net)
    optimizer = adamw(params, lr)
    scheduler = None if warmup_steps is None else warmup_scheduler(optimizer, warmup_steps)
    module, optimizer = acc.prepare(module, optimizer)
    if scheduler is not None:
        acc.register_for_checkpointing(scheduler)
    return Trained(module, net, params, optimizer, scheduler)


def any_process(acc, flag: bool) -> bool:
    """True when ``flag`` is true on some process (a collective: every process calls it)."""
    if acc.num_processes == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=acc.device)
    return bool(acc.reduce(t, reduction="sum").item() > 0)


def gather(acc, obj) -> list:
    """``obj`` of every process, in process order (a collective: every process calls it)."""
    if acc.num_processes == 1:
        return [obj]
    everyone = [None] * acc.num_processes
    dist.all_gather_object(everyone, obj)
    return everyone


class StepProfile:
    """The time of each phase of one step (``--profile_step``): :meth:`mark` ends a phase (the
    time since the previous mark is the named phase's; repeated names add up). On a GPU the
    marks are CUDA events, so the step runs as it does unprofiled; read at :meth:`end`. With
    ``trace`` (the step after, on a GPU) torch's profiler also records the GPU's kernels, and
    :meth:`end` adds when the GPU was idle and in which phase (:func:`Wan_SR.core.profile.idle`;
    the profiler slows the main thread a little)."""

    def __init__(self):
        self.marks: Optional[list] = None
        self.trace = None

    def begin(self, device, trace: bool = False) -> None:
        self.cuda = torch.device(device).type == "cuda"
        if trace and self.cuda:
            acts = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
            self.trace = torch.profiler.profile(activities=acts)
            self.trace.start()
            prof.mark(prof.CLIP, "step")
        self.marks = [("", self._now())]

    def mark(self, name: str) -> None:
        if self.marks is not None:
            self.marks.append((name, self._now()))
            if self.trace is not None:
                prof.mark(prof.WINDOW, name)

    def _now(self):
        if not self.cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def end(self) -> dict:
        """Seconds per phase, in the order they first ran, and ``total``; when traced, also
        ``gpu_idle``."""
        marks, self.marks = self.marks, None
        if self.cuda:
            torch.cuda.synchronize()
        phases: dict = {}
        for (_, t0), (name, t1) in zip(marks, marks[1:]):
            secs = t0.elapsed_time(t1) / 1e3 if self.cuda else t1 - t0
            phases[name] = phases.get(name, 0.0) + secs
        phases["total"] = sum(phases.values())
        if self.trace is not None:
            prof.mark(prof.WINDOW, "(end)")
            trace, self.trace = self.trace, None
            trace.stop()
            tr = prof.trace_events(trace)
            start = next(t for kind, _, t in tr["marks"] if kind == prof.CLIP)
            end = max(t for _, _, t in tr["marks"])
            phases["gpu_idle"] = prof.idle(tr, start, end)
        return phases


class Updates:
    """The guarded update of a trained model, the same decision on every process: a step's
    micro-batches add their gradients (accelerate's accumulation); a loss that is NaN/Inf on
    any process skips the step's update on every process; else the gradients are clipped at
    ``--max_grad_norm`` and the optimiser steps. With the fused AdamW the decision is made on
    the device (the kernel's ``found_inf``: the update and its step count are skipped), so the
    step has no host synchronisation; :meth:`settle`, after the step, counts and reports the
    skipped updates. ``skipped`` counts them over the run; ``profile`` times the phases of a
    profiled step (:meth:`mark`)."""

    def __init__(self, acc, max_grad_norm: float, skipped: int = 0):
        self.acc, self.max_grad_norm = acc, max_grad_norm
        self.skipped = skipped
        self.profile = StepProfile()
        self._finite: Optional[torch.Tensor] = None
        self._pending: list = []  # (step, what, 1.0 on the device when the update was skipped)

    def mark(self, phase: str) -> None:
        """The step's work since the previous mark was ``phase`` (profiled steps only)."""
        self.profile.mark(phase)

    def any_process(self, flag: bool) -> bool:
        return any_process(self.acc, flag)

    def micro_batch(self, module):
        """The context of one micro-batch's forward and backward through the prepared
        ``module``: gradients stay local until the step's last micro-batch. Enter it once per
        micro-batch, for every micro-batch of the step."""
        return self.acc.accumulate(module)

    def autocast(self):
        return self.acc.autocast()

    def backward(self, loss: torch.Tensor, model: Trained, step: int, what: str) -> None:
        """Add this micro-batch's gradients (accelerate divides ``loss`` by the number of
        micro-batches); whether the loss is finite is noted on the device for :meth:`apply`
        (a non-finite loss makes non-finite gradients, which :meth:`apply` drops)."""
        finite = torch.isfinite(loss.detach()).all()
        self._finite = finite if self._finite is None else self._finite & finite
        self.acc.backward(loss)
        self.mark(f"{what} backward")

    def apply(self, model: Trained, step: int, what: str) -> None:
        """After the step's last micro-batch: clip and step, unless a loss of the step was
        non-finite on some process (then the gradients are dropped on every process)."""
        assert self.acc.sync_gradients, "apply() before the step's last micro-batch"
        finite, self._finite = self._finite, None
        bad = torch.zeros((), device=self.acc.device) if finite is None else \
            (~finite).float()
        if self.acc.num_processes > 1:
            bad = (self.acc.reduce(bad.reshape(1), reduction="sum") > 0).float().reshape(())
        inner = getattr(model.optimizer, "optimizer", model.optimizer)  # accelerate's wrapper
        if inner.defaults.get("fused"):
            # decided on the device: the fused kernel leaves everything as it was when
            # found_inf is 1 (the clipping of non-finite gradients is then harmless)
            if self.max_grad_norm > 0:
                self.acc.clip_grad_norm_(model.params, self.max_grad_norm)
            inner.found_inf = bad
            try:
                model.optimizer.step()
            finally:
                del inner.found_inf
            if model.scheduler is not None:
                model.scheduler.step()
            self._pending.append((step, what, bad))
        elif bool(bad):
            self._pending.append((step, what, bad))
        else:
            if self.max_grad_norm > 0:
                self.acc.clip_grad_norm_(model.params, self.max_grad_norm)
            model.optimizer.step()
            if model.scheduler is not None:
                model.scheduler.step()
        model.optimizer.zero_grad(set_to_none=True)
        self.mark(f"{what} optimiser")

    def settle(self) -> int:
        """After a step (its losses read, so nothing waits here): count and report the updates
        it skipped. Returns their number."""
        skipped = 0
        for step, what, bad in self._pending:
            if bool(bad):
                skipped += 1
                self.skipped += 1
                log.warning("step %d: non-finite %s loss, update skipped (%d so far)", step,
                            what, self.skipped)
        self._pending.clear()
        return skipped


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


def flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v if isinstance(v, (int, float, str, bool)) else str(v)
    return out


class Loop:
    """The steps of one run: :meth:`start` resumes and opens the logs (and makes the run's
    :class:`Updates`, ``updates``), :meth:`run` runs the steps, logs each and saves every
    ``--save_steps`` and at the end."""

    def __init__(self, parts: Parts, cfg, name: str):
        self.acc, self.cfg, self.name, self.data = parts.acc, cfg, name, parts.data
        self.recompute = parts.recompute
        self.updates: Optional[Updates] = None
        self.output = Path(cfg.out.output_path)
        self.report = cfg.out.tracker()
        self.micro = int(cfg.optim.gradient_accumulation_steps)
        self.state = {"step": 0, "samples_skipped": 0, "empty_steps": 0,
                      "empty_steps_in_a_row": 0}
        self.history: Optional[LossHistory] = None
        self.saved: Optional[int] = None
        self.steps_per_epoch = 0

    def start(self) -> int:
        """Resume (``--resume_from_checkpoint``), open the loss history and trackers. Call
        after every model, optimiser and scheduler is prepared / registered. Returns the total
        number of steps."""
        opt, out = self.cfg.optim, self.cfg.out
        skipped = 0
        if out.resume_from_checkpoint:
            state = checkpoints.load_state(
                self.acc, checkpoints.find_state(self.output, out.resume_from_checkpoint))
            skipped = state.pop("nan_skipped", 0)
            self.state.update(state)
            self.saved = self.state["step"]
        self.updates = Updates(self.acc, opt.max_grad_norm, skipped)
        self.history = LossHistory(self.output / "losses.jsonl", self.acc.is_main_process,
                                   self.state["step"])
        if self.report:
            # a resumed run drops the logged steps after the resumed one, as losses.jsonl does
            kw = {"tensorboard": {"purge_step": self.state["step"] + 1}} \
                if self.report == "tensorboard" and self.state["step"] else {}
            self.acc.init_trackers(out.project_name, config=flat(dataclasses.asdict(self.cfg)),
                                   init_kwargs=kw)
        per_process = len(self.data.loader)
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

    def run(self, total: int, step_fn: Callable, save_fn: Callable) -> dict:
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
                batches = self._epoch(epoch, offset)
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
            raise TrainingInterrupted(step, self.saved) from None
        finally:
            bar.close()
        return self._finish(step, last)

    def _epoch(self, epoch: int, offset: int) -> Iterator:
        """The micro-batches of ``epoch`` from its step ``offset`` on."""
        d = self.data
        d.sampler.use_epoch(epoch)
        d.dataset.set_epoch(epoch)
        loader = self.acc.skip_first_batches(d.loader, offset * self.micro) if offset \
            else d.loader
        return iter(loader)

    def _one_step(self, step: int, batches: Iterator, step_fn: Callable) -> Optional[dict]:
        """Fetch the step's micro-batches and train on them (under the watchdog); log. Returns
        the logged values, None for a step with no sample on some process."""
        seconds = self.cfg.optim.collective_timeout * self.micro
        with Watchdog().watch(f"step {step}", seconds):
            micro = [next(batches) for _ in range(self.micro)]
            # every process learns whether each has a sample, and which rows failed where
            parts = gather(self.acc, (all(b["name"] for b in micro),
                                      [s for b in micro for s in b["skipped"]]))
            skipped = [s for _, part in parts for s in part]
            self.state["samples_skipped"] += self.data.skips.add_entries(skipped)
            if not all(ok for ok, _ in parts):
                self._empty(step, skipped)
                return None
            self.state["empty_steps_in_a_row"] = 0
            procs, rank = self.acc.num_processes, self.acc.process_index
            gens = [step_generator(self.cfg.optim.seed, step, j * procs + rank)
                    for j in range(self.micro)]
            # --profile_step N: the phases of step N; on a GPU, the GPU's idle time in step N+1
            profiled = step == self.cfg.out.profile_step
            traced = self.cfg.out.profile_step > 0 and step == self.cfg.out.profile_step + 1 \
                and torch.device(self.acc.device).type == "cuda"
            if profiled or traced:
                self.updates.profile.begin(self.acc.device, trace=traced)
            t0 = time.perf_counter()
            # cuDNN attention first, for the forward and the backward (recomputation matches)
            with attention_context("auto", self.acc.device):
                logs = self._mean(step_fn(step, micro, gens))
            log.debug("step %d: %.3f s", step, time.perf_counter() - t0)
            self.updates.settle()
            if profiled or traced:
                self._write_profile(step, "gpu_idle" if traced else "profile")
            self.recompute.settle()  # after the run's first step: the blocks kept from now on
        self.history.add(step, logs)
        if self.report:
            self.acc.log(logs, step=step)
        return logs

    def _write_profile(self, step: int, kind: str = "profile") -> None:
        """The profiled step's phases: logged, and ``<kind>_step_<N>.json`` (main process);
        ``kind`` ``gpu_idle``: the traced step's, its GPU idle time (:class:`StepProfile`)."""
        phases = self.updates.profile.end()
        idle = phases.pop("gpu_idle", None)
        log.info("step %d profile: %s", step, ", ".join(f"{k} {v:.3f} s" for k, v in
                                                        phases.items()))
        if idle is not None:
            log.info("step %d (traced): GPU busy %.1f%%, idle %.3f s, by phase: %s", step,
                     100 * idle["gpu_busy"], idle["idle_s"], ", ".join(
                         f"{k} {v:.3f} s" for k, v in sorted(idle["idle_s_by_phase"].items(),
                                                             key=lambda kv: -kv[1])))
        if self.acc.is_main_process:
            body = {"step": step, "seconds": phases}
            if idle is not None:
                body["gpu_idle"] = idle
            (self.output / f"{kind}_step_{step}.json").write_text(
                json.dumps(body, indent=2) + "\n")

    def _mean(self, logs: list) -> dict:
        """The mean of each logged value over the micro-batches and processes that have it
        (one collective, whatever keys each process has); tensors become numbers here, after
        the step."""
        logs = [{k: float(v) for k, v in d.items()} for d in logs]
        logs = [d for part in gather(self.acc, logs) for d in part]
        keys = list(dict.fromkeys(k for d in logs for k in d))
        return {k: float(np.mean([d[k] for d in logs if k in d])) for k in keys}

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
        checkpoints.save_state(self.acc, self.output, step, self._trainer_state(step))
        self.saved = step

    def _trainer_state(self, step: int) -> dict:
        s = self.state
        return {"step": step, "nan_skipped": self.updates.skipped,
                "samples_skipped": s["samples_skipped"], "empty_steps": s["empty_steps"],
                "empty_steps_in_a_row": s["empty_steps_in_a_row"]}

    def _finish(self, step: int, last: dict) -> dict:
        if self.report:
            self.acc.end_training()
        if self.updates.skipped:
            log.warning("%d update(s) skipped for non-finite losses", self.updates.skipped)
        if self.state["empty_steps"]:
            log.warning("%d step(s) had no readable sample and trained nothing",
                        self.state["empty_steps"])
        if self.data.skips.count:
            log.warning("%s", self.data.skips.summary())
        return {"step": step, "nan_skipped": self.updates.skipped,
                "empty_steps": self.state["empty_steps"], "last": last,
                "output": str(self.output), "accelerator": self.acc}


def dump_rank_weights(acc, state_dict: dict) -> None:
    """Debugging aid (``PSSR_DUMP_RANK_WEIGHTS=prefix``): every process writes its trainable
    weights, to check that data-parallel processes agree."""
    dump = os.environ.get("PSSR_DUMP_RANK_WEIGHTS")
    if dump:
        save_safetensors_atomic(f"{dump}{acc.process_index}.safetensors", state_dict)
    acc.wait_for_everyone()
