"""Running the project's scripts in child processes, for the benchmarks that time a whole command
(``inference/e2e.py``, ``training/trainers.py``): how a script is started (through
``benchmarks/light_run.py``, with torchrun for several processes), random checkpoints of the real
or tiny sizes from the checkpoint factory, one timed run with the peak GPU memory of each of its
processes, and a small clip made from a folder of clips.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from benchmarks import wan_sr as ws
from benchmarks.common import ROOT

LIGHT_RUN = ROOT / "benchmarks" / "light_run.py"
FACTORY = "Wan_SR.tools.make_tiny_checkpoints"  # the checkpoint factory's `python -m` module


@dataclass(frozen=True)
class RunResult:
    """One child run: its exit status, wall seconds, output and the peak GPU memory (GiB) of
    each of its processes (None off the GPU)."""
    returncode: int
    wall_s: float
    log: str
    peaks: list
    reserved: tuple = ()
    gpu_samples: Optional[dict] = None

    def summary(self) -> dict:
        known = [p for p in self.peaks if p is not None]
        held = [p for p in self.reserved if p is not None]
        out = {"returncode": self.returncode, "wall_s_including_model_load": self.wall_s,
               "peak_gib": max(known) if known else None, "peak_gib_per_process": self.peaks,
               "peak_reserved_gib": max(held) if held else None,
               "log_tail": self.log[-1500:]}
        if self.gpu_samples:
            out["gpu_samples"] = self.gpu_samples
        return out


GPU_QUERY = ("clocks.sm", "power.draw", "temperature.gpu", "utilization.gpu")


class GpuSampler:
    """The first GPU's SM clock (MHz), power (W), temperature (C) and utilisation (%) once a
    second while a child runs (``nvidia-smi``; nothing where it is missing): is a slower step the
    GPU's clock or the work?"""

    def __init__(self, path: Path):
        self.path, self.proc = path, None

    def __enter__(self):
        if shutil.which("nvidia-smi"):
            self.file = open(self.path, "w")
            self.proc = subprocess.Popen(
                ["nvidia-smi", "-i", "0", f"--query-gpu={','.join(GPU_QUERY)}",
                 "--format=csv,noheader,nounits", "-lms", "1000"],
                stdout=self.file, stderr=subprocess.DEVNULL)
        return self

    def __exit__(self, *exc):
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait()
            self.file.close()

    def samples(self) -> Optional[dict]:
        """``{quantity: [one value per second]}``, or None."""
        if self.proc is None:
            return None
        rows = []
        for line in self.path.read_text().splitlines():
            try:
                rows.append([round(float(v)) for v in line.split(",")])
            except ValueError:
                continue
        return {q: [r[i] for r in rows if len(r) == len(GPU_QUERY)]
                for i, q in enumerate(GPU_QUERY)} if rows else None


@dataclass(frozen=True)
class Launch:
    """How a benchmark starts the project's scripts: ``light`` (diffsynth's light import in the
    children), their environment (caches under ``work``; the CPU with ``quick``), and the random
    checkpoints under ``root``."""
    work: Path
    root: Path
    env: dict
    light: bool

    @property
    def wan_dir(self) -> Path:
        return ws.wan_folder(self.root)

    @property
    def base_checkpoint(self) -> Path:
        return ws.checkpoint_folder(self.root) / "base.safetensors"

    @property
    def draft_checkpoint(self) -> Path:
        return ws.checkpoint_folder(self.root) / "draft.safetensors"

    def command(self, script: list, processes: int = 1, peak_file: Optional[Path] = None,
                memory_cap: Optional[float] = None) -> list:
        """``python [-m torch.distributed.run --nproc_per_node N] benchmarks/light_run.py ...
        script...``."""
        dist = ["-m", "torch.distributed.run", "--nproc_per_node", str(processes)] \
            if processes > 1 else []
        return [sys.executable, *dist, str(LIGHT_RUN), *([] if self.light else ["--full"]),
                *(["--peak_file", str(peak_file)] if peak_file else []),
                *(["--memory_cap", str(memory_cap)] if memory_cap else []), *map(str, script)]

    def run(self, script: list, processes: int = 1, memory_cap: Optional[float] = None,
            timeout: Optional[float] = None, **env) -> RunResult:
        """Run ``script`` (a project script and its arguments) and wait for it (at most
        ``timeout`` seconds: then the return code is -9); ``memory_cap``: GiB the caching
        allocator may hold (a smaller card)."""
        peak = self.work / "peak"
        for old in self.work.glob("peak*"):
            old.unlink()
        t0 = time.perf_counter()
        with GpuSampler(self.work / "gpu_samples.csv") as gpu:
            try:
                r = subprocess.run(self.command(script, processes, peak, memory_cap),
                                   capture_output=True, text=True, cwd=ROOT, timeout=timeout,
                                   env=dict(self.env, **env))
                code, log = r.returncode, r.stdout + r.stderr
            except subprocess.TimeoutExpired as e:
                code, log = -9, (e.stdout or b"").decode(errors="replace") + "\n(timed out)"
        wall = time.perf_counter() - t0
        return RunResult(code, wall, log, read_peaks(peak, processes),
                         tuple(read_peaks(peak, processes, "peak_reserved_gib")),
                         gpu.samples())


def read_peaks(prefix: Path, processes: int, key: str = "peak_gib") -> list:
    """The peaks ``light_run.py --peak_file`` wrote (one per process; None where none was);
    ``key`` ``peak_reserved_gib``: the reserved memory's."""
    names = [prefix] if processes == 1 else [Path(f"{prefix}.{r}") for r in range(processes)]
    return [json.loads(p.read_text()).get(key) if p.exists() else None for p in names]


def prepare(work, quick: bool, light: bool, tags: bool = False) -> Launch:
    """The children's set-up under ``work``: their environment, and random checkpoints of the real
    sizes (tiny with ``quick``, then everything on the CPU) written once by the factory; with
    ``tags`` also the RAM tagger and the real-size text encoder (11 GB), in their own folder."""
    if quick and light:
        raise SystemExit("--quick with --light: the tiny checkpoints carry a text encoder whose "
                         "tokenizer needs diffsynth's full import; run --quick without --light")
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    size = "tiny" if quick else "real"
    env = dict(os.environ, PSSR_CACHE_DIR=str(work / "cache"), PYTHONUNBUFFERED="1")
    if quick:
        env.update(CUDA_VISIBLE_DEVICES="", ACCELERATE_USE_CPU="true")
    launch = Launch(work, work / f"checkpoints_{size}{'_tags' if tags else ''}", env, light)
    if not launch.draft_checkpoint.exists():
        extra = ["--text_encoder"] if tags and not quick else [] if tags else ["--no_ram"]
        r = launch.run(["-m", FACTORY, "--out", launch.root, "--size", size, *extra])
        if r.returncode:
            raise RuntimeError(f"the checkpoint factory failed:\n{r.log[-3000:]}")
    return launch


def fresh(folder: Path) -> Path:
    """``folder``, emptied (the scripts skip outputs that are already complete)."""
    shutil.rmtree(folder, ignore_errors=True)
    return folder


def clip_from_folder(src: Path, out: Path, frames: Optional[int] = None, stride: int = 1,
                     fps: int = 30) -> Path:
    """One clip of the first ``frames`` frames (all with None) of the clips of ``src`` played one
    after the other (sorted by name), every ``stride``-th row and column kept."""
    got = []
    for path in sorted(Path(src).glob("*.mp4")):
        for chunk in ws.iter_frames(path):
            got.extend(f[::stride, ::stride] for f in chunk)
            if frames and len(got) >= frames:
                break
        if frames and len(got) >= frames:
            break
    out.parent.mkdir(parents=True, exist_ok=True)
    ws.write_video(out, np.stack(got[:frames] if frames else got), fps=fps)
    return out
