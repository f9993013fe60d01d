"""GPU memory budgets (docs/method.md, "GPU memory"): the exact VAE tiles, the DiT blocks and the
text encoder streamed from host memory, the planner, and every budget mode giving the default's
frames. On the CPU the copies of the streaming are plain copies, so every step of it runs."""
import dataclasses

import pytest
import torch

from Wan_SR.models import vae_fast, vae_tiles
from Wan_SR.models.offload import BlockStream, HostCopy, stream_text_encoder
from Wan_SR.sampling.memory import (MemoryBudgetError, MemoryPlan, ModelBytes, WindowShape,
                                    plan_memory)

# the real models' sizes in GiB (bf16; benchmarks/results/inference/memory_profile_h200.json)
REAL = ModelBytes(vae=0.236, base_other=0.048, base_block=0.0865, base_blocks=30,
                  draft_other=0.136, draft_block=0.0865, draft_blocks=10, tagger=0.403)
WINDOW_720P = WindowShape(frames=33, tile_h=720, tile_w=1280, frame_h=720, frame_w=1280,
                          decoded=2)
# the budgets of the README's table: the GiB an 8, 12, 16 and 24 GB card leave to PyTorch
CARDS = {"24": 22.5, "16": 14.5, "12": 10.5, "8": 6.5}


@pytest.fixture()
def fresh_pipe(tiny_paths, tmp_path):
    """A pipeline of its own (memory plans change its models)."""
    from Wan_SR.models.wan import resolve_wan_files
    from Wan_SR.sampling.pipeline import PSSRPipeline, SamplingConfig

    def make():
        files = resolve_wan_files(str(tiny_paths["wan_dir"]))
        return PSSRPipeline.from_files(
            files, tiny_paths["base"], tiny_paths["draft"], prompt="a test prompt",
            negative_prompt="bad", config=SamplingConfig(), device="cpu", dtype=torch.float32,
            cache_dir=str(tmp_path / "pc"))
    return make


def tiny_vae():
    from diffsynth.models.wan_video_vae import VideoVAE_, WanVideoVAE

    from Wan_SR.testing.checkpoints import TINY_VAE
    torch.manual_seed(0)
    vae = WanVideoVAE(z_dim=16)
    vae.model = VideoVAE_(**TINY_VAE)
    return vae.eval()


@pytest.mark.parametrize("tiles", [(2, 3), (3, 1)])
def test_vae_tiles_give_the_untiled_values(tiles):
    vae = tiny_vae()
    with torch.no_grad():
        z = torch.randn(1, 16, 2, 24, 24)
        assert torch.equal(vae_tiles.decode(vae, z, tiles), vae_fast.decode(vae, z))
        video = torch.rand(1, 3, 5, 192, 192) * 2 - 1
        assert torch.equal(vae_tiles.encode(vae, video, tiles), vae_fast.encode(vae, video))
        ref = vae.model.encode(video, vae.scale)  # diffsynth's own forward
        assert (vae_tiles.encode(vae, video, tiles) - ref).abs().max() < 1e-5


def test_vae_tiles_need_their_whole_halo(monkeypatch):
    """The halo is the layers' reach: one latent pixel less and the seams show."""
    vae = tiny_vae()
    z = torch.randn(1, 16, 2, 24, 24)
    with torch.no_grad():
        ref = vae_fast.decode(vae, z)
        monkeypatch.setattr(vae_tiles, "decoder_halo", lambda d: 1)
        assert (vae_tiles.decode(vae, z, (2, 2)) - ref).abs().max() > 1e-3


def test_tile_spans_cover_once():
    for length, parts, halo, align in ((90, 3, 14, 1), (720, 4, 88, 8), (40, 7, 10, 8)):
        s = vae_tiles.spans(length, parts, halo, align)
        assert s[0][0] == 0 and s[-1][1] == length
        assert all(a[1] == b[0] for a, b in zip(s, s[1:]))          # cores abut
        assert all(c[0] % align == 0 and c[2] == max(0, c[0] - halo) for c in s)


def test_block_stream_same_values_and_copies():
    torch.manual_seed(0)
    blocks = torch.nn.ModuleList(torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.GELU())
                                 for _ in range(5))
    x = torch.randn(3, 8)

    def run(x):
        for b in blocks:
            x = b(x)
        return x

    with torch.no_grad():
        ref = run(x)
        stream = BlockStream(blocks, "cpu", resident=2)
        assert stream.streamed == 3 and not stream.slots  # slots are made at the first use
        for _ in range(2):  # a second pass reuses the slots (the wrap-around prefetch)
            assert torch.equal(run(x), ref)
        assert len(stream.slots) == 2
        one = sum(p.numel() * 4 for p in blocks[2].parameters())
        assert stream.copied_bytes == 7 * one  # 3 a pass, and the next pass's first
        # between uses a streamed block points at its host copy, not at a slot
        slot_ptrs = {t.data_ptr() for slot in stream.slots for t in slot}
        assert all(p.data_ptr() not in slot_ptrs for p in blocks[4].parameters())
        stream.release()  # slots freed; the next pass makes them again
        assert not stream.slots and torch.equal(run(x), ref)


def test_host_copy_lends_and_drops():
    lin = torch.nn.Linear(4, 4)
    x = torch.randn(2, 4)
    ref = lin(x)
    host = HostCopy(lin, "cpu", pin=False)
    with host.on_device() as m:
        assert torch.equal(m(x), ref)
    assert host.nbytes == 4 * 20


def test_text_encoder_streams_to_the_same_embedding():
    from diffsynth.models.wan_video_text_encoder import WanTextEncoder

    from Wan_SR.testing.checkpoints import TINY_T5
    torch.manual_seed(0)
    enc = WanTextEncoder(vocab=100, **TINY_T5).eval()
    ids, mask = torch.randint(0, 100, (1, 12)), torch.ones(1, 12, dtype=torch.long)
    with torch.no_grad():
        ref = enc(ids, mask)
        stream = stream_text_encoder(enc, "cpu", resident=0, pin=False)
        assert torch.equal(enc(ids, mask), ref) and stream.streamed == len(enc.blocks)


def test_planner_picks_faster_settings_for_larger_budgets():
    plans = {card: plan_memory(gib, REAL, WINDOW_720P) for card, gib in CARDS.items()}
    default = plan_memory(None, REAL, WINDOW_720P)
    assert (default.base_resident, default.vae_tiles) == (30, (1, 1))
    assert plan_memory(60.0, REAL, WINDOW_720P) == dataclasses.replace(default, budget_gib=60.0)
    for card, gib in CARDS.items():
        assert plans[card].estimate_gib <= gib
    cost = {c: p.vae_tiles[0] * p.vae_tiles[1] for c, p in plans.items()}
    assert cost["24"] <= cost["16"] <= cost["12"] <= cost["8"]
    assert plans["8"].base_resident < plans["24"].base_resident or plans["24"].base_resident == 30
    # the text of the describe line names what moved
    assert "streamed" in plans["8"].describe(REAL)


def test_planner_names_the_smallest_budget_that_fits():
    with pytest.raises(MemoryBudgetError, match=r"--vram_budget 1: .* needs at least [\d.]+ GiB"):
        plan_memory(1.0, REAL, WINDOW_720P)


def tiny_plan(real: MemoryPlan, pipe) -> MemoryPlan:
    """The real-size plan on the tiny models: the same share of resident blocks, the same
    tiles."""
    nb, nd = len(pipe.base.blocks), len(pipe.draft.blocks)
    return dataclasses.replace(real, base_resident=round(real.base_resident / 30 * nb),
                               draft_resident=round(real.draft_resident / 10 * nd))


def test_every_budget_mode_gives_the_default_frames(fresh_pipe):
    """Each card's plan (blocks streamed, VAE tiles) applied to the tiny pipeline: the same
    frames as the default path (float32, 1e-5)."""
    frames = torch.rand(9, 3, 64, 96)
    branches = ["base", "base+draft_3"]
    ref = fresh_pipe().run_tile(frames, branches)
    seen = set()
    for card, gib in CARDS.items():
        plan = tiny_plan(plan_memory(gib, REAL, WINDOW_720P), fresh_pipe())
        pipe = fresh_pipe().use_memory_plan(plan)
        out = pipe.run_tile(frames, branches)
        for b in branches:
            assert (out[b] - ref[b]).abs().max() < 1e-5, (card, b)
        seen.add((bool(pipe.streams), pipe.vae_tiles is not None))
    assert (True, True) in seen  # the smallest card streams blocks and tiles the VAE


def test_load_plan_refuses_a_budget_that_cannot_fit(fresh_pipe):
    """The step-1 loader's plan: a budget too small is one clear error before any work."""
    from Wan_SR.core.options import Step1Config
    from Wan_SR.runs.step1.load import memory_plan

    cfg = Step1Config()
    with pytest.raises(MemoryBudgetError, match="needs at least"):
        memory_plan(cfg, fresh_pipe(), None, (33, 720, 1280), 1e-4)
    cfg.step1.window_space = "latent"
    with pytest.raises(MemoryBudgetError, match="latent windows"):
        memory_plan(cfg, fresh_pipe(), None, (33, 720, 1280), 12.0)


def test_budget_option_values():
    from Wan_SR.core.options import LOW_MEMORY_BUDGET, SpeedOptions

    for bad in ("abc", "0", "-2"):
        with pytest.raises(ValueError, match="--vram_budget must be a positive number"):
            SpeedOptions(vram_budget=bad).validate()
    assert SpeedOptions().budget_gib() is None                       # auto
    assert SpeedOptions(vram_budget="10.5").budget_gib() == 10.5
    assert SpeedOptions(low_memory=True).budget_gib() == LOW_MEMORY_BUDGET
    assert SpeedOptions(vram_budget="12", low_memory=True).budget_gib() == 12.0


def test_out_of_memory_is_one_line_naming_a_smaller_budget():
    from types import SimpleNamespace

    from Wan_SR.runs.step1.load import out_of_memory_hint

    pipe = SimpleNamespace(memory_plan=MemoryPlan(10.5, 0, 0, (1, 3)))
    text = out_of_memory_hint(torch.OutOfMemoryError("CUDA out of memory. Tried ..."), pipe)
    assert isinstance(text, str) and "\n" not in text and "--vram_budget 8" in text
    other = ValueError("bad clip")
    assert out_of_memory_hint(other, pipe) is other
