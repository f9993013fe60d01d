"""What every benchmark shares: one parser, one result format, timers, diffsynth's light import.

The shared options mean the same in every script:

- ``--out PATH``: where the JSON result goes (default ``benchmarks/results/<folder>/<name>_<device>
  [_quick].json``, ``<device>`` ``h200``/``h100``/``cpu`` or the GPU's name);
- ``--quick``: the smallest sizes (tiny models, small clips) for a smoke run of the script; it runs
  on the CPU where there is no GPU (the benchmarks that start the project's scripts then run them
  on the CPU);
- ``--light``: the light environment of the GPU machines, which carry only the diffsynth wheel:
  diffsynth's model files are imported without its package ``__init__`` (:func:`light_diffsynth`),
  in this process and in every project script the benchmark starts. It must act before anything
  imports diffsynth, so this module applies it when it is imported (``benchmarks/wan_sr.py``
  imports it first) and :func:`parse` once more for an ``argv`` given by a caller;
- ``--repeats N``: timed repetitions of each measurement; the JSON keeps every run and the median.

Every JSON result starts with :func:`record`: the command line, the git commit, the environment
(device, torch/CUDA/cuDNN versions, CPU) and the settings; the measurements follow.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
# environment variables that change what a benchmark measures: recorded with each result
RECORDED_VARIABLES = ("CUDA_VISIBLE_DEVICES", "PSSR_VAE", "PSSR_CUDNN_BENCHMARK", "PSSR_CACHE_DIR",
                      "TRITON_CACHE_DIR", "TORCHINDUCTOR_CACHE_DIR", "ACCELERATE_USE_CPU")


# --------------------------------------------------------------------------- the shared parser

def parser(doc: str, *, repeats: int, unit: str, quick: str) -> argparse.ArgumentParser:
    """An argument parser with the four shared options (module docstring); ``unit``: what one
    repetition is in this script, ``quick``: what ``--quick`` shrinks to."""
    p = argparse.ArgumentParser(description=doc,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("shared benchmark options (benchmarks/common.py)")
    g.add_argument("--out", default=None,
                   help="JSON result path (default: "
                        "benchmarks/results/<folder>/<name>_<device>.json)")
    g.add_argument("--quick", action="store_true",
                   help=f"smallest sizes for a smoke run, CPU without a GPU: {quick}")
    g.add_argument("--light", action="store_true",
                   help="diffsynth's model files without its package __init__, here and in the "
                        "scripts started (GPU machines with only the diffsynth wheel)")
    g.add_argument("--repeats", type=int, default=repeats,
                   help=f"timed repetitions of each measurement ({unit}); the median is reported "
                        f"(default: {repeats})")
    return p


def add_clip_shape(p: argparse.ArgumentParser) -> None:
    """``--frames --height --width``: the clip or window measured (default 33x720x1280, one
    step-1 window; ``--quick`` replaces it)."""
    p.add_argument("--frames", type=int, default=33, help="frames (default: 33)")
    p.add_argument("--height", type=int, default=720, help="height (default: 720)")
    p.add_argument("--width", type=int, default=1280, help="width (default: 1280)")


def parse(p: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """Parse, then apply ``--light`` (before anything imports diffsynth)."""
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    if args.light:
        light_diffsynth()
    return args


def default_device() -> str:
    """``cuda`` when there is a GPU, else ``cpu``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


# --------------------------------------------------------------------------- the result format

def record(args: argparse.Namespace, device) -> dict:
    """The head of every JSON result: the command line, the git commit, the environment and the
    settings of this run (the measurements are added after it)."""
    return {"command": command_line(), "git": git_commit(), "env": environment(device),
            "settings": vars(args)}


def command_line() -> str:
    """This process's command line, the script relative to the repository when it lies inside."""
    script = Path(sys.argv[0]).resolve()
    shown = script.relative_to(ROOT) if script.is_relative_to(ROOT) else script
    return " ".join(["python"] + [shlex.quote(str(a)) for a in [shown] + sys.argv[1:]])


def git_commit() -> dict:
    """``{"commit", "dirty"}`` from git where the repository has its ``.git``; else the commit
    named by ``$PSSR_GIT_COMMIT`` (copies sent to GPU machines travel without ``.git``: set it
    there, e.g. ``PSSR_GIT_COMMIT=$(git rev-parse HEAD)`` where the copy was made); else None."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                                capture_output=True, text=True, check=True).stdout
        return {"commit": head, "dirty": bool(status.strip())}
    except (OSError, subprocess.CalledProcessError):
        return {"commit": os.environ.get("PSSR_GIT_COMMIT"), "dirty": None}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device) -> dict:
    """Where the numbers come from: the device, the software versions, the CPU, the variables
    of :data:`RECORDED_VARIABLES` that are set, the date."""
    d = torch.device(device)
    cuda = d.type == "cuda"
    return {"device": torch.cuda.get_device_name(d) if cuda else "cpu",
            "gpus": torch.cuda.device_count() if torch.cuda.is_available() else 0,
            "torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if cuda else None,
            "python": platform.python_version(), "cpu": cpu_name(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "variables": {k: os.environ[k] for k in RECORDED_VARIABLES if k in os.environ},
            "date": time.strftime("%Y-%m-%d %H:%M:%S")}


def results_path(name: str, env: dict, quick: bool = False) -> Path:
    """``benchmarks/results/<name>_<device>[_quick].json``; ``name`` is ``<folder>/<stem>``."""
    tag = re.sub(r"[^a-z0-9]+", "_", env["device"].lower()).strip("_")
    tag = "h200" if "h200" in tag else "h100" if "h100" in tag else tag
    return RESULTS / f"{name}_{tag}{'_quick' if quick else ''}.json"


def save(result: dict, args: argparse.Namespace, name: str) -> Path:
    """Write ``result`` (atomically) to ``--out`` or :func:`results_path`; prints it."""
    path = Path(args.out) if args.out else results_path(name, result["env"], args.quick)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".partial")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, path)
    print(json.dumps(result, indent=2))
    print(f"wrote {path}")
    return path


# --------------------------------------------------------------------------- timers

def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def summary(seconds: list) -> dict:
    """Median, minimum and every run (rounded) of a list of seconds."""
    return {"median_s": statistics.median(seconds), "min_s": min(seconds),
            "runs": [round(t, 4) for t in seconds]}


def timeit(fn, device, repeats: int = 5, warmup: int = 2) -> dict:
    """:func:`summary` of the wall seconds of ``fn()`` (synchronised), after ``warmup`` untimed
    calls."""
    for _ in range(warmup):
        fn()
    sync(device)
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        ts.append(time.perf_counter() - t0)
    return summary(ts)


def top_kernels(fn, n: int = 12) -> list:
    """The ``n`` CUDA kernels that take most of one ``fn()``'s GPU time (profiler): each with its
    milliseconds, share of the total and calls, most first."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    events = [e for e in prof.key_averages() if e.device_time_total > 0]
    total = sum(e.device_time_total for e in events) or 1.0
    events.sort(key=lambda e: -e.device_time_total)
    return [{"kernel": e.key[:120], "ms": round(e.device_time_total / 1e3, 3),
             "share": round(e.device_time_total / total, 3), "calls": e.count}
            for e in events[:n]]


def peak_gib(device) -> float | None:
    """Peak GPU memory allocated since the last reset (GiB); None off the GPU."""
    if torch.device(device).type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2 ** 30


def reset_peak(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


# --------------------------------------------------------------------------- light diffsynth

def light_diffsynth() -> None:
    """Import diffsynth's model files without its package ``__init__`` (which pulls in
    transformers, modelscope and every pipeline): enough for the DiT, VAE and umT5 classes, so
    GPU machines need only the diffsynth wheel itself. The umT5 prompter (``WanPrompter``) is
    reached without diffsynth's model manager (which needs modelscope); it needs ``ftfy``."""
    if "diffsynth" in sys.modules:
        return
    spec = importlib.util.find_spec("diffsynth")
    if spec is None:
        raise ImportError("diffsynth is not installed")
    root = os.path.dirname(spec.origin)
    for name, path in (("diffsynth", root), ("diffsynth.models", os.path.join(root, "models")),
                       ("diffsynth.prompters", os.path.join(root, "prompters"))):
        mod = types.ModuleType(name)
        mod.__path__ = [path]
        mod.__file__ = os.path.join(path, "__init__.py")
        sys.modules[name] = mod
    manager = types.ModuleType("diffsynth.models.model_manager")
    manager.ModelManager = object  # only named in the prompters' signatures
    sys.modules[manager.__name__] = manager

    def prompter(name: str):
        if name == "WanPrompter":
            return importlib.import_module("diffsynth.prompters.wan_prompter").WanPrompter
        raise AttributeError(name)

    sys.modules["diffsynth.prompters"].__getattr__ = prompter


if "--light" in sys.argv[1:]:  # before any diffsynth import: see the module docstring
    light_diffsynth()
