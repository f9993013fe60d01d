"""Run a script or module the way the benchmarks start the project's scripts:

    python benchmarks/light_run.py [--full] [--peak_file PATH] [--memory_cap GIB] \
        inference_step_1.py --input_dir ...
    python benchmarks/light_run.py [--full] [--peak_file PATH] [--memory_cap GIB] -m MODULE ...

By default diffsynth's model files are imported without its package ``__init__``
(``benchmarks.common.light_diffsynth``), for GPU machines that carry only the diffsynth wheel;
``--full`` keeps diffsynth's own import. ``--peak_file PATH``: at exit the process writes its peak
GPU memory (``{"peak_gib": ..., "peak_reserved_gib": ...}``: allocated and reserved by PyTorch's
caching allocator, null without a GPU) to PATH (``PATH.<rank>`` under torchrun).
``--memory_cap GIB``: the caching allocator may hold at most GIB GiB of the GPU (a smaller card,
emulated with ``torch.cuda.set_per_process_memory_fraction``; going over raises out-of-memory).
"""
import atexit
import json
import os
import runpy
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[0] = str(ROOT)  # the repository instead of this folder: benchmarks and Wan_SR import

from benchmarks.common import light_diffsynth  # noqa: E402


def write_peak(path: str) -> None:
    """The largest ``torch.cuda.max_memory_allocated`` (and ``max_memory_reserved``) over this
    process's GPUs, in GiB."""
    peak = reserved = None
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        gpus = range(torch.cuda.device_count())
        peak = max(torch.cuda.max_memory_allocated(d) for d in gpus) / 2 ** 30
        reserved = max(torch.cuda.max_memory_reserved(d) for d in gpus) / 2 ** 30
    rank = os.environ.get("RANK")
    Path(path + (f".{rank}" if rank is not None else "")).write_text(
        json.dumps({"peak_gib": peak, "peak_reserved_gib": reserved}))


def cap_memory(gib: float) -> None:
    """Emulate a card of ``gib`` GiB: the caching allocator may hold no more."""
    device = int(os.environ.get("LOCAL_RANK") or 0)
    total = torch.cuda.get_device_properties(device).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, gib * 2 ** 30 / total), device)


def main(argv: list) -> None:
    if not argv or argv[0] in ("-h", "--help"):
        raise SystemExit(__doc__)
    light, peak_file = True, None
    cap = None
    while argv and argv[0] in ("--full", "--peak_file", "--memory_cap"):
        if argv[0] == "--full":
            light, argv = False, argv[1:]
        elif argv[0] == "--peak_file":
            peak_file, argv = argv[1], argv[2:]
        else:
            cap, argv = float(argv[1]), argv[2:]
    if light:
        light_diffsynth()
    if peak_file:
        atexit.register(write_peak, peak_file)
    if cap is not None and torch.cuda.is_available():
        cap_memory(cap)
    if argv[0] == "-m":
        sys.argv = argv[1:]
        sys.path[0] = os.getcwd()  # as `python -m` does
        runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
    else:
        sys.argv = argv
        sys.path[0] = str(Path(argv[0]).resolve().parent)  # as `python SCRIPT` does
        runpy.run_path(argv[0], run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
