"""The draft trainer on tiny checkpoints (CPU, fp32): fc layers pass the base feature at
initialisation, the loss goes down, the saved draft loads in step 1 by its metadata, the
condition switch, exact resume and two processes."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import ROOT
from test_train_base import data, history, one_thread, override, weights  # noqa: F401 (fixture)


def draft_config(tiny_paths, data, out, **over):
    from Wan_SR.training.draft import DraftTrainConfig

    cfg = DraftTrainConfig()
    d, m, o, opt, oo, dr = cfg.data, cfg.model, cfg.loss, cfg.optim, cfg.out, cfg.draft
    d.dataset_base_path, d.dataset_metadata_path = str(data), str(data / "meta.csv")
    d.num_frames, d.height, d.width, d.dataset_repeat = 9, 32, 48, 4
    d.dataloader_num_workers = 0
    m.wan_model_dir, m.prompt_cache_dir = str(tiny_paths["wan_dir"]), str(out.parent / "pc")
    dr.load_model_base_from = str(tiny_paths["base"])
    o.alpha_pixel_lpips, o.pixel_crop = 0.0, 2
    opt.mixed_precision, opt.learning_rate = "no", 1e-3
    oo.output_path, oo.report_to, oo.save_steps = str(out), "none", 6
    return override(cfg, **over)


def run(cfg, **kw):
    from accelerate.state import AcceleratorState

    from Wan_SR.training.draft import train_draft

    AcceleratorState._reset_state(True)
    return train_draft(cfg, **kw)


@pytest.fixture(scope="module")
def base_and_draft(tiny_paths):
    from Wan_SR.models.draft import build_draft
    from Wan_SR.models.lora import load_base_checkpoint
    from Wan_SR.models.wan import load_dit

    base = load_dit(tiny_paths["dit"])
    load_base_checkpoint(base, tiny_paths["base"])
    return base, build_draft(base, 1.5)


def test_initial_draft_feeds_each_kept_block_the_base_feature(base_and_draft):
    """With fc = [I | 0], block j's input is the base feature f_j whatever came before, so the
    draft's x0 is the last kept block applied to the last recorded feature, then the head."""
    from diffsynth.models.wan_video_dit import sinusoidal_embedding_1d

    from Wan_SR.models.dit import _freqs
    from Wan_SR.sampling.speculative import base_step, draft_step
    from Wan_SR.sampling.timeline import FlowTimeline

    base, draft = base_and_draft
    tl, g = FlowTimeline(), torch.Generator().manual_seed(0)
    z_l, ctx = torch.randn(1, 16, 3, 4, 6, generator=g), torch.randn(1, 8, 32, generator=g)
    with torch.no_grad():
        b = base_step(base, z_l, ctx, tl, t_base=699, t_next=599, record_blocks=draft.block_ids)
        z = b.z_next
        x0, _ = draft_step(draft, z, z_l, ctx, b.features, tl, 599, 499)
        # by hand: only the last kept block, on the last base feature
        t = tl.timestep(599)
        temb = draft.time_embedding(sinusoidal_embedding_1d(draft.freq_dim, t))
        t_mod = draft.time_projection(temb).unflatten(1, (6, draft.dim))
        h_in, (f, hh, ww) = draft.patchify(torch.cat([z, z_l], 1))
        freqs = _freqs(draft, f, hh, ww, h_in.device)
        h = draft.blocks[-1](b.features[-1], draft.text_embedding(ctx), t_mod, freqs)
        v = draft.unpatchify(draft.head(h, temb), (f, hh, ww))
        ref = z - tl.sigma(t) * v
    assert draft.block_ids == [2, 5]
    assert torch.allclose(x0, ref, atol=1e-5), (x0 - ref).abs().max()


@pytest.mark.parametrize("kind", ["zeros", "lq"])
def test_draft_condition_feeds_what_it_says(tiny_paths, data, tmp_path, kind, monkeypatch):  # noqa: F811
    from Wan_SR.training import draft as td

    seen = []
    orig = td.draft_step

    def spy(draft, z, cond, *a, **k):
        seen.append(cond.detach().clone())
        return orig(draft, z, cond, *a, **k)

    monkeypatch.setattr(td, "draft_step", spy)
    encoded = []
    orig_encode = td.Inputs.encode

    def enc(self, batch, g):
        out = orig_encode(self, batch, g)
        encoded.append(out[2].detach().clone())
        return out

    monkeypatch.setattr(td.Inputs, "encode", enc)
    run(draft_config(tiny_paths, data, tmp_path / kind, max_train_steps=1, draft_condition=kind))
    assert len(seen) == 3 and len(encoded) == 1
    for c in seen:
        if kind == "zeros":
            assert torch.count_nonzero(c) == 0
        else:
            assert torch.equal(c, encoded[0]) and torch.count_nonzero(c) > 0


def test_loss_goes_down_and_the_draft_loads_in_step1(tiny_paths, data, tmp_path):  # noqa: F811
    out = tmp_path / "run"
    res = run(draft_config(tiny_paths, data, out, max_train_steps=30, alpha_pixel_l2=0.0,
                           dataset_repeat=15, save_steps=30))
    assert res["step"] == 30 and res["nan_skipped"] == 0
    h = history(out)
    l2 = [np.mean([x[f"loss_l2_draft_{k}"] for k in (1, 2, 3)]) for x in h]
    assert np.mean(l2[-4:]) < 0.7 * np.mean(l2[:4]), l2
    from safetensors import safe_open

    from Wan_SR.models.draft import DraftMismatchError, load_draft

    path = out / "latest_draft.safetensors"
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    assert meta["block_ids"] == "2,5" and float(meta["k_select"]) == 1.5
    assert meta["draft_condition"] == "zeros"
    assert load_draft(path, None, base_num_layers=6).block_ids == [2, 5]   # from the metadata
    assert load_draft(path, 3, base_num_layers=6).block_ids == [2, 5]      # same blocks
    with pytest.raises(DraftMismatchError, match="--k_select 2"):
        load_draft(path, 2, base_num_layers=6)
    # step 1 with the trained draft and no --k_select: the whole pipeline, strict load
    from Wan_SR.models.wan import resolve_wan_files
    from Wan_SR.sampling.pipeline import PSSRPipeline, SamplingConfig

    outs = {}
    for name, d in (("trained", path), ("factory", tiny_paths["draft"])):
        pipe = PSSRPipeline.from_files(resolve_wan_files(str(tiny_paths["wan_dir"])),
                                       tiny_paths["base"], d, prompt="p", negative_prompt="n",
                                       config=SamplingConfig(), device="cpu", dtype=torch.float32,
                                       cache_dir=str(tmp_path / "pc2"))
        outs[name] = pipe.run_tile(torch.rand(5, 3, 32, 32, generator=torch.Generator()
                                              .manual_seed(1)), ["base+draft_3"])["base+draft_3"]
    assert (outs["trained"] - outs["factory"]).abs().max() > 1e-3


def test_resume_equals_uninterrupted(tiny_paths, data, tmp_path):  # noqa: F811
    run(draft_config(tiny_paths, data, tmp_path / "full", max_train_steps=8))
    run(draft_config(tiny_paths, data, tmp_path / "resumed", max_train_steps=5))
    res = run(draft_config(tiny_paths, data, tmp_path / "resumed", max_train_steps=8,
                           resume_from_checkpoint="latest"))
    assert res["step"] == 8
    a, b = weights(tmp_path / "full" / "latest_draft.safetensors"), \
        weights(tmp_path / "resumed" / "latest_draft.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6, rtol=0), k
    ha, hb = history(tmp_path / "full"), history(tmp_path / "resumed")
    assert [h["step"] for h in hb] == list(range(1, 9))
    for x, y in zip(ha, hb):
        for k in x:
            assert x[k] == pytest.approx(y[k], rel=1e-5, abs=1e-7), (x["step"], k)


def test_two_processes_keep_identical_weights(tiny_paths, data, tmp_path):  # noqa: F811
    """Two processes keep identical weights; and --gradient_accumulation_steps 2 on one process
    (each of the three updates per step on the mean loss of two samples, as the two processes
    compute it) gives the same weights, also after a resume from the middle."""
    out = tmp_path / "ddp"
    args = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
            "--master_port", str(29900 + os.getpid() % 90), str(ROOT / "train_draft.py"),
            "--dataset_base_path", str(data), "--dataset_metadata_path", str(data / "meta.csv"),
            "--wan_model_dir", str(tiny_paths["wan_dir"]), "--load_model_base_from",
            str(tiny_paths["base"]), "--num_frames", "9", "--height", "32", "--width", "48",
            "--dataset_repeat", "2", "--max_train_steps", "2", "--mixed_precision", "no",
            "--report_to", "none", "--output_path", str(out), "--alpha_pixel_lpips", "0",
            "--pixel_crop", "2", "--learning_rate", "1e-3", "--dataloader_num_workers", "0",
            "--prompt_cache_dir", str(tmp_path / "pc"), "--save_steps", "2", "--no_progress"]
    env = dict(os.environ, ACCELERATE_USE_CPU="true", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT),
               PSSR_DUMP_RANK_WEIGHTS=str(out / "rank"))
    r = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "2 process(es)" in r.stderr
    ranks = [weights(out / f"rank{i}.safetensors") for i in range(2)]
    assert all(torch.equal(ranks[0][k], ranks[1][k]) for k in ranks[0])
    start = weights(tiny_paths["draft"])
    assert any(not torch.equal(ranks[0][k], start[k].float()) for k in ranks[0] if k in start)
    over = dict(dataset_repeat=2, max_train_steps=2, save_steps=2, gradient_accumulation_steps=2)
    with one_thread():  # as each of the two processes: the same kernels, the same bits
        run(draft_config(tiny_paths, data, tmp_path / "acc", **over))
        run(draft_config(tiny_paths, data, tmp_path / "half", **dict(over, max_train_steps=1)))
        run(draft_config(tiny_paths, data, tmp_path / "half",
                         **dict(over, resume_from_checkpoint="latest")))
    ref = weights(out / "latest_draft.safetensors")
    for folder in ("acc", "half"):
        got = weights(tmp_path / folder / "latest_draft.safetensors")
        assert got.keys() == ref.keys()
        for k in ref:
            assert torch.allclose(got[k], ref[k], atol=1e-6, rtol=0), (folder, k)


def test_draft_schedule_steps_as_inference_does(base_and_draft):
    """The trainer's (t, t_next) pairs are those of draft_steps: stepping draft_step over them
    gives draft_steps' x0s and final latent exactly."""
    from Wan_SR.sampling.speculative import base_step, draft_schedule, draft_step, draft_steps
    from Wan_SR.sampling.timeline import FlowTimeline

    assert draft_schedule([599.0, 499.0, 399.0]) == [(599.0, 499.0), (499.0, 399.0), (399.0, 0)]
    assert draft_schedule([]) == []
    base, draft = base_and_draft
    tl, g = FlowTimeline(), torch.Generator().manual_seed(1)
    z_l, ctx = torch.randn(1, 16, 3, 4, 6, generator=g), torch.randn(1, 8, 32, generator=g)
    with torch.no_grad():
        b = base_step(base, z_l, ctx, tl, record_blocks=draft.block_ids)
        ref, z_ref = draft_steps(draft, b.z_next, z_l, ctx, b.features, tl, [599, 450, 300])
        z, x0s = b.z_next, []
        for t, t_next in draft_schedule([599, 450, 300]):
            x0, z = draft_step(draft, z, z_l, ctx, b.features, tl, t, t_next)
            x0s.append(x0)
    assert len(x0s) == 3 and all(torch.equal(a, r) for a, r in zip(x0s, ref))
    assert torch.equal(z, z_ref)


def test_every_draft_step_sees_bf16_latents_under_mixed_precision(tiny_paths, data, tmp_path,  # noqa: F811
                                                                  monkeypatch):
    """Under --mixed_precision bf16 (the default) each draft step gets z in bf16, so its timestep
    is rounded as at inference and in the release (599/499/399 -> 600/500/400), not only the
    first's."""
    from Wan_SR.training import draft as td

    seen = []
    orig = td.draft_step

    def spy(draft, z, cond, context, features, timeline, t, *a, **k):
        seen.append((z.dtype, float(timeline.timestep(t, dtype=z.dtype))))
        return orig(draft, z, cond, context, features, timeline, t, *a, **k)

    monkeypatch.setattr(td, "draft_step", spy)
    run(draft_config(tiny_paths, data, tmp_path / "bf16", max_train_steps=1,
                     mixed_precision="bf16"))
    assert seen == [(torch.bfloat16, 600.0), (torch.bfloat16, 500.0), (torch.bfloat16, 400.0)]
