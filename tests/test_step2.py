"""Step 2 end to end: inference_step_2.py and Wan_SR/runs/step2.py on small generated videos."""
import subprocess
import sys
import wave
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from conftest import check_resume_after_kills
from Wan_SR.data import video_io
from Wan_SR.runs import step2
from Wan_SR.fusion.frequency import fuse_video

ROOT = Path(__file__).resolve().parents[1]
NTSC_FILM = 24000 / 1001  # 23.976...
TILES = dict(window_h=720, overlap_h=128, window_w=32, overlap_w=8)  # 64 px wide: 3 tiles
WINDOWS = dict(window_t=4, overlap_t=2)  # 10 frames: windows at 0, 2, 4, 6


def _frames(n, w=64, h=48, detail=0.1, seed=0):
    """Distinct frames: a smooth colour field moving one pixel per frame plus fixed texture."""
    rng = np.random.default_rng(seed)
    texture = rng.random((h, w, 3)) - 0.5
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    out = []
    for t in range(n):
        base = np.stack([0.5 + 0.3 * np.sin(2 * np.pi * (xx + 2 * t) / w),
                         0.5 + 0.3 * np.cos(2 * np.pi * (yy + t) / h),
                         np.full_like(xx, 0.3 + 0.04 * t)], -1)
        out.append(np.clip(base + detail * texture, 0, 1))
    return (np.stack(out) * 255).round().astype(np.uint8)


def _png_folder(folder: Path, frames):
    folder.mkdir(parents=True)
    for i, f in enumerate(frames):
        cv2.imwrite(str(folder / f"{i:04d}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))


def _wav(path: Path, seconds=0.5, rate=16000):
    t = np.arange(int(seconds * rate)) / rate
    pcm = (0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype(np.int16)
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(pcm.tobytes())


def _run_cli(*args):
    cmd = [sys.executable, str(ROOT / "inference_step_2.py"), *map(str, args)]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)


def _reference(cons_path, sharp_path, **kw):
    c = torch.from_numpy(video_io.read_video(cons_path)).permute(0, 3, 1, 2).float() / 255
    s = torch.from_numpy(video_io.read_video(sharp_path)).permute(0, 3, 1, 2).float() / 255
    ref = fuse_video(c, s, alpha=0.6, **kw)
    return (ref.clamp(0, 1) * 255).round().permute(0, 2, 3, 1).numpy()


def _assert_matches_reference(out_path, ref, tmp_dir):
    """The output equals the reference fusion passed through the same encoder (the encoder is
    deterministic, so only float rounding in a few pixels may differ: mean < 0.25/255 per
    frame), frame by frame in order: each frame is far (> 2/255) from the neighbouring ones."""
    ref_path = Path(tmp_dir) / f"ref_{Path(out_path).name}"
    with video_io.VideoWriter(ref_path, video_io.probe(out_path).rate, (ref.shape[2], ref.shape[1]),
                              quality=9) as w:
        w.write(ref.astype(np.uint8))
    out, ref = video_io.read_video(out_path).astype(np.float64), video_io.read_video(ref_path)
    assert out.shape == ref.shape
    diff = np.abs(out - ref).mean(axis=(1, 2, 3))
    assert diff.max() < 0.25, diff
    shifted = np.abs(out[1:] - ref[:-1]).mean(axis=(1, 2, 3))
    assert shifted.min() > 2.0, shifted


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("step2")
    cons, sharp = root / "consistent", root / "sharp"
    cons.mkdir()
    sharp.mkdir()
    wav = root / "tone.wav"
    _wav(wav)
    # a: mp4 pair at 24000/1001 fps, audio on the consistent side
    video_io.write_video(cons / "a.mp4", _frames(10, detail=0.03, seed=1), NTSC_FILM,
                         audio_from=wav)
    video_io.write_video(sharp / "a.mp4", _frames(10, detail=0.2, seed=2), NTSC_FILM)
    # b: png frame folders (30 fps by default)
    _png_folder(cons / "b", _frames(7, detail=0.03, seed=3))
    _png_folder(sharp / "b", _frames(7, detail=0.2, seed=4))
    # c: no partner in sharp; e: no partner in consistent
    video_io.write_video(cons / "c.mp4", _frames(5), 30)
    video_io.write_video(sharp / "e.mp4", _frames(5), 30)
    # d: sizes differ; f: frame counts differ
    video_io.write_video(cons / "d.mp4", _frames(5), 30)
    video_io.write_video(sharp / "d.mp4", _frames(5, w=48), 30)
    video_io.write_video(cons / "f.mp4", _frames(6), 30)
    video_io.write_video(sharp / "f.mp4", _frames(5), 30)
    return cons, sharp, root


def test_imports_stay_light():
    code = ("import sys, inference_step_2, Wan_SR.runs.step2, Wan_SR.fusion; "
            "assert 'diffsynth' not in sys.modules, 'diffsynth imported'; "
            "h = inference_step_2.build_parser().format_help(); "
            "assert '--consistent_dir' in h and '--skip_existing' in h and '--keep_temp' in h; "
            "print('ok')")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr


def test_cli_fuses_good_pairs_and_reports_bad_ones(folders):
    cons, sharp, root = folders
    out_dir = root / "out_cli"
    proc = _run_cli("--consistent_dir", cons, "--sharp_dir", sharp, "--output_dir", out_dir,
                    "--device", "cpu", "--sort_files",
                    *[f"--{k}={v}" for k, v in {**WINDOWS, **TILES}.items()])
    log = proc.stdout + proc.stderr
    assert proc.returncode == 1, log
    # every problem is reported by name
    assert "skipped: c: no partner in sharp_dir" in log
    assert "skipped: e: no partner in consistent_dir" in log
    assert "skipped: d: frame sizes differ (consistent 64x48, sharp 48x48)" in log
    assert "skipped: f: frame counts differ (consistent 6, sharp 5)" in log
    # only the good pairs are written, each with its record, nothing intermediate
    assert sorted(p.name for p in out_dir.iterdir()) == [".a.mp4.pssr.json", ".b.mp4.pssr.json",
                                                         "a.mp4", "b.mp4", "run_config.json"]

    a = video_io.probe(out_dir / "a.mp4")
    assert (a.num_frames, a.width, a.height) == (10, 64, 48)
    assert a.rate == "24000/1001" and abs(a.fps - 23.976) < 1e-3
    assert a.has_audio  # copied from the consistent input
    b = video_io.probe(out_dir / "b.mp4")
    assert (b.num_frames, b.rate, b.has_audio) == (7, "30/1", False)

    _assert_matches_reference(out_dir / "a.mp4", _reference(cons / "a.mp4", sharp / "a.mp4",
                                                             **TILES), root)
    _assert_matches_reference(out_dir / "b.mp4", _reference(cons / "b", sharp / "b", **TILES),
                              root)


def test_cli_skip_existing(tmp_path):
    cons, sharp, out_dir = tmp_path / "c", tmp_path / "s", tmp_path / "out"
    cons.mkdir()
    sharp.mkdir()
    video_io.write_video(cons / "x.mp4", _frames(6, seed=5), 25)
    video_io.write_video(sharp / "x.mp4", _frames(6, seed=6), 25)
    _png_folder(cons / "y", _frames(5, seed=7))
    _png_folder(sharp / "y", _frames(5, seed=8))
    args = ["--consistent_dir", cons, "--sharp_dir", sharp, "--output_dir", out_dir,
            "--device", "cpu", "--window_t", 4, "--overlap_t", 1]
    first = _run_cli(*args)
    assert first.returncode == 0, first.stdout + first.stderr
    x_mtime = (out_dir / "x.mp4").stat().st_mtime_ns
    # truncate y's output: 2 frames instead of 5
    video_io.write_video(out_dir / "y.mp4", _frames(2), 30)
    assert video_io.probe(out_dir / "y.mp4").num_frames == 2

    second = _run_cli(*args, "--skip_existing")
    log = second.stdout + second.stderr
    assert second.returncode == 0, log
    assert "x: " in log and "complete (6 frames), skipped" in log
    assert "y: wrote" in log
    assert (out_dir / "x.mp4").stat().st_mtime_ns == x_mtime
    assert video_io.probe(out_dir / "y.mp4").num_frames == 5
    assert video_io.probe(out_dir / "x.mp4").rate == "25/1"


def test_skip_existing_after_kills_and_runs_with_other_settings(tmp_path):
    """conftest.check_resume_after_kills: settings A and B differ in --alpha."""
    cons, sharp = tmp_path / "c", tmp_path / "s"
    for i, n in ((1, 4), (2, 60), (3, 4)):  # pair 2 takes long enough to kill the run in it
        video_io.write_video(cons / f"{i}.mp4", _frames(n, w=96, h=64, seed=i), 25)
        video_io.write_video(sharp / f"{i}.mp4", _frames(n, w=96, h=64, detail=0.3, seed=i),
                             25)
    settings = {"A": [], "B": ["--alpha", "1.0"]}

    def cmd(which, out, *extra):
        return [sys.executable, str(ROOT / "inference_step_2.py"), "--consistent_dir",
                str(cons), "--sharp_dir", str(sharp), "--output_dir", str(out), "--device", "cpu",
                "--sort_files", "--no_progress", *settings[which], *extra]

    def outputs(folder, names):
        return [folder / f"{n}.mp4" for n in names]

    check_resume_after_kills(cmd, outputs, "step 2", tmp_path)


def test_every_frame_fused_exactly_once(tmp_path, monkeypatch):
    cons, sharp, out_dir = tmp_path / "c", tmp_path / "s", tmp_path / "out"
    _png_folder(cons / "v", _frames(10, detail=0.03, seed=9))
    _png_folder(sharp / "v", _frames(10, detail=0.2, seed=10))
    calls = []

    def counting(c, s, **kw):
        calls.append(c.shape[0])
        return fuse_video(c, s, **kw)

    monkeypatch.setattr(step2, "fuse_video", counting)
    opts = step2.Step2Options(device="cpu", fps=NTSC_FILM, **WINDOWS, **TILES)
    assert step2.run_step2(cons, sharp, out_dir, opts) == 0
    # windows start at 0, 2, 4, 6 (4 frames, overlap 2): only the new frames of each are fused
    assert calls == [4, 2, 2, 2] and sum(calls) == 10
    info = video_io.probe(out_dir / "v.mp4")
    assert (info.num_frames, info.rate) == (10, "24000/1001")  # --fps override for a folder
    _assert_matches_reference(out_dir / "v.mp4", _reference(cons / "v", sharp / "v", **TILES),
                              tmp_path)


def test_cli_rejects_bad_windows(capsys):
    import inference_step_2

    base = ["--consistent_dir", "a", "--sharp_dir", "b", "--output_dir", "c"]
    for bad in (["--overlap_t", "33"], ["--window_w", "0"], ["--save_quality", "11"]):
        with pytest.raises(SystemExit) as e:
            inference_step_2.main(base + bad)
        assert e.value.code == 2
    # a missing input folder is reported, exit status 2
    with pytest.raises(SystemExit) as e:
        inference_step_2.main(base + ["--device", "cpu"])
    assert e.value.code == 2
    assert "input folder not found" in capsys.readouterr().err
