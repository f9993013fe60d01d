"""Degradation YAML files: loading, defaults and validation with clear errors.

A file holds the published ``params_realesrgan.yml`` keys, either flat or with the blur keys
under ``kernel_info:`` (the published layout loads unchanged), plus ``chain`` (``pssr`` or
``realesrgan``) and a few keys that name what the release hard-codes:

- ``interp_modes`` (the release draws from area/bilinear/bicubic),
- ``final_sinc_first_prob`` (Real-ESRGAN's 0.5 choice between "[resize + sinc] then JPEG" and
  "JPEG then [resize + sinc]"; realesrgan chain only),
- ``jpeg_pad`` (``zero``: DiffJPEG pads frames with black up to multiples of 16; ``replicate``),
- ``gray_noise_shared`` (the release uses one gray-noise field for all frames of a clip),
- ``brightness``/``contrast``/``saturation``/``hue`` (colour-jitter ranges; the release's
  defaults).

A missing key takes the published value (:data:`DEFAULTS`); an unknown key is an error (with a
"did you mean"); keys a chain does not use are reported with a warning.
"""
from __future__ import annotations

import difflib
import logging
import math
import os
from pathlib import Path
from typing import Any, Mapping

import yaml

from .kernels import FAMILIES
from .ops import INTERP_MODES

log = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).resolve().parents[3] / "config"
DEFAULT_CONFIG = CONFIG_DIR / "degradation_pssr.yml"
CHAINS = ("pssr", "realesrgan")

_PROBS6 = [0.45, 0.25, 0.12, 0.03, 0.12, 0.03]

# The published params_realesrgan.yml values (docs/method.md, "Degradation") and the release's
# hard-coded choices for the extra keys.
DEFAULTS: dict[str, Any] = {
    "chain": "pssr",
    "scale": 4,
    "color_jitter_prob": 0.0,
    "gray_prob": 0.0,
    "brightness": [0.5, 1.5],
    "contrast": [0.5, 1.5],
    "saturation": [0.0, 1.5],
    "hue": [-0.1, 0.1],
    "resize_prob": [0.2, 0.7, 0.1],
    "resize_range": [0.15, 1.5],
    "gaussian_noise_prob": 0.5,
    "noise_range": [1, 30],
    "poisson_scale_range": [0.05, 3.0],
    "gray_noise_prob": 0.4,
    "jpeg_range": [30, 95],
    "second_blur_prob": 0.8,
    "resize_prob2": [0.3, 0.4, 0.3],
    "resize_range2": [0.3, 1.2],
    "gaussian_noise_prob2": 0.5,
    "noise_range2": [1, 25],
    "poisson_scale_range2": [0.05, 2.5],
    "gray_noise_prob2": 0.4,
    "jpeg_range2": [30, 95],
    "blur_kernel_size": 21,
    "kernel_list": list(FAMILIES),
    "kernel_prob": list(_PROBS6),
    "sinc_prob": 0.1,
    "blur_sigma": [0.2, 3.0],
    "betag_range": [0.5, 4.0],
    "betap_range": [1.0, 2.0],
    "blur_kernel_size2": 21,
    "kernel_list2": list(FAMILIES),
    "kernel_prob2": list(_PROBS6),
    "sinc_prob2": 0.1,
    "blur_sigma2": [0.2, 1.5],
    "betag_range2": [0.5, 4.0],
    "betap_range2": [1.0, 2.0],
    "final_sinc_prob": 0.8,
    "final_sinc_first_prob": 0.5,
    "interp_modes": ["area", "bilinear", "bicubic"],
    "jpeg_pad": "zero",
    "gray_noise_shared": True,
}

# keys the pssr chain (the release's hard-coded path) does not use
PSSR_IGNORED = ("resize_prob", "resize_range", "gaussian_noise_prob", "poisson_scale_range",
                "second_blur_prob", "resize_prob2", "resize_range2", "gaussian_noise_prob2",
                "poisson_scale_range2", "final_sinc_first_prob")

_PROB = ("color_jitter_prob", "gray_prob", "gaussian_noise_prob", "gray_noise_prob",
         "second_blur_prob", "gaussian_noise_prob2", "gray_noise_prob2", "sinc_prob",
         "sinc_prob2", "final_sinc_prob", "final_sinc_first_prob")
_RANGES = {  # key: (lowest allowed, highest allowed)
    "resize_range": (1e-3, 100), "resize_range2": (1e-3, 100), "noise_range": (0, 255),
    "noise_range2": (0, 255), "poisson_scale_range": (0, 100), "poisson_scale_range2": (0, 100),
    "jpeg_range": (1, 100), "jpeg_range2": (1, 100), "blur_sigma": (1e-3, 100),
    "blur_sigma2": (1e-3, 100), "betag_range": (1e-3, 100), "betag_range2": (1e-3, 100),
    "betap_range": (1e-3, 100), "betap_range2": (1e-3, 100), "brightness": (0, 100),
    "contrast": (0, 100), "saturation": (0, 100), "hue": (-0.5, 0.5)}


class DegradationConfigError(ValueError):
    """A degradation YAML file is malformed; the message names the file and the key."""


class DegradationConfig(Mapping):
    """Validated degradation settings (read-only mapping of the flat keys)."""

    def __init__(self, values: Mapping[str, Any], source: str = "<dict>"):
        self.source = source
        self._v = _validate(dict(values), source)

    def __getitem__(self, key):
        return self._v[key]

    def __iter__(self):
        return iter(self._v)

    def __len__(self):
        return len(self._v)

    @property
    def chain(self) -> str:
        return self._v["chain"]

    @property
    def kernel_pad(self) -> int:
        """Grid size of every kernel: the larger of the two blur_kernel_size values."""
        return max(int(self._v["blur_kernel_size"]), int(self._v["blur_kernel_size2"]))

    def kernel_sizes(self, which: int = 1) -> list[int]:
        """Odd sizes 7..blur_kernel_size (the release's fixed 7..21 when the key is 21)."""
        top = int(self._v["blur_kernel_size" if which == 1 else "blur_kernel_size2"])
        return list(range(min(7, top), top + 1, 2))

    def replace(self, **changes) -> "DegradationConfig":
        return DegradationConfig({**self._v, **changes}, self.source)

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in self._v.items()}

    def __repr__(self):
        return f"DegradationConfig(chain={self.chain!r}, source={self.source!r})"


def load_config(path: str | os.PathLike | Mapping | DegradationConfig | None = None,
                **overrides) -> DegradationConfig:
    """Read and validate a YAML file (None: ``config/degradation_pssr.yml``), or validate a
    mapping. ``overrides`` replace keys after loading (e.g. ``scale=2``)."""
    if isinstance(path, DegradationConfig):
        return path.replace(**overrides) if overrides else path
    if isinstance(path, Mapping):
        return DegradationConfig({**_flatten(dict(path), "<dict>"), **overrides}, "<dict>")
    p = Path(path) if path is not None else DEFAULT_CONFIG
    if not p.is_file():
        raise DegradationConfigError(f"degradation config not found: {p}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise DegradationConfigError(f"{p}: not valid YAML ({e})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise DegradationConfigError(f"{p}: the top level must be a mapping of keys to values")
    return DegradationConfig({**_flatten(data, str(p)), **overrides}, str(p))


def _flatten(data: dict, source: str) -> dict:
    out = {}
    for k, v in data.items():
        if k == "kernel_info":
            if not isinstance(v, dict):
                raise DegradationConfigError(f"{source}: 'kernel_info' must be a mapping")
            for kk, vv in v.items():
                if kk in data:
                    raise DegradationConfigError(
                        f"{source}: '{kk}' is given both at the top level and under kernel_info")
                out[kk] = vv
        else:
            out[k] = v
    return out


def _fail(source, key, msg):
    raise DegradationConfigError(f"{source}: '{key}' {msg}")


def _number(source, key, v):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        _fail(source, key, f"must be a number, got {v!r}")
    return v


def _validate(v: dict, source: str) -> dict:
    unknown = [k for k in v if k not in DEFAULTS]
    if unknown:
        hints = []
        for k in unknown:
            close = difflib.get_close_matches(str(k), DEFAULTS, n=1)
            hints.append(f"'{k}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
        raise DegradationConfigError(f"{source}: unknown key(s) {', '.join(hints)}")
    out = {**DEFAULTS, **v}
    if out["chain"] not in CHAINS:
        _fail(source, "chain", f"must be one of {CHAINS}, got {out['chain']!r}")
    for k in _PROB:
        p = _number(source, k, out[k])
        if not 0 <= p <= 1:
            _fail(source, k, f"is a probability and must lie in [0, 1], got {p}")
    for k, (lo, hi) in _RANGES.items():
        r = out[k]
        if not isinstance(r, (list, tuple)) or len(r) != 2:
            _fail(source, k, f"must be a [low, high] pair, got {r!r}")
        a, b = _number(source, k, r[0]), _number(source, k, r[1])
        if a > b:
            _fail(source, k, f"low {a} is larger than high {b}")
        if a < lo or b > hi:
            _fail(source, k, f"must lie within [{lo}, {hi}], got {list(r)}")
        out[k] = [float(a), float(b)]
    for k in ("resize_prob", "resize_prob2"):
        _prob_list(source, k, out[k], 3)
    for suffix in ("", "2"):
        kl, kp = out["kernel_list" + suffix], out["kernel_prob" + suffix]
        if not isinstance(kl, (list, tuple)) or not kl:
            _fail(source, "kernel_list" + suffix, "must be a non-empty list of kernel families")
        for name in kl:
            if name not in FAMILIES:
                _fail(source, "kernel_list" + suffix,
                      f"has an unknown family {name!r}; choose from {list(FAMILIES)}")
        _prob_list(source, "kernel_prob" + suffix, kp, len(kl))
        size = out["blur_kernel_size" + suffix]
        if isinstance(size, bool) or not isinstance(size, int) or size % 2 == 0 or not 7 <= size <= 51:
            _fail(source, "blur_kernel_size" + suffix, f"must be an odd integer in 7..51, got {size!r}")
        for k in ("betag_range", "betap_range"):
            if out[k + suffix][1] < 1:
                _fail(source, k + suffix, "high end must be >= 1 (β is drawn below and above 1)")
            if out[k + suffix][0] > 1:
                _fail(source, k + suffix, "low end must be <= 1 (β is drawn below and above 1)")
    scale = out["scale"]
    if isinstance(scale, bool) or not isinstance(scale, int) or not 1 <= scale <= 16:
        _fail(source, "scale", f"must be an integer in 1..16, got {scale!r}")
    modes = out["interp_modes"]
    if not isinstance(modes, (list, tuple)) or not modes or any(m not in INTERP_MODES for m in modes):
        _fail(source, "interp_modes", f"must be a non-empty list from {list(INTERP_MODES)}, "
                                      f"got {modes!r}")
    if out["jpeg_pad"] not in ("zero", "replicate"):
        _fail(source, "jpeg_pad", f"must be 'zero' or 'replicate', got {out['jpeg_pad']!r}")
    if not isinstance(out["gray_noise_shared"], bool):
        _fail(source, "gray_noise_shared", f"must be true or false, got {out['gray_noise_shared']!r}")
    if out["chain"] == "pssr":
        ignored = [k for k in PSSR_IGNORED if k in v]
        if ignored:
            log.warning("%s: chain 'pssr' runs the release's fixed path and ignores %s",
                        source, ", ".join(ignored))
    return out


def _prob_list(source, key, probs, n):
    if not isinstance(probs, (list, tuple)) or len(probs) != n:
        _fail(source, key, f"must be a list of {n} probabilities, got {probs!r}")
    vals = [_number(source, key, p) for p in probs]
    if any(p < 0 for p in vals) or abs(sum(vals) - 1) > 1e-6:
        _fail(source, key, f"must be non-negative and sum to 1, got {list(probs)} "
                           f"(sum {sum(vals):g})")
