"""Where does a training step's encoding go? ``Inputs.encode`` (Wan_SR/training/build.py: the
HQ clip to [-1, 1], its VAE encode, the degradation, the LQ encode) on one 33x720x1280 clip,
random VAE weights of the real sizes, bf16, the published degradation config, as the trainers
run it; then each part alone (CUDA events, medians over --repeats), the VAE encode of the
trainer's input layout against a contiguous and a channels-last one (same values?), and the
kernels that take the encoding's time (profiler).

    python benchmarks/training/encode_parts.py --light
    python benchmarks/training/encode_parts.py --quick     # tiny VAE, CPU without a GPU
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository
from benchmarks import wan_sr as ws  # noqa: E402
from benchmarks.common import (add_clip_shape, parse, parser, record, save, timeit,  # noqa: E402
                               top_kernels)
from Wan_SR.data.degradation import Degradation  # noqa: E402
from Wan_SR.models.wan import vae_encode  # noqa: E402
from Wan_SR.training.build import Inputs, _to_unit, as_video  # noqa: E402

NAME = "training/encode_parts"
CONFIG = Path(__file__).resolve().parents[2] / "config" / "degradation_pssr.yml"


class NoPrompts:
    def get(self, prompts):
        return None


def main(argv=None):
    p = parser(__doc__, repeats=5, unit="calls of each part",
               quick="tiny VAE, 9x64x64 clip, CPU without a GPU")
    add_clip_shape(p)
    args = parse(p, argv)
    device, (T, H, W), dtype, vae = ws.training_vae(args)
    inputs = Inputs(vae, Degradation(CONFIG), None, NoPrompts(), "hq", torch.device(device),
                    dtype)
    g = torch.Generator().manual_seed(0)
    frames = (torch.rand(1, T, 3, H, W, generator=g) * 255).to(torch.uint8).to(device)
    batch = {"video": frames, "LQ_video": None, "prompt": ["x"]}
    result = record(args, device)

    gen = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    hq01 = _to_unit(frames, device)
    hq = as_video(hq01).to(dtype)
    parts = {
        "inputs_encode": lambda: inputs.encode(batch, gen()),
        "to_unit_and_layout": lambda: as_video(_to_unit(frames, device)).to(dtype),
        "vae_encode": lambda: vae_encode(vae, hq),
        "degradation": lambda: inputs.degrade(hq01, generator=gen()),
        "vae_encode_contiguous_input": lambda: vae_encode(vae, hq.contiguous()),
    }
    if hq.dim() == 5:
        cl = hq.contiguous(memory_format=torch.channels_last_3d)
        parts["vae_encode_channels_last_input"] = lambda: vae_encode(vae, cl)
    result["seconds"] = {k: timeit(fn, device, args.repeats, warmup=1) for k, fn in parts.items()}
    ref = vae_encode(vae, hq)
    result["same_latents"] = {
        "contiguous": bool(torch.equal(ref, vae_encode(vae, hq.contiguous()))),
        "channels_last": bool(torch.equal(ref, vae_encode(vae, cl)))}
    result["input_strides"] = list(hq.stride())
    if device == "cuda":
        result["inputs_encode_top_kernels"] = top_kernels(parts["inputs_encode"])
    save(result, args, NAME)


if __name__ == "__main__":
    main()
