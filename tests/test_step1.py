"""Step 1 end to end on tiny checkpoints: windows, tiles, branches, skip/corrupt handling."""
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import ROOT, check_resume_after_kills
from Wan_SR.data import video_io
from Wan_SR.sampling.pipeline import branch_names, pad_tile
from Wan_SR.core.options import (OutputOptions, SamplingOptions, Step1Config, Step1Options,
                                 WindowOptions)
from Wan_SR.runs.step1 import restore_folder, restore_video
from Wan_SR.sampling.speculative import base_step

# 9 frames, window 5 / overlap 1 -> windows at 0 and 4; 48x48, tiles 32 / overlap 16 -> 2x2 tiles
SMALL_WINDOWS = WindowOptions(window_t=5, overlap_t=1, window_h=32, overlap_h=16, window_w=32,
                              overlap_w=16)
ALL = ["base", "base+draft_1", "base+draft_2", "base+draft_3"]


def step1_config(outputs=None, windows=SMALL_WINDOWS, skip_existing=False, seed=0, **step1):
    """A Step1Config with the options the tests vary (the rest: defaults)."""
    return Step1Config(step1=Step1Options(outputs=outputs, **step1), windows=windows,
                       output=OutputOptions(skip_existing=skip_existing),
                       sampling=SamplingOptions(seed=seed))


def make_clip(path, n=9, h=48, w=48, fps=24000 / 1001, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n)[:, None, None]
    y = np.arange(h)[None, :, None]
    x = np.arange(w)[None, None, :]
    base = np.stack(np.broadcast_arrays(128 + 90 * np.sin((x + 2 * t) / 5),
                                        128 + 90 * np.cos((y - t) / 4),
                                        (3 * x + 2 * y + 5 * t) % 256), -1)
    frames = np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)
    return video_io.write_video(path, frames, fps=fps)


def test_pad_tile_to_4n_plus_1_and_16():
    v = torch.rand(6, 3, 20, 33)
    p, (T, H, W) = pad_tile(v)
    assert p.shape == (9, 3, 32, 48) and (T, H, W) == (6, 20, 33)
    assert torch.equal(p[6, :, :20, :33], v[-1]) and torch.equal(p[8, :, :20, :33], v[-1])
    assert torch.equal(p[:6, :, :20, :33], v)
    assert torch.equal(p[:6, :, 25, :33], v[:, :, 19, :])  # edge replication


def test_run_tile_matches_the_pure_functions(pipe):
    frames = torch.rand(5, 3, 32, 32)
    out = pipe.run_tile(frames, ["base"])
    with torch.no_grad():
        z_l = pipe.encode(frames)
        ref = base_step(pipe.base, z_l, pipe.context, pipe.timeline, t_base=699, t_next=599)
        expect = pipe.decode(ref.x0)
    assert out["base"].shape == (5, 3, 32, 32)
    assert torch.allclose(out["base"], expect, atol=1e-6)
    assert 0 <= out["base"].min() and out["base"].max() <= 1


def test_only_needed_draft_steps_and_decodes(pipe, monkeypatch):
    calls = []
    orig = pipe.draft.forward
    monkeypatch.setattr(pipe.draft, "forward", lambda *a, **k: calls.append(1) or orig(*a, **k))
    pipe.stats.reset()
    one = pipe.run_tile(torch.rand(5, 3, 32, 32), ["base+draft_1"])
    assert list(one) == ["base+draft_1"]
    assert pipe.stats.decodes == 1
    full = pipe.run_tile(torch.rand(5, 3, 32, 32), ["base", "base+draft_3"])
    assert set(full) == {"base", "base+draft_3"} and pipe.stats.decodes == 3
    with pytest.raises(ValueError, match="unknown branches"):
        pipe.run_tile(torch.rand(5, 3, 32, 32), ["base+draft_9"])


def test_each_tile_is_encoded_once(pipe, tmp_path, monkeypatch):
    make_clip(tmp_path / "in" / "a.mp4")
    n_model_encodes = []
    orig = pipe.vae.model.encode
    monkeypatch.setattr(pipe.vae.model, "encode",
                        lambda *a, **k: n_model_encodes.append(1) or orig(*a, **k))
    pipe.stats.reset()
    opts = step1_config(ALL + ["final"])
    restore_video(pipe, tmp_path / "in" / "a.mp4", tmp_path / "out", opts, show_progress=False)
    assert pipe.stats.encodes == 2 * 4  # 2 temporal windows x 2x2 tiles
    assert len(n_model_encodes) == 8


def test_cli_writes_every_branch_with_frame_count_size_fps(tiny_paths, tmp_path):
    make_clip(tmp_path / "in" / "clip.mp4", n=9, h=48, w=48, fps=24000 / 1001)
    out = tmp_path / "out"
    cmd = [sys.executable, str(ROOT / "inference_step_1.py"), "--input_dir", str(tmp_path / "in"),
           "--output_dir", str(out), "--wan_model_dir", str(tiny_paths["wan_dir"]),
           "--lora_base_path", str(tiny_paths["base"]), "--lora_draft_path",
           str(tiny_paths["draft"]), "--torch_dtype", "float32", "--device", "cpu",
           "--window_t", "5", "--overlap_t", "1", "--window_h", "32", "--overlap_h", "16",
           "--window_w", "32", "--overlap_w", "16", "--final",
           "--prompt_cache_dir", str(tmp_path / "pc")]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "using the prompt alone" in r.stdout + r.stderr
    for branch in ALL + ["final"]:
        info = video_io.probe(out / branch / "clip.mp4")
        assert (info.num_frames, info.width, info.height) == (9, 48, 48), branch
        assert info.rate == "24000/1001", branch
    assert not list(out.rglob("*.partial*"))


def test_skip_existing_skips_complete_and_redoes_truncated(pipe, tmp_path, caplog):
    make_clip(tmp_path / "in" / "a.mp4", n=5, h=32, w=32)
    make_clip(tmp_path / "in" / "b.mp4", n=5, h=32, w=32, seed=1)
    out = tmp_path / "out"
    opts = step1_config(["base", "base+draft_3"], skip_existing=True)
    assert restore_folder(pipe, tmp_path / "in", out, opts) == 0
    # truncate one output of b
    trunc = out / "base+draft_3" / "b.mp4"
    frames = video_io.read_video(trunc)
    video_io.write_video(trunc, frames[:3], fps=24)
    kept = {p: p.stat().st_mtime_ns for p in out.rglob("*.mp4") if p != trunc}
    pipe.stats.reset()
    caplog.clear()
    with caplog.at_level("INFO", logger="Wan_SR"):
        assert restore_folder(pipe, tmp_path / "in", out, opts) == 0
    logs = caplog.messages
    assert pipe.stats.encodes == 1  # only b, one window x one tile
    assert video_io.probe(trunc).num_frames == 5
    assert all(p.stat().st_mtime_ns == m for p, m in kept.items())
    assert any("a: outputs complete, skipped" in l for l in logs)


def test_skip_existing_after_kills_and_runs_with_other_settings(tiny_paths, tmp_path):
    """conftest.check_resume_after_kills: settings A and B differ in their timesteps; two
    outputs per video."""
    from test_cli import step1_args

    for i in (1, 2, 3):
        make_clip(tmp_path / "in" / f"{i}.mp4", n=5, h=32, w=32, seed=i)
    settings = {"A": ["--timestep_draft_list", "[599]"],
                "B": ["--timestep_base", "799", "--timestep_draft_list", "[699]"]}

    def cmd(which, out, *extra):
        return [sys.executable, str(ROOT / "inference_step_1.py"), "--input_dir",
                str(tmp_path / "in"), "--output_dir", str(out), "--sort_files",
                *step1_args(tiny_paths, tmp_path, *settings[which], *extra)]

    def outputs(folder, names):
        return [folder / b / f"{n}.mp4" for n in names for b in ("base", "base+draft_1")]

    check_resume_after_kills(cmd, outputs, "step 1", tmp_path)


def test_corrupt_input_is_reported_and_others_processed(pipe, tmp_path, caplog):
    make_clip(tmp_path / "in" / "good.mp4", n=5, h=32, w=32)
    (tmp_path / "in" / "bad.mp4").write_bytes(b"this is not a video" * 50)
    out = tmp_path / "out"
    rc = restore_folder(pipe, tmp_path / "in", out, step1_config(["base"]))
    assert rc == 1
    err = "\n".join(r.levelname + " " + r.getMessage() for r in caplog.records)
    assert "ERROR bad: " in err
    assert video_io.probe(out / "base" / "good.mp4").num_frames == 5
    assert not (out / "base" / "bad.mp4").exists()


def test_outputs_close_while_the_next_video_runs_and_a_failed_close_is_reported(
        pipe, tmp_path, caplog, monkeypatch):
    import logging
    import re
    import threading
    import time

    from Wan_SR.runs.outputs import OutputWriters

    for name in "abc":
        make_clip(tmp_path / "in" / f"{name}.mp4", n=5, h=32, w=32)
    real_close, threads = OutputWriters.close, set()

    def close(self):
        threads.add(threading.current_thread().name)
        if self.what == "b":
            raise video_io.VideoError("b: the encoder died")
        time.sleep(0.3)  # a slow encoder tail: the next video starts meanwhile
        return real_close(self)

    monkeypatch.setattr(OutputWriters, "close", close)
    caplog.set_level(logging.INFO)
    out = tmp_path / "out"
    t0 = time.perf_counter()
    cfg = step1_config(["base"])
    cfg.output.sort_files = True
    rc = restore_folder(pipe, tmp_path / "in", out, cfg)
    wall = time.perf_counter() - t0
    assert rc == 1
    text = "\n".join(r.levelname + " " + r.getMessage() for r in caplog.records)
    assert "ERROR b: b: the encoder died" in text
    assert all(t.startswith("pssr-close") for t in threads)
    for name in "ac":
        assert video_io.probe(out / "base" / f"{name}.mp4").num_frames == 5
    assert not (out / "base" / "b.mp4").exists() and not list(out.rglob("*.partial*"))
    # reported in input order; the seconds of the videos add up to at most the wall time
    done = re.findall(r"INFO (\w): 5 frames at \S+ fps in ([\d.]+) s", text)
    assert [n for n, _ in done] == ["a", "c"]
    assert sum(float(s) for _, s in done) <= wall + 0.1


def test_frame_folder_input_upscale_and_audio(pipe, tmp_path):
    import cv2

    folder = tmp_path / "in" / "frames"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(6):
        cv2.imwrite(str(folder / f"{i:04d}.png"), rng.integers(0, 255, (16, 24, 3), np.uint8))
    # a clip with an audio track (ffmpeg's sine source)
    src = tmp_path / "in" / "sound.mp4"
    subprocess.run([video_io.ffmpeg_exe(), "-loglevel", "error", "-f", "lavfi", "-i",
                    "testsrc=size=32x32:rate=25", "-f", "lavfi", "-i", "sine=frequency=440",
                    "-t", "0.2", "-pix_fmt", "yuv420p", "-c:v", "libx264", "-c:a", "aac",
                    str(src)], check=True)
    assert video_io.probe(src).has_audio
    out = tmp_path / "out"
    opts = step1_config(["base"], upscale=2.0)
    assert restore_folder(pipe, tmp_path / "in", out, opts) == 0
    info = video_io.probe(out / "base" / "frames.mp4")
    assert (info.num_frames, info.width, info.height, info.rate) == (6, 48, 32, "30/1")
    snd = video_io.probe(out / "base" / "sound.mp4")
    assert snd.has_audio and snd.num_frames == video_io.probe(src).num_frames
    assert (snd.width, snd.height) == (64, 64)


def test_branch_names():
    assert branch_names(3) == ALL
    assert branch_names(0) == ["base"]


def test_in_memory_restore_api(pipe):
    """restore(frames) on a clip that fits one window and tile is run_tile on it, rounded once;
    with several windows and tiles it keeps the frame count and size, and 'final' is the fusion
    of base and the last draft branch."""
    from Wan_SR.fusion.frequency import fuse_video
    from Wan_SR.runs.step1 import restore

    rng = np.random.default_rng(5)
    frames = rng.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    out = restore(pipe, frames, outputs=["base", "base+draft_3", "final"])
    ref = pipe.run_tile(video_io.frames_to_tensor(frames), ["base", "base+draft_3"])
    assert np.array_equal(out["base"], video_io.tensor_to_frames(ref["base"]))
    assert np.array_equal(out["base+draft_3"], video_io.tensor_to_frames(ref["base+draft_3"]))
    assert np.array_equal(out["final"], video_io.tensor_to_frames(
        fuse_video(ref["base"], ref["base+draft_3"], alpha=0.6)))
    many = restore(pipe, rng.integers(0, 256, (9, 48, 40, 3), dtype=np.uint8),
                   windows=SMALL_WINDOWS, upscale=1.5)
    assert set(many) == set(ALL)
    assert all(v.shape == (9, 72, 60, 3) and v.dtype == np.uint8 for v in many.values())
    with pytest.raises(ValueError, match="uint8"):
        restore(pipe, frames.astype(np.float32))


def test_deterministic_picks_cudnn_kernels_by_rule():
    from Wan_SR.cli.step1 import build_parser
    from Wan_SR.sampling.speed import convolution_kernels

    saved = torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic
    try:
        convolution_kernels(deterministic=True)
        assert (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic) == (False, True)
        convolution_kernels()
        assert (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic) == (True, False)
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved
    assert build_parser().parse_args(["--deterministic"]).deterministic
    assert not build_parser().parse_args([]).deterministic
