"""Shared fixtures: tiny random checkpoints in the official layouts, written once per session."""
import os
import sys
import warnings
from pathlib import Path

# MKL's matrix products round differently depending on how their buffers are aligned in memory;
# its "conditional numerical reproducibility" mode makes them independent of it, so two runs of
# the same computation (one process, or several) give the same bits. The tests that compare
# training runs need it: Adam turns a last-bit difference in a near-zero gradient into a
# visible weight difference. Set before torch calls MKL; child processes inherit it.
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
FIXTURES = Path(__file__).resolve().parent / "fixtures"
CONFORMANCE = FIXTURES / "conformance"
warnings.filterwarnings("ignore", message=".*pynvml.*")


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory):
    """Root folder holding dependent_models/ and checkpoints/ with tiny random weights."""
    from Wan_SR.tools.make_tiny_checkpoints import make_checkpoints

    root = tmp_path_factory.mktemp("tiny")
    make_checkpoints(root, "tiny", seed=0, log=lambda *a: None)
    return root


@pytest.fixture(scope="session")
def tiny_paths(tiny_root):
    wan = tiny_root / "dependent_models" / "Wan2.1-T2V-1.3B"
    ck = tiny_root / "checkpoints" / "pretrained_models"
    return dict(wan_dir=wan, dit=wan / "diffusion_pytorch_model.safetensors",
                vae=wan / "Wan2.1_VAE.pth", t5=wan / "models_t5_umt5-xxl-enc-bf16.pth",
                tokenizer=wan / "google" / "umt5-xxl", base=ck / "base.safetensors",
                draft=ck / "draft.safetensors")


@pytest.fixture(scope="session")
def pipe(tiny_paths, tmp_path_factory):
    """A float32 CPU PSSRPipeline on the tiny checkpoints, loaded through the public loader."""
    import torch

    from Wan_SR.models.wan import resolve_wan_files
    from Wan_SR.sampling.pipeline import PSSRPipeline, SamplingConfig

    files = resolve_wan_files(str(tiny_paths["wan_dir"]))
    return PSSRPipeline.from_files(
        files, tiny_paths["base"], tiny_paths["draft"], prompt="a test prompt",
        negative_prompt="bad", config=SamplingConfig(), device="cpu", dtype=torch.float32,
        cache_dir=str(tmp_path_factory.mktemp("pcache")))


@pytest.fixture(autouse=True)
def _isolated_prompt_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PSSR_CACHE_DIR", str(tmp_path / "cache"))
