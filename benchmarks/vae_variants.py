"""VAE encode/decode timings with channels-last and with compiled RMS norms (33x720x1280)."""
import argparse
import time

import torch

from common import build_models, environment, timeit, write_json


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--frames", type=int, default=33)
    a = ap.parse_args()
    from Wan_SR.models.wan import vae_decode, vae_encode
    from Wan_SR.sampling.speed import compile_vae_norms, vae_channels_last

    dev, dt = "cuda", torch.bfloat16
    _, _, vae, _ = build_models("real", dev, dt)
    torch.backends.cudnn.benchmark = True
    res = {"env": environment(dev), "results": {}}
    R = res["results"]
    cl = torch.channels_last_3d
    video = (torch.rand(1, 3, a.frames, 720, 1280, device=dev, dtype=dt) * 2 - 1).contiguous(memory_format=cl)
    with torch.no_grad():
        vae_channels_last(vae)
        z = vae_encode(vae, video).contiguous(memory_format=cl)
        R["encode_channels_last"] = timeit(lambda: vae_encode(vae, video), dev, 3, 1)
        R["decode_channels_last"] = timeit(lambda: vae_decode(vae, z), dev, 3, 1)
        ref = vae_decode(vae, z).float()
        compile_vae_norms(vae)
        t0 = time.perf_counter()
        out = vae_decode(vae, z).float()
        torch.cuda.synchronize()
        R["compile_first_decode_s"] = time.perf_counter() - t0
        R["compiled_vs_eager_max_abs_diff"] = (out - ref).abs().max().item()
        R["encode_channels_last_compiled_norms"] = timeit(lambda: vae_encode(vae, video), dev, 3, 1)
        R["decode_channels_last_compiled_norms"] = timeit(lambda: vae_decode(vae, z), dev, 3, 1)
    write_json(res, a.out)


if __name__ == "__main__":
    main()
