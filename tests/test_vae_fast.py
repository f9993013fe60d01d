"""The fast VAE path (Wan_SR/models/vae_fast.py) against diffsynth's own forward (the reference):
same modules and weights, same outputs (on CPU the fused kernels' torch formulas run)."""
import os

import pytest
import torch
import torch.nn.functional as F

from Wan_SR.models import vae_fast
from Wan_SR.models.wan import use_fast_vae, vae_decode, vae_encode


def tiny_vae(seed=0, dtype=torch.float32):
    from diffsynth.models.wan_video_vae import VideoVAE_, WanVideoVAE

    torch.manual_seed(seed)
    vae = WanVideoVAE(z_dim=16)
    vae.model = VideoVAE_(dim=8, z_dim=16, num_res_blocks=1)
    with torch.no_grad():
        for p in vae.model.parameters():  # non-trivial gammas and biases too
            p.normal_(0, 0.2)
    return vae.to(dtype).eval().requires_grad_(False)


@pytest.fixture(scope="module")
def vae():
    return tiny_vae()


@pytest.mark.parametrize("frames,h,w", [(13, 32, 48), (1, 16, 16), (9, 48, 32)])
def test_encode_decode_equal_the_reference(vae, frames, h, w):
    g = torch.Generator().manual_seed(frames)
    video = torch.rand(1, 3, frames, h, w, generator=g) * 2 - 1
    z_ref = vae_encode(vae, video, fast=False)
    z = vae_encode(vae, video, fast=True)
    assert z.shape == z_ref.shape == (1, 16, (frames - 1) // 4 + 1, h // 8, w // 8)
    assert torch.allclose(z, z_ref, atol=1e-5, rtol=1e-5)
    lat = torch.randn(z.shape, generator=g)
    x_ref = vae_decode(vae, lat, fast=False)
    x = vae_decode(vae, lat, fast=True)
    assert x.shape == x_ref.shape == (1, 3, 1 + 4 * (z.shape[2] - 1), h, w)
    assert torch.allclose(x, x_ref, atol=1e-5, rtol=1e-5)


def test_longer_steps_compute_the_same(vae):
    """More frames per encoder step or latents per decoder step (vae_fast.encode/decode's
    frames_per_step / latents_per_step): the causal caches carry what a step needs, so the
    results equal the reference's step sizes (4 frames, 1 latent) to float rounding."""
    g = torch.Generator().manual_seed(3)
    video = torch.rand(1, 3, 21, 32, 32, generator=g) * 2 - 1
    z = vae_fast.encode(vae, video)
    assert torch.allclose(z, vae_encode(vae, video, fast=False), atol=1e-5, rtol=1e-5)
    for n in (8, 12, 20):
        assert torch.allclose(vae_fast.encode(vae, video, n), z, atol=1e-5, rtol=1e-5)
    x = vae_fast.decode(vae, z)
    for n in (2, 3, 5):
        assert torch.allclose(vae_fast.decode(vae, z, n), x, atol=1e-5, rtol=1e-5)
    assert vae_fast.latent_steps(6, 2) == [(0, 1), (1, 3), (3, 5), (5, 6)]
    assert vae_fast.latent_steps(1, 4) == [(0, 1)]
    with pytest.raises(ValueError, match="multiple of 4"):
        vae_fast.encode(vae, video, 6)
    with pytest.raises(ValueError, match=">= 1"):
        vae_fast.latent_steps(6, 0)


def test_bf16_stays_within_rounding(vae):
    v16 = tiny_vae(dtype=torch.bfloat16)
    video = torch.rand(1, 3, 9, 32, 32) * 2 - 1
    ref = vae_decode(v16, vae_encode(v16, video, fast=False), fast=False).float()
    out = vae_decode(v16, vae_encode(v16, video, fast=True), fast=True).float()
    mse = ((out - ref) / 2).pow(2).mean().item()
    assert mse < 1e-4  # > 40 dB on a tiny random model in bf16


def test_the_causal_cache_is_what_makes_it_equal(vae):
    """Dropping the cached frames between chunks changes every chunk after the first (so the
    equality above depends on the cache being carried right)."""
    lat = torch.randn(1, 16, 3, 4, 4)
    ref = vae_decode(vae, lat, fast=False)
    mean, inv_std = vae_fast.latent_scale(vae, lat)
    x = vae_fast._pointwise_conv(vae.model.conv2, lat / inv_std + mean)
    state, outs = vae_fast.State(), []
    for i in range(3):
        state.frames.clear()  # forget the frames, keep which resamplers have seen a chunk
        outs.append(vae_fast.decoder_step(state, vae.model.decoder, x[:, :, i:i + 1]))
    forgetful = torch.cat(outs, 2).clamp(-1, 1)
    assert forgetful.shape == ref.shape
    assert torch.allclose(forgetful[:, :, :1], ref[:, :, :1], atol=1e-5)
    assert (forgetful[:, :, 1:] - ref[:, :, 1:]).abs().max() > 1e-3


def test_streamed_fast_path_equals_whole_clip(vae, monkeypatch):
    from Wan_SR.models import vae_stream

    monkeypatch.setattr("Wan_SR.models.wan.use_fast_vae", lambda *a, **k: True)
    frames = torch.rand(9, 3, 32, 48)
    chunks = [frames[:1], frames[1:5], frames[5:9]]
    z = vae_stream.encode_chunks(vae, chunks, device="cpu", dtype=torch.float32)
    z_ref = vae_encode(vae, (frames * 2 - 1).permute(1, 0, 2, 3)[None], fast=False)
    assert torch.allclose(z, z_ref, atol=1e-5)
    dec = vae_stream.StreamDecoder(vae, z_ref, device="cpu")
    got = torch.cat([dec.next() for _ in range(z_ref.shape[2])], 0)
    want = (vae_decode(vae, z_ref, fast=False)[0].permute(1, 0, 2, 3) + 1) / 2
    assert torch.allclose(got, want, atol=1e-5)


def test_upsample_is_nearest_exact():
    f = torch.randn(2, 5, 3, 4).contiguous(memory_format=torch.channels_last)
    up = vae_fast.upsample2x(f)
    assert torch.equal(up, F.interpolate(f, scale_factor=(2.0, 2.0), mode="nearest-exact"))
    assert torch.equal(vae_fast.upsample2x(f.contiguous()), up)


def test_norm_silu_with_bias_matches_the_reference_formula():
    from diffsynth.models.wan_video_vae import RMS_norm

    norm = RMS_norm(6, images=False)
    with torch.no_grad():
        norm.gamma.normal_()
    x = torch.randn(1, 6, 2, 3, 3)
    b = torch.randn(6)
    want = F.silu(norm(x + b.view(1, -1, 1, 1, 1)))
    assert torch.allclose(vae_fast.norm_silu(x, norm, bias=b), want, atol=1e-6)


def test_when_the_fast_path_is_used(vae, monkeypatch):
    cpu = torch.zeros(1)
    assert not use_fast_vae(vae, cpu)                # CPU: the reference by default
    assert use_fast_vae(vae, cpu, fast=True)          # on request
    vae.model.decoder.head[2].weight.requires_grad_(True)
    try:
        assert not use_fast_vae(vae, cpu, fast=True)  # gradients: always the reference
        with torch.no_grad():
            assert use_fast_vae(vae, cpu, fast=True)
    finally:
        vae.model.decoder.head[2].weight.requires_grad_(False)
    if torch.cuda.is_available():
        assert use_fast_vae(vae, cpu.cuda())
        monkeypatch.setenv("PSSR_VAE", "reference")
        assert not use_fast_vae(vae, cpu.cuda())


def test_compile_caches_live_under_the_cache_root(tmp_path, monkeypatch):
    from Wan_SR.core.caches import configure_compile_caches

    monkeypatch.setenv("PSSR_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("TRITON_CACHE_DIR", raising=False)
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    dirs = configure_compile_caches()
    assert dirs["TRITON_CACHE_DIR"] == str(tmp_path / "triton") == os.environ["TRITON_CACHE_DIR"]
    assert dirs["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "mine")  # the user's setting wins
