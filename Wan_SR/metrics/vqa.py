"""Video quality metrics DOVER and FasterVQA (whole-video scores, higher is better), our own
implementation of the official inference (VQAssessment/DOVER ``evaluate_a_set_of_videos.py`` with
``dover.yml``; VQAssessment/FAST-VQA-and-FasterVQA ``vqa.py -m FasterVQA`` with
``options/fast/f3dvqa-b.yml``). Networks: :mod:`.vqa_nets`.

Sampling (frame indices ``n`` = the video's frame count; random draws from ``np.random.RandomState
(seed)`` for frame offsets and ``torch.Generator().manual_seed(seed)`` for fragment offsets, in
the official order, so that a fixed seed gives the official result for the same global seeds):

- DOVER technical view: 3 clips of 32 frames, every 2nd frame, one clip per third of the video
  (offset random inside the third when it is longer than 64 frames); each frame cut into 7x7
  fragments of 32x32 px (a random offset inside each grid cell, the same for 32 consecutive
  frames); a video smaller than 224 px on its short side is first upscaled (bilinear, on
  [0, 1], truncated back to 8 bits) so that it is 224;
- DOVER aesthetic view: 32 frames, one per 1/32 of the video, resized to 224x224 (torchvision
  ``Resize``, bilinear, antialiased);
- FasterVQA: the middle 32 consecutive frames (``SampleFrames`` test mode), 7x7 fragments of
  32x32 px with offsets redrawn every 8 frames.

Frames are normalised with the ImageNet mean/std on 0..255. Scores: the mean of the head over
all positions and clips ("raw"); DOVER's ``technical`` = sigmoid((raw_t - 0.1107) / 0.07355),
``aesthetic`` = sigmoid((raw_a + 0.08285) / 0.03774), ``overall`` (the number the papers call
DOVER) = sigmoid(0.6104 t' + 0.3896 a') with t', a' the two standardised raws; ``fastervqa`` =
sigmoid((raw - 0.14759505) / 0.03613452). All in [0, 1].
"""
from __future__ import annotations

import logging
import math
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms import functional as TF

from .vqa_nets import (ConvNeXt3D, Swin3D, WeightLayoutError, convnext_config, head_for,
                       load_strict, swin_config)

MEAN = (123.675, 116.28, 103.53)
STD = (58.395, 57.12, 57.375)
DEFAULT_SEED = 42

DOVER_FILE = "DOVER.pth"
DOVER_URL = "https://github.com/VQAssessment/DOVER/releases/download/v0.1.0/DOVER.pth"
FASTERVQA_FILES = ("FAST_VQA_3D_1_1.pth", "FAST_VQA_3D_1*1.pth")
FASTERVQA_URL = ("https://github.com/VQAssessment/FAST-VQA-and-FasterVQA/releases/download/"
                 "v2.0.0/FAST_VQA_3D_1_1.pth")
log = logging.getLogger(__name__)
VIDEO_METRICS = ("dover", "dover_technical", "dover_aesthetic", "fastervqa")


# ----------------------------------------------------------------------------- sampling

def segment_indices(n: int, clip_len: int, segments: int, interval: int, num_clips: int,
                    rng: np.random.RandomState) -> np.ndarray:
    """DOVER's ``UnifiedFrameSampler``: per clip, ``segments`` runs of ``clip_len`` frames
    ``interval`` apart, one per 1/segments of the video, at a random offset inside it when it is
    longer than ``clip_len * interval``; indices modulo ``n``."""
    out = []
    for _ in range(num_clips):
        length = n // segments
        starts = np.array([length * i for i in range(segments)], dtype=np.int32)
        if length > clip_len * interval:
            offs = rng.randint(0, length - clip_len * interval, size=segments)
        else:
            offs = np.zeros(segments, dtype=np.int32)
        out.append((np.arange(clip_len)[None, :] * interval + offs[:, None]
                    + starts[:, None]).reshape(-1))
    return np.mod(np.concatenate(out), n).astype(np.int32)


def middle_indices(n: int, clip_len: int) -> np.ndarray:
    """FAST-VQA's ``SampleFrames`` in test mode (one clip, interval 1): the ``clip_len`` frames
    around the middle, indices modulo ``n``."""
    start = int((n - clip_len + 1) / 2.0) if n > clip_len - 1 else 0
    return np.mod(start + np.arange(clip_len), n).astype(np.int32)


def fragments(video: torch.Tensor, gen: torch.Generator, grid: int = 7, size: int = 32,
              aligned: int = 32) -> torch.Tensor:
    """(3, T, H, W) uint8 -> (3, T, grid*size, grid*size) float fragments (see the module doc).
    As in the official code the grid is laid out on the size before upscaling."""
    t, h, w = video.shape[-3:]
    ratio = min(h / (grid * size), w / (grid * size))
    if ratio < 1:
        up = F.interpolate(video / 255.0, scale_factor=1 / ratio, mode="bilinear")
        video = (up * 255.0).type_as(video)
    hgrid = [min(h // grid * i, h - size) for i in range(grid)]
    wgrid = [min(w // grid * i, w - size) for i in range(grid)]
    hlen, wlen = h // grid, w // grid
    groups = t // aligned
    rnd_h = torch.randint(hlen - size, (grid, grid, groups), generator=gen) if hlen > size \
        else torch.zeros((grid, grid, groups), dtype=torch.int64)
    rnd_w = torch.randint(wlen - size, (grid, grid, groups), generator=gen) if wlen > size \
        else torch.zeros((grid, grid, groups), dtype=torch.int64)
    out = torch.zeros(video.shape[:-2] + (grid * size, grid * size))
    for i, hs in enumerate(hgrid):
        for j, ws in enumerate(wgrid):
            for g in range(groups):
                y, x = hs + int(rnd_h[i, j, g]), ws + int(rnd_w[i, j, g])
                out[:, g * aligned:(g + 1) * aligned, i * size:(i + 1) * size,
                    j * size:(j + 1) * size] = video[:, g * aligned:(g + 1) * aligned,
                                                     y:y + size, x:x + size]
    return out


def resized(video: torch.Tensor, size: int = 224) -> torch.Tensor:
    """(3, T, H, W) uint8 -> (3, T, size, size) uint8, bilinear with antialiasing."""
    return TF.resize(video.permute(1, 0, 2, 3), [size, size], antialias=True).permute(1, 0, 2, 3)


def as_clips(view: torch.Tensor, num_clips: int) -> torch.Tensor:
    """(3, T, H, W) -> normalised (num_clips, 3, T / num_clips, H, W) float32."""
    mean, std = torch.tensor(MEAN), torch.tensor(STD)
    v = ((view.permute(1, 2, 3, 0) - mean) / std).permute(3, 0, 1, 2)
    return v.reshape(v.shape[0], num_clips, -1, *v.shape[2:]).transpose(0, 1)


def _stack(frames: dict, idx: np.ndarray) -> torch.Tensor:
    """{index: (H, W, 3) uint8} -> (3, T, H, W) uint8 tensor in the order of ``idx``."""
    return torch.from_numpy(np.stack([frames[int(i)] for i in idx])).permute(3, 0, 1, 2)


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


# ----------------------------------------------------------------------------- weights

def read_state_dict(path: Path, inner: Optional[str] = None) -> dict:
    """The state dict in ``path`` (``obj[inner]`` when given). Tensors-only loading first; the
    released FAST-VQA files also pickle their validation results (numpy numbers), which only
    full unpickling reads, so that is the fallback (load files from the official releases)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        log.info("%s holds more than tensors; reading it with full unpickling", path)
        obj = _load_any(path)
    except Exception as e:  # noqa: BLE001 - named in one message
        raise WeightLayoutError(f"{path}: cannot be read as a PyTorch file ({e})") from e
    if inner is not None:
        if not isinstance(obj, dict) or inner not in obj:
            raise WeightLayoutError(f"{path}: no '{inner}' entry (not a FAST-VQA checkpoint)")
        obj = obj[inner]
    if not isinstance(obj, dict):
        raise WeightLayoutError(f"{path}: not a state dict")
    return obj


def _load_any(path: Path):
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - named in one message
        raise WeightLayoutError(f"{path}: cannot be read as a PyTorch file ({e})") from e


def _sub(sd: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


# ----------------------------------------------------------------------------- the metrics

FrameGetter = Callable[[np.ndarray], dict]  # sorted unique indices -> {index: (H, W, 3) uint8}


@dataclass
class _Branch:
    backbone: torch.nn.Module
    head: torch.nn.Module

    def raw(self, clips: torch.Tensor, device: str) -> float:
        with torch.no_grad():
            return float(self.head(self.backbone(clips.to(device))).mean())


class DOVER:
    """DOVER from ``DOVER.pth`` (keys ``technical_backbone.*`` = :class:`Swin3D`,
    ``aesthetic_backbone.*`` = :class:`ConvNeXt3D`, ``technical_head.*``, ``aesthetic_head.*``)."""

    def __init__(self, path: str | os.PathLike, device: str = "cpu"):
        sd = read_state_dict(Path(path))
        try:
            tech = Swin3D(swin_config(sd, "technical_backbone."))
            aes = ConvNeXt3D(*convnext_config(sd, "aesthetic_backbone."))
            th, ah = head_for(sd, "technical_head."), head_for(sd, "aesthetic_head.")
        except (KeyError, WeightLayoutError) as e:
            raise WeightLayoutError(f"{path}: not a DOVER file ({e})") from e
        for name, mod in (("technical_backbone", tech), ("aesthetic_backbone", aes),
                          ("technical_head", th), ("aesthetic_head", ah)):
            load_strict(mod, _sub(sd, name + "."), f"{path} [{name}]")
        other = sorted(k for k in sd if k.split(".")[0] not in
                       ("technical_backbone", "aesthetic_backbone", "technical_head",
                        "aesthetic_head"))
        if other:
            raise WeightLayoutError(f"{path}: unexpected key(s) {', '.join(other[:5])}")
        self.device = device
        self.technical = _Branch(tech.eval().to(device), th.eval().to(device))
        self.aesthetic = _Branch(aes.eval().to(device), ah.eval().to(device))

    @staticmethod
    def indices(n: int, rng: np.random.RandomState) -> dict:
        return {"technical": segment_indices(n, 32, 3, 2, 1, rng),
                "aesthetic": segment_indices(n, 1, 32, 2, 1, rng)}

    def raw_scores(self, n: int, get_frames: FrameGetter, seed: int = DEFAULT_SEED) -> dict:
        """{"technical": raw, "aesthetic": raw} of a video of ``n`` frames."""
        idx = self.indices(n, np.random.RandomState(seed))
        frames = get_frames(np.unique(np.concatenate(list(idx.values()))))
        gen = torch.Generator().manual_seed(seed)
        tech = as_clips(fragments(_stack(frames, idx["technical"]), gen), 3)
        aes = as_clips(resized(_stack(frames, idx["aesthetic"])), 1)
        return {"technical": self.technical.raw(tech, self.device),
                "aesthetic": self.aesthetic.raw(aes, self.device)}

    @staticmethod
    def fuse(raw: dict) -> dict:
        t = (raw["technical"] - 0.1107) / 0.07355
        a = (raw["aesthetic"] + 0.08285) / 0.03774
        return {"dover": sigmoid(0.6104 * t + 0.3896 * a), "dover_technical": sigmoid(t),
                "dover_aesthetic": sigmoid(a)}

    def __call__(self, n: int, get_frames: FrameGetter, seed: int = DEFAULT_SEED) -> dict:
        return self.fuse(self.raw_scores(n, get_frames, seed))


class FasterVQA:
    """FasterVQA from ``FAST_VQA_3D_1*1.pth`` (``state_dict``: ``fragments_backbone.*`` =
    :class:`Swin3D`, ``vqa_head.*``)."""

    def __init__(self, path: str | os.PathLike, device: str = "cpu"):
        sd = read_state_dict(Path(path), inner="state_dict")
        try:
            net = Swin3D(swin_config(sd, "fragments_backbone."))
            head = head_for(sd, "vqa_head.")
        except (KeyError, WeightLayoutError) as e:
            raise WeightLayoutError(f"{path}: not a FasterVQA file ({e})") from e
        load_strict(net, _sub(sd, "fragments_backbone."), f"{path} [fragments_backbone]")
        load_strict(head, _sub(sd, "vqa_head."), f"{path} [vqa_head]")
        other = sorted(k for k in sd if k.split(".")[0] not in ("fragments_backbone",
                                                                 "vqa_head"))
        if other:
            raise WeightLayoutError(f"{path}: unexpected key(s) {', '.join(other[:5])}")
        self.device = device
        self.branch = _Branch(net.eval().to(device), head.eval().to(device))

    def raw_score(self, n: int, get_frames: FrameGetter, seed: int = DEFAULT_SEED) -> float:
        idx = middle_indices(n, 32)
        frames = get_frames(np.unique(idx))
        gen = torch.Generator().manual_seed(seed)
        view = as_clips(fragments(_stack(frames, idx), gen, aligned=8), 1)
        return self.branch.raw(view, self.device)

    def __call__(self, n: int, get_frames: FrameGetter, seed: int = DEFAULT_SEED) -> dict:
        return {"fastervqa": sigmoid((self.raw_score(n, get_frames, seed) - 0.14759505)
                                     / 0.03613452)}
