"""Prompt embedding with an on-disk cache (SPEC §5).

The umT5-xxl encoder is 11 GB; a run whose prompts are cached never constructs it. The cache key
is the prompt text plus the encoder file's absolute path and size, so a different encoder file
gives a different entry.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Optional

import torch


def default_cache_dir() -> Path:
    base = os.environ.get("PSSR_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "ps_sr")
    return Path(base) / "prompt_embeddings"


def cache_key(prompt: str, encoder_path: str | os.PathLike) -> str:
    p = Path(encoder_path).resolve()
    size = p.stat().st_size if p.exists() else -1
    h = hashlib.sha256(f"{prompt}\0{p}\0{size}".encode("utf-8")).hexdigest()
    return h[:32]


class PromptEncoder:
    """``encode(prompt) -> (1, L, D)`` text context, cached on disk.

    The tokenizer and encoder are loaded on the first cache miss only.
    """

    def __init__(self, t5_path: str | os.PathLike, tokenizer_dir: str | os.PathLike,
                 cache_dir: Optional[str | os.PathLike] = None, device="cpu",
                 dtype=torch.bfloat16):
        self.t5_path = Path(t5_path)
        self.tokenizer_dir = Path(tokenizer_dir)
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.device, self.dtype = device, dtype
        self._prompter = None
        self.encoder_loads = 0

    def cache_path(self, prompt: str) -> Path:
        return self.cache_dir / f"{cache_key(prompt, self.t5_path)}.safetensors"

    def _load(self):
        from .wan import load_prompter, load_text_encoder

        prompter = load_prompter(self.tokenizer_dir)
        prompter.fetch_models(load_text_encoder(self.t5_path, dtype=self.dtype, device=self.device))
        self._prompter = prompter
        self.encoder_loads += 1

    def encode(self, prompt: str) -> torch.Tensor:
        from safetensors.torch import load_file, save_file

        path = self.cache_path(prompt)
        if path.exists():
            return load_file(str(path))["context"]
        if self._prompter is None:
            self._load()
        with torch.no_grad():
            ctx = self._prompter.encode_prompt(prompt, positive=True, device=self.device)
        ctx = ctx.detach().to("cpu").contiguous()
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.partial")
        save_file({"context": ctx}, str(tmp), metadata={"prompt": prompt,
                                                         "encoder": str(self.t5_path.resolve())})
        os.replace(tmp, path)
        return ctx

    def release(self):
        """Free the encoder (after all prompts of a run are encoded)."""
        self._prompter = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def store_cached_context(prompt: str, encoder_path, context: torch.Tensor,
                         cache_dir: Optional[str | os.PathLike] = None) -> Path:
    """Write a cache entry directly (used by the checkpoint factory for real-size benchmarks)."""
    from safetensors.torch import save_file

    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"{cache_key(prompt, encoder_path)}.safetensors"
    save_file({"context": context.contiguous()}, str(path), metadata={"prompt": prompt})
    return path
