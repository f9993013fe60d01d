"""RAM (Recognize Anything, Swin-L) image tagger, with the optional DAPE weights of SeeSR.

The published pipeline tags one frame and appends the tags to the prompt (``"<prompt>, <tags>"``).
This module loads the two published files under their own key names:

* ``ram_swin_large_14m.pth`` (recognize-anything): ``{"model": state_dict, ...}``. Used keys:
  ``visual_encoder.*`` (Swin, original Microsoft layout: patch merging stored at the END of stage
  ``i`` as ``layers.i.downsample``), ``image_proj``, ``label_embed``, ``wordvec_proj``,
  ``tagging_head.encoder.layer.N.{crossattention,intermediate,output}.*`` and ``fc``. The caption
  and tag-interaction networks (``tag_encoder.*``, ``text_decoder.*``), deleted BERT parts of the
  tagging head and the recomputable buffers (``relative_position_index``, ``attn_mask``,
  ``position_ids``) are ignored by name; any other key, or a missing one, is an error.
* ``DAPE.pth`` (SeeSR): a flat dict of loralib LoRA pairs ``<module>.lora_A`` / ``.lora_B``
  (rank 8, ``lora_alpha`` 1, so scale 1/8). ``visual_encoder...attn.qkv`` is a ``MergedLinear``
  with LoRA on q and v only (``enable_lora=[True, False, True]``); ``tagging_head...crossattention
  .self.{query,key}`` are plain ``lora.Linear``. They are merged into the RAM weights,
  ``W += B @ A / r``, which is the math of loralib's forward. Pairs under ``tag_encoder.`` /
  ``text_decoder.`` (never trained by DAPE) are ignored.

Every size is read off the state dict (widths, depths, heads, windows, tag count), so the same code
loads the real files and the tiny ones written by :mod:`Wan_SR.testing.ram`.
The tagging head's attention head count is not stored in the file: the published value 4 is used
(:data:`TAG_HEAD_HEADS`); the tiny layout keeps widths divisible by it.

The visual encoder is timm's ``SwinTransformer`` (patch merging at the START of stage ``i + 1``,
same 2x2 concatenation order as the original, so only the stage index moves); tests prove the
conversion against an independent implementation of the published Swin formulas.

Tag rule (RAM ``generate_tag``): probability ``sigmoid(fc(head(...)))`` per tag; a tag is on when it
is strictly above its class threshold: 0.68 for every class, then replaced in order by the values
of ``ram_tag_list_threshold.txt`` (one per tag). Tags are joined with ", " in vocabulary order.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

import torch
import torch.nn.functional as F
from timm.models.swin_transformer import SwinTransformer
from torch import nn
from torchvision.transforms import InterpolationMode, functional as TF

from .wan import RAM_SOURCE, _num_indexed, require_file

RAM_FILE = "ram_swin_large_14m.pth"
DAPE_FILE = "DAPE.pth"
DATA_DIR = Path(__file__).resolve().parent / "ram_data"
TAG_LIST_FILE = DATA_DIR / "ram_tag_list.txt"
THRESHOLD_FILE = DATA_DIR / "ram_tag_list_threshold.txt"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_THRESHOLD = 0.68  # RAM's class threshold before the per-class file is applied
TAG_HEAD_HEADS = 4  # q2l_config.json num_attention_heads (not stored in the checkpoint)
TAG_HEAD_LN_EPS = 1e-12  # BERT layer_norm_eps of the tagging head
LORA_ALPHA = 1.0  # loralib default; SeeSR passes none, so scale = 1 / r
DAPE_RANK = 8

# Published keys that RAM's tagging never reads.
UNUSED_PREFIXES = ("tag_encoder.", "text_decoder.", "tagging_head.embeddings.",
                   "tagging_head.pooler.")
_UNUSED_RE = re.compile(r"^tagging_head\.encoder\.layer\.\d+\.attention\."  # deleted self-attention
                        r"|\.(relative_position_index|attn_mask|position_ids)$")  # recomputed buffers
# BERT sub-module names of one tagging-head layer -> ours.
_HEAD_NAMES = {"crossattention.self.query": "query", "crossattention.self.key": "key",
               "crossattention.self.value": "value", "crossattention.output.dense": "attn_out",
               "crossattention.output.LayerNorm": "attn_norm", "intermediate.dense": "ffn_in",
               "output.dense": "ffn_out", "output.LayerNorm": "ffn_norm"}
_HEAD_NAMES_INV = {v: k for k, v in _HEAD_NAMES.items()}
_TOP_LEVEL = ("image_proj.", "wordvec_proj.", "fc.")


class RAMWeightsError(ValueError):
    """A RAM or DAPE file cannot be used; the message names the file and the keys at fault."""


# --------------------------------------------------------------------------- sizes

@dataclass(frozen=True)
class RAMSizes:
    """Network sizes; the defaults are the published RAM Swin-L (14M) ones."""
    embed_dim: int = 192
    depths: tuple = (2, 2, 18, 2)
    num_heads: tuple = (6, 12, 24, 48)
    window_size: int = 12
    patch_size: int = 4
    mlp_ratio: float = 4.0
    image_size: int = 384
    label_width: int = 512  # image_proj output = label_embed width = tagging-head encoder width
    hidden: int = 768  # tagging head width
    intermediate: int = 3072
    head_layers: int = 2
    head_heads: int = TAG_HEAD_HEADS
    wordvec_proj: bool = True  # RAM uses Identity when hidden == 512
    num_tags: int = 4585

    @property
    def vision_width(self) -> int:
        return self.embed_dim * 2 ** (len(self.depths) - 1)


REAL_RAM = RAMSizes()


def sizes_from_state_dict(sd: dict, where: str = "state dict") -> RAMSizes:
    """:class:`RAMSizes` read off a state dict in the published RAM key layout."""
    def need(key):
        if key not in sd:
            raise RAMWeightsError(f"{where}: missing key {key}")
        return sd[key]

    proj = need("visual_encoder.patch_embed.proj.weight")
    embed, patch = proj.shape[0], proj.shape[-1]
    n_stages = _num_indexed(sd, "visual_encoder.layers.")
    if n_stages == 0:
        raise RAMWeightsError(f"{where}: no visual_encoder.layers.* keys")
    depths = tuple(_num_indexed(sd, f"visual_encoder.layers.{i}.blocks.") for i in range(n_stages))
    heads, windows = [], []
    for i in range(n_stages):
        table = need(f"visual_encoder.layers.{i}.blocks.0.attn.relative_position_bias_table")
        side = math.isqrt(table.shape[0])
        if side * side != table.shape[0] or side % 2 == 0:
            raise RAMWeightsError(f"{where}: stage {i} relative_position_bias_table has "
                                  f"{table.shape[0]} rows, not (2*window-1)^2")
        heads.append(table.shape[1])
        windows.append((side + 1) // 2)
    label = need("label_embed")
    head_layers = _num_indexed(sd, "tagging_head.encoder.layer.")
    hidden = need("tagging_head.encoder.layer.0.crossattention.self.query.weight").shape[0]
    sizes = RAMSizes(
        embed_dim=embed, depths=depths, num_heads=tuple(heads), window_size=max(windows),
        patch_size=patch,
        mlp_ratio=need("visual_encoder.layers.0.blocks.0.mlp.fc1.weight").shape[0] / embed,
        label_width=label.shape[1], hidden=hidden,
        intermediate=need("tagging_head.encoder.layer.0.intermediate.dense.weight").shape[0],
        head_layers=head_layers, wordvec_proj="wordvec_proj.weight" in sd,
        num_tags=label.shape[0])
    grid = sizes.image_size // patch
    expected = [min(sizes.window_size, grid >> i) for i in range(n_stages)]
    if windows != expected:
        raise RAMWeightsError(f"{where}: window sizes per stage {windows} (from the relative "
                              f"position tables) do not fit a {sizes.image_size}px input "
                              f"(expected {expected})")
    if hidden % sizes.head_heads:
        raise RAMWeightsError(f"{where}: tagging head width {hidden} is not divisible by "
                              f"{sizes.head_heads} heads")
    return sizes


# --------------------------------------------------------------------------- vocabulary

def load_tag_vocabulary(tag_file=TAG_LIST_FILE, threshold_file=THRESHOLD_FILE,
                        default: float = DEFAULT_THRESHOLD) -> tuple[list[str], torch.Tensor]:
    """(tag names, per-tag thresholds): every class starts at ``default`` and the values of the
    threshold file replace them in order, as RAM does."""
    names = Path(tag_file).read_text(encoding="utf-8").splitlines()
    values = [float(s) for s in Path(threshold_file).read_text(encoding="utf-8").split()]
    if len(values) > len(names):
        raise RAMWeightsError(f"{threshold_file}: {len(values)} thresholds for {len(names)} tags")
    thresholds = torch.full((len(names),), float(default))
    thresholds[:len(values)] = torch.tensor(values)
    return names, thresholds


# --------------------------------------------------------------------------- network

class _TagLayer(nn.Module):
    """One tagging-head layer: cross-attention from the tag queries to the image tokens (BERT
    cross-attention without self-attention), then the BERT feed-forward; post-norm residuals."""

    def __init__(self, hidden: int, context: int, intermediate: int, heads: int):
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(context, hidden)
        self.value = nn.Linear(context, hidden)
        self.attn_out = nn.Linear(hidden, hidden)
        self.attn_norm = nn.LayerNorm(hidden, eps=TAG_HEAD_LN_EPS)
        self.ffn_in = nn.Linear(hidden, intermediate)
        self.ffn_out = nn.Linear(intermediate, hidden)
        self.ffn_norm = nn.LayerNorm(hidden, eps=TAG_HEAD_LN_EPS)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.view(b, n, self.heads, c // self.heads).transpose(1, 2)

    def forward(self, h: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        q, k, v = self._split(self.query(h)), self._split(self.key(image)), self._split(self.value(image))
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(h.shape)
        h = self.attn_norm(self.attn_out(a) + h)
        return self.ffn_norm(self.ffn_out(F.gelu(self.ffn_in(h))) + h)


class _TaggingHead(nn.Module):
    def __init__(self, s: RAMSizes):
        super().__init__()
        self.layers = nn.ModuleList(_TagLayer(s.hidden, s.label_width, s.intermediate, s.head_heads)
                                    for _ in range(s.head_layers))

    def forward(self, queries: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        h = queries.unsqueeze(0).expand(image.shape[0], -1, -1)
        for layer in self.layers:
            h = layer(h, image)
        return h


class RAMTagger(nn.Module):
    """RAM's image-tag recognition path: Swin -> ``image_proj`` tokens; tag queries
    ``relu(wordvec_proj(label_embed))`` cross-attend to them; ``fc`` gives one logit per tag."""

    def __init__(self, sizes: RAMSizes = REAL_RAM, tag_names: Optional[list] = None,
                 thresholds=None):
        super().__init__()

        s = self.sizes = sizes
        self.image_size = s.image_size
        self.visual_encoder = SwinTransformer(
            img_size=s.image_size, patch_size=s.patch_size, in_chans=3, num_classes=0,
            embed_dim=s.embed_dim, depths=tuple(s.depths), num_heads=tuple(s.num_heads),
            window_size=s.window_size, mlp_ratio=s.mlp_ratio, qkv_bias=True, drop_rate=0.0,
            attn_drop_rate=0.0, drop_path_rate=0.0)
        self.image_proj = nn.Linear(s.vision_width, s.label_width)
        self.label_embed = nn.Parameter(torch.zeros(s.num_tags, s.label_width))
        self.wordvec_proj = nn.Linear(s.label_width, s.hidden) if s.wordvec_proj else nn.Identity()
        self.tagging_head = _TaggingHead(s)
        self.fc = nn.Linear(s.hidden, 1)
        if tag_names is None or thresholds is None:
            names, thr = load_tag_vocabulary()
            tag_names = names if tag_names is None else tag_names
            thresholds = thr if thresholds is None else thresholds
        self.tag_names = list(tag_names)
        self.thresholds = torch.as_tensor(thresholds, dtype=torch.float32).cpu()  # not a buffer:
        # .to(bfloat16) must not round the thresholds
        if not (len(self.tag_names) == len(self.thresholds) == s.num_tags):
            raise RAMWeightsError(f"{s.num_tags} tags in the network, {len(self.tag_names)} tag "
                                  f"names, {len(self.thresholds)} thresholds")
        self.load_info: dict = {}

    # ---- network
    def visual_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 1 + L, C): the mean of the final-normed Swin tokens, then the tokens themselves."""
        x = self.visual_encoder.forward_features(images)  # (B, h, w, C), final norm applied
        x = x.flatten(1, 2)
        return torch.cat([x.mean(dim=1, keepdim=True), x], dim=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised (B, 3, S, S) images -> (B, num_tags) logits."""
        image = self.image_proj(self.visual_tokens(images))
        queries = F.relu(self.wordvec_proj(self.label_embed))
        return self.fc(self.tagging_head(queries, image)).squeeze(-1)

    # ---- tagging
    @property
    def device(self) -> torch.device:
        return self.fc.weight.device

    def preprocess(self, frames) -> torch.Tensor:
        """Frames -> (B, 3, S, S) float32 ImageNet-normalised, on the model's device.

        Accepts a uint8 (H, W, 3) or (B, H, W, 3) numpy array or tensor, a float (3, H, W) or
        (B, 3, H, W) tensor (or array) in [0, 1], or a list of those. Resized like
        ``torchvision.transforms.Resize((S, S))`` on a float tensor (bilinear, antialiased)."""
        if isinstance(frames, (list, tuple)):
            return torch.cat([self.preprocess(f) for f in frames])
        # numpy arrays are copied (decoded frames are often read-only)
        x = frames if torch.is_tensor(frames) else torch.tensor(frames)
        x = x.to(self.device)
        if x.dtype == torch.uint8:
            if x.ndim not in (3, 4) or x.shape[-1] != 3:
                raise ValueError(f"uint8 frames must be (H, W, 3) or (B, H, W, 3), got {tuple(x.shape)}")
            x = (x if x.ndim == 4 else x[None]).permute(0, 3, 1, 2).float() / 255.0
        elif x.is_floating_point():
            if x.ndim not in (3, 4) or x.shape[-3] != 3:
                raise ValueError(f"float frames must be (3, H, W) or (B, 3, H, W), got {tuple(x.shape)}")
            x = (x if x.ndim == 4 else x[None]).float()
        else:
            raise ValueError(f"frames must be uint8 or floating point, got {x.dtype}")
        x = TF.resize(x, [self.image_size, self.image_size],
                      interpolation=InterpolationMode.BILINEAR, antialias=True)
        return TF.normalize(x, IMAGENET_MEAN, IMAGENET_STD)

    @torch.inference_mode()
    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """Preprocessed (B, 3, S, S) images -> (B, num_tags) float32 tag probabilities."""
        return torch.sigmoid(self(images.to(self.device, self.fc.weight.dtype)).float())

    def select(self, probs: torch.Tensor) -> list[list[str]]:
        """Tags strictly above their thresholds, in vocabulary order, per row of ``probs``."""
        on = probs.float().cpu() > self.thresholds
        return [[self.tag_names[i] for i in row.nonzero().flatten().tolist()] for row in on]

    def tag_lists(self, frames) -> list[list[str]]:
        return self.select(self.probabilities(self.preprocess(frames)))

    def tags(self, frame) -> str:
        """Tags of one frame joined with ", " (vocabulary order); "" when none is on."""
        lists = self.tag_lists(frame)
        if len(lists) != 1:
            raise ValueError(f"tags() takes one frame, got {len(lists)}")
        return ", ".join(lists[0])


# --------------------------------------------------------------------------- key layouts

def ours_from_published(key: str) -> Optional[str]:
    """Our parameter name for a published RAM key, or None if we have no such parameter."""
    if key.startswith("visual_encoder."):
        # original Swin: merging at the end of stage i; timm: at the start of stage i + 1
        return re.sub(r"^visual_encoder\.layers\.(\d+)\.downsample\.",
                      lambda m: f"visual_encoder.layers.{int(m.group(1)) + 1}.downsample.", key)
    m = re.match(r"^tagging_head\.encoder\.layer\.(\d+)\.(.+)\.(weight|bias)$", key)
    if m:
        name = _HEAD_NAMES.get(m.group(2))
        return f"tagging_head.layers.{m.group(1)}.{name}.{m.group(3)}" if name else None
    if key == "label_embed" or key.startswith(_TOP_LEVEL):
        return key
    return None


def published_from_ours(key: str) -> str:
    if key.startswith("visual_encoder."):
        return re.sub(r"^visual_encoder\.layers\.(\d+)\.downsample\.",
                      lambda m: f"visual_encoder.layers.{int(m.group(1)) - 1}.downsample.", key)
    m = re.match(r"^tagging_head\.layers\.(\d+)\.(\w+)\.(weight|bias)$", key)
    if m:
        return f"tagging_head.encoder.layer.{m.group(1)}.{_HEAD_NAMES_INV[m.group(2)]}.{m.group(3)}"
    return key


def is_unused_key(key: str) -> bool:
    return key.startswith(UNUSED_PREFIXES) or _UNUSED_RE.search(key) is not None


def _key_list(keys: Iterable[str], most: int = 12) -> str:
    keys = sorted(keys)
    more = f" ... (+{len(keys) - most} more)" if len(keys) > most else ""
    return ", ".join(keys[:most]) + more


def convert_ram_state_dict(sd: dict, expected: Iterable[str], where: str = "state dict"
                           ) -> tuple[dict, list[str]]:
    """Published RAM state dict -> (our state dict, ignored published keys). ``expected`` are our
    parameter names; a missing or unknown key raises :class:`RAMWeightsError` naming them."""
    ours, ignored, unexpected = {}, [], []
    for key, value in sd.items():
        name = None if is_unused_key(key) else ours_from_published(key)
        if name is not None:
            ours[name] = value
        else:
            (ignored if is_unused_key(key) else unexpected).append(key)
    expected = set(expected)
    unexpected += [published_from_ours(k) for k in set(ours) - expected]
    missing = [published_from_ours(k) for k in expected - set(ours)]
    if missing or unexpected:
        parts = [f"missing keys: {_key_list(missing)}"] if missing else []
        parts += [f"unexpected keys: {_key_list(unexpected)}"] if unexpected else []
        raise RAMWeightsError(f"{where} is not a RAM (Swin-L) tagger checkpoint: "
                              + "; ".join(parts))
    return ours, sorted(ignored)


def apply_dape(sd: dict, dape: dict, where: str = "DAPE") -> tuple[dict, list[str], list[str]]:
    """Merge DAPE's loralib pairs into a published RAM state dict: ``W += B @ A * alpha / r``.

    ``...attn.qkv`` pairs are loralib ``MergedLinear`` with LoRA on q and v (``A``: (2r, in),
    ``B``: (2 * out / 3, r)); every other pair is a plain ``lora.Linear`` (``A``: (r, in),
    ``B``: (out, r)). Returns (new state dict, applied module names, ignored module names)."""
    bases, bad = {}, []
    for key, value in dape.items():
        base, _, part = key.rpartition(".")
        if part in ("lora_A", "lora_B"):
            bases.setdefault(base, {})[part] = value
        elif not is_unused_key(key):
            bad.append(key)
    out, applied, ignored = dict(sd), [], []
    for base in sorted(bases):
        target = base + ".weight"
        if ours_from_published(target) is None or target not in sd:
            (ignored if is_unused_key(target) else bad).append(base)
            continue
        pair = bases[base]
        if len(pair) != 2:
            raise RAMWeightsError(f"{where}: {base} has {', '.join(pair)} only (needs lora_A and lora_B)")
        w, a, b = sd[target].float(), pair["lora_A"].float(), pair["lora_B"].float()
        if base.endswith(".attn.qkv"):
            out_dim, r = w.shape[0] // 3, a.shape[0] // 2
            ok = a.shape == (2 * r, w.shape[1]) and b.shape == (2 * out_dim, r)
            if ok:
                zeros = w.new_zeros(out_dim, w.shape[1])
                delta = torch.cat([b[:out_dim] @ a[:r], zeros, b[out_dim:] @ a[r:]])
        else:
            r = a.shape[0]
            ok = a.shape[1] == w.shape[1] and b.shape == (w.shape[0], r)
            if ok:
                delta = b @ a
        if not ok:
            raise RAMWeightsError(f"{where}: {base}.lora_A {tuple(a.shape)} / lora_B "
                                  f"{tuple(b.shape)} do not fit {target} {tuple(w.shape)}")
        out[target] = (w + delta * (LORA_ALPHA / r)).to(sd[target].dtype)
        applied.append(base)
    if bad:
        raise RAMWeightsError(f"{where} is not a DAPE file for this RAM checkpoint: unexpected "
                              f"keys {_key_list(bad)}")
    if not applied:
        raise RAMWeightsError(f"{where}: no LoRA pair for the RAM tagger (only {len(ignored)} "
                              "ignored ones)")
    return out, applied, ignored


# --------------------------------------------------------------------------- files

def read_state_dict(path, what: str) -> dict:
    """A torch state dict from ``path`` (weights only; memory-mapped where the format allows),
    unwrapped from ``model`` / ``state_dict`` / ``params`` and ``module.`` prefixes."""
    path = str(path)
    try:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:  # legacy (non-zip) format cannot be memory-mapped
            if "mmap" not in str(e):
                raise
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise RAMWeightsError(f"cannot read {what} {path} ({type(e).__name__}: {e})") from e
    for key in ("model", "state_dict", "params"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj or not all(torch.is_tensor(v) for v in obj.values()):
        raise RAMWeightsError(f"{path} does not hold a {what} state dict")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def load_ram(ram_path, dape_path=None, device="cpu", dtype=torch.float32,
             tag_names: Optional[list] = None, thresholds=None) -> RAMTagger:
    """The RAM tagger from ``ram_swin_large_14m.pth`` (+ ``DAPE.pth`` when given and present),
    in eval mode without gradients. ``tag_names`` / ``thresholds`` default to the package's
    vocabulary files (4585 tags)."""
    ram_path = require_file(ram_path, "RAM tagger weights", RAM_SOURCE)
    sd = read_state_dict(ram_path, "RAM tagger")
    sd = {(("tagging_head." + k[len("vision_multi."):]) if k.startswith("vision_multi.") else k): v
          for k, v in sd.items()}  # older Tag2Text name of the tagging head (RAM renames it too)
    info = {"ram": str(ram_path), "dape": None, "dape_applied": [], "dape_ignored": []}
    if dape_path and os.path.exists(dape_path):
        dape = read_state_dict(dape_path, "DAPE")
        sd, info["dape_applied"], info["dape_ignored"] = apply_dape(sd, dape, str(dape_path))
        info["dape"] = str(dape_path)
    sizes = sizes_from_state_dict(sd, str(ram_path))
    if tag_names is None or thresholds is None:
        names, thr = load_tag_vocabulary()
        tag_names = names if tag_names is None else tag_names
        thresholds = thr if thresholds is None else thresholds
    if len(tag_names) != sizes.num_tags or len(thresholds) != sizes.num_tags:
        raise RAMWeightsError(f"{ram_path} has {sizes.num_tags} tags (label_embed) but the "
                              f"vocabulary has {len(tag_names)} names and {len(thresholds)} "
                              "thresholds")
    with torch.device(device):
        model = RAMTagger(sizes, tag_names, thresholds)
    ours, info["ram_ignored"] = convert_ram_state_dict(sd, model.state_dict().keys(), str(ram_path))
    try:
        model.load_state_dict(ours, strict=True)
    except RuntimeError as e:
        raise RAMWeightsError(f"{ram_path}: {e}") from e
    model.load_info = info
    return model.to(dtype=dtype).eval().requires_grad_(False)
