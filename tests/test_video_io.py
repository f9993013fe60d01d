"""Video I/O: exact frame count and fps, streaming reader, atomic writer, clear errors."""
import numpy as np
import pytest

from Wan_SR.data import video_io


def frames(n=10, h=32, w=48, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n)[:, None, None, None]
    base = (np.arange(w)[None, None, :, None] * 4 + t * 10 + np.arange(h)[None, :, None, None] * 2)
    img = np.broadcast_to(base, (n, h, w, 3)) + rng.integers(0, 8, (n, h, w, 3))
    return (img % 256).astype(np.uint8)


@pytest.mark.parametrize("fps,rate", [(24000 / 1001, "24000/1001"), (30, "30/1"), (12.5, "25/2")])
def test_round_trip_keeps_frame_count_and_exact_fps(tmp_path, fps, rate):
    f = frames(13)
    out = video_io.write_video(tmp_path / "a.mp4", f, fps=fps, quality=10)
    info = video_io.probe(out)
    assert (info.num_frames, info.width, info.height, info.rate) == (13, 48, 32, rate)
    back = video_io.read_video(out)
    assert back.shape == f.shape
    assert np.abs(back.astype(int) - f.astype(int)).mean() < 4  # yuv420p chroma loss only


def test_reader_streams_windows_and_prefetch_gives_same_frames(tmp_path):
    f = frames(20)
    p = video_io.write_video(tmp_path / "a.mp4", f, fps=25)
    plain = video_io.FrameReader(p, chunk=3)
    pre = video_io.FrameReader(p, chunk=3, prefetch=2)
    for s, n in [(0, 7), (5, 7), (13, 7)]:
        a, b = plain.get(s, n), pre.get(s, n)
        assert a.shape == (n, 32, 48, 3) and np.array_equal(a, b)
    with pytest.raises(ValueError):
        plain.get(2, 3)
    with pytest.raises(video_io.VideoError, match="ended at 20"):
        pre.get(15, 7)
    plain.close()
    pre.close()


def test_background_writer_equals_foreground(tmp_path):
    f = frames(9)
    for bg in (False, True):
        with video_io.VideoWriter(tmp_path / f"{bg}.mp4", 24, (48, 32), background=bg) as w:
            for i in range(0, 9, 2):
                w.write(f[i:i + 2])
    assert np.array_equal(video_io.read_video(tmp_path / "False.mp4"),
                          video_io.read_video(tmp_path / "True.mp4"))


@pytest.mark.parametrize("background", [False, True])
def test_ending_the_input_first_then_closing_writes_every_frame(tmp_path, background):
    f = frames(9)
    writers = [video_io.VideoWriter(tmp_path / f"{i}.mp4", 24, (48, 32), background=background)
               for i in range(3)]
    for w in writers:
        w.write(f[:5])
        w.write(f[5:])
    for w in writers:  # every encoder finishes at once, then each is waited for
        w.end_input()
        w.end_input()  # a second call does nothing
        with pytest.raises(video_io.VideoError, match="write after close"):
            w.write(f[:1])
        assert not w.path.exists()  # the file appears only once closed
    for i, w in enumerate(writers):
        assert w.close() == tmp_path / f"{i}.mp4"
        assert video_io.probe(w.path).num_frames == 9
    assert np.array_equal(video_io.read_video(tmp_path / "0.mp4"),
                          video_io.read_video(tmp_path / "2.mp4"))


def test_output_writers_end_every_input_before_the_first_close(tmp_path):
    from Wan_SR.runs.outputs import OutputWriters

    calls = []

    class Writer:
        def __init__(self, key):
            self.key, self.frames_written = key, 4

        def end_input(self):
            calls.append(("end", self.key))

    class Records:
        def close_writer(self, wr):
            calls.append(("close", wr.key))
            return wr.key

    out = OutputWriters(Records(), {"a": None, "b": None, "c": None}, 4, "clip")
    out.writers = {k: Writer(k) for k in "abc"}
    assert out.close() == {"a": "a", "b": "b", "c": "c"}
    assert calls == [("end", "a"), ("end", "b"), ("end", "c"),
                     ("close", "a"), ("close", "b"), ("close", "c")]
    out.writers["b"].frames_written = 3
    with pytest.raises(video_io.VideoError, match="b got 3 of 4 frames"):
        out.close()


def test_frames_handed_over_as_host_frames_are_written_the_same(tmp_path):
    import pickle

    import torch

    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (6, 32, 48, 3), dtype=np.uint8)
    host = [video_io.HostFrames(torch.from_numpy(frames[i:i + 3])) for i in (0, 3)]
    assert host[0].shape == (3, 32, 48, 3) and len(host[1]) == 3
    assert np.array_equal(pickle.loads(pickle.dumps(host[1])), frames[3:])
    for background in (False, True):
        out = tmp_path / f"h{background}.mp4"
        with video_io.VideoWriter(out, fps=30, size=(48, 32), background=background) as w:
            for h in host:
                w.write(h)
        video_io.write_video(tmp_path / "a.mp4", frames, fps=30)
        assert np.array_equal(video_io.read_video(out), video_io.read_video(tmp_path / "a.mp4"))
    with video_io.VideoWriter(tmp_path / "bad.mp4", fps=30, size=(40, 32)) as w:
        with pytest.raises(ValueError, match="expected uint8 frames"):
            w.write(host[0])
        w.write(np.zeros((1, 32, 40, 3), np.uint8))
    # on the CPU (no copy to wait for) the frames come back as an array either way
    t = torch.rand(2, 3, 8, 8)
    assert np.array_equal(video_io.tensor_to_frames(t, wait=False), video_io.tensor_to_frames(t))


def test_writer_is_atomic(tmp_path):
    out = tmp_path / "x.mp4"
    with pytest.raises(RuntimeError):
        with video_io.VideoWriter(out, 24, (48, 32), background=True) as w:
            w.write(frames(3))
            raise RuntimeError("boom")
    assert not out.exists() and not list(tmp_path.iterdir())
    with pytest.raises(ValueError, match="expected uint8 frames"):
        with video_io.VideoWriter(out, 24, (48, 32)) as w:
            w.write(frames(2, h=30))
    assert not list(tmp_path.iterdir())


def test_odd_size_is_kept_exactly(tmp_path, caplog):
    # Was test_odd_size_is_padded_to_even (47x31 -> 48x32); issue 10 asks for the exact size.
    f = frames(5, h=31, w=47)
    with caplog.at_level("INFO", logger="Wan_SR.data.video_io"):
        out = video_io.write_video(tmp_path / "odd.mp4", f, fps=24, quality=10)
    info = video_io.probe(out)
    assert (info.width, info.height, info.num_frames, info.pix_fmt) == (47, 31, 5, "yuv444p")
    assert any("yuv444p" in r.getMessage() and "odd" in r.getMessage() for r in caplog.records)
    back = video_io.read_video(out)
    assert back.shape == f.shape and np.abs(back.astype(int) - f.astype(int)).mean() < 1.5
    even = video_io.probe(video_io.write_video(tmp_path / "even.mp4", frames(3), fps=24))
    assert (even.width, even.height, even.pix_fmt) == (48, 32, "yuv420p")


def test_frame_folder_input(tmp_path):
    import cv2

    f = frames(6)
    d = tmp_path / "clip"
    d.mkdir()
    order = [0, 1, 2, 3, 10, 11]
    for k, i in enumerate(order):
        cv2.imwrite(str(d / f"f{i}.png"), cv2.cvtColor(f[k], cv2.COLOR_RGB2BGR))
    info = video_io.probe(d, fps=12)
    assert info.is_folder and info.num_frames == 6 and info.rate == "12/1"
    assert np.array_equal(video_io.read_video(d), f)  # png is lossless, natural order kept
    assert video_io.stem(d) == "clip" and video_io.list_inputs(tmp_path) == [d]


def test_clear_errors_for_bad_inputs(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"garbage" * 100)
    with pytest.raises(video_io.VideoError, match="bad.mp4"):
        video_io.probe(bad)
    with pytest.raises(video_io.VideoError, match="no such file"):
        video_io.probe(tmp_path / "missing.mp4")
    (tmp_path / "empty").mkdir()
    with pytest.raises(video_io.VideoError, match="no png/jpg"):
        video_io.probe(tmp_path / "empty")


def test_is_complete_output(tmp_path):
    p = video_io.write_video(tmp_path / "a.mp4", frames(5), fps=24)
    assert video_io.is_complete_output(p, 5)
    assert not video_io.is_complete_output(p, 6)
    assert not video_io.is_complete_output(tmp_path / "none.mp4", 5)


def test_fps_rational_snapping():
    assert str(video_io.fps_to_rational(29.97)) == "30000/1001"
    assert str(video_io.fps_to_rational(23.976)) == "24000/1001"
    assert str(video_io.fps_to_rational(25.0)) == "25"
    assert video_io.quality_to_crf(10) == 0 and video_io.quality_to_crf(0) == 51
