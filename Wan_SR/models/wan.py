"""Loading the official Wan2.1-T2V-1.3B files into diffsynth 1.1.8 classes.

Sizes are read from the state dicts (no hash-based detection), so the same code loads the real
files and the tiny test files written by :mod:`Wan_SR.testing.checkpoints`.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch
from diffsynth.models.utils import init_weights_on_device
from diffsynth.models.wan_video_dit import WanModel
from diffsynth.models.wan_video_text_encoder import WanTextEncoder
from diffsynth.models.wan_video_vae import VideoVAE_, WanVideoVAE
from safetensors import safe_open

from . import vae_fast

WAN_DIT_FILE = "diffusion_pytorch_model.safetensors"
WAN_VAE_FILE = "Wan2.1_VAE.pth"
WAN_T5_FILE = "models_t5_umt5-xxl-enc-bf16.pth"
WAN_TOKENIZER_DIR = os.path.join("google", "umt5-xxl")
WAN_SOURCE = "https://huggingface.co/Wan-AI/Wan2.1-T2V-1.3B"
PSSR_SOURCE = ("the PS-SR pretrained checkpoints, "
               "https://drive.google.com/drive/folders/1TUO80tp3I4N93Q_rOsn_HopMeXpHSpCO")
RAM_SOURCE = ("https://huggingface.co/spaces/xinyu1205/recognize-anything/blob/main/"
              "ram_swin_large_14m.pth")
DAPE_SOURCE = "https://drive.google.com/file/d/1KIV6VewwO2eDC9g4Gcvgm-a0LDI7Lmwm/view"

# Known DiT widths -> attention heads (head_dim 128 in every released Wan2.1 model).
KNOWN_HEADS = {1536: 12, 5120: 40}


class MissingWeightsError(FileNotFoundError):
    """A weight file is missing; the message names it and where to get it (one line)."""


def require_file(path: str | os.PathLike, what: str, source: str = WAN_SOURCE) -> Path:
    p = Path(path)
    if not p.exists():
        raise MissingWeightsError(f"missing {what}: {p} (get it from {source})")
    return p


def missing_files(entries) -> list[str]:
    """One line per missing ``(path, what, source)`` entry."""
    return [f"missing {what}: {p} (get it from {src})" for p, what, src in entries
            if p is not None and not Path(p).exists()]


def require_files(wan_files: "WanFiles", base_path=None, draft_path=None,
                  text_encoder: bool = False) -> None:
    """Raise one :class:`MissingWeightsError` listing EVERY missing file of an inference run
    (the text encoder and its tokenizer only with ``text_encoder``: a cached prompt needs neither)."""
    entries = [(wan_files.dit, "Wan2.1 DiT weights", WAN_SOURCE),
               (wan_files.vae, "Wan2.1 VAE weights", WAN_SOURCE),
               (base_path, "PS-SR base weights", PSSR_SOURCE),
               (draft_path, "PS-SR draft weights", PSSR_SOURCE)]
    if text_encoder:
        entries += [(wan_files.t5, "umT5 text encoder weights", WAN_SOURCE),
                    (wan_files.tokenizer, "umT5 tokenizer folder", WAN_SOURCE)]
    lines = missing_files(entries)
    if len(lines) == 1:
        raise MissingWeightsError(lines[0])
    if lines:
        raise MissingWeightsError(f"{len(lines)} weight files are missing:\n  " + "\n  ".join(lines))


@dataclass
class WanFiles:
    dit: Path
    vae: Path
    t5: Path
    tokenizer: Path


def resolve_wan_files(wan_model_dir: Optional[str] = None, dit_path: Optional[str] = None,
                      vae_path: Optional[str] = None, umt5_path: Optional[str] = None,
                      tokenizer_path: Optional[str] = None,
                      model_paths: Sequence[str | os.PathLike] = ()) -> WanFiles:
    """Paths of the Wan2.1 files: explicit paths win, then the files of ``model_paths`` (any
    names; each classified by its keys, :func:`classify_wan_file`), else
    ``wan_model_dir/<official name>``. The tokenizer: ``tokenizer_path``, else the
    ``google/umt5-xxl`` folder beside a text encoder found in ``model_paths``, else in
    ``wan_model_dir``."""
    d = Path(wan_model_dir) if wan_model_dir else Path("dependent_models/Wan2.1-T2V-1.3B")
    found: dict[str, Path] = {}
    for p in map(Path, model_paths):
        kind = classify_wan_file(p)
        if kind in found and found[kind] != p:
            raise ValueError(f"--model_paths: {found[kind]} and {p} are both {kind} files (a "
                             "sharded model is not supported)")
        found[kind] = p
    tok = found["t5"].parent / WAN_TOKENIZER_DIR if "t5" in found else d / WAN_TOKENIZER_DIR
    return WanFiles(
        dit=Path(dit_path) if dit_path else found.get("dit", d / WAN_DIT_FILE),
        vae=Path(vae_path) if vae_path else found.get("vae", d / WAN_VAE_FILE),
        t5=Path(umt5_path) if umt5_path else found.get("t5", d / WAN_T5_FILE),
        tokenizer=Path(tokenizer_path) if tokenizer_path else tok,
    )


def wan_files_of(o, model_paths: Sequence[str | os.PathLike] = ()) -> WanFiles:
    """:func:`resolve_wan_files` for a :class:`Wan_SR.core.options.ModelFileOptions`."""
    return resolve_wan_files(o.wan_model_dir, o.dit_path, o.vae_path, o.umt5_path,
                             o.tokenizer_path, model_paths=model_paths)


# the key that tells each Wan2.1 file apart (sizes are read later, from the state dicts)
_WAN_KINDS = (("dit", "blocks.0.self_attn.q.weight"), ("vae", "encoder.conv1.weight"),
              ("t5", "token_embedding.weight"))


def classify_wan_file(path: str | os.PathLike) -> str:
    """``dit``, ``vae`` or ``t5``: what a Wan2.1 weight file holds, read off its keys (a
    safetensors header, or a ``.pth`` memory-mapped), whatever its name. Raises
    :class:`MissingWeightsError` for a missing file and ``ValueError`` for another file."""
    p = require_file(path, "model file (--model_paths)")
    if p.suffix == ".safetensors":
        with safe_open(str(p), framework="pt") as f:
            keys = set(f.keys())
    else:
        try:
            sd = torch.load(str(p), map_location="cpu", weights_only=True, mmap=True)
        except Exception as e:  # noqa: BLE001 - any unreadable file gets the same message
            raise ValueError(f"{p}: not a readable weight file ({e})") from None
        keys = set((sd.get("model_state", sd) if isinstance(sd, dict) else {}).keys())
    for kind, key in _WAN_KINDS:
        if key in keys:
            return kind
    raise ValueError(f"{p}: not a Wan2.1 DiT, VAE or umT5 text encoder file (none of the keys "
                     f"{', '.join(k for _, k in _WAN_KINDS)})")


def parse_model_paths(text: Optional[str]) -> list[Path]:
    """``--model_paths`` as the release reads it: a JSON list of file paths."""
    if not text:
        return []
    try:
        val = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"--model_paths must be a JSON list of paths, e.g. '[\"a.safetensors\"]'"
                         f" ({e.msg})") from None
    if not isinstance(val, list) or not all(isinstance(v, str) for v in val):
        raise ValueError("--model_paths must be a JSON list of file paths (the Wan2.1-T2V-1.3B "
                         "files are single files, not lists of shards)")
    return [Path(v) for v in val]


def resolve_model_ids(text: Optional[str], root: str | os.PathLike = "./models") -> list[Path]:
    """``--model_id_with_origin_paths`` ("Wan-AI/Wan2.1-T2V-1.3B:diffusion_pytorch_model*
    .safetensors,...") as the files DiffSynth would have downloaded into ``root/<model id>/``.
    Nothing is downloaded: a pattern that matches no local file raises
    :class:`MissingWeightsError` naming the folder and the source."""
    out: list[Path] = []
    for item in (text or "").split(","):
        if not item.strip():
            continue
        if ":" not in item:
            raise ValueError(f"--model_id_with_origin_paths: {item!r} is not <model id>:<file "
                             "pattern>")
        model_id, pattern = (s.strip() for s in item.split(":", 1))
        folder = Path(root) / model_id
        hits = sorted(folder.glob(pattern))
        if not hits:
            raise MissingWeightsError(
                f"missing {pattern} in {folder} (--model_id_with_origin_paths; nothing is "
                f"downloaded here: get it from https://huggingface.co/{model_id} into that "
                "folder, or give --wan_model_dir)")
        out += hits
    return out


def load_safetensors(path: str | os.PathLike, device="cpu") -> tuple[dict, dict]:
    out = {}
    with safe_open(str(path), framework="pt", device=str(device)) as f:
        meta = f.metadata() or {}
        for k in f.keys():
            out[k] = f.get_tensor(k)
    return out, meta


def _num_indexed(sd: dict, prefix: str) -> int:
    idx = {int(k[len(prefix):].split(".")[0]) for k in sd if k.startswith(prefix)}
    return max(idx) + 1 if idx else 0


def dit_config_from_state_dict(sd: dict, num_heads: Optional[int] = None,
                               metadata: Optional[dict] = None) -> dict:
    """WanModel constructor arguments read off a state dict in original Wan key names.

    The head count is not stored in the weights: ``num_heads`` if given, else the file's
    ``num_heads`` metadata, else the released models' table, else head_dim 128.
    """
    pe = sd["patch_embedding.weight"]
    dim, in_dim = pe.shape[0], pe.shape[1]
    patch = tuple(int(s) for s in pe.shape[2:])
    if num_heads is None and metadata and "num_heads" in metadata:
        num_heads = int(metadata["num_heads"])
    if num_heads is None:
        num_heads = KNOWN_HEADS.get(dim)
    if num_heads is None:
        if dim % 128:
            raise ValueError(f"cannot derive the DiT's attention head count: width {dim} is not a "
                             "released Wan2.1 width and not a multiple of 128, and the file has no "
                             "'num_heads' metadata; pass --num_heads")
        num_heads = dim // 128
    if num_heads <= 0 or dim % num_heads or (dim // num_heads) % 2:
        raise ValueError(f"{num_heads} attention heads do not fit a DiT of width {dim} (the head "
                         "width must be a whole, even number); pass the right --num_heads")
    return dict(
        dim=dim, in_dim=in_dim, ffn_dim=sd["blocks.0.ffn.0.weight"].shape[0],
        out_dim=sd["head.head.weight"].shape[0] // math.prod(patch),
        text_dim=sd["text_embedding.0.weight"].shape[1],
        freq_dim=sd["time_embedding.0.weight"].shape[1], eps=1e-6, patch_size=patch,
        num_heads=num_heads, num_layers=_num_indexed(sd, "blocks."),
        has_image_input="img_emb.proj.1.weight" in sd,
    )


def build_dit(sd: dict, num_heads: Optional[int] = None, metadata: Optional[dict] = None,
              dtype=torch.float32, device="cpu", strict: bool = True):
    """A diffsynth ``WanModel`` holding ``sd`` (weights assigned, no random init)."""
    cfg = dit_config_from_state_dict(sd, num_heads, metadata)
    with init_weights_on_device():
        model = WanModel(**cfg)
    model.load_state_dict(sd, assign=True, strict=strict)
    model.config = cfg
    return model.to(dtype=dtype, device=device).eval()


def load_dit(path: str | os.PathLike, dtype=torch.float32, device="cpu",
             num_heads: Optional[int] = None):
    """Wan2.1 DiT from ``diffusion_pytorch_model.safetensors`` (original key names)."""
    path = require_file(path, "Wan2.1 DiT weights")
    sd, meta = load_safetensors(path)
    sd = {k: v for k, v in sd.items() if not k.startswith("vace")}
    return build_dit(sd, num_heads=num_heads, metadata=meta, dtype=dtype, device=device)


def widen_patch_embedding(dit, in_channels: int = 32):
    """docs/method.md §2: Conv3d 16->dim becomes in_channels->dim; new input channels start at zero."""
    pe = dit.patch_embedding
    if pe.in_channels == in_channels:
        return dit
    new = torch.nn.Conv3d(in_channels, pe.out_channels, kernel_size=pe.kernel_size,
                          stride=pe.stride, device=pe.weight.device, dtype=pe.weight.dtype)
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, :pe.in_channels] = pe.weight
        new.bias.copy_(pe.bias)
    new.requires_grad_(pe.weight.requires_grad)
    dit.patch_embedding = new
    dit.in_dim = in_channels
    if hasattr(dit, "config"):
        dit.config["in_dim"] = in_channels
    return dit


# ----------------------------------------------------------------------------------- VAE

def vae_config_from_state_dict(sd: dict) -> dict:
    """VideoVAE_ arguments: base width, latent channels and residual blocks per level."""
    dim = sd["encoder.conv1.weight"].shape[0]
    z_dim = sd["conv2.weight"].shape[0]
    n_down = _num_indexed(sd, "encoder.downsamples.")
    levels = 4  # dim_mult [1, 2, 4, 4] in every Wan2.1 VAE
    num_res_blocks = (n_down - (levels - 1)) // levels
    return dict(dim=dim, z_dim=z_dim, num_res_blocks=num_res_blocks)


def load_vae(path: str | os.PathLike, dtype=torch.float32, device="cpu"):
    """Wan2.1 VAE from ``Wan2.1_VAE.pth`` as a diffsynth ``WanVideoVAE``."""
    path = require_file(path, "Wan2.1 VAE weights")
    sd = torch.load(str(path), map_location="cpu", weights_only=True)
    if "model_state" in sd:
        sd = sd["model_state"]
    cfg = vae_config_from_state_dict(sd)
    with init_weights_on_device():
        vae = WanVideoVAE(z_dim=cfg["z_dim"])
        vae.model = VideoVAE_(**cfg)
    vae.model.load_state_dict(sd, assign=True, strict=True)
    vae.config = cfg
    place_latent_scale(vae, device)
    return vae.to(dtype=dtype, device=device).eval().requires_grad_(False)


def place_latent_scale(vae, device) -> None:
    """The VAE's latent mean and 1/std (plain tensors, not buffers: ``vae.to`` leaves them on
    the CPU) on ``device``, so an encode or decode there copies nothing from the host (a copy a
    CUDA graph's capture would not allow)."""
    vae.mean, vae.std = vae.mean.to(device), vae.std.to(device)
    vae.scale = [s.to(device) for s in vae.scale]


def use_fast_vae(vae, x: torch.Tensor, fast: Optional[bool] = None) -> bool:
    """``fast`` None: the fast path (:mod:`Wan_SR.models.vae_fast`) on CUDA, the reference
    (diffsynth's own forward) elsewhere; ``PSSR_VAE=reference`` forces the reference. The fast
    path has no backward: a call that needs gradients (the trainers' pixel losses) always takes
    the reference."""
    if torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad
                                                           for p in vae.parameters())):
        return False
    if fast is None:
        fast = x.is_cuda and os.environ.get("PSSR_VAE", "fast") != "reference"
    if fast:
        fast = vae_fast.supported(vae)
    return bool(fast)


def vae_encode(vae, video: torch.Tensor, fast: Optional[bool] = None) -> torch.Tensor:
    """(B,3,T,H,W) in [-1,1] -> (B,16,(T-1)//4+1,H/8,W/8), on the video's device (no host copy).
    ``fast``: see :func:`use_fast_vae` (same values within bf16 rounding)."""
    video = video.to(next(vae.parameters()).dtype)
    if use_fast_vae(vae, video, fast):
        return vae_fast.encode(vae, video)
    return vae.model.encode(video, vae.scale)


def vae_decode(vae, latents: torch.Tensor, fast: Optional[bool] = None) -> torch.Tensor:
    """Latents -> (B,3,T,H,W) video in [-1,1]. ``fast``: see :func:`use_fast_vae`."""
    latents = latents.to(next(vae.parameters()).dtype)
    if use_fast_vae(vae, latents, fast):
        return vae_fast.decode(vae, latents).clamp_(-1, 1)
    return vae.model.decode(latents, vae.scale).clamp_(-1, 1)


# --------------------------------------------------------------------------- text encoder

def t5_config_from_state_dict(sd: dict) -> dict:
    emb = sd["token_embedding.weight"]
    rel = sd["blocks.0.pos_embedding.embedding.weight"]
    return dict(vocab=emb.shape[0], dim=emb.shape[1], dim_attn=sd["blocks.0.attn.q.weight"].shape[0],
                dim_ffn=sd["blocks.0.ffn.fc1.weight"].shape[0], num_heads=rel.shape[1],
                num_layers=_num_indexed(sd, "blocks."), num_buckets=rel.shape[0], shared_pos=False)


def load_text_encoder(path: str | os.PathLike, dtype=torch.bfloat16, device="cpu"):
    """umT5-xxl encoder from ``models_t5_umt5-xxl-enc-bf16.pth`` as diffsynth ``WanTextEncoder``."""
    path = require_file(path, "umT5 text encoder weights")
    sd = torch.load(str(path), map_location="cpu", weights_only=True)
    cfg = t5_config_from_state_dict(sd)
    with init_weights_on_device():
        enc = WanTextEncoder(**cfg)
    enc.load_state_dict(sd, assign=True, strict=True)
    enc.config = cfg
    return enc.to(dtype=dtype, device=device).eval().requires_grad_(False)


def load_prompter(tokenizer_dir: str | os.PathLike, text_len: int = 512):
    # imported here: diffsynth's prompters import its whole package and transformers (seconds),
    # needed only to encode a prompt not cached yet; the models above load without them
    from diffsynth.prompters import WanPrompter

    tokenizer_dir = require_file(tokenizer_dir, "umT5 tokenizer folder")
    return WanPrompter(tokenizer_path=str(tokenizer_dir), text_len=text_len)
