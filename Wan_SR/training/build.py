"""The parts of a training run both trainers build (:func:`build_parts`, docs/method.md §9),
each by one small function: the accelerator (:func:`start_accelerator`), the data
(:func:`build_data`: dataset, per-epoch order, loader) and the inputs of a step
(:func:`build_inputs`: LQ clips by the degradation, the frozen VAE, the tagger and the prompts'
text contexts). ``base.py`` and ``draft.py`` build their models; ``engine.py`` runs the steps.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, GradientAccumulationPlugin, set_seed

from Wan_SR.data.dataset import SkipReport, VideoDataset, collate_clips
from Wan_SR.data.degradation import Degradation
from Wan_SR.models.tagger import load_tagger, pick_frame, prompt_with_tags
from Wan_SR.models.text import PromptEncoder
from Wan_SR.models.wan import WanFiles, load_vae, vae_encode
from . import checkpoints
from .losses import PixelLoss
from .lpips import load_lpips
from .options import DataOptions, LossOptions, ModelOptions, OptimOptions, auto_setting
from .recompute import Recompute

log = logging.getLogger(__name__)

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "no": torch.float32}


def start_accelerator(opt: OptimOptions, output_path: str, tracker: Optional[str]) -> Accelerator:
    """The accelerator of a run (mixed precision, accumulation counted in our micro-batches,
    not at the loader's end), the global seed set, the output folder made and cleared of what a
    killed earlier run left half-written."""
    acc = Accelerator(
        mixed_precision=opt.mixed_precision, log_with=tracker, project_dir=str(output_path),
        step_scheduler_with_optimizer=False,
        gradient_accumulation_plugin=GradientAccumulationPlugin(
            num_steps=int(opt.gradient_accumulation_steps), sync_with_dataloader=False),
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=False)])
    set_seed(opt.seed)
    Path(output_path).mkdir(parents=True, exist_ok=True)
    if acc.is_main_process:
        checkpoints.remove_stale_partials(Path(output_path))
    return acc


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


@dataclass
class TrainData:
    """The dataset, its per-epoch order, the (prepared) loader and the report of skipped rows."""
    dataset: VideoDataset
    sampler: EpochPermutation
    loader: torch.utils.data.DataLoader
    skips: SkipReport


def build_data(acc, d: DataOptions, seed: int) -> TrainData:
    dataset = VideoDataset(d.dataset_base_path, d.dataset_metadata_path,
                           num_frames=d.num_frames, height=d.height or None,
                           width=d.width or None, max_pixels=d.max_pixels,
                           repeat=d.dataset_repeat, seed=seed, data_file_keys=d.file_keys(),
                           quiet=True)  # the command line's checks reported it
    sampler = EpochPermutation(len(dataset), seed)
    loader = torch.utils.data.DataLoader(dataset, batch_size=1, sampler=sampler,
                                         num_workers=d.dataloader_num_workers,
                                         collate_fn=collate_clips)
    return TrainData(dataset, sampler, acc.prepare(loader), SkipReport())


class ContextBank:
    """Prompt -> text context, from the on-disk prompt cache. The main process encodes the
    prompts not cached yet (loading the umT5 encoder once, then freeing it) before training.
    With ``resident`` (tagged prompts, known only per sample) the encoder stays loaded and
    every process encodes its new prompts as they come (``offload``: kept on the CPU)."""

    def __init__(self, files, cache_dir, device, dtype, resident: bool = False,
                 offload: bool = False):
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


class Inputs:
    """A batch -> what a step trains on: the LQ clip (paired, or degraded from the HQ clip),
    HQ and LQ encoded once by the frozen VAE, the (tagged) prompt's text context."""

    def __init__(self, vae, degrade: Degradation, tagger, contexts: ContextBank,
                 tag_source: str, device, dtype):
        self.vae, self.degrade, self.tagger, self.contexts = vae, degrade, tagger, contexts
        self.tag_source, self.device, self.dtype = tag_source, device, dtype

    @torch.no_grad()
    def encode(self, batch, g: torch.Generator):
        """``(hq, z_h, z_l, context)``; ``hq`` (B,3,T,H,W) in [-1,1]. LQ: the row's paired
        clip, else the degradation of the HQ clip (drawn from ``g``)."""
        hq01 = _to_unit(batch["video"], self.device)
        hq = as_video(hq01).to(self.dtype)
        # the HQ encode is queued first: the GPU runs it while the degradation draws its
        # kernels on the CPU (nothing else draws from g in between)
        z_h = vae_encode(self.vae, hq)
        lq = batch["LQ_video"]
        lq01 = _to_unit(lq, self.device) if isinstance(lq, torch.Tensor) else \
            self.degrade(hq01, generator=g).to(self.device)
        z_l = vae_encode(self.vae, as_video(lq01).to(self.dtype))
        prompts = self.tagged_prompts(batch["prompt"], hq01 if self.tag_source == "hq" else lq01,
                                      g)
        return hq, z_h, z_l, self.contexts.get(prompts)

    def tagged_prompts(self, prompts, clips: torch.Tensor, g: torch.Generator) -> list:
        """``"<prompt>, <tags>"`` per sample, the tags of one frame drawn from ``g`` of its clip
        (B,T,3,H,W) in [0,1]; the prompts alone without a tagger."""
        if self.tagger is None:
            return list(prompts)
        return [prompt_with_tags(p, self.tagger.tags(clips[b, pick_frame(clips.shape[1], g)]))
                for b, p in enumerate(prompts)]

    def log_summary(self) -> None:
        if self.tagger is not None and self.tagger.calls:
            enc = self.contexts.enc
            log.info("tags: %d sample(s), %.2f s tagging + %.2f s encoding %d new prompt(s)",
                     self.tagger.calls, self.tagger.seconds, enc.seconds, enc.encodes)


def build_inputs(acc, m: ModelOptions, deg_file: str, files, data_prompts, extra_prompts,
                 dtype) -> Inputs:
    """The degradation, the tagger, the text contexts (the prompts not cached yet encoded by the
    main process; tagged prompts as they come) and the frozen VAE."""
    dev = acc.device
    degrade = Degradation(deg_file)
    tagger = load_tagger(m.ram_path, m.DAPE_path, enabled=not m.no_tags, device=dev,
                         dtype=dtype, offload=m.low_memory)
    contexts = ContextBank(files, m.prompt_cache_dir, dev, dtype, resident=tagger is not None,
                           offload=m.low_memory)
    with acc.main_process_first():  # tagged prompts are encoded as they come
        rows = [] if tagger is not None else list(data_prompts)
        contexts.fill(rows + list(extra_prompts), acc.is_main_process)
    vae = load_vae(files.vae, dtype=dtype, device=dev).requires_grad_(False)
    return Inputs(vae, degrade, tagger, contexts, m.tag_source, dev, dtype)


def build_pixel_loss(o: LossOptions, cuda_graphs, vae, device) -> Optional[PixelLoss]:
    """The pixel losses through the frozen ``vae`` and, when the LPIPS loss is on, the frozen
    LPIPS network; None when no pixel loss is on. ``cuda_graphs`` (``--cuda_graphs``): auto
    replays them from CUDA graphs on a GPU."""
    if not o.pixel():
        return None
    lpips = load_lpips(o.lpips_weights, device=device) if o.lpips() else None
    graphs = auto_setting(cuda_graphs, "--cuda_graphs")
    if graphs == "auto":
        graphs = torch.device(device).type == "cuda"
    return PixelLoss(vae, lpips, graphs=graphs)


@dataclass
class Parts:
    """What both trainers build before their models."""
    acc: Accelerator
    dtype: torch.dtype
    data: TrainData
    files: WanFiles
    inputs: Inputs
    recompute: Recompute  # the trained DiTs' gradient checkpointing


def build_parts(cfg) -> Parts:
    """The accelerator, the data, the Wan2.1 files and the inputs of a trainer's config (the
    prompts of the data and the config's own encoded before the first step)."""
    acc = start_accelerator(cfg.optim, cfg.out.output_path, cfg.out.tracker())
    dtype = DTYPES[cfg.optim.mixed_precision]
    data = build_data(acc, cfg.data, cfg.optim.seed)
    files = cfg.model.wan_files()
    inputs = build_inputs(acc, cfg.model, cfg.data.deg_file_path, files,
                          [r.prompt for r in data.dataset.rows], cfg.prompts(), dtype)
    recompute = Recompute(cfg.optim.gradient_checkpointing, cfg.optim.memory_target, acc.device)
    return Parts(acc, dtype, data, files, inputs, recompute)
