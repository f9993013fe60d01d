"""Every option of the trainers, with its default and help (docs/method.md §9). Names and
defaults follow the published training scripts (``train_base.sh``) where they exist."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from Wan_SR.core.options import DEFAULT_NEGATIVE_PROMPT, ModelFileOptions, opt


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


@dataclass
class ModelOptions(ModelFileOptions):
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
    lora_rank: int = opt(32, "LoRA rank (alpha = rank)")
    lora_target_modules: str = opt("q,k,v,o,ffn.0,ffn.2", "layers of every block that get LoRA")
    load_model_base_from: Optional[str] = opt(None, "warm start: a base checkpoint "
                                                    "(latest_base.safetensors layout)")
    load_model_reg_from: Optional[str] = opt(None, "warm start: a regulariser checkpoint "
                                                   "(latest_reg.safetensors layout)")

    def wan_files(self):
        """The Wan2.1 files these options name (:func:`Wan_SR.models.wan.resolve_wan_files`)."""
        from Wan_SR.models.wan import parse_model_paths, resolve_model_ids, wan_files_of

        return wan_files_of(self, parse_model_paths(self.model_paths)
                            + resolve_model_ids(self.model_id_with_origin_paths))


@dataclass
class LossOptions:
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
    alpha_reg: float = opt(1.0, "weight of the regulariser (score distillation against the "
                                "frozen DiT)")
    cfg_scale: float = opt(5.0, "classifier-free guidance of the frozen DiT in the regulariser")
    negative_prompt: str = opt(DEFAULT_NEGATIVE_PROMPT, "negative prompt of that guidance")
    start_adv_step: int = opt(500, "adversarial terms join the base loss after this step")
    alpha_adv: float = opt(0.0, "weight of the generator's adversarial loss -D(x0_base)")
    alpha_perc: float = opt(0.0, "weight of the discriminator feature-matching L1 loss")


@dataclass
class OptimOptions:
    learning_rate: float = opt(5e-5, "AdamW learning rate of the base and the regulariser")
    learning_rate_disc: float = opt(1e-4, "AdamW learning rate of the discriminator")
    lr_warmup_steps: int = opt(0, "linear warm-up steps of the learning rate (then constant)")
    max_grad_norm: float = opt(1.0, "gradient clipping (max L2 norm; 0 = off)")
    num_epochs: int = opt(20, "passes over the dataset")
    max_train_steps: Optional[int] = opt(None, "stop after this many steps (default: "
                                               "--num_epochs)")
    seed: int = opt(0, "seed of the data order, the clip starts, the degradation and every draw")
    mixed_precision: str = opt("bf16", "frozen weights and activations in this precision; "
                                       "trainable weights and optimiser states stay fp32",
                               choices=("bf16", "fp16", "no"))
    gradient_checkpointing: bool = opt(True, "recompute DiT blocks in the backward (True/False)")
    gradient_accumulation_steps: int = opt(1, "samples per process whose gradients are summed "
                                              "into one update (accelerate's accumulation); "
                                              "steps, --save_steps and --max_train_steps count "
                                              "updates")
    collective_timeout: float = opt(600.0, "seconds one sample of a step may take before the run "
                                           "stops with an error naming the step and the process "
                                           "(instead of every process hanging when one fails)")


@dataclass
class OutputOptions:
    output_path: str = opt("./experiments/train_base", "where checkpoints and logs go")
    save_steps: int = opt(200, "save checkpoints every this many steps (and at the end)")
    save_latest: bool = opt(True, "name the files latest_*.safetensors (True) or "
                                  "step-XXXXXXX_*.safetensors (False)")
    resume_from_checkpoint: Optional[str] = opt(None, "continue exactly from a saved state: "
                                                      "'latest' or a state folder")
    report_to: str = opt("tensorboard", "tracker: tensorboard, wandb, swanlab or none")
    project_name: str = opt("PS-SR", "tracker project name")


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
