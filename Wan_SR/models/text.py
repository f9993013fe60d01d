"""Prompt embedding with an on-disk cache (docs/method.md, "Prompt").

The umT5-xxl encoder is 11 GB; a run whose prompts are cached never constructs it. The cache key
is the prompt text plus a content fingerprint of the encoder file (its size and a hash of three
1 MiB samples at its start, middle and end), so another encoder file, even of the same size and
path, gives a different entry.
"""
from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Optional

import torch
from safetensors.torch import load_file

from Wan_SR.core.caches import cache_root
from Wan_SR.core.files import save_safetensors_atomic
from . import wan
from .offload import stream_text_encoder


def default_cache_dir() -> Path:
    return cache_root() / "prompt_embeddings"


_SAMPLE = 1 << 20


def file_fingerprint(path: str | os.PathLike) -> str:
    """Size + sha256 of up to three 1 MiB samples (start, middle, end): cheap on an 11 GB file,
    and different for files that differ in their bytes there."""
    p = Path(path)
    if not p.exists():
        return "absent"
    if p.is_dir():  # a tokenizer-like folder: names and sizes
        items = sorted((str(f.relative_to(p)), f.stat().st_size) for f in p.rglob("*") if f.is_file())
        return hashlib.sha256(repr(items).encode()).hexdigest()[:32]
    size = p.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with open(p, "rb") as f:
        for off in sorted({0, max(0, size // 2 - _SAMPLE // 2), max(0, size - _SAMPLE)}):
            f.seek(off)
            h.update(f.read(_SAMPLE))
    return h.hexdigest()[:32]


def cache_key(prompt: str, encoder_path: str | os.PathLike,
              fingerprint: Optional[str] = None) -> str:
    fp = fingerprint or file_fingerprint(encoder_path)
    return hashlib.sha256(f"{prompt}\0{fp}".encode("utf-8")).hexdigest()[:32]


class PromptEncoder:
    """``encode(prompt) -> (1, L, D)`` text context, cached on disk.

    The tokenizer and encoder are loaded on the first cache miss only. With ``offload`` (on a
    GPU) the encoder waits in pinned host memory and streams through the GPU block by block for
    each encode (:func:`Wan_SR.models.offload.stream_text_encoder`: under 1 GB of the GPU
    instead of 11); ``seconds`` sums the time spent encoding (cache misses).
    """

    def __init__(self, t5_path: str | os.PathLike, tokenizer_dir: str | os.PathLike,
                 cache_dir: Optional[str | os.PathLike] = None, device="cpu",
                 dtype=torch.bfloat16, offload: bool = False):
        self.t5_path = Path(t5_path)
        self.tokenizer_dir = Path(tokenizer_dir)
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.device, self.dtype = torch.device(device), dtype
        self.offload = offload and self.device.type != "cpu"
        self._prompter = None
        self.stream = None  # the encoder's BlockStream with offload, once loaded
        self._fingerprint: Optional[str] = None
        self.encoder_loads = 0
        self.encodes = 0
        self.seconds = 0.0

    def cache_path(self, prompt: str) -> Path:
        if self._fingerprint is None:  # the file is read once per encoder, not per prompt
            self._fingerprint = file_fingerprint(self.t5_path)
        return self.cache_dir / f"{cache_key(prompt, self.t5_path, self._fingerprint)}.safetensors"

    def _load(self):
        prompter = wan.load_prompter(self.tokenizer_dir)
        where = "cpu" if self.offload else self.device
        encoder = wan.load_text_encoder(self.t5_path, dtype=self.dtype, device=where)
        if self.offload:
            self.stream = stream_text_encoder(encoder, self.device)
        prompter.fetch_models(encoder)
        self._prompter = prompter
        self.encoder_loads += 1

    def encode(self, prompt: str) -> torch.Tensor:
        path = self.cache_path(prompt)
        if path.exists():
            return load_file(str(path))["context"]
        if self._prompter is None:
            self._load()
        t0 = time.perf_counter()
        with torch.no_grad():
            ctx = self._prompter.encode_prompt(prompt, positive=True, device=self.device)
        if self.stream is not None:  # its slots leave the GPU to the DiTs and the VAE
            self.stream.release()
        ctx = ctx.detach().to("cpu").contiguous()
        self.encodes += 1
        self.seconds += time.perf_counter() - t0
        save_safetensors_atomic(path, {"context": ctx},
                                metadata={"prompt": prompt, "encoder": str(self.t5_path.resolve())})
        return ctx

    def release(self):
        """Free the encoder (after all prompts of a run are encoded)."""
        self._prompter = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def store_cached_context(prompt: str, encoder_path, context: torch.Tensor,
                         cache_dir: Optional[str | os.PathLike] = None) -> Path:
    """Write a cache entry directly (used by the checkpoint factory for real-size benchmarks)."""
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    path = cache_dir / f"{cache_key(prompt, encoder_path)}.safetensors"
    return save_safetensors_atomic(path, {"context": context}, metadata={"prompt": prompt})
