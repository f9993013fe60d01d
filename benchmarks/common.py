"""Helpers shared by the benchmark scripts: real-size random models built on the GPU, timers."""
from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Optional

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timeit(fn, device, repeats=5, warmup=2):
    """Median wall seconds of ``fn()`` (synchronised), after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    sync(device)
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        ts.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(ts), "min_s": min(ts), "runs": [round(t, 4) for t in ts]}


def build_models(size="real", device="cuda", dtype=torch.bfloat16, k_select=1.5, seed=0):
    """Random-weight base DiT (widened), draft and VAE with the real Wan2.1-1.3B shapes."""
    from diffsynth.models.wan_video_dit import WanModel
    from diffsynth.models.wan_video_vae import VideoVAE_, WanVideoVAE

    from Wan_SR.models.draft import build_draft
    from Wan_SR.models.wan import widen_patch_embedding
    from Wan_SR.testing.checkpoints import REAL_DIT, REAL_VAE, TINY_DIT, TINY_VAE

    torch.manual_seed(seed)
    dcfg = dict(REAL_DIT if size == "real" else TINY_DIT)
    with torch.device(device):
        base = WanModel(**dcfg)
        vae = WanVideoVAE(z_dim=16)
        vae.model = VideoVAE_(**(REAL_VAE if size == "real" else TINY_VAE))
    base.config = dcfg
    widen_patch_embedding(base, 32)
    with torch.no_grad():  # keep random-weight activations in a sane range
        for blk in base.blocks:
            blk.modulation.mul_(0.1)
    base = base.to(dtype).eval().requires_grad_(False)
    draft = build_draft(base, k_select).to(dtype).eval().requires_grad_(False)
    vae = vae.to(dtype).eval().requires_grad_(False)
    context = torch.randn(1, 512, dcfg["text_dim"], device=device, dtype=dtype)
    return base, draft, vae, context


def dit_flops(tokens: int, ctx_len: int, dim: int, ffn: int, blocks: int) -> float:
    """Matmul FLOPs of one DiT forward (2 per multiply-add): projections, FFN, attention."""
    per = (4 * tokens * dim * dim * 2            # self-attn q,k,v,o
           + 2 * tokens * dim * dim * 2          # cross-attn q,o
           + 2 * ctx_len * dim * dim * 2         # cross-attn k,v on the text
           + 2 * tokens * dim * ffn * 2          # ffn
           + 2 * tokens * tokens * dim * 2       # self-attention QK^T and AV
           + 2 * tokens * ctx_len * dim * 2)     # cross-attention
    return per * blocks


def environment(device) -> dict:
    d = torch.device(device)
    return {"device": torch.cuda.get_device_name(d) if d.type == "cuda" else platform.processor() or "cpu",
            "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
            "cudnn": torch.backends.cudnn.version() if d.type == "cuda" else None,
            "date": time.strftime("%Y-%m-%d %H:%M:%S")}


def write_json(obj, path):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".partial")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)
    print(json.dumps(obj, indent=2))


def light_diffsynth():
    """Import diffsynth's model files without its package ``__init__`` (which pulls in
    transformers, modelscope and every pipeline): enough for the DiT, VAE and umT5 classes, so
    GPU machines need only the diffsynth wheel itself."""
    import importlib.util
    import types

    if "diffsynth" in sys.modules:
        return
    spec = importlib.util.find_spec("diffsynth")
    if spec is None:
        raise ImportError("diffsynth is not installed")
    root = os.path.dirname(spec.origin)
    for name, path in (("diffsynth", root), ("diffsynth.models", os.path.join(root, "models"))):
        mod = types.ModuleType(name)
        mod.__path__ = [path]
        mod.__file__ = os.path.join(path, "__init__.py")
        sys.modules[name] = mod


def results_path(name: str, env: dict, quick: bool = False) -> Path:
    """``benchmarks/results/<name>_<gpu>.json`` (``h200``/``h100`` or the device name)."""
    import re

    tag = re.sub(r"[^a-z0-9]+", "_", env["device"].lower()).strip("_")
    tag = "h200" if "h200" in tag else "h100" if "h100" in tag else tag
    return ROOT / "benchmarks" / "results" / f"{name}_{tag}{'_quick' if quick else ''}.json"


def script_launcher(light: bool) -> list:
    """``[python]`` or ``[python, benchmarks/light_run.py]``: how the benchmarks start a script."""
    return [sys.executable] + ([str(ROOT / "benchmarks" / "light_run.py")] if light else [])


def ensure_checkpoints(work: Path, size: str, light: bool, env: dict) -> Optional[float]:
    """Random checkpoints in the official layouts under ``work`` (once; no RAM files): the
    factory's seconds, or None when they were already there."""
    import subprocess

    if (Path(work) / "checkpoints/pretrained_models/draft.safetensors").exists():
        return None
    t0 = time.perf_counter()
    subprocess.run(script_launcher(light) + ["-m", "Wan_SR.tools.make_tiny_checkpoints", "--out",
                                             str(work), "--size", size, "--no_ram"],
                   check=True, cwd=ROOT, env=env)
    return time.perf_counter() - t0


def script_runs(work, size: str, light: bool):
    """For benchmarks that run the project's scripts in child processes: diffsynth's light
    import here when ``light``, the children's environment (caches under ``work``), the
    launcher arguments that go before a script, and the random checkpoints under ``work``.
    Returns ``(work, env, launcher)``."""
    import os

    if light:
        light_diffsynth()
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PSSR_CACHE_DIR=str(work / "cache"), PYTHONUNBUFFERED="1")
    ensure_checkpoints(work, size, light, env)
    return work, env, script_launcher(light)[1:]
