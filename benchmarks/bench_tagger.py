"""What prompt tags cost per clip (issue 14), real sizes with random weights, bf16:

- tagging one 1280x720 frame with RAM Swin-L (+ DAPE-sized deltas make no difference to the
  cost: they are merged into the weights): preprocessing, the network, thresholds;
- encoding one new tagged prompt with the umT5-xxl encoder resident on the GPU, and the extra
  cost when it waits on the CPU between clips (``--low_memory``): the round trip of its weights.

    python benchmarks/bench_tagger.py [--out PATH]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from common import environment, light_diffsynth, results_path, sync, timeit, write_json


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--no_text_encoder", action="store_true")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    light_diffsynth()
    from Wan_SR.models.ram import REAL_RAM, RAMTagger

    dev, dt = "cuda", torch.bfloat16
    env = environment(dev)
    res = {"env": env, "settings": vars(a)}
    torch.manual_seed(0)
    t0 = time.perf_counter()
    with torch.device(dev):
        ram = RAMTagger(REAL_RAM)
    ram = ram.to(dt).eval().requires_grad_(False)
    sync(dev)
    res["ram_build_s"] = time.perf_counter() - t0
    res["ram_params_m"] = sum(p.numel() for p in ram.parameters()) / 1e6
    frame = (np.random.default_rng(0).random((720, 1280, 3)) * 255).astype(np.uint8)
    with torch.no_grad():
        t0 = time.perf_counter()
        tags = ram.tags(frame)
        sync(dev)
        res["first_tag_s"] = time.perf_counter() - t0
        res["tags_on_random_weights"] = len(tags.split(", ")) if tags else 0
        res["tag_frame"] = timeit(lambda: ram.tags(frame), dev, a.repeats, 2)
        ram.to("cpu")
        torch.cuda.empty_cache()
        res["tag_frame_offloaded"] = timeit(
            lambda: (ram.to(dev), ram.tags(frame), ram.to("cpu")), dev, 3, 1)
    del ram
    torch.cuda.empty_cache()
    if not a.no_text_encoder:
        from diffsynth.models.wan_video_text_encoder import WanTextEncoder

        from Wan_SR.testing.checkpoints import REAL_T5

        t0 = time.perf_counter()
        with torch.device(dev):
            enc = WanTextEncoder(**REAL_T5)
        enc = enc.to(dt).eval().requires_grad_(False)
        sync(dev)
        res["umt5_build_s"] = time.perf_counter() - t0
        res["umt5_gib"] = sum(p.numel() * p.element_size() for p in enc.parameters()) / 2 ** 30
        ids = torch.randint(0, 1000, (1, 512), device=dev)
        mask = torch.zeros(1, 512, dtype=torch.long, device=dev)
        mask[:, :40] = 1  # a prompt of ~40 tokens, padded to 512 as the prompter does
        with torch.no_grad():
            res["umt5_encode_resident"] = timeit(lambda: enc(ids, mask), dev, a.repeats, 2)
            enc.to("cpu")
            torch.cuda.empty_cache()
            res["umt5_encode_offloaded"] = timeit(
                lambda: (enc.to(dev), enc(ids, mask), enc.to("cpu")), dev, 3, 1)
    res["per_clip_s_resident"] = res["tag_frame"]["median_s"] + (
        0 if a.no_text_encoder else res["umt5_encode_resident"]["median_s"])
    write_json(res, a.out or results_path("tagger", env))


if __name__ == "__main__":
    main()
