"""Seam for the RAM + DAPE image tagger (docs/method.md, "Prompt").

The published pipeline appends tags of one frame to the prompt (``f"{prompt}, {tags}"``). The
tagger itself is not implemented yet: :func:`load_tagger` says once why the prompt is used alone
and returns ``None``; a future tagger returns an object with ``tags(frame_uint8) -> str``.
"""
from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)


def load_tagger(ram_path, dape_path):
    missing = [str(p) for p in (ram_path, dape_path) if not p or not Path(p).exists()]
    if missing:
        log.info("RAM/DAPE tagger weights not found (%s): using the prompt alone", ", ".join(missing))
    else:
        log.info("RAM/DAPE tagging is not implemented in this version: using the prompt alone")
    return None


def prompt_with_tags(prompt: str, tags: str | None) -> str:
    return f"{prompt}, {tags}" if tags else prompt
