"""Gradient checkpointing per block (``--gradient_checkpointing auto|full|none|N``), the step
profile (``--profile_step``) and the step without host synchronisation: the values and gradients
do not depend on how many blocks recompute, the kept blocks' saved bytes are measured, the
settings parse, and a trainer run keeps its losses whatever the setting."""
import json
import math
from types import SimpleNamespace

import pytest
import torch

from test_train_base import config, data, history, run  # noqa: F401  (data: a fixture)
from Wan_SR.models.dit import Checkpointing, dit_forward
from Wan_SR.training.options import checkpointing_setting
from Wan_SR.training.recompute import AUTO_MARGIN_GIB, GIB, SAFETY, Recompute, keep_blocks


def forward_backward(dit, x, t, ctx, ck):
    for p in dit.parameters():
        p.grad = None
    v, _ = dit_forward(dit, x, t, ctx, gradient_checkpointing=ck)
    (v.square().mean()).backward()
    return v.detach(), {n: p.grad.clone() for n, p in dit.named_parameters()}


def test_values_and_gradients_do_not_depend_on_the_blocks_recomputed(tiny_paths):
    from Wan_SR.models.wan import load_dit

    torch.manual_seed(0)
    dit = load_dit(tiny_paths["dit"]).requires_grad_(True)
    n = len(dit.blocks)
    assert n >= 2
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, dit.patch_embedding.in_channels, 3, 4, 6, generator=g)
    ctx = torch.randn(1, 8, dit.text_embedding[0].in_features, generator=g)
    t = torch.tensor([600.0])
    ref_v, ref_g = forward_backward(dit, x, t, ctx, False)
    saved = []
    for ck in (True, Checkpointing(1), Checkpointing(0, saved), Checkpointing(n - 1)):
        v, grads = forward_backward(dit, x, t, ctx, ck)
        torch.testing.assert_close(v, ref_v, rtol=0, atol=1e-6)
        for k in ref_g:
            torch.testing.assert_close(grads[k], ref_g[k], rtol=1e-5, atol=1e-6, msg=k)
    # each kept block reported what it saved for the backward: at least its input
    tokens = 3 * 2 * 3  # latent frames x (4/2) x (6/2) patches
    assert len(saved) == n
    assert all(b >= tokens * dit.dim * 4 for b in saved), saved


def test_nothing_is_measured_without_gradients(tiny_paths):
    from Wan_SR.models.wan import load_dit

    dit = load_dit(tiny_paths["dit"])
    saved = []
    with torch.no_grad():
        dit_forward(dit, torch.randn(1, dit.patch_embedding.in_channels, 1, 4, 6),
                    torch.tensor([600.0]), torch.randn(1, 8, dit.text_embedding[0].in_features),
                    gradient_checkpointing=Checkpointing(0, saved))
    assert saved == []


@pytest.mark.parametrize("value, expected", [
    ("auto", "auto"), ("full", "full"), ("True", "full"), (True, "full"), ("none", "none"),
    ("False", "none"), (False, "none"), ("12", 12), ("0", 0)])
def test_checkpointing_setting(value, expected):
    assert checkpointing_setting(value) == expected


@pytest.mark.parametrize("bad", ["some", "-3", "1.5", ""])
def test_checkpointing_setting_refuses(bad):
    with pytest.raises(ValueError, match="--gradient_checkpointing"):
        checkpointing_setting(bad)


def test_policies(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda index: SimpleNamespace(total_memory=141 * GIB))
    cpu = torch.device("cpu")
    assert Recompute("none", 0, cpu).policy("base", 30).recompute == 0
    assert Recompute("12", 0, cpu).policy("base", 30).recompute == 12
    assert Recompute(40, 0, cpu).policy("base", 30).recompute == 30
    assert Recompute("full", 0, cpu).policy("base", 30).recompute is None
    auto_cpu = Recompute("auto", 0, cpu)
    assert not auto_cpu.auto and auto_cpu.policy("base", 30).recompute is None
    auto_cpu.settle()  # nothing to settle on the CPU
    assert auto_cpu.keep is None
    # on a GPU: the first step keeps (and measures) the last block, then the settled numbers
    gpu = Recompute("auto", 80, torch.device("cuda", 0))
    first = gpu.policy("base", 30)
    assert first.recompute == 29 and first.saved is gpu.measured["base"]
    gpu.keep = {"base": 12}
    later = gpu.policy("base", 30)
    assert later.recompute == 18 and later.saved is None
    gpu.keep = {"base": 45}
    assert gpu.policy("base", 30).recompute == 0
    assert gpu.target() == 80
    assert Recompute("auto", 0, torch.device("cuda", 0)).target() == 141 - AUTO_MARGIN_GIB
    assert Recompute("auto", 500, torch.device("cuda", 0)).target() == 141 - AUTO_MARGIN_GIB


def test_blocks_kept_fill_the_room():
    per = SAFETY * 2.0  # GiB per kept block, with the margin
    assert keep_blocks(20.0, {"base": [2 * GIB, GIB]}) == {"base": 1 + math.floor(20.0 / per)}
    assert keep_blocks(-5.0, {"base": [GIB]}) == {"base": 1}  # over the target already
    assert keep_blocks(10.0, {"base": [GIB], "regulariser": []}) == {"base": 9}


def test_the_command_line_takes_the_settings():
    from Wan_SR.cli.training import config_from_args, training_parser

    p = training_parser("base", "test")
    for argv, want in ((["--checkpointing", "7"], 7), (["--gradient_checkpointing", "False"],
                                                       "none"), ([], "auto")):
        cfg = config_from_args(p.parse_args(argv), "base")
        assert checkpointing_setting(cfg.optim.gradient_checkpointing) == want
    cfg = config_from_args(p.parse_args(["--checkpointing", "often"]), "base")
    with pytest.raises(ValueError, match="often"):
        cfg.optim.validate()


def test_a_run_keeps_its_losses_whatever_the_recomputation_and_profiles_a_step(
        tiny_paths, data, tmp_path):  # noqa: F811
    logs = {}
    for setting in ("full", "none", "1"):
        out = tmp_path / setting
        cfg = config(tiny_paths, data, out, max_train_steps=3, save_steps=3,
                     gradient_checkpointing=setting, profile_step=2)
        assert run(cfg)["step"] == 3
        logs[setting] = history(out)
        prof = json.loads((out / "profile_step_2.json").read_text())
        phases = prof["seconds"]
        for name in ("encode", "base forward", "base backward", "base optimiser",
                     "regulariser loss (frozen and update DiTs)", "regulariser forward",
                     "regulariser backward", "regulariser optimiser"):
            assert phases.get(name, -1) >= 0, (name, phases)
        assert phases["total"] == pytest.approx(sum(v for k, v in phases.items()
                                                    if k != "total"))
        assert not (out / "profile_step_1.json").exists()
    for setting in ("none", "1"):
        for a, b in zip(logs["full"], logs[setting]):
            for k in a:
                assert a[k] == pytest.approx(b[k], rel=1e-5, abs=1e-7), (setting, a["step"], k)


def _agree_in(rank: int, port: int, keeps: list, out) -> None:
    import torch.distributed as dist

    from Wan_SR.training.recompute import agree

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=len(keeps))
    try:
        out.put((rank, agree(keeps[rank], torch.device("cpu"))))
    finally:
        dist.destroy_process_group()


def test_processes_agree_on_the_fewest_blocks():
    import socket

    import torch.multiprocessing as mp

    from Wan_SR.training.recompute import agree

    assert agree({"base": 12, "regulariser": 9}, torch.device("cpu")) == {"base": 12,
                                                                         "regulariser": 9}
    # two processes; the second ran no regulariser in its first step (a single-frame clip)
    keeps = [{"base": 12, "regulariser": 9}, {"base": 10}]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_agree_in, args=(r, port, keeps, out)) for r in range(2)]
    for proc in procs:
        proc.start()
    got = dict(out.get(timeout=120) for _ in procs)
    for proc in procs:
        proc.join(30)
    assert got[0] == got[1] == {"base": 10, "regulariser": 9}


@pytest.fixture
def aot_eager(monkeypatch):
    """torch.compile through Dynamo and AOTAutograd without code generation (no compiler needed,
    the same graphs and partitions)."""
    import torch._dynamo

    compile_module = torch.nn.Module.compile
    monkeypatch.setattr(torch.nn.Module, "compile",
                        lambda self, **kw: compile_module(self, backend="aot_eager"))
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def test_compiled_blocks_keep_values_gradients_and_measures(tiny_paths, aot_eager):
    from Wan_SR.models.wan import load_dit
    from Wan_SR.training.models import compile_dits

    dit = load_dit(tiny_paths["dit"]).requires_grad_(True)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, dit.patch_embedding.in_channels, 3, 4, 6, generator=g)
    ctx = torch.randn(1, 8, dit.text_embedding[0].in_features, generator=g)
    t = torch.tensor([600.0])
    ref_v, ref_g = forward_backward(dit, x, t, ctx, False)
    compile_dits(dit, None)
    saved = []
    for ck in (Checkpointing(None), Checkpointing(1, saved)):
        v, grads = forward_backward(dit, x, t, ctx, ck)
        torch.testing.assert_close(v, ref_v, rtol=1e-5, atol=1e-6)
        for k in ref_g:
            torch.testing.assert_close(grads[k], ref_g[k], rtol=1e-4, atol=1e-6, msg=k)
    assert len(saved) == len(dit.blocks) - 1 and all(b > 0 for b in saved)


def test_a_compiled_run_keeps_its_losses(tiny_paths, data, tmp_path, aot_eager):  # noqa: F811
    logs = {}
    for compiled in (False, True):
        out = tmp_path / str(compiled)
        cfg = config(tiny_paths, data, out, max_train_steps=3, save_steps=3, compile=compiled)
        torch._dynamo.utils.counters.clear()
        assert run(cfg)["step"] == 3
        assert bool(torch._dynamo.utils.counters["stats"]["unique_graphs"]) == compiled
        logs[compiled] = history(out)
    for a, b in zip(logs[False], logs[True]):
        for k in a:
            assert a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-6), (a["step"], k)


def test_compile_setting_auto_compiles_on_recent_gpus_only():
    from Wan_SR.training.models import wants_compile
    from Wan_SR.training.options import auto_setting

    assert [auto_setting(v) for v in ("auto", "True", "false", True, "1")] == [
        "auto", True, False, True, True]
    with pytest.raises(ValueError, match="--compile 'sometimes'"):
        auto_setting("sometimes")
    assert wants_compile("auto", "cpu") is False  # the CPU: plain blocks
    assert wants_compile("True", "cpu") is True and wants_compile(False, "cpu") is False
