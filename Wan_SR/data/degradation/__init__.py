"""Synthetic LQ for training and paired test sets: blur kernels, degradation operations and
the ``pssr`` / ``realesrgan`` chains on (B, T, 3, H, W) tensors, driven by a YAML file in
``config/`` (docs/method.md, "Degradation")."""
from .chains import Degradation, degrade
from .config import (DEFAULT_CONFIG, DEFAULTS, DegradationConfig, DegradationConfigError,
                     load_config)

__all__ = ["Degradation", "degrade", "DEFAULT_CONFIG", "DEFAULTS", "DegradationConfig",
           "DegradationConfigError", "load_config"]
