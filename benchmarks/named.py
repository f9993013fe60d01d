"""A benchmark script run under the name its issue gave it (the ``bench_*.py`` files here)."""
import runpy
import sys
from pathlib import Path


def run_as(script: str, *options: str) -> None:
    """Run ``script`` (relative to this folder) as ``__main__`` with ``options`` before the
    command line's own."""
    path = Path(__file__).resolve().parent / script
    sys.argv[0] = str(path)
    sys.argv[1:1] = list(options)
    runpy.run_path(str(path), run_name="__main__")
