#!/usr/bin/env python
"""Regenerate tests/fixtures/vqa_conformance.json: the OFFICIAL DOVER and FasterVQA code run on
tiny random weights (written by Wan_SR.testing.vqa in the official layouts, loaded strictly by the
official classes) and on synthetic clips. Only the numbers enter the repository.

Official code used (not part of this repository; check it out anywhere):
  DOVER                   https://github.com/VQAssessment/DOVER
                          commit f1ddc96215bc7fbcf8f315c65d47905f339c3419 (package ``dover/``)
  FAST-VQA-and-FasterVQA  https://github.com/VQAssessment/FAST-VQA-and-FasterVQA
                          commit 9f264e436a97b23f5efb477b048bfbff83565032 (package ``fastvqa/``)

Usage:
  python scripts/make_vqa_fixtures.py --dover_src DIR_WITH_dover_PACKAGE \\
      --fastvqa_src DIR_WITH_fastvqa_PACKAGE [--out tests/fixtures/vqa_conformance.json]

What runs: DOVER as ``evaluate_one_video.py`` / ``evaluate_a_set_of_videos.py`` do with
``dover.yml`` (``val-l1080p`` sample types; ``spatial_temporal_view_decomposition``; scores in
the order aesthetic, technical), FasterVQA as ``vqa.py -m FasterVQA`` does with
``options/fast/f3dvqa-b.yml`` (``SampleFrames(32, num_clips=1)``, ``get_spatial_fragments`` with
aligned 8). Before the sampling of each clip the global generators are seeded:
``np.random.seed(seed); torch.manual_seed(seed)`` - our code draws the same numbers from
``RandomState(seed)`` / ``Generator().manual_seed(seed)``. The official packages import decord,
scikit-video and clip at module level; small stand-ins (a VideoReader over an in-memory array) are
put on sys.path for them. The tiny backbones replace ``VideoBackbone()`` / ``convnext_3d_tiny``
(which would download ImageNet weights) with the official classes at tiny sizes.
"""
from __future__ import annotations

import argparse
import functools
import json
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from Wan_SR.testing.vqa import (TINY_CONVNEXT, TINY_HEAD_HIDDEN, TINY_SWIN,  # noqa: E402
                                synthetic_clip, write_tiny_dover, write_tiny_fastervqa)

# (frames, height, width, clip seed, sampling seed): small clips take the upscaling path and no
# random offsets; the large ones draw random frame and fragment offsets.
DOVER_CASES = [(40, 64, 80, 3, 42), (200, 240, 232, 4, 7)]
FASTERVQA_CASES = [(40, 64, 64, 5, 42), (48, 240, 250, 6, 11)]
CLIPS: dict[str, np.ndarray] = {}


def install_stand_ins() -> None:
    class VideoReader:
        def __init__(self, path, *a, **k):
            self.frames = CLIPS[str(path)]

        def __len__(self):
            return len(self.frames)

        def __getitem__(self, i):
            return torch.from_numpy(self.frames[int(i)].copy())

    decord = types.ModuleType("decord")
    decord.VideoReader, decord.cpu, decord.gpu = VideoReader, (lambda *a: None), (lambda *a: None)
    decord.bridge = types.SimpleNamespace(set_bridge=lambda *a: None)
    skvideo = types.ModuleType("skvideo")
    skvideo.io = types.ModuleType("skvideo.io")
    sys.modules.update({"decord": decord, "skvideo": skvideo, "skvideo.io": skvideo.io,
                        "clip": types.ModuleType("clip")})


def tiny_swin(official):
    return functools.partial(official.SwinTransformer3D, embed_dim=TINY_SWIN.embed_dim,
                             depths=list(TINY_SWIN.depths), num_heads=list(TINY_SWIN.heads),
                             window_size=TINY_SWIN.window)


def official_dover(path: Path):
    import dover.models.conv_backbone as cb  # the official package (outside this repository)
    import dover.models.evaluator as ev
    import dover.models.swin_backbone as sb

    dims, kernels = TINY_CONVNEXT
    strategy = "".join(str(k) for k in kernels[0])
    ev.VideoBackbone = tiny_swin(sb)
    ev.convnext_3d_tiny = lambda **k: cb.ConvNeXt3D(depths=[len(k_) for k_ in kernels],
                                                    dims=list(dims), inflate_strategy=strategy)
    model = ev.DOVER(backbone_preserve_keys="technical,aesthetic", divide_head=True,
                     backbone={"technical": {"type": "swin_tiny_grpb"},
                               "aesthetic": {"type": "conv_tiny"}},
                     vqa_head={"in_channels": dims[-1], "hidden_channels": TINY_HEAD_HIDDEN})
    model.load_state_dict(torch.load(path, map_location="cpu"), strict=True)
    return model.eval()


def run_dover(model, n, h, w, clip_seed, seed) -> dict:
    from dover.datasets import UnifiedFrameSampler, spatial_temporal_view_decomposition

    key = f"dover_{n}_{h}_{w}_{clip_seed}.mp4"
    CLIPS[key] = synthetic_clip(n, h, w, clip_seed)
    sample_types = {
        "technical": dict(fragments_h=7, fragments_w=7, fsize_h=32, fsize_w=32, aligned=32,
                          clip_len=32, frame_interval=2, num_clips=3),
        "aesthetic": dict(size_h=224, size_w=224, clip_len=32, frame_interval=2, t_frag=32,
                          num_clips=1)}
    samplers = {"technical": UnifiedFrameSampler(32, 3, 2),
                "aesthetic": UnifiedFrameSampler(1, 32, 2, 1)}
    np.random.seed(seed)
    torch.manual_seed(seed)
    views, _ = spatial_temporal_view_decomposition(key, sample_types, samplers)
    mean, std = torch.FloatTensor([123.675, 116.28, 103.53]), torch.FloatTensor([58.395, 57.12,
                                                                               57.375])
    video = {}
    for k in ("aesthetic", "technical"):  # evaluate_a_set_of_videos.py's order
        v, nc = views[k], sample_types[k]["num_clips"]
        v = ((v.permute(1, 2, 3, 0) - mean) / std).permute(3, 0, 1, 2)
        video[k] = v.reshape(v.shape[0], nc, -1, *v.shape[2:]).transpose(0, 1)
    with torch.no_grad():
        res = [float(np.mean(r.cpu().numpy())) for r in model(video, reduce_scores=False)]
    return {"frames": n, "height": h, "width": w, "clip_seed": clip_seed, "seed": seed,
            "raw_aesthetic": res[0], "raw_technical": res[1]}


def official_fastervqa(path: Path):
    import fastvqa.models.evaluator as ev  # the official package (outside this repository)
    import fastvqa.models.swin_backbone as sb

    ev.VideoBackbone = tiny_swin(sb)
    width = TINY_SWIN.embed_dim * 2 ** (len(TINY_SWIN.depths) - 1)
    model = ev.DiViDeAddEvaluator(
        backbone={"fragments": {"checkpoint": False, "pretrained": None}},
        backbone_size="swin_tiny_grpb", backbone_preserve_keys="fragments", divide_head=False,
        vqa_head={"in_channels": width, "hidden_channels": TINY_HEAD_HIDDEN})
    model.load_state_dict(torch.load(path, map_location="cpu")["state_dict"], strict=True)
    return model.eval()


def run_fastervqa(model, n, h, w, clip_seed, seed) -> dict:
    from fastvqa.datasets import SampleFrames, get_spatial_fragments

    frames = synthetic_clip(n, h, w, clip_seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    idx = SampleFrames(clip_len=32, num_clips=1)(n)
    video = torch.stack([torch.from_numpy(frames[i].copy()) for i in idx], 0).permute(3, 0, 1, 2)
    view = get_spatial_fragments(video, fragments_h=7, fragments_w=7, fsize_h=32, fsize_w=32,
                                 aligned=8, clip_len=32, frame_interval=2, t_frag=8, num_clips=1)
    mean, std = torch.FloatTensor([123.675, 116.28, 103.53]), torch.FloatTensor([58.395, 57.12,
                                                                               57.375])
    view = ((view.permute(1, 2, 3, 0) - mean) / std).permute(3, 0, 1, 2)
    view = view.reshape(view.shape[0], 1, -1, *view.shape[2:]).transpose(0, 1)
    with torch.no_grad():
        raw = float(model({"fragments": view}).mean().item())
    return {"frames": n, "height": h, "width": w, "clip_seed": clip_seed, "seed": seed,
            "raw": raw}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dover_src", required=True)
    ap.add_argument("--fastvqa_src", required=True)
    ap.add_argument("--out", default=str(ROOT / "tests" / "fixtures" / "vqa_conformance.json"))
    args = ap.parse_args()
    install_stand_ins()
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        dover_w = write_tiny_dover(Path(tmp) / "DOVER.pth")
        fast_w = write_tiny_fastervqa(Path(tmp) / "FAST_VQA_3D_1_1.pth")
        sys.path.insert(0, args.dover_src)
        model = official_dover(dover_w)
        dover = [run_dover(model, *c) for c in DOVER_CASES]
        sys.path.insert(0, args.fastvqa_src)
        model = official_fastervqa(fast_w)
        fast = [run_fastervqa(model, *c) for c in FASTERVQA_CASES]
    out = {"about": "official DOVER / FasterVQA outputs on Wan_SR.testing.vqa's tiny weights "
                    "(write_tiny_dover seed 0, write_tiny_fastervqa seed 1) and synthetic_clip; "
                    "regenerate with scripts/make_vqa_fixtures.py",
           "dover_commit": "VQAssessment/DOVER@f1ddc96215bc7fbcf8f315c65d47905f339c3419",
           "fastvqa_commit": "VQAssessment/FAST-VQA-and-FasterVQA@"
                             "9f264e436a97b23f5efb477b048bfbff83565032",
           "torch": torch.__version__, "dover": dover, "fastervqa": fast}
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
