"""Every option of the trainers, with its default, help and number checks (docs/method.md §9),
and one config per trainer (:class:`BaseTrainConfig`, :class:`DraftTrainConfig`) that the
command line builds and the trainer takes unchanged. Names and defaults follow the published
training scripts (``train_base.sh``) where they exist.

The draft trainer's parts are the shared ones (:class:`ModelOptions`, :class:`LossOptions`,
:class:`OptimOptions`); the base trainer's add its LoRA, regulariser and discriminator options
(:class:`BaseModelOptions`, :class:`BaseLossOptions`, :class:`BaseOptimOptions`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar, Optional

from Wan_SR.core.options import (DEFAULT_NEGATIVE_PROMPT, ModelFileOptions, opt,
                                 validate_timesteps)

REPORTERS = ("tensorboard", "wandb", "swanlab", "none")
LORA_TARGETS = ("q", "k", "v", "o", "ffn.0", "ffn.2")


@dataclass
class DataOptions:
    dataset_base_path: str = opt("", "folder holding the training videos (paths in the metadata "
                                     "are relative to it)")
    dataset_metadata_path: Optional[str] = opt(None, "CSV, JSON or JSONL with columns video, "
                                                     "prompt and optionally LQ_video (default: "
                                                     "every video of --dataset_base_path with its "
                                                     "same-name .txt prompt)")
    data_file_keys: str = opt("video,LQ_video", "metadata columns read as media: video, and "
                                                "LQ_video for paired real LQ clips")
    dataset_repeat: int = opt(10, "passes over the metadata per epoch")
    num_frames: int = opt(33, "frames per training clip (4n+1)")
    height: Optional[int] = opt(720, "clip height (multiple of 16); 0 with --width 0: dynamic size "
                                     "under --max_pixels")
    width: Optional[int] = opt(1280, "clip width (multiple of 16)")
    max_pixels: int = opt(921600, "pixel budget of the dynamic size (with --height 0 --width 0)")
    deg_file_path: str = opt("config/degradation_pssr.yml", "degradation YAML that makes the LQ "
                                                            "clips (rows without LQ_video)")
    dataloader_num_workers: int = opt(2, "DataLoader worker processes per training process")

    def file_keys(self) -> list[str]:
        return [k.strip() for k in self.data_file_keys.split(",") if k.strip()]

    def validate(self) -> None:
        from Wan_SR.data.dataset import valid_num_frames  # imports torch: not for --help

        if not self.dataset_base_path:
            raise ValueError("--dataset_base_path is required")
        if not valid_num_frames(self.num_frames):
            raise ValueError(f"--num_frames must be 4n+1 (e.g. 33), got {self.num_frames}")
        if self.dataloader_num_workers < 0:
            raise ValueError("--dataloader_num_workers must be >= 0")


@dataclass
class ModelOptions(ModelFileOptions):
    """The model files of both trainers."""
    DAPE_path: Optional[str] = opt(None, "DAPE weights for the tagger (the release trains with "
                                         "RAM alone; inference uses DAPE)")
    model_paths: Optional[str] = opt(None, "the release's alternative to --wan_model_dir: a JSON "
                                           "list of the Wan2.1 files, e.g. '[\"a/dit.safetensors\", "
                                           "\"a/vae.pth\"]' (any names: each is recognised by its "
                                           "keys; files it leaves out come from --wan_model_dir)")
    model_id_with_origin_paths: Optional[str] = opt(
        None, "the release's 'model id:file pattern' list, e.g. Wan-AI/Wan2.1-T2V-1.3B:"
              "diffusion_pytorch_model*.safetensors: the files are taken from ./models/<model "
              "id>/, where DiffSynth downloads them (nothing is downloaded here)")
    tag_source: str = opt("hq", "the frame that is tagged: hq (the release) or lq (the degraded "
                                "clip, what inference sees)", choices=("hq", "lq"))
    low_memory: bool = opt(False, "with tags: keep the tagger and the umT5 encoder on the CPU "
                                  "between uses (they visit the GPU per sample)")

    def wan_files(self):
        """The Wan2.1 files these options name (:func:`Wan_SR.models.wan.resolve_wan_files`)."""
        from Wan_SR.models.wan import (parse_model_paths,  # imports torch: not for --help
                                       resolve_model_ids, wan_files_of)

        return wan_files_of(self, parse_model_paths(self.model_paths)
                            + resolve_model_ids(self.model_id_with_origin_paths))

    def validate(self) -> None:
        if self.num_heads is not None and self.num_heads < 1:
            raise ValueError("--num_heads must be >= 1")


@dataclass
class BaseModelOptions(ModelOptions):
    """The base trainer's models: the files, the LoRA and the warm starts."""
    lora_rank: int = opt(32, "LoRA rank (alpha = rank)")
    lora_target_modules: str = opt("q,k,v,o,ffn.0,ffn.2", "layers of every block that get LoRA")
    load_model_base_from: Optional[str] = opt(None, "warm start: a base checkpoint "
                                                    "(latest_base.safetensors layout)")
    load_model_reg_from: Optional[str] = opt(None, "warm start: a regulariser checkpoint "
                                                   "(latest_reg.safetensors layout)")
    load_model_discriminator_from: Optional[str] = opt(
        None, "warm start: a discriminator checkpoint (latest_discriminator.safetensors layout, "
              "ours or the release's; its widths are read from the file)")

    def lora_targets(self) -> list[str]:
        return [t.strip() for t in self.lora_target_modules.split(",") if t.strip()]

    def validate(self) -> None:
        super().validate()
        if self.lora_rank < 1:
            raise ValueError("--lora_rank must be >= 1")
        unknown = [t for t in self.lora_targets() if t not in LORA_TARGETS]
        if unknown:
            raise ValueError(f"--lora_target_modules: unknown layer(s) {unknown}; choose from "
                             f"{','.join(LORA_TARGETS)}")


@dataclass
class LossOptions:
    """The losses of both trainers: latent l2 and the pixel losses on a decoded crop."""
    NO_LOSS: ClassVar[str] = "no generator loss is on: set --alpha_l2 or the pixel losses"

    timestep_base: float = opt(699.0, "timestep of the base step")
    alpha_l2: float = opt(1.0, "weight of mse(x0_base, z_H) on latents")
    train_video_pixel: bool = opt(True, "pixel losses on a decoded latent crop (True/False)")
    alpha_pixel_l2: float = opt(1.0, "weight of the pixel mse on the decoded crop")
    alpha_pixel_lpips: float = opt(2.0, "weight of LPIPS(VGG) on the decoded crop")
    pixel_crop: int = opt(20, "side of the latent crop decoded for the pixel losses (x8 pixels)")
    lpips_weights: Optional[str] = opt("dependent_models/lpips",
                                       "local LPIPS(VGG) weights, needed when "
                                       "--alpha_pixel_lpips > 0 (never downloaded): a folder "
                                       "holding torchvision's vgg16-397923af.pth and the LPIPS "
                                       "v0.1 vgg.pth (or pyiqa's LPIPS_v0.1_vgg-a78928a0.pth); "
                                       "README, 'Training'")

    def pixel(self) -> bool:
        """The pixel losses are on."""
        return self.train_video_pixel and (self.alpha_pixel_l2 > 0 or self.alpha_pixel_lpips > 0)

    def lpips(self) -> bool:
        """The LPIPS network is needed."""
        return self.pixel() and self.alpha_pixel_lpips > 0

    def any_loss(self) -> bool:
        return self.alpha_l2 > 0 or self.pixel()

    def validate(self) -> None:
        if not 0 < self.timestep_base <= 1000:
            raise ValueError("--timestep_base must lie in (0, 1000]")
        negative = [f.name for f in dataclasses.fields(self)
                    if f.name.startswith("alpha_") and getattr(self, f.name) < 0]
        if negative:
            raise ValueError(f"loss weights must not be negative: "
                             f"{', '.join('--' + k for k in negative)}")
        if not self.any_loss():
            raise ValueError(self.NO_LOSS)
        if self.pixel_crop < 1:
            raise ValueError("--pixel_crop must be >= 1")


@dataclass
class BaseLossOptions(LossOptions):
    """The base trainer's losses: those of both trainers, the regulariser and the adversarial
    terms."""
    NO_LOSS: ClassVar[str] = ("no generator loss is on: set --alpha_l2, the pixel losses or "
                              "--alpha_reg")

    alpha_reg: float = opt(1.0, "weight of the regulariser (score distillation against the "
                                "frozen DiT)")
    cfg_scale: float = opt(5.0, "classifier-free guidance of the frozen DiT in the regulariser")
    negative_prompt: str = opt(DEFAULT_NEGATIVE_PROMPT, "negative prompt of that guidance")
    start_adv_step: int = opt(500, "adversarial terms join the base loss after this step")
    alpha_adv: float = opt(0.0, "weight of the generator's adversarial loss -D(x0_base)")
    alpha_perc: float = opt(0.0, "weight of the discriminator feature-matching L1 loss")

    def any_loss(self) -> bool:
        return super().any_loss() or self.alpha_reg > 0

    def discriminator(self) -> bool:
        """A discriminator is trained (an adversarial term is on)."""
        return self.alpha_adv > 0 or self.alpha_perc > 0


CHECKPOINTING_WORDS = {"auto": "auto", "full": "full", "true": "full", "none": "none",
                       "false": "none"}


def checkpointing_setting(value) -> "str | int":
    """``--gradient_checkpointing`` as ``"auto"``, ``"full"``, ``"none"`` or a number of blocks
    (True/False: full/none)."""
    if isinstance(value, bool):
        return "full" if value else "none"
    text = str(value).strip().lower()
    if text in CHECKPOINTING_WORDS:
        return CHECKPOINTING_WORDS[text]
    if text.isdigit():
        return int(text)
    raise ValueError(f"--gradient_checkpointing {value!r}: expected auto, full, none, True, False "
                     "or a number of blocks")


AUTO_WORDS = {"auto": "auto", "true": True, "1": True, "yes": True, "false": False,
              "0": False, "no": False}


def auto_setting(value, option: str = "--compile") -> "str | bool":
    """An ``auto|True|False`` option (``--compile``, ``--cuda_graphs``) as ``"auto"``, True or
    False."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text not in AUTO_WORDS:
        raise ValueError(f"{option} {value!r}: expected auto, True or False")
    return AUTO_WORDS[text]


@dataclass
class OptimOptions:
    learning_rate: float = opt(5e-5, "AdamW learning rate of the base and the regulariser")
    lr_warmup_steps: int = opt(0, "linear warm-up steps of the learning rate (then constant)")
    max_grad_norm: float = opt(1.0, "gradient clipping (max L2 norm; 0 = off)")
    num_epochs: int = opt(20, "passes over the dataset")
    max_train_steps: Optional[int] = opt(None, "stop after this many steps (default: "
                                               "--num_epochs)")
    seed: int = opt(0, "seed of the data order, the clip starts, the degradation and every draw")
    mixed_precision: str = opt("bf16", "frozen weights and activations in this precision; "
                                       "trainable weights and optimiser states stay fp32",
                               choices=("bf16", "fp16", "no"))
    gradient_checkpointing: str = opt(
        "auto", "DiT blocks recomputed in the backward, per trained DiT: auto (on a GPU, as few "
                "as fit --memory_target, measured in the first step; on the CPU all), full or "
                "True (all), none or False (none), or a number N (the first N blocks)")
    memory_target: float = opt(0.0, "GiB of GPU memory --gradient_checkpointing auto may fill "
                                    "(0: the GPU's memory less 4 GiB)")
    compile: str = opt("auto", "torch.compile the DiT blocks, forward and backward (compiled in "
                               "the first step, ~17 s, cached on disk for later runs): auto (on "
                               "GPUs of compute capability 8.0 or newer; not on the CPU), True "
                               "or False", const="True")
    cuda_graphs: str = opt("auto", "replay the pixel losses (the crop's VAE decode and LPIPS, "
                                   "forward and backward) from CUDA graphs, captured once per "
                                   "crop shape: auto (on GPUs), True or False", const="True")
    gradient_accumulation_steps: int = opt(1, "samples per process whose gradients are summed "
                                              "into one update (accelerate's accumulation); "
                                              "steps, --save_steps and --max_train_steps count "
                                              "updates")
    collective_timeout: float = opt(600.0, "seconds one sample of a step may take before the run "
                                           "stops with an error naming the step and the process "
                                           "(instead of every process hanging when one fails)")

    def validate(self) -> None:
        if self.learning_rate <= 0:
            raise ValueError("--learning_rate must be positive")
        if self.num_epochs < 1 or (self.max_train_steps is not None and self.max_train_steps < 1):
            raise ValueError("--num_epochs and --max_train_steps must be >= 1")
        if self.gradient_accumulation_steps < 1:
            raise ValueError("--gradient_accumulation_steps must be >= 1")
        if self.collective_timeout <= 0:
            raise ValueError("--collective_timeout must be positive")
        if self.max_grad_norm < 0 or self.lr_warmup_steps < 0:
            raise ValueError("--max_grad_norm and --lr_warmup_steps must be >= 0")
        checkpointing_setting(self.gradient_checkpointing)
        auto_setting(self.compile, "--compile")
        auto_setting(self.cuda_graphs, "--cuda_graphs")
        if self.memory_target < 0:
            raise ValueError("--memory_target must be >= 0")


@dataclass
class BaseOptimOptions(OptimOptions):
    learning_rate_disc: float = opt(1e-4, "AdamW learning rate of the discriminator")

    def validate(self) -> None:
        super().validate()
        if self.learning_rate_disc <= 0:
            raise ValueError("--learning_rate_disc must be positive")


@dataclass
class CheckpointOptions:
    """Where and how often a run saves and logs."""
    output_path: str = opt("./experiments/train_base", "where checkpoints and logs go")
    save_steps: int = opt(200, "save checkpoints every this many steps (and at the end)")
    save_latest: bool = opt(True, "name the files latest_*.safetensors (True) or "
                                  "step-XXXXXXX_*.safetensors (False)")
    resume_from_checkpoint: Optional[str] = opt(None, "continue exactly from a saved state: "
                                                      "'latest' or a state folder")
    report_to: str = opt("tensorboard", "tracker: tensorboard, wandb, swanlab or none")
    profile_step: int = opt(0, "time each phase of this step (each model's forward, backward "
                               "and optimiser, the losses, the encoding) and write "
                               "profile_step_<N>.json in --output_path; on a GPU the step "
                               "after is traced too: gpu_idle_step_<N+1>.json says when the "
                               "GPU waited, in which phase (0: off)")
    project_name: str = opt("PS-SR", "tracker project name")

    def tracker(self) -> Optional[str]:
        """The tracker, None for none."""
        return None if self.report_to in (None, "", "none") else self.report_to

    def validate(self) -> None:
        if self.save_steps < 1:
            raise ValueError("--save_steps must be >= 1")
        if self.report_to not in REPORTERS:
            raise ValueError(f"--report_to must be one of {', '.join(REPORTERS)}")


@dataclass
class DraftOptions:
    load_model_base_from: str = opt("", "the trained base (latest_base.safetensors of "
                                        "train_base.py): merged into the frozen base and the draft")
    k_select: float = opt(1.5, "draft block rule: block i is kept when i %% k == k - 1 (1.5: "
                               "every third block, what inference and the released draft use)")
    timestep_draft_list: list = opt([599.0, 499.0, 399.0], "draft timesteps, strictly "
                                                          "decreasing and below --timestep_base")
    draft_condition: str = opt("zeros", "what the draft sees as the condition half of its input "
                                        "while training: zeros (the release) or lq (z_L, what "
                                        "inference feeds)", choices=("zeros", "lq"))
    load_model_draft_from: Optional[str] = opt(None, "warm start: a draft checkpoint "
                                                     "(latest_draft.safetensors layout; its "
                                                     "k_select must match)")

    def validate(self) -> None:
        if not self.load_model_base_from:
            raise ValueError("--load_model_base_from (the trained latest_base.safetensors) is "
                             "required")
        if self.k_select < 1:
            raise ValueError("--k_select must be >= 1")
        if not self.timestep_draft_list:
            raise ValueError("--timestep_draft_list needs at least one timestep")


_WARM = "an earlier training run (--output_path)"


class TrainConfig:
    """What both trainers' configs do with their parts (dataclass fields, in ``--help`` order)."""

    def parts(self) -> list:
        return [getattr(self, f.name) for f in dataclasses.fields(self)]

    def validate(self) -> None:
        """Every part's number checks (ValueError naming the option)."""
        for part in self.parts():
            part.validate()


@dataclass
class BaseTrainConfig(TrainConfig):
    """Every option of ``train_base.py``."""
    data: DataOptions = field(default_factory=DataOptions)
    model: BaseModelOptions = field(default_factory=BaseModelOptions)
    loss: BaseLossOptions = field(default_factory=BaseLossOptions)
    optim: BaseOptimOptions = field(default_factory=BaseOptimOptions)
    out: CheckpointOptions = field(default_factory=CheckpointOptions)

    def prompts(self) -> list[str]:
        """The prompts the run encodes besides the data's."""
        return [self.loss.negative_prompt]

    def warm_starts(self) -> list[tuple]:
        """``(option, path, what, where it comes from)`` of the checkpoints the run reads."""
        m = self.model
        return [("load_model_base_from", m.load_model_base_from, "base warm start", _WARM),
                ("load_model_reg_from", m.load_model_reg_from, "regulariser warm start", _WARM),
                ("load_model_discriminator_from", m.load_model_discriminator_from,
                 "discriminator warm start", _WARM)]


@dataclass
class DraftTrainConfig(TrainConfig):
    """Every option of ``train_draft.py``."""
    data: DataOptions = field(default_factory=DataOptions)
    model: ModelOptions = field(default_factory=ModelOptions)
    draft: DraftOptions = field(default_factory=DraftOptions)
    loss: LossOptions = field(default_factory=LossOptions)
    optim: OptimOptions = field(default_factory=OptimOptions)
    out: CheckpointOptions = field(default_factory=lambda: CheckpointOptions(
        output_path="./experiments/train_draft"))

    def validate(self) -> None:
        super().validate()
        validate_timesteps(self.loss.timestep_base, self.draft.timestep_draft_list)

    def prompts(self) -> list[str]:
        return []

    def warm_starts(self) -> list[tuple]:
        dr = self.draft
        return [("load_model_base_from", dr.load_model_base_from,
                 "trained base (--load_model_base_from)", "train_base.py (its --output_path)"),
                ("load_model_draft_from", dr.load_model_draft_from, "draft warm start", _WARM)]
