"""Where PS-SR keeps what it computes once and reuses across runs (README, "Caches"):

    $PSSR_CACHE_DIR (default ~/.cache/ps_sr)/
        prompt_embeddings/   umT5 embeddings of prompts (models/text.py)
        triton/              compiled Triton kernels (the fast VAE path, torch.compile)
        inductor/            torch.compile's graphs and autotuning results

so a second process starts at full speed. A user's own ``TRITON_CACHE_DIR`` or
``TORCHINDUCTOR_CACHE_DIR`` wins. Deleting the folder is always safe (it is rebuilt).
"""
from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    base = os.environ.get("PSSR_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "ps_sr")
    return Path(base)


def configure_compile_caches() -> dict:
    """Point Triton's and inductor's on-disk caches into :func:`cache_root` unless already set.
    Call before the first compile. Returns the folders in use."""
    root = cache_root()
    for var, sub in (("TRITON_CACHE_DIR", "triton"), ("TORCHINDUCTOR_CACHE_DIR", "inductor")):
        if not os.environ.get(var):
            os.environ[var] = str(root / sub)
    return {v: os.environ[v] for v in ("TRITON_CACHE_DIR", "TORCHINDUCTOR_CACHE_DIR")}
