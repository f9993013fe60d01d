"""Atomic file writes: a file appears under its final name complete, or not at all."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Iterator

from safetensors.torch import save_file

PARTIAL_TAG = ".partial"


def partial_name(path: str | os.PathLike, suffix: str | None = None) -> Path:
    """Hidden temporary name beside ``path``: ``.<name>.<pid>.partial<suffix>``.

    ``suffix`` (default: the file's own suffix) keeps tools that choose a format by extension
    working (ffmpeg, cv2)."""
    p = Path(path)
    suffix = p.suffix if suffix is None else suffix
    return p.with_name(f".{p.stem}.{os.getpid()}{PARTIAL_TAG}{suffix}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` when the block ends
    without error, remove it otherwise::

        with atomic_path(out) as tmp:
            save_file(sd, str(tmp))
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_name(path, suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json_atomic(path: str | os.PathLike, obj, indent: int = 2) -> Path:
    return write_text_atomic(path, json.dumps(obj, indent=indent, sort_keys=False) + "\n")


def file_sha256(path: str | os.PathLike, block: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes, read ``block`` bytes at a time."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(block), b""):
            h.update(chunk)
    return h.hexdigest()


def save_safetensors_atomic(path: str | os.PathLike, state_dict: dict, metadata: dict | None = None
                            ) -> Path:
    """``safetensors.torch.save_file`` through a temporary name (tensors made contiguous)."""
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in state_dict.items()}, str(tmp), metadata=metadata)
    return Path(path)


def remove_stale_partials(folder: str | os.PathLike) -> list[Path]:
    """Remove ``.*.partial*`` files (and folders) left in ``folder`` by a killed run whose
    process is gone."""
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for f in folder.glob(f".*{PARTIAL_TAG}*"):
        parts = f.name.split(".")
        pid = next((int(p) for p in reversed(parts) if p.isdigit()), None)
        if pid is not None and pid != os.getpid() and _alive(pid):
            continue
        try:
            if f.is_dir():
                shutil.rmtree(f)
            else:
                f.unlink()
            removed.append(f)
        except OSError:
            pass
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
