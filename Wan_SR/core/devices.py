"""Device and dtype names used by every script."""
from __future__ import annotations

DTYPES = ("bfloat16", "float16", "float32")
_ALIASES = {"bf16": "bfloat16", "fp16": "float16", "half": "float16", "fp32": "float32",
            "float": "float32"}


class DeviceError(ValueError):
    """A device was asked for that this machine does not have."""


def resolve_device(device=None):
    """``None``/``auto`` -> cuda if available else cpu; ``cuda``/``cuda:N`` checked to exist."""
    import torch

    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
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
    import torch

    key = _ALIASES.get(name, name)
    if key not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; choose from {list(DTYPES)}")
    return getattr(torch, key)
