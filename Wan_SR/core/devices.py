"""Device and dtype names used by every script."""
from __future__ import annotations

import os

import torch

DTYPES = ("bfloat16", "float16", "float32")
_ALIASES = {"bf16": "bfloat16", "fp16": "float16", "half": "float16", "fp32": "float32",
            "float": "float32"}


class DeviceError(ValueError):
    """A device was asked for that this machine does not have."""


def resolve_device(device=None):
    """``None``/``auto`` -> cuda if available else cpu; ``cuda``/``cuda:N`` checked to exist.

    Under several processes (``WORLD_SIZE`` > 1, set by torchrun / accelerate launch) ``None``,
    ``auto`` and ``cuda`` mean this process's GPU, ``cuda:LOCAL_RANK``. ``ACCELERATE_USE_CPU``
    (``accelerate launch --cpu``) makes ``None``/``auto`` the CPU."""
    several = int(os.environ.get("WORLD_SIZE") or 1) > 1
    if device in (None, "", "auto") or (several and device == "cuda"):
        if os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes"):
            return torch.device("cpu")
        if not torch.cuda.is_available():
            if device == "cuda":
                raise DeviceError("--device cuda: no CUDA GPU is available on this machine "
                                  "(use --device cpu)")
            return torch.device("cpu")
        if several:
            local = int(os.environ.get("LOCAL_RANK") or 0)
            return torch.device("cuda", local % torch.cuda.device_count())
        return torch.device("cuda")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise DeviceError(f"unknown device {device!r} ({e})") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"--device {device}: no CUDA GPU is available on this machine "
                              "(use --device cpu)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(f"--device {device}: only {torch.cuda.device_count()} GPU(s)")
    return dev


def parse_dtype(name: str):
    key = _ALIASES.get(name, name)
    if key not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; choose from {list(DTYPES)}")
    return getattr(torch, key)
