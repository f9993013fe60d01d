"""How far does bfloat16 move step 1's latents? The conformance fixture (tests/fixtures/conformance:
tiny models, one window) run in float32 and in bfloat16, on the GPU when there is one, against its
float32 reference outputs: the largest difference of the base x0 and of the last draft x0.

The fixture is already tiny: ``--quick`` changes nothing, and there is nothing to time.

    python benchmarks/inference/bf16_conformance.py
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository
from benchmarks import wan_sr as ws  # noqa: E402
from benchmarks.common import ROOT, default_device, parse, parser, record, save  # noqa: E402

NAME = "inference/bf16_conformance"
FIXTURE = ROOT / "tests" / "fixtures" / "conformance"


def latents(dtype, device, expected: dict) -> dict:
    """The base x0 and the last draft x0 of the fixture's window in ``dtype``."""
    wan = FIXTURE / "dependent_models" / "Wan2.1-T2V-1.3B"
    dit = ws.load_dit(wan / "diffusion_pytorch_model.safetensors", num_heads=2)
    ws.load_base_checkpoint(dit, FIXTURE / "checkpoints/pretrained_models/base.safetensors")
    dit.to(device, dtype)
    draft = ws.load_draft(FIXTURE / "checkpoints/pretrained_models/draft.safetensors", 1.5,
                          len(dit.blocks), num_heads=2, dtype=dtype, device=device)
    tl = ws.FlowTimeline()
    z, c = expected["z_l"].to(device, dtype), expected["context"].to(device, dtype)
    with torch.no_grad():
        b = ws.base_step(dit, z, c, tl, record_blocks=ws.select_blocks(6, 1.5))
        x0s, _ = ws.draft_steps(draft, b.z_next, z, c, b.features, tl)
    return {"x0_base": b.x0, "x0_draft_3": x0s[-1]}


def main(argv=None):
    p = parser(__doc__, repeats=1, unit="none: nothing is timed", quick="no change (already tiny)")
    args = parse(p, argv)
    device = default_device()
    expected, _ = ws.load_safetensors(FIXTURE / "expected.safetensors")
    res = record(args, device)
    res["max_abs_diff_vs_float32_reference"] = {
        str(dt): {k: (v.float().cpu() - expected[k]).abs().max().item()
                  for k, v in latents(dt, device, expected).items()}
        for dt in (torch.float32, torch.bfloat16)}
    return save(res, args, NAME)


if __name__ == "__main__":
    main()
