"""LPIPS (VGG, v0.1) perceptual loss for the pixel loss of base training (docs/method.md,
"Training").

Computes the same value as ``lpips.LPIPS(net='vgg')(x, y)`` with ``normalize=False`` (and as
pyiqa's ``LPIPS(net='vgg')`` with ``normalize=False``): inputs in ``[-1, 1]``, the scaling layer
(shift ``[-.030, -.088, -.188]``, scale ``[.458, .448, .450]``), ImageNet VGG16 features at
relu1_2, relu2_2, relu3_3, relu4_3 and relu5_3, each unit-normalised over channels, squared
differences, a 1x1 linear layer per level (no bias, non-negative weights), spatial mean, sum over
the five levels -> one value per image pair.

Weights are read from local files only (nothing is downloaded). Accepted ``--lpips_weights``
(see :data:`WEIGHTS_HELP`):

* a folder holding torchvision's ImageNet VGG16 ``vgg16-397923af.pth`` and the LPIPS v0.1 linear
  layers, as ``vgg.pth`` (the ``lpips`` package's ``lpips/weights/v0.1/vgg.pth``) or pyiqa's
  ``LPIPS_v0.1_vgg-a78928a0.pth``; the files may also sit in the folder's ``checkpoints/`` and
  ``pyiqa/`` sub-folders, so a torch hub directory (e.g. ``~/.cache/torch/hub``) works as is;
* the linear-layer file itself, with ``vgg16-397923af.pth`` in the same folder;
* a single file holding a whole LPIPS state dict (backbone as ``net.slice{1..5}.{i}.*`` plus
  ``lin{0..4}.model.*``, as ``lpips.LPIPS(...).state_dict()`` or pyiqa's ``LPIPS`` write it);
* several of these files given as a comma-separated list (or a Python list).

Every file is classified by its keys, not its name: the backbone from ``features.{i}.*``
(torchvision; its classifier keys are ignored) or ``net.slice{k}.{i}.*`` keys, the linear layers
from ``lin{k}.model.1.weight`` (lpips/pyiqa with dropout) or ``lin{k}.model.0.weight`` keys, each
``(1, C_k, 1, 1)``. The lpips package's ``vgg.pth`` holds only the five linear layers (about 7 KB);
pyiqa loads its file non-strictly on top of a backbone it takes from torchvision's ImageNet
weights (``pyiqa/archs/lpips_arch.py``), so its file is treated the same way: linear layers
always, backbone keys only if present. Hence torchvision's file is needed beside it.

:func:`load_lpips` returns a frozen module (eval mode, no parameter gradients) whose output still
has gradients with respect to its inputs. Random weights in these formats (tests, GPU timing):
:func:`Wan_SR.testing.lpips.write_random_lpips_weights`.
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Sequence, Union

import torch
import torch.nn as nn

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

TORCHVISION_VGG16_FILE = "vgg16-397923af.pth"
TORCHVISION_VGG16_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"
LPIPS_LINEAR_FILE = "vgg.pth"
PYIQA_LINEAR_FILE = "LPIPS_v0.1_vgg-a78928a0.pth"
LPIPS_LINEAR_SOURCE = ("lpips/weights/v0.1/vgg.pth in the lpips pip package or in "
                       "github.com/richzhang/PerceptualSimilarity")

WEIGHTS_HELP = (
    "Local LPIPS-VGG weights (never downloaded): a folder holding torchvision's "
    f"{TORCHVISION_VGG16_FILE} ({TORCHVISION_VGG16_URL}) and the LPIPS v0.1 linear layers "
    f"{LPIPS_LINEAR_FILE} ({LPIPS_LINEAR_SOURCE}) or pyiqa's {PYIQA_LINEAR_FILE} (also found "
    "in the folder's checkpoints/ and pyiqa/ sub-folders, so a torch hub dir works); or the "
    f"linear-layer file with {TORCHVISION_VGG16_FILE} beside it; or one file with a whole LPIPS "
    "state dict; or such files as a comma-separated list."
)

# VGG16 feature-stack layout up to relu5_3 (torchvision indices 0..29).
_VGG_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
VGG_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
TAP_INDICES = (3, 8, 15, 22, 29)  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
LEVEL_CHANNELS = (64, 128, 256, 512, 512)
SLICE_OF_INDEX = {i: 1 + sum(i > t for t in TAP_INDICES) for i in range(30)}  # lpips' net.sliceK
MIN_SIZE = 16  # four 2x2 max-pools precede relu5_3


class LPIPSWeightsError(FileNotFoundError):
    """The LPIPS weights given are missing or incomplete (message says which files are needed)."""


def _need_message(problem: str) -> str:
    return (f"{problem}; LPIPS-VGG needs torchvision's {TORCHVISION_VGG16_FILE} "
            f"({TORCHVISION_VGG16_URL}) and the LPIPS v0.1 linear layers {LPIPS_LINEAR_FILE} "
            f"({LPIPS_LINEAR_SOURCE}) or pyiqa's {PYIQA_LINEAR_FILE}, in one folder passed as "
            "--lpips_weights")


class ScalingLayer(nn.Module):
    """``(x - shift) / scale`` with LPIPS' constants (inputs in [-1, 1])."""

    def __init__(self):
        super().__init__()
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.shift) / self.scale


class LPIPSVGG(nn.Module):
    """LPIPS v0.1 with the VGG16 backbone. ``forward(x, y)`` -> ``(N,)`` distances.

    State-dict keys: ``features.{0,2,...,28}.{weight,bias}`` (torchvision's names) and
    ``lins.{0..4}.weight`` ``(1, C_k, 1, 1)``. Build with :func:`load_lpips`.
    """

    def __init__(self):
        super().__init__()
        self.scaling = ScalingLayer()
        layers: list[nn.Module] = []
        c_in = 3
        for v in _VGG_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(c_in, v, kernel_size=3, padding=1), nn.ReLU(inplace=False)]
                c_in = v
        self.features = nn.Sequential(*layers)
        assert len(self.features) == 30
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, kernel_size=1, bias=False)
                                  for c in LEVEL_CHANNELS)

    @staticmethod
    def _unit(feat: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
        return feat / (torch.sqrt(torch.sum(feat * feat, dim=1, keepdim=True)) + eps)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``x``, ``y``: images ``(N, 3, H, W)`` in [-1, 1], ``H, W >= 16``. Returns ``(N,)``."""
        if x.shape != y.shape or x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"LPIPS expects two (N, 3, H, W) images of one shape, got "
                             f"{tuple(x.shape)} and {tuple(y.shape)}")
        if min(x.shape[-2:]) < MIN_SIZE:
            raise ValueError(f"LPIPS-VGG needs images of at least {MIN_SIZE}x{MIN_SIZE} "
                             f"(four 2x2 max-pools precede relu5_3), got {tuple(x.shape[-2:])}")
        n = x.shape[0]
        h = self.scaling(torch.cat([x, y], dim=0))
        total = None
        level = 0
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i == TAP_INDICES[level]:
                fx, fy = self._unit(h[:n]), self._unit(h[n:])
                d = self.lins[level]((fx - fy) ** 2).mean(dim=(1, 2, 3))
                total = d if total is None else total + d
                level += 1
        return total


# ----------------------------------------------------------------------------- weight files

_RE_TV = re.compile(r"^features\.(\d+)\.(weight|bias)$")
_RE_SLICE = re.compile(r"^net\.slice(\d)\.(\d+)\.(weight|bias)$")
_RE_LIN = re.compile(r"^lin(\d)\.model\.(\d)\.weight$")


def _load_state_dict(path: Path) -> dict:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unreadable / not a torch file
        raise LPIPSWeightsError(_need_message(f"cannot read {path} ({type(e).__name__}: {e})")) \
            from e
    for key in ("state_dict", "params", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise LPIPSWeightsError(_need_message(f"{path} does not hold a state dict"))
    return {(k[7:] if k.startswith("module.") else k): v for k, v in obj.items()}


def _split(sd: dict) -> tuple[dict, dict]:
    """(backbone ``features.{i}.*`` entries, linear ``{k: weight}`` entries) found in ``sd``."""
    backbone, lins = {}, {}
    for k, v in sd.items():
        if not torch.is_tensor(v):
            continue
        m = _RE_TV.match(k) or _RE_SLICE.match(k)
        if m is not None:
            idx = int(m.group(m.lastindex - 1))
            if idx in VGG_CONV_INDICES:
                backbone[f"features.{idx}.{m.group(m.lastindex)}"] = v
            continue
        m = _RE_LIN.match(k)
        if m is not None and int(m.group(1)) < len(LEVEL_CHANNELS):
            lins[int(m.group(1))] = v
    return backbone, lins


def _candidate_files(path: Path) -> list[Path]:
    if path.is_file():
        files = [path]
        sibling = path.parent / TORCHVISION_VGG16_FILE
        if sibling.is_file() and not sibling.samefile(path):
            files.append(sibling)
        return files
    if path.is_dir():
        files = []
        for folder in (path, path / "checkpoints", path / "pyiqa"):
            for name in (TORCHVISION_VGG16_FILE, LPIPS_LINEAR_FILE, PYIQA_LINEAR_FILE):
                f = folder / name
                if f.is_file():
                    files.append(f)
        return files
    raise LPIPSWeightsError(_need_message(f"--lpips_weights {path} does not exist"))


def _as_paths(path: PathLike | Sequence[PathLike]) -> list[Path]:
    if isinstance(path, (str, os.PathLike)):
        parts = [p.strip() for p in str(path).split(",")] if isinstance(path, str) else [path]
    else:
        parts = list(path)
    paths = [Path(p).expanduser() for p in parts if str(p) != ""]
    if not paths:
        raise LPIPSWeightsError(_need_message("no --lpips_weights given"))
    return paths


def resolve_lpips_state_dict(path: PathLike | Sequence[PathLike]) -> dict:
    """Read the weights named by ``path`` (see the module docstring) into an :class:`LPIPSVGG`
    state dict. Raises :class:`LPIPSWeightsError` when a path is missing or a part is absent."""
    files: list[Path] = []
    for p in _as_paths(path):
        for f in _candidate_files(p):
            if all(not f.samefile(g) for g in files):
                files.append(f)
    backbone: dict = {}
    lins: dict = {}
    for f in files:
        b, l = _split(_load_state_dict(f))
        for k, v in b.items():
            backbone.setdefault(k, v)
        for k, v in l.items():
            lins.setdefault(k, v)
    names = ", ".join(str(f) for f in files) or "no weight file"
    missing_bb = [f"features.{i}.{w}" for i in VGG_CONV_INDICES for w in ("weight", "bias")
                  if f"features.{i}.{w}" not in backbone]
    if missing_bb:
        raise LPIPSWeightsError(_need_message(
            f"no VGG16 backbone (features.* / net.slice*) in {names}"))
    missing_lin = [k for k in range(len(LEVEL_CHANNELS)) if k not in lins]
    if missing_lin:
        raise LPIPSWeightsError(_need_message(
            f"no LPIPS linear layers lin{missing_lin} in {names}"))
    sd = dict(backbone)
    for k, c in enumerate(LEVEL_CHANNELS):
        w = lins[k]
        if tuple(w.shape) != (1, c, 1, 1):
            raise ValueError(f"LPIPS linear layer lin{k} has shape {tuple(w.shape)}, expected "
                             f"(1, {c}, 1, 1) (is this the VGG and not the AlexNet file?)")
        if (w < 0).any():
            logger.warning("LPIPS linear layer lin%d has negative weights", k)
        sd[f"lins.{k}.weight"] = w
    logger.debug("LPIPS-VGG weights: %s", names)
    return sd


def load_lpips(path: PathLike | Sequence[PathLike], device: torch.device | str = "cpu",
               dtype: torch.dtype = torch.float32) -> LPIPSVGG:
    """Frozen LPIPS-VGG from local files: eval mode, ``requires_grad=False`` on every parameter
    (gradients still reach the inputs)."""
    sd = resolve_lpips_state_dict(path)
    with torch.device("meta"):
        model = LPIPSVGG()
    model.load_state_dict(sd, strict=True, assign=True)
    model.scaling = ScalingLayer()  # buffers are not in the state dict: rebuild off the meta device
    model = model.to(device=device, dtype=dtype).eval()
    model.requires_grad_(False)
    logger.info("LPIPS-VGG loaded from %s", path)
    return model


__all__ = ["LPIPSVGG", "LPIPSWeightsError", "WEIGHTS_HELP", "load_lpips",
           "resolve_lpips_state_dict"]
