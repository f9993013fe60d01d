"""The base trainer on tiny checkpoints (CPU, fp32): loss functions against hand computations,
which parameters learn, loss going down, exact resume, NaN guard, two processes, and the saved
checkpoint in step 1."""
import contextlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import ROOT
from Wan_SR.data.video_io import write_video
from Wan_SR.training import losses

# ----------------------------------------------------------------------------- loss functions


def test_latent_l2_is_the_mean_square():
    a, b = torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([[1.0, 0.0], [0.0, 4.0]])
    assert losses.latent_l2(a, b).item() == pytest.approx((0 + 4 + 9 + 0) / 4)


def test_pixel_crop_compares_the_same_region():
    """A fake 'decoder' that upsamples latents x8: the crop box (top, left) of the latent must be
    compared with rows/cols 8*top.. of the HQ, so the loss is 0 exactly there."""
    g = torch.Generator().manual_seed(3)
    x0 = torch.randn(1, 16, 2, 10, 12, generator=g)
    decode = lambda z: z[:, :3].repeat_interleave(8, -1).repeat_interleave(8, -2)  # noqa: E731
    hq = decode(x0)
    box = losses.crop_box((10, 12), 4, torch.Generator().manual_seed(0))
    top, left, h, w = box
    assert (h, w) == (4, 4) and 0 <= top <= 6 and 0 <= left <= 8
    assert losses.pixel_losses(decode, x0, hq, box)["loss_pixel_l2"].item() == 0.0
    assert top != left  # a swap of rows and columns would be caught
    # HQ moved by one latent row (8 pixels): the same box no longer matches
    moved = torch.roll(hq, 8, dims=-2)
    diff = losses.pixel_losses(decode, x0, moved, box)["loss_pixel_l2"].item()
    ref = torch.mean((moved[..., 8 * top:8 * (top + h), 8 * left:8 * (left + w)]
                      - hq[..., 8 * top:8 * (top + h), 8 * left:8 * (left + w)]) ** 2).item()
    assert diff == pytest.approx(ref) and diff > 0
    # a latent smaller than the crop is taken whole
    assert losses.crop_box((3, 5), 20, g) == (0, 0, 3, 5)


def test_regulariser_value_and_gradient():
    """loss = mean(g^2), d loss / d x0_base = 2 g / N, with g = (x0_upd - x0_fix) / W per sample."""
    g0 = torch.Generator().manual_seed(1)
    x0 = torch.randn(2, 3, 2, 2, generator=g0, dtype=torch.float64).requires_grad_(True)
    fix = torch.randn(2, 3, 2, 2, generator=g0, dtype=torch.float64)
    upd = torch.randn(2, 3, 2, 2, generator=g0, dtype=torch.float64)
    loss = losses.regulariser_loss(x0, fix, upd)
    W = (x0.detach() - fix).abs().mean(dim=(1, 2, 3), keepdim=True)
    g = ((upd - fix) / W).float()
    assert loss.item() == pytest.approx(float((g ** 2).mean()), rel=1e-6)
    loss.backward()
    assert torch.allclose(x0.grad.float(), 2 * g / g.numel(), rtol=1e-5, atol=1e-7)


def test_flow_matching_loss_and_reg_timesteps():
    v, n, x0 = torch.ones(4), torch.full((4,), 3.0), torch.ones(4)
    assert losses.flow_matching_loss(v, n, x0, 0.5).item() == pytest.approx(((1 - 2) ** 2) * 0.5)
    from Wan_SR.sampling.timeline import FlowTimeline

    tl, g = FlowTimeline(), torch.Generator().manual_seed(0)
    ts = [losses.draw_reg_timestep(tl, g, torch.bfloat16) for _ in range(300)]
    assert min(ts) >= 20 and max(ts) <= 980 and len(set(ts)) > 50
    assert all(t == float(torch.tensor(t).to(torch.bfloat16)) for t in ts)  # as the DiT sees it


# ----------------------------------------------------------------------------- tiny training runs

@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Two 9-frame 32x48 clips with paired LQ (a fixed LQ keeps the losses deterministic)."""
    root = tmp_path_factory.mktemp("train_data")
    t = np.arange(9)[:, None, None, None]
    y = np.arange(32)[None, :, None, None]
    x = np.arange(48)[None, None, :, None]
    rows = ["video,LQ_video,prompt"]
    for i in range(2):
        hq = ((x * 5 + y * 3 + t * 7 + np.arange(3) * 40 + i * 50) % 256).astype(np.uint8)
        hq = np.ascontiguousarray(np.broadcast_to(hq, (9, 32, 48, 3)))
        lq = (hq.astype(np.float32) * 0.8 + 20).astype(np.uint8)
        write_video(root / f"c{i}.mp4", hq, fps=24, quality=10)
        write_video(root / f"c{i}_lq.mp4", lq, fps=24, quality=10)
        rows.append(f"c{i}.mp4,c{i}_lq.mp4,clip {i}")
    (root / "meta.csv").write_text("\n".join(rows) + "\n")
    return root


def config(tiny_paths, data, out, **over):
    from Wan_SR.training.base import BaseTrainConfig

    cfg = BaseTrainConfig()
    d, m, o, opt, oo = cfg.data, cfg.model, cfg.loss, cfg.optim, cfg.out
    d.dataset_base_path, d.dataset_metadata_path = str(data), str(data / "meta.csv")
    d.num_frames, d.height, d.width, d.dataset_repeat = 9, 32, 48, 4
    d.dataloader_num_workers = 0
    m.wan_model_dir, m.lora_rank = str(tiny_paths["wan_dir"]), 4
    m.prompt_cache_dir = str(out.parent / "pc")
    o.alpha_pixel_lpips, o.pixel_crop = 0.0, 2
    opt.mixed_precision, opt.learning_rate = "no", 1e-3
    oo.output_path, oo.report_to, oo.save_steps = str(out), "none", 6
    return override(cfg, **over)


def override(cfg, **over):
    """Set each option on whichever part of the training config has it."""
    parts = [getattr(cfg, f.name) for f in __import__("dataclasses").fields(cfg)]
    for k, v in over.items():
        part = next((p for p in parts if hasattr(p, k)), None)
        if part is None:
            raise KeyError(k)
        setattr(part, k, v)
    return cfg


def run(cfg, **kw):
    from accelerate.state import AcceleratorState

    from Wan_SR.training.base import train_base

    AcceleratorState._reset_state(True)
    return train_base(cfg, **kw)


@contextlib.contextmanager
def one_thread():
    """Compute on one thread, as the processes of the data-parallel runs here do: a CPU kernel's
    sums may be split (and rounded) differently on more threads."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def history(out):
    return [json.loads(ln) for ln in (out / "losses.jsonl").read_text().splitlines()]


def weights(path):
    from safetensors.torch import load_file

    return load_file(str(path))


def test_only_the_intended_parameters_learn(tiny_paths):
    from Wan_SR.models.wan import load_vae, resolve_wan_files
    from Wan_SR.sampling.timeline import FlowTimeline
    from Wan_SR.training.base import BaseStep
    from Wan_SR.training.models import build_base, build_regulariser

    files = resolve_wan_files(str(tiny_paths["wan_dir"]))
    base = build_base(files.dit, 4, ["q", "k", "v", "o", "ffn.0", "ffn.2"], torch.float32, "cpu")
    fix, upd = build_regulariser(files.dit, 4, ["q", "k", "v", "o", "ffn.0", "ffn.2"],
                                 torch.float32, "cpu")
    vae = load_vae(files.vae).requires_grad_(False)
    tl = FlowTimeline()
    g = torch.Generator().manual_seed(0)
    z = torch.randn(1, 16, 3, 4, 6, generator=g)
    ctx = torch.randn(1, 8, 32, generator=g)
    reg_noise = torch.randn(z.shape, generator=g)
    hq = torch.rand(1, 3, 9, 32, 48, generator=g) * 2 - 1
    x0 = BaseStep(base, tl, 699.0)(z, ctx).x0
    pixel = losses.pixel_losses(lambda q: losses.decode_native(vae, q), x0, hq, (0, 0, 2, 2))
    reg = losses.regulariser(fix, upd, x0, ctx, ctx * 0, 500.0, reg_noise, tl, cfg_scale=2.0)
    (losses.latent_l2(x0, z + 0.1) + pixel["loss_pixel_l2"] + reg).backward()
    learned = {n for n, p in base.named_parameters() if p.grad is not None}
    trainable = {n for n, p in base.named_parameters() if p.requires_grad}
    assert learned == trainable
    assert all(("lora_" in n) or n.startswith(("patch_embedding.", "head.head.")) for n in learned)
    assert any("lora_B" in n for n in learned) and "patch_embedding.weight" in learned
    assert all(p.dtype == torch.float32 for p in base.parameters() if p.requires_grad)
    for m in (fix, upd, vae):
        assert all(p.grad is None for p in m.parameters())


def test_loss_goes_down_and_checkpoint_changes_step1(tiny_paths, data, tmp_path):
    out = tmp_path / "run"
    cfg = config(tiny_paths, data, out, max_train_steps=30, alpha_reg=0.0, alpha_pixel_l2=0.0,
                 dataset_repeat=15, save_steps=30)
    res = run(cfg)
    assert res["step"] == 30 and res["nan_skipped"] == 0
    l2 = [h["loss_l2"] for h in history(out)]
    assert len(l2) == 30
    assert np.mean(l2[-4:]) < 0.7 * np.mean(l2[:4]), l2
    # the saved base checkpoint loads strictly into a fresh DiT and changes the base step
    from Wan_SR.models.lora import load_base_checkpoint
    from Wan_SR.models.wan import load_dit
    from Wan_SR.sampling.speculative import base_step
    from Wan_SR.sampling.timeline import FlowTimeline

    assert set(weights(out / "latest_base.safetensors")) >= {"patch_embedding.weight",
                                                             "head.head.weight"}
    g = torch.Generator().manual_seed(0)
    z, ctx = torch.randn(1, 16, 3, 4, 6, generator=g), torch.randn(1, 8, 32, generator=g)
    x0 = {}
    for name, path in (("trained", out / "latest_base.safetensors"),
                       ("factory", tiny_paths["base"])):
        dit = load_dit(tiny_paths["dit"])
        load_base_checkpoint(dit, path)
        with torch.no_grad():
            x0[name] = base_step(dit, z, ctx, FlowTimeline(), t_base=699, t_next=599).x0
    assert (x0["trained"] - x0["factory"]).abs().max() > 1e-3


def test_resume_equals_uninterrupted(tiny_paths, data, tmp_path):
    full = config(tiny_paths, data, tmp_path / "full", max_train_steps=12)
    run(full)
    half = config(tiny_paths, data, tmp_path / "resumed", max_train_steps=6)
    run(half)
    rest = config(tiny_paths, data, tmp_path / "resumed", max_train_steps=12,
                  resume_from_checkpoint="latest")
    res = run(rest)
    assert res["step"] == 12
    a, b = weights(tmp_path / "full" / "latest_base.safetensors"), \
        weights(tmp_path / "resumed" / "latest_base.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6, rtol=0), k
    ra, rb = weights(tmp_path / "full" / "latest_reg.safetensors"), \
        weights(tmp_path / "resumed" / "latest_reg.safetensors")
    assert all(torch.allclose(ra[k], rb[k], atol=1e-6, rtol=0) for k in ra)
    ha, hb = history(tmp_path / "full"), history(tmp_path / "resumed")
    assert [h["step"] for h in hb] == list(range(1, 13))
    for x, y in zip(ha, hb):
        for k in x:
            assert x[k] == pytest.approx(y[k], rel=1e-5, abs=1e-7), (x["step"], k)


def test_nan_loss_skips_the_update_and_is_counted(tiny_paths, data, tmp_path):
    one = config(tiny_paths, data, tmp_path / "one", max_train_steps=1, alpha_reg=0.0)
    run(one)
    two = config(tiny_paths, data, tmp_path / "two", max_train_steps=2, alpha_reg=0.0)
    res = run(two, inject_nan_at=(2,))
    assert res["nan_skipped"] == 1
    assert history(tmp_path / "two")[1]["loss"] is None
    a, b = weights(tmp_path / "one" / "latest_base.safetensors"), \
        weights(tmp_path / "two" / "latest_base.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)  # step 2 changed nothing


@pytest.fixture(scope="module")
def ddp_run(tiny_paths, data, tmp_path_factory):
    """torchrun, 2 CPU processes (gloo), 3 steps: different clips per process, gradients
    averaged. Returns the output folder."""
    tmp = tmp_path_factory.mktemp("ddp")
    out = tmp / "ddp"
    args = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
            "--master_port", str(29400 + os.getpid() % 500), str(ROOT / "train_base.py"),
            "--dataset_base_path", str(data), "--dataset_metadata_path", str(data / "meta.csv"),
            "--wan_model_dir", str(tiny_paths["wan_dir"]), "--num_frames", "9", "--height", "32",
            "--width", "48", "--dataset_repeat", "2", "--max_train_steps", "3", "--mixed_precision",
            "no", "--report_to", "none", "--output_path", str(out), "--lora_rank", "4",
            "--alpha_pixel_lpips", "0", "--pixel_crop", "2", "--learning_rate", "1e-3",
            "--dataloader_num_workers", "0", "--prompt_cache_dir", str(tmp / "pc"),
            "--save_steps", "3", "--no_progress"]
    env = dict(os.environ, ACCELERATE_USE_CPU="true", OMP_NUM_THREADS="1",
               PYTHONPATH=str(ROOT), PSSR_DUMP_RANK_WEIGHTS=str(out / "rank"))
    r = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "2 process(es)" in r.stderr
    return out


def test_two_processes_keep_identical_weights(tiny_paths, ddp_run):
    out = ddp_run
    ranks = [weights(out / f"rank{i}.safetensors") for i in range(2)]
    assert ranks[0].keys() == ranks[1].keys()
    assert all(torch.equal(ranks[0][k], ranks[1][k]) for k in ranks[0])
    start = weights(tiny_paths["base"])  # the trained weights moved away from the start
    assert any(not torch.equal(ranks[0][k], start[k]) for k in ranks[0] if k in start)
    assert len(history(out)) == 3  # one log line per step, from the main process only


def test_gradient_accumulation_equals_the_mean_loss_of_its_samples(tiny_paths, data, ddp_run,
                                                                   tmp_path):
    """--gradient_accumulation_steps 2 on one process: each update is one step on the mean loss
    of two samples, which is what two data-parallel processes with one sample each compute
    (the same samples and draws): the same weights, also after a resume from the middle."""
    over = dict(dataset_repeat=2, max_train_steps=3, save_steps=3, gradient_accumulation_steps=2)
    with one_thread():  # as each of the two processes: the same kernels, the same bits
        run(config(tiny_paths, data, tmp_path / "acc", **over))
        run(config(tiny_paths, data, tmp_path / "half", **dict(over, max_train_steps=2)))
        run(config(tiny_paths, data, tmp_path / "half",
                   **dict(over, resume_from_checkpoint="latest")))
    for kind in ("base", "reg"):
        ref = weights(ddp_run / f"latest_{kind}.safetensors")
        for folder in ("acc", "half"):
            got = weights(tmp_path / folder / f"latest_{kind}.safetensors")
            assert got.keys() == ref.keys()
            for k in ref:
                assert torch.allclose(got[k], ref[k], atol=1e-6, rtol=0), (folder, kind, k)
    start = weights(tiny_paths["base"])
    assert any(not torch.equal(ref[k], start[k]) for k in ref if k in start)
    for a, b in zip(history(ddp_run), history(tmp_path / "acc")):  # the mean of both samples
        assert a["loss_l2"] == pytest.approx(b["loss_l2"], rel=1e-5)


def test_weighted_sum_and_guidance():
    """Terms with weight 0 are logged but not trained; guidance is v_neg + s (v_pos - v_neg),
    off at scale 1 or without a negative context."""
    from Wan_SR.sampling.speculative import guided

    a, b = torch.tensor(2.0), torch.tensor(float("nan"))
    assert losses.weighted_sum([("x", 0.5, a), ("y", 0.0, b)]).item() == 1.0
    assert losses.weighted_sum([("x", 0.5, a), ("z", 3.0, a)]).item() == 7.0
    pos, neg = torch.tensor([1.0, 4.0]), torch.tensor([3.0, 2.0])
    v = lambda ctx: pos if ctx == "p" else neg  # noqa: E731
    assert torch.equal(guided(v, 3.0, "p", "n"), neg + 3.0 * (pos - neg))
    assert torch.equal(guided(v, 1.0, "p", "n"), pos) and torch.equal(guided(v, 3.0, "p"), pos)
