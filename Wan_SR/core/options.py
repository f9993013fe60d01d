"""The one home of every default of PS-SR (docs/method.md lists them with their sources).

Each option is a dataclass field whose ``metadata["help"]`` is the help text the command line
shows; the parsers in ``Wan_SR/cli`` build their arguments from these fields, so a default is
written once. A run writes its resolved options as JSON (``run_config.json``).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Optional

DEFAULT_PROMPT = ("4K Ultra-clear, Sharp, Fine Details Restored, Temporal Consistency, "
                  "Natural Colors")
# Draft block rule of the released draft.safetensors (every third block of 30).
DEFAULT_K_SELECT = 1.5
DEFAULT_NEGATIVE_PROMPT = (
    "painting, oil painting, illustration, drawing, art, sketch, cartoon, CG Style, 3D render, "
    "unreal engine, blurring, dirty, messy, worst quality, low quality, frames, watermark, "
    "signature, jpeg artifacts, deformed, lowres, over-smooth")


FINAL = "final"  # step 1's output of the frequency-domain update
WINDOW_SPACES = ("pixel", "latent")
ATTENTION_CHOICES = ("auto", "cudnn", "flash", "efficient", "math")


def branch_names(num_draft_steps: int) -> list[str]:
    """Output branches of step 1: ``base`` and ``base+draft_k`` for every draft step."""
    return ["base"] + [f"base+draft_{k}" for k in range(1, num_draft_steps + 1)]


def opt(default, help: str, **kw):
    """A dataclass field with a help text (``default`` may be a list: copied per instance)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class ModelFileOptions:
    """The model files every command that loads models reads (docs/method.md §5, §8): the
    official Wan2.1 files, the prompt-embedding cache and the tagger's weights."""
    wan_model_dir: str = opt("dependent_models/Wan2.1-T2V-1.3B",
                             "folder with the official Wan2.1-T2V-1.3B files")
    dit_path: Optional[str] = opt(None, "override: the DiT file "
                                        "(diffusion_pytorch_model.safetensors)")
    vae_path: Optional[str] = opt(None, "override: the VAE file (Wan2.1_VAE.pth)")
    umt5_path: Optional[str] = opt(None, "override: the text encoder "
                                         "(models_t5_umt5-xxl-enc-bf16.pth), needed for prompts "
                                         "not in the prompt cache yet and for tagged prompts")
    tokenizer_path: Optional[str] = opt(None, "override: the umT5 tokenizer folder "
                                              "(google/umt5-xxl)")
    prompt_cache_dir: Optional[str] = opt(None, "where prompt embeddings are cached (default: "
                                                "~/.cache/ps_sr or $PSSR_CACHE_DIR)")
    num_heads: Optional[int] = opt(None, "attention heads of the DiT when the file does not say "
                                         "(default: from the file's metadata or its width)")
    ram_path: Optional[str] = opt("dependent_models/ram_swin_large_14m.pth",
                                  "RAM Swin-L tagger weights (optional): tags of one frame are "
                                  "appended to the prompt ('<prompt>, <tags>'); absent: the "
                                  "prompt alone")
    DAPE_path: Optional[str] = opt("dependent_models/DAPE.pth",
                                   "DAPE degradation-aware weights for the tagger (optional; "
                                   "absent: RAM alone)")
    no_tags: bool = opt(False, "do not tag: the prompt alone even when the RAM weights are there")


@dataclass
class PSSRModelOptions(ModelFileOptions):
    """Inference: the model files and the PS-SR checkpoints (docs/method.md §8)."""
    lora_base_path: str = opt("checkpoints/pretrained_models/base.safetensors",
                              "PS-SR base weights (LoRA + widened patch embedding + head)")
    lora_draft_path: str = opt("checkpoints/pretrained_models/draft.safetensors",
                               "PS-SR draft weights (pruned DiT + fc layers)")


@dataclass
class WindowOptions:
    """Sliding windows in frames / pixels (docs/method.md, "Sliding windows")."""
    window_t: int = opt(33, "frames per temporal window")
    overlap_t: int = opt(16, "frames shared by consecutive temporal windows")
    window_h: int = opt(720, "spatial tile height in pixels")
    overlap_h: int = opt(128, "overlap of vertically adjacent tiles in pixels")
    window_w: int = opt(1280, "spatial tile width in pixels")
    overlap_w: int = opt(128, "overlap of horizontally adjacent tiles in pixels")

    def validate(self) -> None:
        for name in ("window_t", "window_h", "window_w"):
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name} must be positive")
        for ov, win in (("overlap_t", "window_t"), ("overlap_h", "window_h"),
                        ("overlap_w", "window_w")):
            if not 0 <= getattr(self, ov) < getattr(self, win):
                raise ValueError(f"--{ov} must be >= 0 and smaller than --{win}")

    def tiles(self) -> dict:
        """The spatial part, as keyword arguments of the tiling functions."""
        return dict(window_h=self.window_h, window_w=self.window_w, overlap_h=self.overlap_h,
                    overlap_w=self.overlap_w)


# Step 2's temporal windows only bound memory (fusion is per frame): published overlap 8.
STEP2_OVERLAP_T = 8


def step2_windows() -> WindowOptions:
    return WindowOptions(overlap_t=STEP2_OVERLAP_T)


@dataclass
class FusionOptions:
    """Frequency-domain update (docs/method.md, "Frequency-domain update")."""
    fc: float = opt(0.20, "Butterworth cut-off in cycles per pixel on the centred spectrum")
    alpha: float = opt(0.6, "strength of the high band: Y = L_c + alpha (w Hf_s + (1-w) Hf_c); "
                            "1 keeps all of it (the published script's own default)")
    border: int = opt(2, "outer pixels that keep the consistent luma")
    order: int = opt(2, "Butterworth order")
    eps: float = opt(1e-6, "stabiliser of the weight w = |Hf_s| / (|Hf_s| + |Hf_c| + eps)")

    def validate(self) -> None:
        if self.fc <= 0 or self.order <= 0:
            raise ValueError("--fc and --order must be positive")
        if self.border < 0 or self.eps < 0:
            raise ValueError("--border and --eps must not be negative")
        if self.alpha < 0:
            raise ValueError("--alpha must not be negative")

    def kwargs(self, windows: WindowOptions) -> dict:
        """Keyword arguments of ``fuse_video``: these settings tiled like ``windows``."""
        return dict(dataclasses.asdict(self), **windows.tiles())


@dataclass
class SamplingOptions:
    """The base step and the draft steps (docs/method.md, "Base step", "Draft steps")."""
    prompt: str = opt(DEFAULT_PROMPT, "text prompt")
    negative_prompt: str = opt(DEFAULT_NEGATIVE_PROMPT,
                               "negative prompt, used only when --cfg_scale is not 1")
    seed: int = opt(0, "random seed")
    torch_dtype: str = opt("bfloat16", "precision of the models (bfloat16 as in the release)",
                           choices=("bfloat16", "float16", "float32"))
    cfg_scale: float = opt(1.0, "classifier-free guidance scale (1 = off)")
    timestep_base: float = opt(699.0, "timestep of the single base step, 0 < t <= 1000")
    timestep_draft_list: list = opt([599.0, 499.0, 399.0],
                                    'draft timesteps, strictly decreasing and below the base '
                                    'timestep, e.g. "[599,499,399]"')
    k_select: Optional[float] = opt(None, "draft block rule: block i is kept when i %% k == k - 1 "
                                          "(1.5 or 3: every third block); default: what the "
                                          f"draft file records, else {DEFAULT_K_SELECT}")
    denoising_strength: float = opt(1.0, "start of the sigma grid the timesteps are looked up on, "
                                         "as in the release's scheduler: sigma_max = this "
                                         "(0 < d <= 1; 1 = the published grid)")

    def validate(self) -> None:
        validate_timesteps(self.timestep_base, self.timestep_draft_list)
        if not 0 < self.denoising_strength <= 1:
            raise ValueError(f"--denoising_strength must lie in (0, 1], got "
                             f"{self.denoising_strength:g}")
        if self.k_select is not None and self.k_select < 1:
            raise ValueError(f"--k_select must be >= 1, got {self.k_select}")
        if self.cfg_scale <= 0:
            raise ValueError("--cfg_scale must be positive")


def validate_timesteps(t_base: float, drafts) -> None:
    """``0 < t <= 1000`` for every timestep; drafts strictly decreasing and below the base."""
    for t in [t_base, *drafts]:
        if not 0 < t <= 1000:
            raise ValueError(f"timesteps must lie in (0, 1000], got {t:g}")
    seq = [t_base, *drafts]
    for a, b in zip(seq, seq[1:]):
        if not b < a:
            raise ValueError("draft timesteps must be strictly decreasing and below the base "
                             f"timestep ({t_base:g}), got {list(drafts)}")


@dataclass
class OutputOptions:
    """How outputs are written (every script that writes videos)."""
    fps: Optional[str] = opt(None, "output frame rate as a number or a ratio such as 30000/1001 "
                                   "(default: the input's exact rate; 30 for frame folders)")
    save_quality: float = opt(9.0, "H.264 quality 0..10, 10 best (9 = x264 CRF 5)")
    skip_existing: bool = opt(False, "skip outputs already complete and made with the same "
                                     "settings (others are redone)")
    sort_files: bool = opt(False, "process inputs in natural name order")

    def validate(self) -> None:
        if not 0 <= self.save_quality <= 10:
            raise ValueError("--save_quality must be in 0..10")
        self.rate()

    def rate(self) -> Optional[float]:
        """``fps`` as a number (None: the input's own rate)."""
        return parse_fps(self.fps) if self.fps is not None else None


@dataclass
class SplitOptions:
    """How several processes share the work (torchrun / accelerate launch; docs/method.md,
    "Several processes"). One process ignores it."""
    split: str = opt("auto", "videos: each video whole on one process, balanced by frames x "
                             "pixels; windows: every video's temporal windows split over all "
                             "processes (one writer, the same frames); auto: windows for a video "
                             "larger than an equal share of the work (so for every video when "
                             "there are fewer videos than processes), videos for the rest",
                     choices=("auto", "videos", "windows"))


@dataclass
class DeviceOptions:
    device: Optional[str] = opt(None, "cuda, cuda:N or cpu (default: cuda when available, else cpu)")


# --low_memory: the smallest budget the README's table measures (an 8 GB card)
LOW_MEMORY_BUDGET = 6.5


@dataclass
class SpeedOptions(DeviceOptions):
    """Step 1's device and GPU speed switches (:mod:`Wan_SR.sampling.speed`, docs/method.md,
    "Performance"); none of them decides the outputs beyond bf16 noise but ``fp8`` (recorded in
    the outputs' settings), and ``profile`` only writes where the time went."""
    attention: str = opt("auto", "scaled-dot-product attention kernel of the DiT (auto: cuDNN "
                                 "first)", choices=ATTENTION_CHOICES)
    compile: bool = opt(False, "torch.compile the DiT blocks, once per run for any window "
                               "length (latent windows on an H200: 10.2 frames/s against 9.6)")
    deterministic: bool = opt(False, "the same output bits in every run and with any number of "
                                     "GPUs: cuDNN picks convolution kernels by rule instead of "
                                     "timing them per process (about 6%% slower on long clips, "
                                     "faster on short ones)")
    no_channels_last: bool = opt(False, "keep the VAE in channels-first layout (channels-last is "
                                        "~20%% faster on GPU)")
    vram_budget: str = opt("auto", "GPU memory this run may use, in GiB (PyTorch's reserved "
                                   "memory; leave ~1 GiB of the card for the CUDA context): the "
                                   "run picks the fastest settings that fit (DiT blocks streamed "
                                   "from host memory, the VAE in exact tiles; the same outputs) "
                                   "and is held to it. auto: the GPU's free memory at the start",
                           type=str)
    low_memory: bool = opt(False, "the smallest budget of the README's table: --vram_budget "
                                  f"{LOW_MEMORY_BUDGET:g} (an 8 GB card)")
    fp8: bool = opt(False, "FP8 matmuls for the DiTs' linear layers (GPUs with FP8 tensor cores, "
                           "e.g. H100/H200/RTX 40xx; row-wise scales, attention stays bf16): "
                           "half the DiT weight memory; measured no faster than bf16 at 720p, "
                           "and further from the bf16 outputs than bf16 is from float32 "
                           "(docs/method.md, \"FP8\")")
    profile: Optional[str] = opt(None, "write where the run's time goes to this JSON file: per "
                                       "window, the GPU's busy time and the main thread's "
                                       "phases (the run is a little slower while profiled)")

    def budget_gib(self) -> Optional[float]:
        """The budget in GiB: None for auto (decided from the free memory at the start)."""
        if self.low_memory and self.vram_budget == "auto":
            return LOW_MEMORY_BUDGET
        if self.vram_budget == "auto":
            return None
        return float(self.vram_budget)

    def validate(self) -> None:
        if self.vram_budget == "auto":
            return
        try:
            ok = float(self.vram_budget) > 0
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(f"--vram_budget must be a positive number of GiB or auto, got "
                             f"{self.vram_budget!r}")


def name_list(text: str) -> list[str]:
    """'base, final' -> ['base', 'final'] (blank entries dropped)."""
    return [t.strip() for t in str(text).split(",") if t.strip()]


@dataclass
class FolderOptions:
    """Step 1's input and output folders."""
    input_dir: str = opt("videos_for_test/input", "folder of videos (any format ffmpeg reads) "
                                                  "and/or folders of png/jpg frames")
    output_dir: str = opt("videos_for_test/output_step_1",
                          "gets one sub-folder per output branch and run_config.json")


@dataclass
class Step1Options:
    """What step 1 writes and how it windows (docs/method.md, "Outputs", "Latent windows")."""
    outputs: Optional[list] = opt(None, "comma list of branches to write: base, base+draft_1, "
                                        "..., final (default: base and every base+draft_k)",
                                  type=name_list)
    final: bool = opt(False, "also write final/ = the frequency-domain update of base and the "
                             "last draft branch, in the same pass (same fusion options and tiles "
                             "as inference_step_2.py)")
    upscale: float = opt(1.0, "bicubic resize factor applied to each input before processing; "
                              "the model restores at the size it is given (published inputs are "
                              "already upscaled 1280x720 clips)")
    no_audio: bool = opt(False, "do not copy the input's audio")
    window_space: str = opt("pixel", "pixel: the published method, every window x tile is "
                                     "encoded and decoded on its own and blended in pixels. "
                                     "latent (opt-in, not the published method): encode each "
                                     "clip once, run the DiT on latent windows blended on "
                                     "latents, decode each branch once (docs/method.md, "
                                     "'Latent windows')", choices=WINDOW_SPACES)

    def validate(self) -> None:
        if self.upscale <= 0:
            raise ValueError("--upscale must be positive")
        if self.window_space not in WINDOW_SPACES:
            raise ValueError(f"--window_space must be one of {WINDOW_SPACES}, got "
                             f"{self.window_space!r}")

    def resolve_outputs(self, num_draft_steps: int) -> list[str]:
        """The outputs to write, in branch order: ``outputs`` (default: base and every
        base+draft_k), plus ``final`` with ``--final``."""
        names = branch_names(num_draft_steps)
        allowed = names + [FINAL]
        wanted = list(self.outputs or names) + ([FINAL] if self.final else [])
        bad = [o for o in wanted if o not in allowed]
        if bad:
            raise ValueError(f"--outputs: unknown branch(es) {bad}; choose from {allowed}")
        if FINAL in wanted and num_draft_steps == 0:
            raise ValueError("'final' needs at least one draft step (--timestep_draft_list is "
                             "empty)")
        return [o for o in allowed if o in wanted]


@dataclass
class Step1Config:
    """Everything step 1 runs with: built once (from the command line, or in code) and passed
    down unchanged; ``run_config.json`` holds it as data (``dataclasses.asdict``)."""
    folders: FolderOptions = field(default_factory=FolderOptions)
    step1: Step1Options = field(default_factory=Step1Options)
    output: OutputOptions = field(default_factory=OutputOptions)
    models: PSSRModelOptions = field(default_factory=PSSRModelOptions)
    sampling: SamplingOptions = field(default_factory=SamplingOptions)
    windows: WindowOptions = field(default_factory=WindowOptions)
    fusion: FusionOptions = field(default_factory=FusionOptions)
    processes: SplitOptions = field(default_factory=SplitOptions)
    speed: SpeedOptions = field(default_factory=SpeedOptions)

    def validate(self) -> None:
        """Every check that needs neither files nor models (ValueError naming the option)."""
        for part in (self.sampling, self.windows, self.fusion, self.output, self.step1,
                     self.speed):
            part.validate()
        self.step1.resolve_outputs(len(self.sampling.timestep_draft_list))


def parse_fps(text) -> float:
    """'25', '29.97' or '30000/1001' -> a positive float (ValueError otherwise)."""
    try:
        val = float(Fraction(str(text).strip()))
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"--fps must be a number or a ratio like 30000/1001, got {text!r}") from None
    if val <= 0:
        raise ValueError(f"--fps must be positive, got {text!r}")
    return val


def path_or_none(value):
    """An optional path as the published scripts spell it: '' (or blanks) means none."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return value


@dataclass
class LogOptions:
    log_level: str = opt("info", "how much to log", choices=("debug", "info", "warning", "error"))
    no_progress: bool = opt(False, "no progress bars (they are also off when standard error is "
                                   "not a terminal)")


def to_dict(*objs) -> dict:
    """Merged ``asdict`` of option objects (for run_config.json)."""
    out: dict = {}
    for o in objs:
        out[type(o).__name__] = dataclasses.asdict(o)
    return out
