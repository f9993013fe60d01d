"""The conformance fixture run in bfloat16 (on the GPU when present) against the float32
reference outputs: shows the bf16 path works and how far bf16 noise moves the results."""
import sys

import torch

from common import ROOT, environment, write_json

sys.path.insert(0, str(ROOT / "tests"))


def main(out):
    from conftest import CONFORMANCE
    from Wan_SR.models.draft import load_draft, select_blocks
    from Wan_SR.models.lora import load_base_checkpoint
    from Wan_SR.models.wan import load_dit, load_safetensors
    from Wan_SR.sampling.speculative import base_step, draft_steps
    from Wan_SR.sampling.timeline import FlowTimeline

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    exp, _ = load_safetensors(CONFORMANCE / "expected.safetensors")
    res = {"env": environment(dev), "max_abs_diff_vs_float32_reference": {}}
    for dt in (torch.float32, torch.bfloat16):
        dit = load_dit(CONFORMANCE / "dependent_models/Wan2.1-T2V-1.3B/diffusion_pytorch_model.safetensors",
                       num_heads=2)
        load_base_checkpoint(dit, CONFORMANCE / "checkpoints/pretrained_models/base.safetensors")
        dit.to(dev, dt)
        draft = load_draft(CONFORMANCE / "checkpoints/pretrained_models/draft.safetensors", 1.5,
                           len(dit.blocks), num_heads=2, dtype=dt, device=dev)
        tl = FlowTimeline()
        z, c = exp["z_l"].to(dev, dt), exp["context"].to(dev, dt)
        with torch.no_grad():
            b = base_step(dit, z, c, tl, record_blocks=select_blocks(6, 1.5))
            x0s, _ = draft_steps(draft, b.z_next, z, c, b.features, tl)
        got = {"x0_base": b.x0, "x0_draft_3": x0s[-1]}
        res["max_abs_diff_vs_float32_reference"][str(dt)] = {
            k: (v.float().cpu() - exp[k]).abs().max().item() for k, v in got.items()}
    write_json(res, out)


if __name__ == "__main__":
    main(sys.argv[1])
