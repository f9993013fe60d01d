"""Video I/O on real-world inputs (issues 9 and 10): old ffmpeg builds, rotated phone videos,
anamorphic pixels, odd sizes, damaged tails, every container, named skipped files, writer
errors and interrupted writes. Every clip is built here (tiny, a few frames)."""
import dataclasses
import logging
import os
import stat
import subprocess

import numpy as np
import pytest

from Wan_SR.core.files import partial_name
from Wan_SR.data import video_io
from Wan_SR.data.video_io.probing import _rotation, _video_block

LOGGER = "Wan_SR.data.video_io"


def pattern(n=8, h=64, w=96):
    """Clearly asymmetric frames: a horizontal ramp, a vertical ramp in green, a white block in
    the top-left corner that moves right with time (no rotation or flip maps it onto itself)."""
    y = np.arange(h)[:, None]
    x = np.arange(w)[None, :]
    out = np.zeros((n, h, w, 3), np.uint8)
    for i in range(n):
        out[i, ..., 0] = (x * 255 // (w - 1))
        out[i, ..., 1] = (y * 255 // (h - 1))
        out[i, ..., 2] = 40 + 10 * i
        out[i, 2:14, 2 + 3 * i:14 + 3 * i] = 255
    return out


def ffmpeg(*args):
    proc = subprocess.run([video_io.ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
                           *map(str, args)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc


def real_version():
    video_io.clear_ffmpeg_cache()
    return video_io.ffmpeg_caps().version_tuple or (99, 0)


@pytest.fixture(autouse=True)
def _fresh_ffmpeg_cache():
    video_io.clear_ffmpeg_cache()
    yield
    video_io.clear_ffmpeg_cache()


# ------------------------------------------------------------------ old ffmpeg (issue 9)

FAKE = """#!/bin/sh
# A fake ffmpeg {version}: reports that version, rejects the options it would not know,
# otherwise runs the real binary (translating -vsync to -fps_mode when the real one is new).
REAL='{real}'
LOG='{log}'
n=$#
i=0
while [ $i -lt $n ]; do
  a="$1"; shift
  case "$a" in
    -version) echo "ffmpeg version {version} Copyright (c) 2000-2019 the FFmpeg developers"; exit 0;;
    -fps_mode*) if [ "{reject}" = fps_mode ]; then echo "fps_mode" >> "$LOG";
        echo "Unrecognized option 'fps_mode'." >&2;
        echo "Error splitting the argument list: Option not found" >&2; exit 1; fi;;
    -vsync) echo "vsync" >> "$LOG"; if [ "{translate}" = 1 ]; then a="-fps_mode"; fi;;
  esac
  set -- "$@" "$a"
  i=$((i+1))
done
exec "$REAL" "$@"
"""


def fake_ffmpeg(tmp_path, monkeypatch, version, reject="fps_mode"):
    real = video_io.ffmpeg_exe()
    translate = "1" if real_version() >= (5, 1) else "0"
    log = tmp_path / "fake_calls.log"
    log.write_text("")
    exe = tmp_path / "bin" / "ffmpeg"
    exe.parent.mkdir()
    exe.write_text(FAKE.format(version=version, real=real, log=log, reject=reject,
                               translate=translate))
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    monkeypatch.setenv("IMAGEIO_FFMPEG_EXE", str(exe))
    video_io.clear_ffmpeg_cache()
    return log


def test_old_ffmpeg_gets_vsync_and_reads_and_writes(tmp_path, monkeypatch):
    log = fake_ffmpeg(tmp_path, monkeypatch, "4.2.2-static")
    caps = video_io.ffmpeg_caps()
    assert caps.version == "4.2.2-static" and caps.version_tuple == (4, 2)
    assert caps.passthrough == ("-vsync", "passthrough")
    f = pattern(9)
    out = video_io.write_video(tmp_path / "old.mp4", f, fps=30000 / 1001, quality=10)
    info = video_io.probe(out)
    assert (info.num_frames, info.width, info.height, info.rate) == (9, 96, 64, "30000/1001")
    back = video_io.read_video(out)
    assert back.shape == f.shape and np.abs(back.astype(int) - f.astype(int)).mean() < 4
    reader = video_io.FrameReader(out, chunk=4, prefetch=1)
    assert np.array_equal(reader.get(5, 4), back[5:9])
    reader.close()
    calls = log.read_text().split()
    assert "fps_mode" not in calls  # never tried the option it does not know
    assert calls.count("vsync") >= 3  # the writer, the probe's decode count and the reader


def test_new_ffmpeg_gets_fps_mode(tmp_path, monkeypatch):
    fake_ffmpeg(tmp_path, monkeypatch, "n7.1", reject="none")
    caps = video_io.ffmpeg_caps()
    assert caps.version_tuple == (7, 1) and caps.passthrough == ("-fps_mode", "passthrough")


def test_version_cache_is_per_binary_and_clearable(tmp_path, monkeypatch):
    fake_ffmpeg(tmp_path, monkeypatch, "4.4.2-0ubuntu0.22.04.1")
    assert video_io.ffmpeg_caps().version_tuple == (4, 4)
    exe = tmp_path / "bin" / "ffmpeg"
    exe.write_text(exe.read_text().replace("4.4.2-0ubuntu0.22.04.1", "6.0"))
    assert video_io.ffmpeg_caps().version_tuple == (4, 4)  # cached: -version ran once
    video_io.clear_ffmpeg_cache()
    assert video_io.ffmpeg_caps().version_tuple == (6, 0)


def test_too_old_ffmpeg_is_one_clear_line(tmp_path, monkeypatch):
    fake_ffmpeg(tmp_path, monkeypatch, "2.8.15")
    with pytest.raises(video_io.VideoError) as e:
        video_io.write_video(tmp_path / "x.mp4", pattern(2), fps=24)
    msg = str(e.value)
    assert "\n" not in msg and "2.8.15" in msg and "pip install -U imageio-ffmpeg" in msg
    assert "IMAGEIO_FFMPEG_EXE" in msg
    assert not list((tmp_path).glob("*.mp4")) and not list(tmp_path.glob(".*partial*"))


def test_unknown_option_error_names_version_and_fix(tmp_path, monkeypatch):
    """A binary that claims a new version but rejects -fps_mode: the reader's error says so."""
    src = video_io.write_video(tmp_path / "a.mp4", pattern(3), fps=24)
    info = video_io.probe(src)
    fake_ffmpeg(tmp_path, monkeypatch, "6.0")
    with pytest.raises(video_io.VideoError) as e:
        list(video_io.iter_frames(src, info=info))
    msg = str(e.value)
    assert "6.0" in msg and "fps_mode" in msg and "pip install -U imageio-ffmpeg" in msg


# ------------------------------------------------------------------ rotation and SAR (issue 10)

def rotate_remux(src, dst, degrees_ccw):
    """Add display-matrix rotation without re-encoding: ffmpeg >= 6 has -display_rotation
    (counter-clockwise); older ones take a rotate tag, which their mov muxer (4.x) stores as
    that many degrees counter-clockwise (read back as "rotate: 360-x", displaymatrix x)."""
    if real_version() >= (6, 0):
        ffmpeg("-display_rotation:v:0", degrees_ccw, "-i", src, "-c", "copy", dst)
    else:
        ffmpeg("-i", src, "-c", "copy", "-metadata:s:v:0", f"rotate={degrees_ccw}", dst)
    return dst


@pytest.mark.parametrize("degrees,k", [(90, 1), (270, -1)])
def test_rotated_clip_reads_as_a_player_shows_it(tmp_path, degrees, k):
    f = pattern(8)
    src = video_io.write_video(tmp_path / "land.mp4", f, fps=25, quality=10)
    plain = video_io.read_video(src)
    rot = rotate_remux(src, tmp_path / "phone.mp4", degrees)
    info = video_io.probe(rot)
    assert (info.width, info.height, info.num_frames, info.rotation) == (64, 96, 8, degrees)
    back = video_io.read_video(rot)
    expected = np.rot90(plain, k, axes=(1, 2))
    assert back.shape == (8, 96, 64, 3)
    assert np.abs(back.astype(int) - expected.astype(int)).mean() < 1.0  # same bitstream
    assert np.abs(back.astype(int) - np.rot90(f, k, axes=(1, 2)).astype(int)).mean() < 3
    # the wrong orientation is far off (the pattern is asymmetric): the test can fail
    assert np.abs(back.astype(int) - np.rot90(plain, -k, axes=(1, 2)).astype(int)).mean() > 20
    reader = video_io.FrameReader(rot, info=info, chunk=3)
    assert np.array_equal(reader.get(2, 5), back[2:7])
    reader.close()
    # an output written from these frames shows the same picture, without rotation metadata
    out = video_io.write_video(tmp_path / "out.mp4", back, fps=info.rate, quality=10,
                               sar=info.sar)
    oinfo = video_io.probe(out)
    assert (oinfo.width, oinfo.height, oinfo.rotation) == (64, 96, 0)
    assert np.abs(video_io.read_video(out).astype(int) - back.astype(int)).mean() < 3


def test_rotation_parsed_from_old_and_new_ffmpeg_text():
    old = ("    Stream #0:0(und): Video: h264 (High) (avc1 / 0x31637661), yuv420p, 96x64 "
           "[SAR 1:1 DAR 3:2], 73 kb/s, 25 fps, 25 tbr, 12800 tbn, 50 tbc (default)\n"
           "    Metadata:\n      rotate          : 270\n      handler_name    : VideoHandler\n"
           "    Side data:\n      displaymatrix: rotation of 90.00 degrees\n"
           "Stream mapping:\n")
    new = ("  Stream #0:0[0x1](und): Video: h264 (High) (avc1 / 0x31637661), yuv420p(progressive)"
           ", 96x64 [SAR 1:1 DAR 3:2], 25 fps, 25 tbr, 12800 tbn (default)\n"
           "    Side data:\n      Display Matrix: rotation of -90.00 degrees\n")
    tag_only = old.replace("      displaymatrix: rotation of 90.00 degrees\n", "")
    assert _rotation(_video_block(old)[1]) == 90
    assert _rotation(_video_block(new)[1]) == 270
    assert _rotation(_video_block(tag_only)[1]) == 90  # tag counts clockwise
    assert _rotation(_video_block(new.replace("-90.00", "0.00"))[1]) == 0


def test_anamorphic_clip_keeps_its_sar(tmp_path):
    f = pattern(6)
    # an anamorphic source made by ffmpeg itself (SAR in the H.264 bitstream and the container)
    raw = tmp_path / "src.rgb"
    raw.write_bytes(f.tobytes())
    src = tmp_path / "ana.mp4"
    ffmpeg("-f", "rawvideo", "-pix_fmt", "rgb24", "-s", "96x64", "-r", "25", "-i", raw,
           "-vf", "setsar=4/3", "-c:v", "libx264", "-pix_fmt", "yuv420p", src)
    info = video_io.probe(src)
    assert (info.sar, info.width, info.height) == ("4:3", 96, 64)
    frames_in = video_io.read_video(src)
    assert frames_in.shape == (6, 64, 96, 3)  # stored pixels, not stretched
    with video_io.VideoWriter(tmp_path / "kept.mp4", info.rate, (info.width, info.height),
                              sar=info.sar) as w:
        w.write(frames_in)
    assert video_io.probe(tmp_path / "kept.mp4").sar == "4:3"
    # without sar the output is square-pixel: the SAR really comes from the argument
    plain = video_io.write_video(tmp_path / "plain.mp4", frames_in, fps=25)
    assert video_io.probe(plain).sar == "1:1"
    # rotated by 90 degrees, the delivered frames have the inverse SAR
    rot = rotate_remux(src, tmp_path / "ana_rot.mp4", 90)
    rinfo = video_io.probe(rot)
    assert (rinfo.sar, rinfo.width, rinfo.height) == ("3:4", 64, 96)
    with pytest.raises(ValueError, match="aspect ratio"):
        video_io.VideoWriter(tmp_path / "bad.mp4", 25, (96, 64), sar="wide")


# ------------------------------------------------------------------ exact sizes

def test_101x77_in_gives_101x77_out(tmp_path, caplog):
    f = pattern(6, h=77, w=101)
    raw = tmp_path / "src.rgb"
    raw.write_bytes(f.tobytes())
    src = tmp_path / "src.mkv"  # an input of that size (lossless), as a user would have
    ffmpeg("-f", "rawvideo", "-pix_fmt", "rgb24", "-s", "101x77", "-r", "25", "-i", raw,
           "-c:v", "ffv1", src)
    info = video_io.probe(src)
    assert (info.width, info.height, info.num_frames) == (101, 77, 6)
    frames_in = video_io.read_video(src)
    assert np.array_equal(frames_in, f)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        with video_io.VideoWriter(tmp_path / "out.mp4", info.rate, (info.width, info.height),
                                  quality=10) as w:
            w.write(frames_in)
    assert any("101x77" in r.getMessage() and "yuv444p" in r.getMessage()
               for r in caplog.records if r.levelno == logging.INFO)
    out = video_io.probe(tmp_path / "out.mp4")
    assert (out.width, out.height, out.num_frames, out.pix_fmt) == (101, 77, 6, "yuv444p")
    back = video_io.read_video(tmp_path / "out.mp4")
    assert back.shape == (6, 77, 101, 3)
    assert np.abs(back.astype(int) - f.astype(int)).max() <= 3  # 4:4:4 at CRF 0: rounding only


# ------------------------------------------------------------------ damaged tail

def damage_last_packet(src, dst):
    """Zero the payload of the last video packet (the writer puts moov first, so the last
    packet's bytes end the file); its 4-byte length prefix is kept."""
    out = subprocess.run([video_io.ffmpeg_exe(), "-v", "error", "-i", str(src), "-map", "0:v:0",
                          "-c", "copy", "-f", "framecrc", "-"], capture_output=True, text=True)
    rows = [ln.split(",") for ln in out.stdout.splitlines() if ln and not ln.startswith("#")]
    size = int(rows[-1][4])
    data = bytearray(src.read_bytes())
    data[-size + 4:] = bytes(size - 4)
    dst.write_bytes(bytes(data))
    return len(rows)


def test_damaged_last_packet_gives_all_decodable_frames(tmp_path, caplog):
    f = pattern(14)
    good = video_io.write_video(tmp_path / "good.mp4", f, fps=25, quality=10)
    intact = video_io.read_video(good)
    bad = tmp_path / "clip.mp4"
    assert damage_last_packet(good, bad) == 14
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        info = video_io.probe(bad)
    assert (info.num_frames, info.lost_frames, info.packets) == (13, 1, 14)
    warns = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("clip.mp4" in m and "frames 13..13" in m and "first 13" in m for m in warns), warns
    # the consumers restore up to the last good frame: windows over num_frames all work
    reader = video_io.FrameReader(bad, info=info, chunk=4, prefetch=2)
    got = np.concatenate([reader.get(0, 7), reader.get(7, 6)])
    reader.close()
    assert got.shape == (13, 64, 96, 3)
    assert np.array_equal(got, intact[:13])
    # an intact clip has no lost frames and no warning
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        ok = video_io.probe(good)
    assert (ok.num_frames, ok.lost_frames) == (14, 0) and not caplog.records


def test_reader_tolerates_a_stream_shorter_than_announced(tmp_path, caplog):
    """When damage escapes the probe (an info made elsewhere), the reader serves every frame
    that decodes, names the lost ones once, and refuses only windows past the real end."""
    good = video_io.write_video(tmp_path / "good.mp4", pattern(14), fps=25, quality=10)
    bad = tmp_path / "clip.mp4"
    damage_last_packet(good, bad)
    info = dataclasses.replace(video_io.probe(bad), num_frames=14, lost_frames=0)
    reader = video_io.FrameReader(bad, info=info, chunk=4)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert reader.get(0, 13).shape == (13, 64, 96, 3)
        with pytest.raises(video_io.VideoError, match="ended at 13"):
            reader.get(8, 6)
    assert reader.available == 13
    warns = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warns) == 1 and "frames 13..13 (of 14)" in warns[0] and "clip.mp4" in warns[0]
    reader.close()


# ------------------------------------------------------------------ containers and skipped files

@pytest.mark.parametrize("ext,codec_args", [
    (".ts", ["-c:v", "libx264", "-pix_fmt", "yuv420p"]),
    (".mpg", ["-c:v", "mpeg2video", "-q:v", "2"]),
    (".y4m", ["-pix_fmt", "yuv420p"]),
    (".flv", ["-c:v", "flv1", "-q:v", "2"]),
])
def test_other_containers_are_listed_and_read(tmp_path, ext, codec_args):
    f = pattern(7)
    raw = tmp_path / "src.rgb"
    raw.write_bytes(f.tobytes())
    d = tmp_path / "in"
    d.mkdir()
    clip = d / f"clip{ext}"
    ffmpeg("-f", "rawvideo", "-pix_fmt", "rgb24", "-s", "96x64", "-r", "25", "-i", raw,
           *codec_args, clip)
    assert video_io.list_inputs(d) == [clip]
    info = video_io.probe(clip)
    assert (info.width, info.height, info.num_frames, info.rate) == (96, 64, 7, "25/1")
    back = video_io.read_video(clip)
    assert back.shape == f.shape and np.abs(back.astype(int) - f.astype(int)).mean() < 8


def test_skipped_files_are_named(tmp_path, caplog):
    for name in ["b.ts", "a.mp4", "c.MPG", "d.m2ts", "e.y4m", "f.gif", "g.wmv", "h.3gp",
                 "i.ogv", "j.mts", "notes.txt", "k.flv", "cover.pdf", ".DS_Store",
                 ".a.123.partial.mp4"]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "empty_dir").mkdir()
    frames_dir = tmp_path / "frames"
    frames_dir.mkdir()
    (frames_dir / "0.png").write_bytes(b"x")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        skipped = []
        inputs = video_io.list_inputs(tmp_path, skipped=skipped)
    assert [p.name for p in inputs] == ["a.mp4", "b.ts", "c.MPG", "d.m2ts", "e.y4m", "f.gif",
                                        "frames", "g.wmv", "h.3gp", "i.ogv", "j.mts", "k.flv"]
    assert [p.name for p in skipped] == ["cover.pdf", "empty_dir", "notes.txt"]
    warns = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warns) == 1 and all(n in warns[0] for n in ("cover.pdf", "empty_dir/",
                                                             "notes.txt"))
    ins, skip = video_io.scan_inputs(tmp_path)
    assert ins == inputs and skip == skipped
    clean = tmp_path / "clean"
    clean.mkdir()
    (clean / "x.mkv").write_bytes(b"x")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert video_io.list_inputs(clean) == [clean / "x.mkv"]
    assert not caplog.records  # nothing skipped, nothing said


# ------------------------------------------------------------------ writer errors and interrupts

@pytest.mark.parametrize("background", [False, True])
def test_writer_error_carries_ffmpegs_reason(tmp_path, background):
    out = tmp_path / "x.mp4"
    partial_name(out, ".mp4").mkdir()  # ffmpeg cannot open its output: "Is a directory"
    with pytest.raises(video_io.VideoError) as e:
        with video_io.VideoWriter(out, 25, (96, 64), background=background) as w:
            for _ in range(20):
                w.write(pattern(8))
    msg = str(e.value)
    assert "Is a directory" in msg and str(out) in msg
    assert msg != "Broken pipe" and "Broken pipe" not in msg.split("(", 1)[-1][:12]
    assert not out.exists()


def test_unwritable_output_fails_up_front(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(video_io.VideoError, match="is a file"):
        video_io.VideoWriter(blocker / "sub" / "x.mp4", 25, (96, 64))
    with pytest.raises(video_io.VideoError, match="is a folder"):
        video_io.VideoWriter(tmp_path, 25, (96, 64))


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="root may write anywhere; permissions cannot be tested")
def test_read_only_folder_says_permission_denied(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(video_io.VideoError, match="Permission denied"):
            video_io.write_video(ro / "x.mp4", pattern(2), fps=24)
    finally:
        ro.chmod(0o700)


@pytest.mark.parametrize("background", [False, True])
def test_interrupted_write_leaves_no_partial_file(tmp_path, background):
    out = tmp_path / "x.mp4"
    with pytest.raises(KeyboardInterrupt):
        with video_io.VideoWriter(out, 25, (96, 64), background=background) as w:
            w.write(pattern(8))
            assert w.tmp.name.startswith(".x.") and ".partial" in w.tmp.name
            raise KeyboardInterrupt
    assert w._proc.poll() is not None  # ffmpeg is gone
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_git_build_version_asks_the_binary(tmp_path, monkeypatch):
    """A git build ("N-...") has no release number: the options it lists decide."""
    expected = "-fps_mode" if real_version() >= (5, 1) else "-vsync"  # of the real binary
    fake_ffmpeg(tmp_path, monkeypatch, "N-112345-gabcdef0123", reject="none")
    caps = video_io.ffmpeg_caps()
    assert caps.version == "N-112345-gabcdef0123" and caps.version_tuple is None
    assert caps.passthrough == (expected, "passthrough")


def test_binary_that_is_not_ffmpeg_is_one_clear_line(tmp_path, monkeypatch):
    exe = tmp_path / "notffmpeg"
    exe.write_text("#!/bin/sh\necho hello\n")
    exe.chmod(0o755)
    monkeypatch.setenv("IMAGEIO_FFMPEG_EXE", str(exe))
    video_io.clear_ffmpeg_cache()
    with pytest.raises(video_io.VideoError) as e:
        video_io.ffmpeg_version()
    assert "\n" not in str(e.value) and "IMAGEIO_FFMPEG_EXE" in str(e.value)
    monkeypatch.setenv("IMAGEIO_FFMPEG_EXE", str(tmp_path / "missing"))
    video_io.clear_ffmpeg_cache()
    with pytest.raises(video_io.VideoError, match="could not be run"):
        video_io.ffmpeg_version()
