"""Latent-space windows (``--window_space latent``): Wan_SR/sampling/latent_windows.py."""

import numpy as np
import pytest
import torch

from Wan_SR.data import video_io
from Wan_SR.sampling import latent_windows as lw
from Wan_SR.sampling.pipeline import pad_tile
from Wan_SR.core.options import Step1Config, WindowOptions
from Wan_SR.runs.step1 import plan_video, restore_folder, restore_video, sources
from Wan_SR.runs.step1.sources import padded_chunks
from test_step1 import make_clip, step1_config

ALL = ["base", "base+draft_1", "base+draft_2", "base+draft_3"]
# 13 frames -> 4 latents; window 9 / overlap 4 -> 3 latents / overlap 1 -> windows at 0 and 1.
# 48x48 -> 6x6 latents; 32 px tiles / 16 overlap -> 4 / 2 latents -> 2x2 tiles.
SMALL = WindowOptions(window_t=9, overlap_t=4, window_h=32, overlap_h=16, window_w=32, overlap_w=16)
WHOLE = WindowOptions(window_t=33, overlap_t=16, window_h=720, overlap_h=128, window_w=1280,
                      overlap_w=128)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """The tiny models run several times faster on one intra-op thread (no oversubscription on a
    busy CPU); the previous setting is restored after this module."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def clip13(tmp_path_factory):
    d = tmp_path_factory.mktemp("clip13")
    make_clip(d / "in" / "c.mp4", n=13, h=48, w=48)
    return d / "in" / "c.mp4"


def _frames(path):
    return video_io.frames_to_tensor(video_io.read_video(path))


def _encode_streamed(pipe, path):
    job = plan_video(path, path.parent, Step1Config(), pipe.branch_names(), None)
    reader = video_io.FrameReader(path, info=job.info)
    try:
        chunks = list(padded_chunks(reader, job.clip, pipe.device))
        return chunks, pipe.encode_streamed(iter(chunks))
    finally:
        reader.close()


def test_streamed_encode_equals_whole_encode(pipe, tmp_path):
    # 11 frames (padded to 13 by repeating the last), 40x56 (padded to 48x64 by edge replication)
    path = make_clip(tmp_path / "a.mp4", n=11, h=40, w=56)
    pipe.stats.reset()
    chunks, z = _encode_streamed(pipe, path)
    assert [c.shape[0] for c in chunks] == [1, 4, 4, 4]
    assert pipe.stats.encodes == 1
    padded, _ = pad_tile(_frames(path))
    assert torch.equal(torch.cat(chunks), padded)
    with torch.no_grad():
        ref = pipe.encode(padded)
    assert z.shape == ref.shape == (1, 16, 4, 6, 8)
    assert torch.allclose(z, ref, atol=1e-5, rtol=1e-5)


def test_streamed_decode_equals_whole_decode(pipe):
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(2, 1, 16, 4, 6, 8, generator=g)
    with torch.no_grad():
        ref1, ref2 = pipe.decode(z1), pipe.decode(z2)
    assert ref1.shape == (13, 3, 48, 64)
    pipe.stats.reset()
    # two branches in lockstep, cropped to an 11-frame 40x56 clip
    chunks = list(pipe.decode_streamed({"a": z1, "b": z2}, 11, 40, 56))
    assert pipe.stats.decodes == 2
    assert [c["a"].shape[0] for c in chunks] == [1, 4, 4, 2]
    for key, ref in (("a", ref1), ("b", ref2)):
        out = torch.cat([c[key] for c in chunks])
        assert out.shape == (11, 3, 40, 56)
        assert torch.allclose(out, ref[:11, :, :40, :56], atol=1e-5)


def test_latent_window_layout():
    starts, lt, lo, boxes, ov_h, ov_w = lw.latent_windows((4, 6, 6), SMALL)
    assert (starts, lt, lo, ov_h, ov_w) == ([0, 1], 3, 1, 2, 2)
    assert boxes == [(0, 0, 4, 4), (0, 2, 4, 4), (2, 0, 4, 4), (2, 2, 4, 4)]
    # tiles are the latent size of a /16-padded pixel tile: always even
    _, _, _, boxes, _, _ = lw.latent_windows((9, 90, 160), WindowOptions(window_h=40, window_w=72,
                                                                         overlap_h=8, overlap_w=8))
    assert {(b[2], b[3]) for b in boxes} == {(6, 10)}


def _capture_writes(monkeypatch):
    written = {}
    orig = video_io.VideoWriter.write

    def write(self, frames):
        written.setdefault(self.path, []).append(np.asarray(frames).copy())
        return orig(self, frames)

    monkeypatch.setattr(video_io.VideoWriter, "write", write)
    return written


def test_single_window_equals_the_direct_computation(pipe, clip13, tmp_path, monkeypatch):
    padded, (T, H, W) = pad_tile(_frames(clip13))
    with torch.no_grad():
        ref = pipe.decode(pipe.sample_latents(pipe.encode(padded), num_draft_steps=0)[0])[:T]
    _, z = _encode_streamed(pipe, clip13)
    vols = lw.sample_windows(pipe, z, ["base"], WHOLE)
    out = torch.cat([c["base"] for c in pipe.decode_streamed(vols, T, H, W)])
    assert out.shape == ref.shape == (13, 3, 48, 48)
    assert torch.allclose(out, ref, atol=1e-5)
    # end to end, the written frames of both modes agree (to uint8 rounding)
    written = _capture_writes(monkeypatch)
    for space in ("latent", "pixel"):
        restore_video(pipe, clip13, tmp_path / space, step1_config(
            ["base"], windows=WHOLE, window_space=space), show_progress=False)
    lat, pix = (np.concatenate(written[tmp_path / s / "base" / "c.mp4"]).astype(int)
                for s in ("latent", "pixel"))
    expect = video_io.tensor_to_frames(ref).astype(int)
    assert lat.shape == pix.shape == expect.shape
    assert np.abs(lat - expect).max() <= 1 and np.abs(pix - expect).max() <= 1


@pytest.mark.parametrize("outputs, decoded", [(ALL + ["final"], ALL),
                                              (["base+draft_1", "final"],
                                               ["base", "base+draft_1", "base+draft_3"])])
def test_outputs_and_one_encode_one_decode_per_branch(pipe, clip13, tmp_path, monkeypatch,
                                                      outputs, decoded):
    dit_calls, vae_whole_calls = [], []
    orig = pipe.sample_latents
    monkeypatch.setattr(pipe, "sample_latents", lambda *a, **k: dit_calls.append(1) or orig(*a, **k))
    for fn in ("encode", "decode"):
        monkeypatch.setattr(pipe.vae.model, fn, lambda *a, **k: vae_whole_calls.append(1))
    pipe.stats.reset()
    out = tmp_path / "out"
    res, _ = restore_video(pipe, clip13, out, step1_config(outputs, windows=SMALL,
                                                           window_space="latent"),
                           show_progress=False)
    assert set(res) == set(outputs)
    assert pipe.stats.encodes == 1 and pipe.stats.decodes == len(decoded)
    assert len(dit_calls) == 2 * 4 and not vae_whole_calls  # 2 latent windows x 2x2 tiles
    for o in outputs:
        info = video_io.probe(out / o / "c.mp4")
        assert (info.num_frames, info.width, info.height, info.rate) == (13, 48, 48, "24000/1001"), o
    assert sorted(p.name for p in out.iterdir()) == sorted(outputs)
    assert not list(out.rglob("*.partial*"))


def test_upscale_and_odd_size(pipe, tmp_path):
    path = make_clip(tmp_path / "in" / "s.mp4", n=6, h=14, w=22)
    out = tmp_path / "out"
    restore_video(pipe, path, out, step1_config(["base+draft_2"], upscale=2.0, windows=SMALL,
                                                window_space="latent"),
                  show_progress=False)
    info = video_io.probe(out / "base+draft_2" / "s.mp4")
    assert (info.num_frames, info.width, info.height) == (6, 44, 28)


def test_skip_existing(pipe, tmp_path, caplog):
    make_clip(tmp_path / "in" / "a.mp4", n=5, h=32, w=32)
    make_clip(tmp_path / "in" / "b.mp4", n=5, h=32, w=32, seed=1)
    out = tmp_path / "out"
    opts = step1_config(["base", "base+draft_3"], windows=SMALL, skip_existing=True,
                        window_space="latent")
    assert restore_folder(pipe, tmp_path / "in", out, opts) == 0
    trunc = out / "base+draft_3" / "b.mp4"
    video_io.write_video(trunc, video_io.read_video(trunc)[:3], fps=24)
    kept = {p: p.stat().st_mtime_ns for p in out.rglob("*.mp4") if p != trunc}
    pipe.stats.reset()
    caplog.clear()
    with caplog.at_level("INFO", logger="Wan_SR"):
        assert restore_folder(pipe, tmp_path / "in", out, opts) == 0
    logs = caplog.messages
    assert pipe.stats.encodes == 1 and pipe.stats.decodes == 1  # only b, only its draft_3 branch
    assert video_io.probe(trunc).num_frames == 5
    assert all(p.stat().st_mtime_ns == m for p, m in kept.items())
    assert any("a: outputs complete, skipped" in line for line in logs)


def test_failure_aborts_every_writer(pipe, clip13, tmp_path, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("DiT failed")

    monkeypatch.setattr(pipe, "sample_latents", boom)
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="DiT failed"):
        restore_video(pipe, clip13, out, step1_config(["base", "final"], windows=SMALL,
                                                      window_space="latent"),
                      show_progress=False)
    assert not list(out.rglob("*.mp4"))


def test_cli_window_space(tiny_paths, tmp_path, monkeypatch):
    from Wan_SR.cli import step1

    assert step1.build_parser().parse_args([]).window_space == "pixel"
    make_clip(tmp_path / "in" / "clip.mp4", n=5, h=32, w=32)
    called = []
    orig = sources.LatentWindows
    monkeypatch.setattr(sources, "LatentWindows",
                        lambda *a, **k: called.append(1) or orig(*a, **k))
    rc = step1.main(["--input_dir", str(tmp_path / "in"), "--output_dir", str(tmp_path / "out"),
                     "--wan_model_dir", str(tiny_paths["wan_dir"]), "--lora_base_path",
                     str(tiny_paths["base"]), "--lora_draft_path", str(tiny_paths["draft"]),
                     "--torch_dtype", "float32", "--device", "cpu", "--outputs", "base",
                     "--window_space", "latent", "--prompt_cache_dir", str(tmp_path / "pc")])
    assert rc == 0 and called == [1]
    assert video_io.probe(tmp_path / "out" / "base" / "clip.mp4").num_frames == 5
