"""python -m Wan_SR.tools.degrade: LQ videos with the input's frame count and frame rate, no
audio, a PNG contact sheet per video, run_config.json, --scale, and clear argument errors."""
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from Wan_SR.data import video_io
from Wan_SR.tools.degrade import main

H, W = 64, 96


@pytest.fixture(autouse=True)
def _restore_logging():
    """main() sets up the Wan_SR logger (own handler, no propagation); undo it afterwards so
    other tests' caplog still sees records."""
    import logging

    lg = logging.getLogger("Wan_SR")
    saved = (list(lg.handlers), lg.propagate, lg.level)
    yield
    lg.handlers[:] = saved[0]
    lg.propagate, lg.level = saved[1], saved[2]


def _frames(n, seed=0):
    rng = np.random.default_rng(seed)
    base = cv2.resize(rng.integers(0, 256, (8, 12, 3)).astype(np.uint8), (W, H),
                      interpolation=cv2.INTER_CUBIC)
    return np.stack([np.roll(base, 2 * t, axis=1) for t in range(n)])


@pytest.fixture(scope="module")
def hq_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("hq")
    video_io.write_video(d / "clip_a.mp4", _frames(17), fps=25)
    # NTSC rate and an audio track (which the LQ must not carry)
    frames = _frames(9, seed=1)
    cmd = [video_io.ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt",
           "rgb24", "-s", f"{W}x{H}", "-r", "30000/1001", "-i", "-", "-f", "lavfi", "-i",
           "sine=frequency=440:duration=1", "-shortest", "-c:v", "libx264", "-pix_fmt", "yuv420p",
           "-c:a", "aac", str(d / "clip_b.mp4")]
    subprocess.run(cmd, input=frames.tobytes(), check=True)
    assert video_io.probe(d / "clip_b.mp4").has_audio
    return d


def test_writes_lq_with_same_frames_fps_and_contact_sheet(hq_dir, tmp_path):
    out = tmp_path / "lq"
    rc = main(["--input_dir", str(hq_dir), "--output_dir", str(out), "--seed", "3",
               "--device", "cpu", "--clip_frames", "8", "--log_level", "warning"])
    assert rc == 0
    for name in ("clip_a", "clip_b"):
        src, lq = video_io.probe(hq_dir / f"{name}.mp4"), video_io.probe(out / f"{name}.mp4")
        assert lq.num_frames == src.num_frames
        assert lq.rate == src.rate and (lq.width, lq.height) == (W, H)
        assert not lq.has_audio
        sheet = cv2.imread(str(out / f"{name}_contact.png"))
        assert sheet is not None and sheet.shape[1] >= 2 * min(H, W)
        assert sheet.shape[0] >= min(H, W) * min(4, src.num_frames)
        hq_frames = video_io.read_video(hq_dir / f"{name}.mp4").astype(float)
        lq_frames = video_io.read_video(out / f"{name}.mp4").astype(float)
        assert np.abs(hq_frames - lq_frames).mean() > 2  # it is degraded
        assert np.abs(hq_frames.mean() - lq_frames.mean()) < 20  # but the same picture
    cfg = json.loads((out / "run_config.json").read_text())
    assert cfg["settings"]["seed"] == 3 and cfg["settings"]["config"]["chain"] == "pssr"
    assert not list(out.glob(".*partial*"))
    assert [p.name for p in video_io.list_inputs(out)] == ["clip_a.mp4", "clip_b.mp4"]


def test_scale_writes_small_lq_and_realesrgan_config(hq_dir, tmp_path):
    out = tmp_path / "lq4"
    rc = main(["--input_dir", str(hq_dir), "--output_dir", str(out), "--scale", "4",
               "--config", "config/degradation_realesrgan.yml", "--device", "cpu",
               "--log_level", "warning"])
    assert rc == 0
    info = video_io.probe(out / "clip_a.mp4")
    assert (info.width, info.height, info.num_frames) == (W // 4, H // 4, 17)


def test_argument_errors(hq_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--input_dir", str(tmp_path / "missing"), "--output_dir", str(tmp_path / "o")])
    assert e.value.code == 2 and "--input_dir not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["--input_dir", str(hq_dir), "--output_dir", str(tmp_path / "o"), "--keep_size",
              "--scale", "4"])
    assert e.value.code == 2 and "not allowed with" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--input_dir", str(hq_dir), "--output_dir", str(tmp_path / "o"),
              "--config", str(tmp_path / "none.yml")])
    assert "--config not found" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["--input_dir", str(empty), "--output_dir", str(tmp_path / "o"),
                 "--device", "cpu"]) == 2
    bad = tmp_path / "bad.yml"
    bad.write_text("noise_rnage: [1, 2]\n")
    assert main(["--input_dir", str(hq_dir), "--output_dir", str(tmp_path / "o"),
                 "--config", str(bad), "--device", "cpu"]) == 2


def test_help_runs_as_module():
    r = subprocess.run([sys.executable, "-m", "Wan_SR.tools.degrade", "--help"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0
    for flag in ("--input_dir", "--output_dir", "--config", "--seed", "--keep_size", "--scale",
                 "--device", "--log_level"):
        assert flag in r.stdout
