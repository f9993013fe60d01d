"""What do prompt tags cost per clip? Random weights of the real sizes, bf16:

- tagging one 1280x720 frame with RAM Swin-L (DAPE-sized deltas make no difference to the cost:
  they are merged into the weights): preprocessing, the network, thresholds; resident on the GPU
  and lent to it from pinned host memory per frame (memory budgets);
- encoding one new tagged prompt (~40 tokens padded to 512) with the umT5-xxl encoder resident on
  the GPU, and streamed block by block from pinned host memory (how step 1 runs it on a GPU).

    python benchmarks/data/tagger.py --light
    python benchmarks/data/tagger.py --quick
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository
from benchmarks import wan_sr as ws  # noqa: E402
from benchmarks.common import default_device, parse, parser, record, save, sync, timeit  # noqa: E402

NAME = "data/tagger"


def free(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


def tagger_cost(size, device, dtype, frame, repeats) -> dict:
    """Build, first tag, tag (resident), tag with the tagger moved in and out."""
    t0 = time.perf_counter()
    ram = ws.random_tagger(size, device, dtype)
    sync(device)
    res = {"ram_build_s": time.perf_counter() - t0,
           "ram_params_m": sum(p.numel() for p in ram.parameters()) / 1e6}
    with torch.no_grad():
        t0 = time.perf_counter()
        tags = ram.tags(frame)
        sync(device)
        res["first_tag_s"] = time.perf_counter() - t0
        res["tags_on_random_weights"] = len(tags.split(", ")) if tags else 0
        res["tag_frame"] = timeit(lambda: ram.tags(frame), device, repeats, 2)
        host = ws.HostCopy(ram, device)  # in pinned host memory, lent to the GPU per frame
        free(device)

        def visit():
            with host.on_device() as net:
                net.tags(frame)
        res["tag_frame_offloaded"] = timeit(visit, device, 3, 1)
    return res


def text_encoder_cost(size, device, dtype, repeats) -> dict:
    """Build, encode one prompt (resident), encode with the encoder moved in and out."""
    t0 = time.perf_counter()
    enc = ws.random_text_encoder(size, device, dtype)
    sync(device)
    res = {"umt5_build_s": time.perf_counter() - t0,
           "umt5_gib": sum(p.numel() * p.element_size() for p in enc.parameters()) / 2 ** 30}
    ids = torch.randint(0, 1000, (1, 512), device=device)
    mask = torch.zeros(1, 512, dtype=torch.long, device=device)
    mask[:, :40] = 1  # a prompt of ~40 tokens, padded to 512 as the prompter does
    with torch.no_grad():
        res["umt5_encode_resident"] = timeit(lambda: enc(ids, mask), device, repeats, 2)
        enc.to("cpu")
        free(device)
        stream = ws.stream_text_encoder(enc, device)  # blocks streamed from pinned host memory
        res["umt5_encode_streamed"] = timeit(
            lambda: (enc(ids, mask), stream.release()), device, 3, 1)
    return res


def main(argv=None):
    p = parser(__doc__, repeats=10, unit="one tagged frame or one encoded prompt",
               quick="a tiny tagger and text encoder on a 64x64 frame")
    p.add_argument("--no_text_encoder", action="store_true", help="the tagger alone")
    args = parse(p, argv)
    device = default_device()
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    size = "tiny" if args.quick else "real"
    h, w = (64, 64) if args.quick else (720, 1280)
    frame = (np.random.default_rng(0).random((h, w, 3)) * 255).astype(np.uint8)
    res = record(args, device)
    torch.manual_seed(0)
    res.update(tagger_cost(size, device, dtype, frame, args.repeats))
    free(device)
    if not args.no_text_encoder:
        res.update(text_encoder_cost(size, device, dtype, args.repeats))
    res["per_clip_s_resident"] = res["tag_frame"]["median_s"] + (
        0 if args.no_text_encoder else res["umt5_encode_resident"]["median_s"])
    return save(res, args, NAME)


if __name__ == "__main__":
    main()
