"""The pixel losses' CUDA graphs (Wan_SR/training/graphs.py): on the CPU the same values and
gradients as the plain losses; the capture logic (one capture per signature, a limit, outputs
that outlive the next replay, the autocast cache off while capturing) against a stand-in for
``torch.cuda.make_graphed_callables`` that behaves as real graphs do (static outputs)."""
import pytest
import torch

from Wan_SR.training import graphs, losses


class CpuGraphed(graphs.Graphed):
    """Graphed with the GPU check lifted, so the capture logic runs on CPU tensors."""

    def usable(self, args):
        return torch.is_grad_enabled() and any(a.requires_grad for a in args)


@pytest.fixture
def fake_capture(monkeypatch):
    """A stand-in for make_graphed_callables: it checks what graph capture requires and returns a
    callable that, like a replayed graph, writes every call's outputs into the same tensors."""
    calls = []

    def make(fn, sample):
        assert all(s.is_leaf for s in sample) and not torch.is_autocast_cache_enabled()
        calls.append([tuple(s.shape) for s in sample])
        static = None

        class Replay(torch.autograd.Function):
            @staticmethod
            def forward(ctx, *xs):
                nonlocal static
                with torch.enable_grad():
                    ins = [x.detach().requires_grad_(x.requires_grad) for x in xs]
                    outs = fn(*ins)
                ctx.saved = (ins, outs)
                values = [o.detach() for o in outs]
                if static is None:
                    static = [v.clone() for v in values]
                for s, v in zip(static, values):
                    s.copy_(v)
                return tuple(static)

            @staticmethod
            def backward(ctx, *grads):
                ins, outs = ctx.saved
                need = [i for i in ins if i.requires_grad]
                got = iter(torch.autograd.grad(outs, need, grads))
                return tuple(next(got) if i.requires_grad else None for i in ins)

        return lambda *xs: Replay.apply(*xs)

    monkeypatch.setattr(torch.cuda, "make_graphed_callables", make)
    return calls


def test_graphed_captures_once_per_signature_and_outputs_outlive_the_next_call(fake_capture):
    f = CpuGraphed(lambda a, b: (a * b, (a ** 2).sum()), max_graphs=2)
    a = torch.randn(3, requires_grad=True)
    b = torch.randn(3)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=False):
        p1, s1 = f(a, b)
        p2, _ = f(a * 2, b)  # same shapes: replayed, no new capture
    assert fake_capture == [[(3,), (3,)]] and (f.captures, f.replays) == (1, 2)
    assert torch.equal(p1, (a * b).detach()) and torch.equal(p2, (a * 2 * b).detach())
    s1.backward()
    assert torch.allclose(a.grad, 2 * a.detach())
    f(torch.randn(4, requires_grad=True), torch.randn(4))      # a second shape: captured
    f(torch.randn(5, requires_grad=True), torch.randn(5))      # past the limit: eager
    assert len(fake_capture) == 2 and f.replays == 3
    with torch.no_grad():                                       # no gradients: eager
        f(a, b)
    assert f.replays == 3


def test_graphed_keys_on_the_autocast_state(fake_capture):
    f = CpuGraphed(lambda a: (a @ a.T,))
    a = torch.randn(4, 4, requires_grad=True)
    f(a)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        f(a)
    assert len(fake_capture) == 2


def test_graphed_runs_eagerly_on_the_cpu():
    f = graphs.Graphed(lambda a: (a * 3,))
    a = torch.randn(2, requires_grad=True)
    (y,) = f(a)
    y.sum().backward()
    assert torch.equal(a.grad, torch.full((2,), 3.0)) and f.captures == 0


def _tiny_pixel_setup(tiny_paths):
    from Wan_SR.models.wan import load_vae, resolve_wan_files

    vae = load_vae(resolve_wan_files(str(tiny_paths["wan_dir"])).vae)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(1, 16, 3, 6, 8, generator=g)
    hq = torch.rand(1, 3, 9, 48, 64, generator=g) * 2 - 1
    lpips = lambda x, y: ((x - y) ** 2).mean(dim=(1, 2, 3))  # noqa: E731 (N,) distances
    return vae, x0, hq, lpips


@pytest.mark.parametrize("graphed", [False, True])
def test_pixel_loss_terms_equal_the_pixel_losses(tiny_paths, graphed, fake_capture):
    """PixelLoss (plain, and through the graph logic) gives pixel_losses' values and gradients."""
    vae, x0, hq, lpips = _tiny_pixel_setup(tiny_paths)
    box = (1, 2, 4, 5)
    pl = losses.PixelLoss(vae, lpips)
    if graphed:
        pl.run = CpuGraphed(pl._losses)
    ref_x = x0.clone().requires_grad_(True)
    ref = losses.pixel_losses(lambda q: losses.decode_native(vae, q), ref_x, hq, box, lpips)
    (ref["loss_pixel_l2"] + 2 * ref["loss_pixel_lpips"]).backward()
    got_x = x0.clone().requires_grad_(True)
    for _ in range(2):  # the second call replays
        got_x.grad = None
        terms = pl.terms(got_x, hq, box, 1.0, 2.0)
        assert [(n, w) for n, w, _ in terms] == [("loss_pixel_l2", 1.0),
                                                 ("loss_pixel_lpips", 2.0)]
        losses.weighted_sum(terms).backward()
        for (name, _, v) in terms:
            assert torch.equal(v, ref[name].detach()), name
        assert torch.equal(got_x.grad, ref_x.grad)
        assert got_x.grad[..., :1, :].abs().sum() == 0 and got_x.grad[..., 1:5, 2:7].abs().sum() > 0
    assert len(fake_capture) == int(graphed)


def test_build_pixel_loss_follows_the_options(tiny_paths):
    from Wan_SR.training.build import build_pixel_loss
    from Wan_SR.training.options import LossOptions

    vae = _tiny_pixel_setup(tiny_paths)[0]
    assert build_pixel_loss(LossOptions(train_video_pixel=False), "auto", vae, "cpu") is None
    no_lpips = LossOptions(alpha_pixel_lpips=0.0)
    pl = build_pixel_loss(no_lpips, "auto", vae, "cpu")
    assert pl.lpips is None and not isinstance(pl.run, graphs.Graphed)  # auto: GPUs only
    assert isinstance(build_pixel_loss(no_lpips, "True", vae, "cpu").run, graphs.Graphed)
    with pytest.raises(ValueError, match="--cuda_graphs 'maybe'"):
        build_pixel_loss(no_lpips, "maybe", vae, "cpu")


def test_a_failed_capture_falls_back_to_plain_calls(monkeypatch, caplog):
    def refuse(fn, sample):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(torch.cuda, "make_graphed_callables", refuse)
    f = CpuGraphed(lambda a: (a * 2,))
    a = torch.randn(3, requires_grad=True)
    with caplog.at_level("WARNING"):
        (y,) = f(a)
        f(a)
    assert torch.equal(y, (a * 2).detach()) and f.captures == 0
    assert sum("capture failed" in r.message for r in caplog.records) == 1
