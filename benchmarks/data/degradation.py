"""What does the training data cost? The pssr degradation of one 1x33x3x720x1280 clip on the GPU,
and reading a 33-frame clip from a long 1080p video near its start, its middle and its end.

Targets: degradation under 0.3 s per clip on an H100 (< 5% of a training step); clip reading time
independent of the start position (random access, not decode-from-0).

Degradation: wall time (synchronised) of the ``auto`` filter (FFT for large frames) and of the
``direct`` grouped convolution, a new seed per run, and the peak GPU memory above the input clip.
Reading: a long H.264 1080p video is generated with PyAV/libx264 (a key frame every --gop frames,
250 = the x264 default), then ``ClipReader.read(start, 33)`` is timed at the same offsets after a
key frame near the start, the middle and the end (the frame index, built once per file and
process, is timed apart), and ``VideoDataset`` items (random starts, cover-resized to 720x1280).

    python benchmarks/data/degradation.py
    python benchmarks/data/degradation.py --quick
"""
from __future__ import annotations

import bisect
import statistics
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository
from benchmarks import wan_sr as ws  # noqa: E402
# here, not in wan_sr.py: they read clips with PyAV, which only this benchmark needs
from Wan_SR.data.clip_reader import ClipReader  # noqa: E402
from Wan_SR.data.dataset import VideoDataset  # noqa: E402
from benchmarks.common import (default_device, parse, parser, peak_gib, record,  # noqa: E402
                               reset_peak, save, summary, sync)

NAME = "data/degradation"


def degradation_cost(device, shape, repeats, warmup, config) -> dict:
    """Seconds (and peak GPU memory above the clip) of the degradation, per filter method."""
    t, h, w = shape
    hq = torch.rand(1, t, 3, h, w, device=device, generator=torch.Generator(device).manual_seed(0))
    out = {"shape": [1, t, 3, h, w]}
    for method in ("auto", "direct"):
        deg = ws.Degradation(config, filter_method=method)
        seed = iter(range(10 ** 6))
        for _ in range(warmup):
            deg(hq, seed=next(seed))
        sync(device)
        reset_peak(device)
        before = peak_gib(device)
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            lq = deg(hq, seed=next(seed))
            sync(device)
            ts.append(time.perf_counter() - t0)
        assert lq.shape == hq.shape
        out[method] = summary(ts)
        if before is not None:
            out[method]["peak_extra_gib"] = round(peak_gib(device) - before, 3)
        print(f"degradation [{method}] {tuple(hq.shape)}: {out[method]}", flush=True)
    return out


def make_long_video(path: Path, frames: int, w: int, h: int, gop: int, fps: int = 25) -> float:
    """A long H.264 clip (a key frame every ``gop`` frames), encoded with PyAV's bundled libx264
    so no ffmpeg binary is needed: a moving colour pattern with some texture. Returns seconds."""
    t0 = time.perf_counter()
    yy, xx = np.mgrid[0:h, 0:w]
    tex = np.random.default_rng(0).integers(0, 40, (h, w), dtype=np.uint8)
    with av.open(str(path), "w") as out:
        st = out.add_stream("libx264", rate=fps)
        st.width, st.height, st.pix_fmt = w, h, "yuv420p"
        st.options = {"preset": "ultrafast", "g": str(gop), "keyint_min": str(gop),
                      "sc_threshold": "0"}
        for i in range(frames):
            img = np.stack([((xx + 4 * i) % 256).astype(np.uint8),
                            ((yy + 2 * i) % 256).astype(np.uint8),
                            np.roll(tex, i, axis=1) + 100], -1)
            for pkt in st.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(pkt)
        for pkt in st.encode():
            out.mux(pkt)
    return time.perf_counter() - t0


def read_positions(reader, clip: int, repeats: int) -> dict:
    """Starts at the same offsets after a key frame near the start, the middle and the end (the
    cost of a read depends on where its start sits in its GOP)."""
    n = reader.num_frames
    key_idx = [bisect.bisect_left(reader.index.pts, k) for k in reader.index.key_pts]
    gap = (key_idx[1] - key_idx[0]) if len(key_idx) > 1 else n
    span = max(1, min(gap, n // 2) - clip - 1)
    offsets = [round(1 + span * i / max(1, repeats - 1)) for i in range(repeats)]
    last_key = max(k for k in key_idx if k + offsets[-1] + clip <= n)
    return gap, {"start_near_0": [key_idx[0] + o for o in offsets],
                 "start_near_end": [last_key + o for o in offsets],
                 "start_middle": [n // 2 + o for o in offsets]}


def reading_cost(tmp: Path, long: tuple, clip: int, repeats: int, out_hw: tuple) -> dict:
    """Clip reads at the positions of :func:`read_positions`, and dataset items."""
    frames, w, h, gop = long
    video = tmp / "long.mp4"
    gen_s = make_long_video(video, frames, w, h, gop)
    t0 = time.perf_counter()
    reader = ClipReader(video)
    res = {"index_build_s": round(time.perf_counter() - t0, 4), "clip_frames": clip}
    res["video"] = {"frames": reader.num_frames, "width": w, "height": h,
                    "key_frames": len(reader.index.key_pts), "generate_s": round(gen_s, 2)}
    res["gop"], positions = read_positions(reader, clip, repeats)
    for key, starts in positions.items():
        reader.read(starts[0], clip)  # warm
        ts, dec = [], []
        for s in starts:
            t0 = time.perf_counter()
            reader.read(s, clip)
            ts.append(time.perf_counter() - t0)
            dec.append(reader.decoded_frames)
        res[key] = dict(summary(ts), starts=starts, decoded_frames_median=statistics.median(dec))
        print(f"read {clip} frames, {key}: {res[key]}", flush=True)
    (tmp / "meta.csv").write_text("video,prompt\nlong.mp4,a test clip\n")
    ds = VideoDataset(tmp, tmp / "meta.csv", num_frames=clip, height=out_hw[0],
                         width=out_hw[1], repeat=repeats + 1, seed=0)
    ds[0]
    ts = []
    for i in range(1, repeats + 1):
        t0 = time.perf_counter()
        item = ds[i]
        ts.append(time.perf_counter() - t0)
        assert tuple(item["video"].shape) == (clip, 3, *out_hw), item.get("error")
    res["dataset_item"] = dict(summary(ts), output=[clip, 3, *out_hw])
    res["end_over_start"] = round(res["start_near_end"]["median_s"]
                                  / res["start_near_0"]["median_s"], 3)
    return res


def main(argv=None):
    p = parser(__doc__, repeats=5, unit="one degradation or one clip read",
               quick="a 5x90x160 degradation, a 300-frame 320x180 video")
    p.add_argument("--config", default=None, help="degradation YAML (default: pssr)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--long_frames", type=int, default=3000,
                   help="frames of the generated 1080p video (default 3000 = 2 min at 25 fps)")
    p.add_argument("--gop", type=int, default=250,
                   help="key-frame interval of the generated video (default 250, x264's)")
    args = parse(p, argv)
    device = default_device()
    torch.backends.cudnn.benchmark = True
    if args.quick:
        deg_shape, long, out_hw, clip = (5, 90, 160), (300, 320, 180, 50), (128, 224), 17
    else:
        deg_shape, out_hw, clip = (33, 720, 1280), (720, 1280), 33
        long = (args.long_frames, 1920, 1080, args.gop)
    res = record(args, device)
    res["degradation_pssr"] = degradation_cost(device, deg_shape, args.repeats, args.warmup,
                                               args.config)
    with tempfile.TemporaryDirectory() as tmp:
        res["reading"] = reading_cost(Path(tmp), long, clip, args.repeats, out_hw)
    return save(res, args, NAME)


if __name__ == "__main__":
    main()
