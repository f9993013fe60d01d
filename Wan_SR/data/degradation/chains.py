"""The two degradation chains, on (B, T, 3, H, W) float tensors in [0, 1] on any device.

``pssr`` — what the release really runs (docs/method.md, "Degradation"), per clip of T frames:

1. first blur, one kernel per frame;
2. Gaussian noise, σ ~ U(noise_range)/255 per frame, gray with gray_noise_prob per frame (one
   gray field shared by the clip's frames); clamp;
3. JPEG at full size, quality ~ U(jpeg_range) per frame;
4. second blur, always, one kernel per frame;
5. down to (int(H/scale), int(W/scale)) with one mode per clip;
6. Gaussian noise (noise_range2, gray_noise_prob2); clamp;
7. final sinc (prob final_sinc_prob) or pulse kernel per frame; clamp; JPEG (jpeg_range2);
8. gray (gray_prob) / colour jitter (color_jitter_prob), once per clip;
9. back to (H, W) with one mode per clip (when ``resize_back``); 8-bit quantisation.

``realesrgan`` — the full second-order Real-ESRGAN distribution, every key honoured: random
up/down/keep resize (resize_prob, resize_range) after the first blur and again
(resize_prob2, resize_range2, relative to H/scale) after the second; Gaussian or Poisson noise
(gaussian_noise_prob, poisson_scale_range, and the "2" keys); second blur with
second_blur_prob; the final stage in either order ([resize + sinc] then JPEG with
final_sinc_first_prob, else JPEG then [resize + sinc]); gray / colour jitter; resize back.

Randomness: everything comes from one CPU ``torch.Generator`` (the per-frame kernel, σ, flag
and quality draws and the per-clip choices); the noise fields are drawn on the frames' device
from a device generator seeded from it. The same seed and device give the same LQ.
Per frame: kernels, noise strengths, gray-noise flags, JPEG qualities. Per clip: resize modes
and scales, the Gaussian/Poisson choice, the second-blur decision, the final-stage order,
gray/jitter, the shared gray-noise field.
"""
from __future__ import annotations

import logging
import os
from typing import Mapping, Optional

import torch

from . import ops
from .config import DegradationConfig, load_config
from .kernels import random_blur_kernels, random_final_kernels

log = logging.getLogger(__name__)


class Degradation:
    """Synthetic LQ from HQ clips, driven by a degradation YAML (see the module docstring).

    >>> deg = Degradation("config/degradation_pssr.yml")
    >>> lq = deg(hq, seed=0)            # hq: (B, T, 3, H, W) in [0, 1], any device
    """

    def __init__(self, config: str | os.PathLike | Mapping | DegradationConfig | None = None,
                 filter_method: str = "auto", **overrides):
        self.config = load_config(config, **overrides)
        self.filter_method = filter_method

    @property
    def scale(self) -> int:
        return int(self.config["scale"])

    def output_size(self, h: int, w: int, resize_back: bool = True) -> tuple[int, int]:
        return (h, w) if resize_back else (h // self.scale, w // self.scale)

    @torch.no_grad()
    def __call__(self, hq: torch.Tensor, generator: Optional[torch.Generator] = None,
                 seed: Optional[int] = None, resize_back: bool = True) -> torch.Tensor:
        """LQ clips (B, T, 3, H, W) (or (B, T, 3, H//scale, W//scale) without ``resize_back``)
        on 8-bit levels, same device, float32. Give ``generator`` (a CPU torch.Generator) or
        ``seed``; neither draws from a fresh random seed."""
        if hq.dim() != 5 or hq.shape[2] != 3:
            raise ValueError(f"expected a (B, T, 3, H, W) tensor, got {tuple(hq.shape)}")
        if generator is None:
            generator = torch.Generator()
            generator.manual_seed(seed if seed is not None else int(torch.seed() % 2 ** 62))
        elif generator.device.type != "cpu":
            raise ValueError("the degradation generator must be a CPU torch.Generator")
        h, w = hq.shape[-2:]
        if h // self.scale < 1 or w // self.scale < 1:
            raise ValueError(f"frames of {w}x{h} are too small for a x{self.scale} degradation")
        x = hq.float().clamp(0, 1)
        run = self._pssr if self.config.chain == "pssr" else self._realesrgan
        outs = [run(clip, generator, resize_back) for clip in x]
        return torch.stack(outs)

    # ------------------------------------------------------------------ helpers

    def _kernels(self, t: int, gen: torch.Generator, device):
        c = self.config
        pad = c.kernel_pad
        k1 = random_blur_kernels(
            t, gen, sizes=c.kernel_sizes(1), kernel_list=c["kernel_list"],
            kernel_prob=c["kernel_prob"], sigma_range=c["blur_sigma"],
            betag_range=c["betag_range"], betap_range=c["betap_range"],
            sinc_prob=c["sinc_prob"], pad=pad)
        k2 = random_blur_kernels(
            t, gen, sizes=c.kernel_sizes(2), kernel_list=c["kernel_list2"],
            kernel_prob=c["kernel_prob2"], sigma_range=c["blur_sigma2"],
            betag_range=c["betag_range2"], betap_range=c["betap_range2"],
            sinc_prob=c["sinc_prob2"], pad=pad)
        ks = random_final_kernels(t, gen, sizes=list(range(7, pad + 1, 2)),
                                  final_sinc_prob=c["final_sinc_prob"], pad=pad)
        return tuple(ops.to_device(k, device, torch.float32) for k in (k1, k2, ks))

    def _mode(self, gen: torch.Generator) -> str:
        modes = self.config["interp_modes"]
        return modes[int(torch.randint(len(modes), (1,), generator=gen))]

    def _filter(self, x, k):
        return ops.filter2d(x, k, method=self.filter_method)

    def _gaussian(self, x, t, gen, dgen, noise_key, gray_key):
        sigma = ops.uniform(t, self.config[noise_key], gen) / 255.0
        gray = ops.bernoulli(t, self.config[gray_key], gen)
        return ops.gaussian_noise(x, sigma, gray, dgen, shared_gray=self.config["gray_noise_shared"])

    def _poisson(self, x, t, gen, dgen, scale_key, gray_key):
        scale = ops.uniform(t, self.config[scale_key], gen)
        gray = ops.bernoulli(t, self.config[gray_key], gen)
        return ops.poisson_noise(x, scale, gray, dgen)

    def _jpeg(self, x, t, gen, key):
        q = ops.uniform(t, self.config[key], gen)
        return ops.jpeg(x.clamp(0, 1), q, pad=self.config["jpeg_pad"])

    def _color(self, x, gen):
        c = self.config
        if bool(ops.bernoulli(1, c["gray_prob"], gen)):
            x = ops.to_gray(x)
        if bool(ops.bernoulli(1, c["color_jitter_prob"], gen)):
            x = ops.color_jitter(x, gen, c["brightness"], c["contrast"], c["saturation"],
                                 c["hue"]).clamp(0, 1)
        return x

    def _finish(self, x, h, w, gen, resize_back):
        if resize_back:
            x = ops.resize(x, (h, w), self._mode(gen))
        else:
            x = ops.resize(x, (h // self.scale, w // self.scale), self._mode(gen))
        return ops.quantize_8bit(x)

    # ------------------------------------------------------------------ chains

    def _pssr(self, x: torch.Tensor, gen: torch.Generator, resize_back: bool) -> torch.Tensor:
        t, _, h, w = x.shape
        s = self.scale
        k1, k2, ks = self._kernels(t, gen, x.device)
        dgen = ops.device_generator(gen, x.device)
        x = self._filter(x, k1)
        x = self._gaussian(x, t, gen, dgen, "noise_range", "gray_noise_prob")
        x = self._jpeg(x, t, gen, "jpeg_range")
        x = self._filter(x, k2)
        x = ops.resize(x, (int(h / s), int(w / s)), self._mode(gen))
        x = self._gaussian(x, t, gen, dgen, "noise_range2", "gray_noise_prob2")
        # the release resizes to (H//s, W//s) here with a fresh mode: same size, a no-op
        x = ops.resize(x, (h // s, w // s), self._mode(gen))
        x = self._filter(x, ks).clamp(0, 1)
        x = self._jpeg(x, t, gen, "jpeg_range2")
        x = self._color(x, gen)
        return self._finish(x, h, w, gen, resize_back)

    def _noise_stage(self, x, t, gen, dgen, suffix):
        c = self.config
        if bool(ops.bernoulli(1, c["gaussian_noise_prob" + suffix], gen)):
            return self._gaussian(x, t, gen, dgen, "noise_range" + suffix,
                                  "gray_noise_prob" + suffix)
        return self._poisson(x, t, gen, dgen, "poisson_scale_range" + suffix,
                             "gray_noise_prob" + suffix)

    def _updown(self, gen, prob_key, range_key) -> float:
        c = self.config
        p = torch.tensor(c[prob_key], dtype=torch.float64)
        kind = int(torch.multinomial(p, 1, generator=gen))  # 0 up, 1 down, 2 keep
        lo, hi = c[range_key]
        if kind == 0:
            return float(ops.uniform(1, (1.0, hi), gen))
        if kind == 1:
            return float(ops.uniform(1, (lo, 1.0), gen))
        return 1.0

    def _realesrgan(self, x: torch.Tensor, gen: torch.Generator, resize_back: bool
                    ) -> torch.Tensor:
        c = self.config
        t, _, h, w = x.shape
        s = self.scale
        k1, k2, ks = self._kernels(t, gen, x.device)
        dgen = ops.device_generator(gen, x.device)
        # first order
        x = self._filter(x, k1)
        r = self._updown(gen, "resize_prob", "resize_range")
        x = ops.resize(x, (int(h * r), int(w * r)), self._mode(gen))
        x = self._noise_stage(x, t, gen, dgen, "")
        x = self._jpeg(x, t, gen, "jpeg_range")
        # second order
        if bool(ops.bernoulli(1, c["second_blur_prob"], gen)):
            x = self._filter(x, k2)
        r = self._updown(gen, "resize_prob2", "resize_range2")
        x = ops.resize(x, (int(h / s * r), int(w / s * r)), self._mode(gen))
        x = self._noise_stage(x, t, gen, dgen, "2")
        if bool(ops.bernoulli(1, c["final_sinc_first_prob"], gen)):
            x = ops.resize(x, (h // s, w // s), self._mode(gen))
            x = self._filter(x, ks).clamp(0, 1)
            x = self._jpeg(x, t, gen, "jpeg_range2")
        else:
            x = self._jpeg(x, t, gen, "jpeg_range2")
            x = ops.resize(x, (h // s, w // s), self._mode(gen))
            x = self._filter(x, ks).clamp(0, 1)
        x = self._color(x, gen)
        return self._finish(x, h, w, gen, resize_back)


def degrade(hq: torch.Tensor, config=None, seed: Optional[int] = None,
            generator: Optional[torch.Generator] = None, resize_back: bool = True
            ) -> torch.Tensor:
    """One-call form of :class:`Degradation`."""
    return Degradation(config)(hq, generator=generator, seed=seed, resize_back=resize_back)
