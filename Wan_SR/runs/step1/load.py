"""Step 1's models, built from its config: the tagger (optional), the pipeline with its speed
switches and its memory plan (docs/method.md, "GPU memory"), and the per-clip prompts."""
from __future__ import annotations

import logging
import math
import warnings
from typing import Optional

import torch

from Wan_SR.core.devices import parse_dtype, resolve_device
from Wan_SR.core.options import Step1Config, branch_names
from Wan_SR.models.offload import tensor_bytes
from Wan_SR.models.tagger import ClipPrompts, load_tagger
from Wan_SR.models.text import PromptEncoder
from Wan_SR.models.vae_tiles import decoder_halo, encoder_halo
from Wan_SR.sampling.memory import (GIB, MemoryBudgetError, MemoryPlan, ModelBytes, WindowShape,
                                    plan_memory)
from Wan_SR.sampling.pipeline import PSSRPipeline, SamplingConfig

log = logging.getLogger(__name__)
AUTO_MARGIN_GIB = 0.5  # of the free memory, left to the CUDA context's own needs


def load_models(cfg: Step1Config, files, largest: Optional[tuple] = None
                ) -> tuple[PSSRPipeline, ClipPrompts]:
    """The pipeline and the clips' prompts of ``cfg`` (``files``: the resolved Wan2.1 files;
    ``largest``: (frames, height, width) of the run's largest clip at the processing size, for
    the memory plan). On a GPU the text encoder streams from pinned host memory for each new
    prompt; with a tagger it stays loaded for the tagged prompts, without one it is freed once
    the prompt is embedded."""
    m, s, speed = cfg.models, cfg.sampling, cfg.speed
    device, dtype = resolve_device(speed.device), parse_dtype(s.torch_dtype)
    budget = speed.budget_gib()
    if device.type == "cuda":
        budget = hold_budget(budget, device)
    elif budget is not None:
        log.info("--vram_budget/--low_memory: no effect on the CPU")
        budget = None
    tagger = load_tagger(m.ram_path, m.DAPE_path, enabled=not m.no_tags, device=device,
                         dtype=dtype)
    text = PromptEncoder(files.t5, files.tokenizer, cache_dir=m.prompt_cache_dir, device=device,
                         offload=device.type == "cuda")
    pipe = PSSRPipeline.from_files(
        files, m.lora_base_path, m.lora_draft_path, prompt=s.prompt,
        negative_prompt=s.negative_prompt, config=SamplingConfig.from_options(s), device=device,
        dtype=dtype, num_heads=m.num_heads, attention=speed.attention, text=text)
    if tagger is None:
        text.release()
    if speed.fp8:
        pipe.use_fp8()
    prompts = ClipPrompts(s.prompt, tagger, text if tagger is not None else None, seed=s.seed)
    if device.type == "cuda":
        plan = memory_plan(cfg, pipe, tagger, largest, budget)
        pipe.use_memory_plan(plan)
        if plan.tagger_on_host and tagger is not None:
            tagger.use_offload()
    pipe.optimize(compile=speed.compile, channels_last=not speed.no_channels_last,
                  deterministic=speed.deterministic)
    return pipe, prompts


def hold_budget(budget: Optional[float], device) -> float:
    """The budget in GiB on ``device``: given, or (auto) the free memory less a margin. A given
    budget is enforced: the caching allocator may not hold more (it frees its cache first), and
    it grows its segments in place so that freed memory is not stranded."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    free, total = torch.cuda.mem_get_info(index)
    if budget is None:
        return free / GIB - AUTO_MARGIN_GIB
    with warnings.catch_warnings():  # its new name is private too
        warnings.simplefilter("ignore")
        torch.cuda.memory._set_allocator_settings("expandable_segments:True")
    torch.cuda.set_per_process_memory_fraction(min(1.0, budget * GIB / total), index)
    if budget * GIB > free:
        log.warning("--vram_budget %g GiB: only %.1f GiB of the GPU are free", budget, free / GIB)
    return budget


def model_bytes(pipe: PSSRPipeline, tagger=None) -> ModelBytes:
    """GiB of the weights a memory plan places."""
    def gib(module):
        return tensor_bytes(module) / GIB

    base, draft = pipe.base, pipe.draft
    base_block, draft_block = gib(base.blocks[0]), gib(draft.blocks[0]) if len(draft.blocks) else 0
    return ModelBytes(vae=gib(pipe.vae),
                      base_other=gib(base) - base_block * len(base.blocks),
                      base_block=base_block, base_blocks=len(base.blocks),
                      draft_other=gib(draft) - draft_block * len(draft.blocks),
                      draft_block=draft_block, draft_blocks=len(draft.blocks),
                      tagger=gib(tagger.ram) if tagger is not None else 0.0)


def window_shape(cfg: Step1Config, largest: Optional[tuple], dtype) -> WindowShape:
    """The largest window x tile of the run (the default window when the clips are unknown)."""
    w = cfg.windows
    T, H, W = largest or (w.window_t, w.window_h, w.window_w)
    H, W = 16 * math.ceil(H / 16), 16 * math.ceil(W / 16)
    latent = cfg.step1.window_space == "latent"  # the VAE sees whole frames
    n = len(cfg.sampling.timestep_draft_list)
    outputs, names = cfg.step1.resolve_outputs(n), branch_names(n)
    decoded = sum(b in outputs or ("final" in outputs and b in (names[0], names[-1]))
                  for b in names)
    return WindowShape(frames=min(T, w.window_t), tile_h=H if latent else min(H, w.window_h),
                       tile_w=W if latent else min(W, w.window_w), frame_h=H, frame_w=W,
                       decoded=decoded, bytes_per_value=torch.finfo(dtype).bits // 8)


def memory_plan(cfg: Step1Config, pipe: PSSRPipeline, tagger, largest, budget) -> MemoryPlan:
    """The plan for ``budget`` GiB (:func:`Wan_SR.sampling.memory.plan_memory`), logged in one
    line; :class:`MemoryBudgetError` when nothing fits (or latent windows would need tiles)."""
    sizes = model_bytes(pipe, tagger)
    shape = window_shape(cfg, largest, pipe.dtype)
    vm = pipe.vae.model
    plan = plan_memory(budget, sizes, shape, enc_halo=encoder_halo(vm.encoder),
                       dec_halo=8 * decoder_halo(vm.decoder))
    if plan.vae_tiles != (1, 1) and cfg.step1.window_space == "latent":
        raise MemoryBudgetError(
            f"--vram_budget {budget:g}: latent windows decode whole frames, which needs more; "
            "use pixel windows (the default) or a larger budget")
    log.info("GPU memory: budget %.1f GiB, planned peak %.1f GiB; %s", budget,
             plan.estimate_gib, plan.describe(sizes))
    return plan


def out_of_memory_hint(error: BaseException, pipe) -> BaseException | str:
    """A one-line reason for a video that ran out of GPU memory (naming a smaller budget);
    other errors unchanged."""
    if not isinstance(error, torch.OutOfMemoryError):
        return error
    plan = pipe.memory_plan
    budget = plan.budget_gib if plan is not None and plan.budget_gib else None
    smaller = f"--vram_budget {max(1.0, math.floor(budget * 0.8 * 2) / 2):g}" if budget \
        else "--vram_budget with the GPU memory this run may use"
    return (f"out of GPU memory (budget {budget or 'auto'} GiB; another process may be using "
            f"the GPU): run again with {smaller}")
