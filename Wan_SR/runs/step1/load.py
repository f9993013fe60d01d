"""Step 1's models, built from its config: the tagger (optional), the pipeline with its speed
switches, and the per-clip prompts."""
from __future__ import annotations

from Wan_SR.core.devices import parse_dtype, resolve_device
from Wan_SR.core.options import Step1Config
from Wan_SR.models.tagger import ClipPrompts, load_tagger
from Wan_SR.models.text import PromptEncoder
from Wan_SR.sampling.pipeline import PSSRPipeline, SamplingConfig


def load_models(cfg: Step1Config, files) -> tuple[PSSRPipeline, ClipPrompts]:
    """The pipeline and the clips' prompts of ``cfg`` (``files``: the resolved Wan2.1 files).
    With a tagger the text encoder stays loaded for the tagged prompts (with ``--low_memory``
    on the CPU between clips, like the tagger); without one it is freed once the prompt is
    embedded."""
    m, s, speed = cfg.models, cfg.sampling, cfg.speed
    device, dtype = resolve_device(speed.device), parse_dtype(s.torch_dtype)
    tagger = load_tagger(m.ram_path, m.DAPE_path, enabled=not m.no_tags, device=device,
                         dtype=dtype)
    text = PromptEncoder(files.t5, files.tokenizer, cache_dir=m.prompt_cache_dir, device=device)
    pipe = PSSRPipeline.from_files(
        files, m.lora_base_path, m.lora_draft_path, prompt=s.prompt,
        negative_prompt=s.negative_prompt, config=SamplingConfig.from_options(s), device=device,
        dtype=dtype, num_heads=m.num_heads, attention=speed.attention, text=text)
    if tagger is None:
        text.release()
    prompts = ClipPrompts(s.prompt, tagger, text if tagger is not None else None, seed=s.seed)
    pipe.optimize(compile=speed.compile, channels_last=not speed.no_channels_last,
                  deterministic=speed.deterministic)
    if speed.low_memory:
        pipe.enable_low_memory()
        if pipe.offload:
            prompts.use_offload()
    return pipe, prompts
