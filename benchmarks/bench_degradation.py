"""Training-data costs (issue 11): the pssr degradation of one clip on the GPU, and the dataset
reading a 33-frame clip from a long 1080p video near its start and near its end.

    python benchmarks/bench_degradation.py                 # GPU, 1x33x3x720x1280
    python benchmarks/bench_degradation.py --quick         # small sizes, runs on CPU too

Writes ``benchmarks/results/degradation_<gpu>.json`` (``..._quick.json`` with --quick; or
--out). Targets: degradation under 0.3 s per clip on an H100 (< 5% of a training step); clip
reading time independent of the start position (random access, not decode-from-0).

Degradation: median wall time (synchronised) of a few runs after warm-up, with a new seed per
run, for the ``auto`` filter (FFT for large frames) and the ``direct`` grouped convolution;
peak GPU memory above the input clip. Reading: a long H.264 1080p video is generated with
PyAV/libx264 (key frame every --gop frames, 250 = the x264 default), then
``ClipReader.read(start, 33)`` is timed at starts near 0 and near the end (frame index build
timed separately: once per file per process, cached), plus ``VideoDataset`` items (random
starts, cover-resize to 720x1280).
"""
from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from common import ROOT, environment, sync  # (common puts the repo on sys.path)

sys.path.insert(0, str(ROOT))


def gpu_tag(device) -> str:
    d = torch.device(device)
    if d.type != "cuda":
        return "cpu"
    name = torch.cuda.get_device_name(d).lower()
    m = re.findall(r"\b([a-z]{1,2}\d{2,4}[a-z]?)\b", name)
    return m[-1] if m else re.sub(r"[^a-z0-9]+", "_", name).strip("_")


def bench_degradation(device, t, h, w, repeats, warmup, config):
    from Wan_SR.data.degradation import Degradation

    g = torch.Generator(device=device).manual_seed(0)
    hq = torch.rand(1, t, 3, h, w, device=device, generator=g)
    out = {"shape": [1, t, 3, h, w]}
    for method in ("auto", "direct"):
        deg = Degradation(config, filter_method=method)
        seed = iter(range(10 ** 6))
        for _ in range(warmup):
            deg(hq, seed=next(seed))
        sync(device)
        if torch.device(device).type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            lq = deg(hq, seed=next(seed))
            sync(device)
            ts.append(time.perf_counter() - t0)
        res = {"median_s": statistics.median(ts), "min_s": min(ts),
               "runs": [round(x, 4) for x in ts]}
        if torch.device(device).type == "cuda":
            res["peak_extra_gib"] = round((torch.cuda.max_memory_allocated(device) - base) / 2 ** 30, 3)
        assert lq.shape == hq.shape
        out[method] = res
        print(f"degradation [{method}] {tuple(hq.shape)}: median {res['median_s']:.4f} s"
              + (f", peak +{res['peak_extra_gib']} GiB" if "peak_extra_gib" in res else ""),
              flush=True)
    return out


def make_long_video(path: Path, frames: int, w: int, h: int, gop: int, fps: int = 25) -> float:
    """A long H.264 clip (key frame every ``gop`` frames), encoded with PyAV's bundled libx264
    so no ffmpeg binary is needed: a moving colour pattern with some texture."""
    import av
    import numpy as np

    t0 = time.perf_counter()
    yy, xx = np.mgrid[0:h, 0:w]
    tex = (np.random.default_rng(0).integers(0, 40, (h, w), dtype=np.uint8))
    with av.open(str(path), "w") as out:
        st = out.add_stream("libx264", rate=fps)
        st.width, st.height, st.pix_fmt = w, h, "yuv420p"
        st.options = {"preset": "ultrafast", "g": str(gop), "keyint_min": str(gop),
                      "sc_threshold": "0"}
        for i in range(frames):
            r = ((xx + 4 * i) % 256).astype(np.uint8)
            g = ((yy + 2 * i) % 256).astype(np.uint8)
            b = np.roll(tex, i, axis=1) + 100
            img = np.stack([r, g, b], -1)
            for pkt in st.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(pkt)
        for pkt in st.encode():
            out.mux(pkt)
    return time.perf_counter() - t0


def bench_reading(tmp: Path, frames: int, w: int, h: int, gop: int, clip: int, repeats: int,
                  out_hw: tuple[int, int]):
    from Wan_SR.data import clip_reader
    from Wan_SR.data.dataset import VideoDataset

    video = tmp / "long.mp4"
    gen_s = make_long_video(video, frames, w, h, gop)
    print(f"generated {frames} frames {w}x{h} in {gen_s:.1f} s", flush=True)
    t0 = time.perf_counter()
    reader = clip_reader.ClipReader(video)
    index_s = time.perf_counter() - t0
    n = reader.num_frames
    res = {"video": {"frames": n, "width": w, "height": h, "key_frames": len(reader.index.key_pts),
                     "generate_s": round(gen_s, 2)},
           "index_build_s": round(index_s, 4), "clip_frames": clip}
    # Decoding cost depends on where the start sits in its GOP (a clip starting just before a
    # key frame decodes almost a whole GOP first), so both positions use the same offsets
    # after a key frame: one near the start of the file, one near its end.
    import bisect

    key_idx = [bisect.bisect_left(reader.index.pts, k) for k in reader.index.key_pts]
    gap = (key_idx[1] - key_idx[0]) if len(key_idx) > 1 else n
    span = max(1, min(gap, n // 2) - clip - 1)
    offsets = [round(1 + span * i / max(1, repeats - 1)) for i in range(repeats)]
    last_key = max(k for k in key_idx if k + offsets[-1] + clip <= n)
    near = {"start_near_0": [key_idx[0] + o for o in offsets],
            "start_near_end": [last_key + o for o in offsets],
            "start_middle": [n // 2 + o for o in offsets]}
    res["gop"] = gap
    for key, starts in near.items():
        reader.read(starts[0], clip)  # warm
        ts, dec = [], []
        for s in starts:
            t0 = time.perf_counter()
            reader.read(s, clip)
            ts.append(time.perf_counter() - t0)
            dec.append(reader.decoded_frames)
        res[key] = {"starts": starts, "median_s": statistics.median(ts), "min_s": min(ts),
                    "decoded_frames_median": statistics.median(dec)}
        print(f"read {clip} frames, {key}: median {res[key]['median_s']:.3f} s, "
              f"decoded {res[key]['decoded_frames_median']} frames", flush=True)
    meta = tmp / "meta.csv"
    meta.write_text("video,prompt\nlong.mp4,a test clip\n")
    ds = VideoDataset(tmp, meta, num_frames=clip, height=out_hw[0], width=out_hw[1],
                      repeat=repeats + 1, seed=0)
    ds[0]
    ts = []
    for i in range(1, repeats + 1):
        t0 = time.perf_counter()
        item = ds[i]
        ts.append(time.perf_counter() - t0)
        assert tuple(item["video"].shape) == (clip, 3, *out_hw), item.get("error")
    res["dataset_item"] = {"median_s": statistics.median(ts), "min_s": min(ts),
                           "output": [clip, 3, *out_hw]}
    print(f"dataset item (random start, resize to {out_hw[1]}x{out_hw[0]}): median "
          f"{statistics.median(ts):.3f} s", flush=True)
    return res


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    p.add_argument("--quick", action="store_true",
                   help="small sizes (5x90x160 degradation, 300 frames 320x180) for a smoke run")
    p.add_argument("--config", default=None, help="degradation YAML (default: pssr)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--long_frames", type=int, default=3000,
                   help="frames of the generated 1080p video (default 3000 = 2 min at 25 fps)")
    p.add_argument("--gop", type=int, default=250,
                   help="key-frame interval of the generated video (default 250, x264's)")
    p.add_argument("--out", default=None, help="JSON path (default: benchmarks/results/...)")
    args = p.parse_args(argv)
    from Wan_SR.core.devices import resolve_device

    device = resolve_device(args.device)
    torch.backends.cudnn.benchmark = True
    if args.quick:
        deg_shape, long_cfg, out_hw = (5, 90, 160), (300, 320, 180, 50), (128, 224)
    else:
        deg_shape, out_hw = (33, 720, 1280), (720, 1280)
        long_cfg = (args.long_frames, 1920, 1080, args.gop)
    result = {"env": environment(device), "quick": args.quick}
    result["degradation_pssr"] = bench_degradation(device, *deg_shape, args.repeats, args.warmup,
                                                   args.config)
    with tempfile.TemporaryDirectory() as tmp:
        result["reading"] = bench_reading(Path(tmp), *long_cfg, clip=33 if not args.quick else 17,
                                          repeats=args.repeats, out_hw=out_hw)
    r = result["reading"]
    result["reading"]["end_over_start"] = round(r["start_near_end"]["median_s"]
                                                / r["start_near_0"]["median_s"], 3)
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / (
        f"degradation_{gpu_tag(device)}{'_quick' if args.quick else ''}.json")
    from Wan_SR.core.files import write_json_atomic

    write_json_atomic(out, result)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
