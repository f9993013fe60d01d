"""Latent discriminator, adversarial losses and LPIPS-VGG of base training
(Wan_SR/training/discriminator.py, Wan_SR/training/lpips.py)."""
import types

import pytest
import torch
import torch.nn as nn

from Wan_SR.training.discriminator import (LatentDiscriminator, discriminator_hinge_loss,
                                           feature_matching_loss, generator_adv_loss)
from Wan_SR.testing.lpips import write_random_lpips_weights
from Wan_SR.training.lpips import LPIPSWeightsError, load_lpips, resolve_lpips_state_dict

SMALL = dict(channels=(4, 8, 8, 16, 16), hidden=8)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These nets are small: one intra-op thread avoids OpenMP spin-waiting, which made them
    ~50x slower on a shared 2-core machine; the previous setting is restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _small_d(seed=0):
    torch.manual_seed(seed)
    return LatentDiscriminator(in_channels=16, **SMALL).eval()


# ----------------------------------------------------------------------------- discriminator

def test_default_layout_equals_release_keys_and_shapes():
    import torchvision

    with torch.device("meta"):
        d = LatentDiscriminator()
        # the release's construction (discriminator_wan.py), rebuilt on the meta device
        vgg = torchvision.models.vgg16()
        vgg.features[0] = nn.Conv2d(16, 64, kernel_size=3, stride=1, padding=1)
        ref = nn.Module()
        ref.feature_extractor = vgg.features
        ref.avgpool = vgg.avgpool
        ref.classifier = nn.Sequential(nn.Linear(512 * 7 * 7, 1024), nn.ReLU(), nn.Linear(1024, 1))
    convs = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
    expected = [f"feature_extractor.{i}.{w}" for i in convs for w in ("weight", "bias")]
    expected += [f"classifier.{i}.{w}" for i in (0, 2) for w in ("weight", "bias")]
    sd = d.state_dict()
    assert list(sd) == expected
    assert {k: tuple(v.shape) for k, v in sd.items()} == \
        {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    assert tuple(sd["feature_extractor.0.weight"].shape) == (64, 16, 3, 3)
    assert tuple(sd["classifier.0.weight"].shape) == (1024, 25088)
    assert [type(m) for m in d.feature_extractor] == [type(m) for m in ref.feature_extractor]
    assert d.avgpool.output_size == (7, 7)


def test_width_options_keep_key_names():
    a = LatentDiscriminator(**SMALL)
    with torch.device("meta"):
        b = LatentDiscriminator(width_scale=0.25, hidden=16)
    assert list(a.state_dict()) == list(b.state_dict())
    assert b.feature_extractor[28].out_channels == 128


def test_shape_read_from_a_state_dict():
    from Wan_SR.training.discriminator import discriminator_shape

    with torch.device("meta"):
        release = LatentDiscriminator().state_dict()
        odd = LatentDiscriminator(in_channels=4, channels=(3, 5, 6, 7, 9), hidden=11,
                                  pool_size=3).state_dict()
    assert discriminator_shape(release) == dict(in_channels=16, channels=(64, 128, 256, 512, 512),
                                                hidden=1024, pool_size=7)
    assert discriminator_shape(odd) == dict(in_channels=4, channels=(3, 5, 6, 7, 9), hidden=11,
                                            pool_size=3)


def test_warm_start_loads_the_file_at_its_widths(tmp_path, caplog):
    from Wan_SR.core.files import save_safetensors_atomic
    from Wan_SR.models.lora import CheckpointMismatchError
    from Wan_SR.models.wan import MissingWeightsError
    from Wan_SR.testing.checkpoints import TINY_DISCRIMINATOR, write_tiny_discriminator
    from Wan_SR.training.base import build_discriminator
    from Wan_SR.training.discriminator import load_discriminator
    from Wan_SR.training.options import BaseLossOptions

    path = write_tiny_discriminator(tmp_path / "d.safetensors", seed=3)
    d = load_discriminator(path)
    assert d.channels == TINY_DISCRIMINATOR["channels"]
    torch.manual_seed(3)
    ref = LatentDiscriminator(**TINY_DISCRIMINATOR)
    assert all(torch.equal(v, d.state_dict()[k]) for k, v in ref.state_dict().items())
    assert d(torch.randn(1, 16, 2, 8, 8)).shape == (1, 1)

    on = BaseLossOptions(alpha_adv=0.01)
    assert build_discriminator(on, str(path), "cpu").channels == d.channels
    assert build_discriminator(on, None, "cpu").channels == (64, 128, 256, 512, 512)
    with caplog.at_level("INFO"):
        assert build_discriminator(BaseLossOptions(), str(path), "cpu") is None
    assert "--load_model_discriminator_from: no effect" in caplog.text

    sd = dict(ref.state_dict())
    bad = tmp_path / "bad.safetensors"
    save_safetensors_atomic(bad, {k: v for k, v in sd.items() if k != "classifier.2.bias"})
    with pytest.raises(CheckpointMismatchError, match="bad.safetensors.*classifier.2.bias"):
        load_discriminator(bad)
    save_safetensors_atomic(bad, {k: v for k, v in sd.items() if k != "classifier.0.weight"})
    with pytest.raises(CheckpointMismatchError, match="no tensor 'classifier.0.weight'"):
        load_discriminator(bad)
    with pytest.raises(MissingWeightsError, match="--load_model_discriminator_from.*nope"):
        load_discriminator(tmp_path / "nope.safetensors")


@pytest.mark.parametrize("hw,feat_hw", [((32, 32), (1, 1)), ((90, 160), (2, 5)),
                                        ((6, 6), (1, 1)), ((1, 40), (1, 1)), ((3, 70), (1, 2))])
def test_output_shapes(hw, feat_hw):
    d = _small_d()
    x = torch.randn(2, 16, 3, *hw)
    score = d(x)
    score2, feat = d(x, return_features=True)
    assert score.shape == (2, 1)
    assert torch.equal(score, score2)
    assert feat.shape == (6, 16, *feat_hw)


def test_large_latents_compute_exactly_the_plain_vgg_stack():
    d = _small_d()
    frames = torch.randn(3, 16, 40, 66)
    with torch.no_grad():
        assert torch.equal(d.features(frames), d.feature_extractor(frames))


def test_rejects_bad_input():
    d = _small_d()
    with pytest.raises(ValueError):
        d(torch.randn(1, 16, 32, 32))
    with pytest.raises(ValueError):
        d(torch.randn(1, 8, 2, 32, 32))


def test_scores_are_the_mean_over_frames():
    d = _small_d()
    f0, f1 = torch.randn(2, 1, 16, 1, 36, 36)
    with torch.no_grad():
        one = d(f0)
        same = d(f0.expand(-1, -1, 5, -1, -1).contiguous())
        s0, s1 = d(f0), d(f1)
        both = d(torch.cat([f0, f1], dim=2))
        batch = d(torch.cat([f0, f1], dim=0))
    torch.testing.assert_close(same, one, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(both, (s0 + s1) / 2, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(batch, torch.cat([s0, s1]), rtol=1e-5, atol=1e-6)


def test_hinge_loss_hand_values():
    real = torch.tensor([[0.5], [2.0], [-1.0]])
    fake = torch.tensor([[-2.0], [0.5]])
    # relu(1 - real) = 0.5, 0, 2 -> 5/6; relu(1 + fake) = 0, 1.5 -> 0.75
    assert discriminator_hinge_loss(real, fake).item() == pytest.approx((5 / 6 + 0.75) / 2)
    assert discriminator_hinge_loss(torch.full((4, 1), 3.0), torch.full((4, 1), -3.0)).item() == 0
    assert discriminator_hinge_loss(torch.zeros(2, 1), torch.zeros(2, 1)).item() == 1


def test_generator_and_feature_losses():
    fake = torch.tensor([[1.0], [-3.0]], requires_grad=True)
    loss = generator_adv_loss(fake)
    assert loss.item() == pytest.approx(1.0)
    loss.backward()
    torch.testing.assert_close(fake.grad, torch.full((2, 1), -0.5))

    ff = torch.tensor([1.0, 2.0, -1.0, 0.0], requires_grad=True)
    fr = torch.tensor([0.0, 4.0, -1.0, 1.0], requires_grad=True)
    lf = feature_matching_loss(ff, fr)
    assert lf.item() == pytest.approx((1 + 2 + 0 + 1) / 4)
    lf.backward()
    assert fr.grad is None
    torch.testing.assert_close(ff.grad, torch.tensor([0.25, -0.25, 0.0, -0.25]))


def test_hinge_gradients_reach_only_the_discriminator():
    d = _small_d()
    d.train()
    gen_param = nn.Parameter(torch.randn(1, 16, 2, 33, 33))
    x0_base = gen_param * 2.0                          # a generator output
    z_h = torch.randn(1, 16, 2, 33, 33)
    loss = discriminator_hinge_loss(d(z_h), d(x0_base.detach()))
    loss.backward()
    assert gen_param.grad is None
    assert all(p.grad is not None for p in d.parameters())
    assert any(p.grad.abs().sum() > 0 for p in d.parameters())


def test_generator_step_with_frozen_discriminator():
    d = _small_d()
    d.requires_grad_(False)
    gen_param = nn.Parameter(torch.randn(1, 16, 2, 33, 33))
    _, f_r = d(torch.randn(1, 16, 2, 33, 33), return_features=True)
    s_f, f_f = d(gen_param * 1.0, return_features=True)
    (generator_adv_loss(s_f) + feature_matching_loss(f_f, f_r)).backward()
    assert gen_param.grad is not None and gen_param.grad.abs().sum() > 0
    assert all(p.grad is None for p in d.parameters())


# ----------------------------------------------------------------------------- LPIPS

@pytest.fixture(scope="module")
def lpips_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("lpips")
    write_random_lpips_weights(root / "weights", seed=0)
    return root / "weights"


@pytest.fixture(scope="module")
def lpips_single(tmp_path_factory):
    """The same random weights (seed 0) as one whole-LPIPS state dict with lpips/pyiqa keys."""
    return write_random_lpips_weights(tmp_path_factory.mktemp("lpips1") / "lpips_full.pth")[0]


@pytest.fixture(scope="module")
def lpips_net(lpips_dir):
    return load_lpips(lpips_dir, "cpu")


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(1)
    a = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    b = (a + 0.3 * torch.randn(2, 3, 32, 32, generator=g)).clamp(-1, 1)
    return a, b


def test_lpips_zero_symmetric_positive(lpips_net, images):
    a, b = images
    with torch.no_grad():
        same = lpips_net(a, a)
        ab, ba = lpips_net(a, b), lpips_net(b, a)
    assert same.shape == (2,)
    assert same.abs().max().item() < 1e-7
    torch.testing.assert_close(ab, ba, rtol=1e-6, atol=1e-8)
    assert (ab > 0).all()


def test_lpips_is_frozen_but_differentiable_in_its_input(lpips_net, images):
    a, b = images
    assert not lpips_net.training
    assert all(not p.requires_grad for p in lpips_net.parameters())
    x = a.clone().requires_grad_(True)
    lpips_net(x, b).mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in lpips_net.parameters())


def test_lpips_all_accepted_formats_agree(lpips_dir, lpips_single, lpips_net, tmp_path, images):
    a, b = images
    single = lpips_single
    ref = resolve_lpips_state_dict(lpips_dir)
    for path in (single, lpips_dir / "vgg.pth",             # linear file, backbone beside it
                 f"{lpips_dir / 'vgg16-397923af.pth'},{lpips_dir / 'vgg.pth'}",
                 [lpips_dir / "vgg.pth", lpips_dir / "vgg16-397923af.pth"]):
        sd = resolve_lpips_state_dict(path)
        assert sd.keys() == ref.keys()
        assert all(torch.equal(sd[k], ref[k]) for k in ref)
    # torch hub layout: <hub>/checkpoints/vgg16-397923af.pth + <hub>/pyiqa/LPIPS_v0.1_vgg-….pth,
    # torchvision's file with its classifier entries (ignored)
    hub = tmp_path / "hub"
    (hub / "checkpoints").mkdir(parents=True)
    (hub / "pyiqa").mkdir()
    tv = torch.load(lpips_dir / "vgg16-397923af.pth")
    tv["classifier.0.weight"] = torch.zeros(2, 2)
    torch.save(tv, hub / "checkpoints" / "vgg16-397923af.pth")
    torch.save(torch.load(lpips_dir / "vgg.pth"), hub / "pyiqa" / "LPIPS_v0.1_vgg-a78928a0.pth")
    with torch.no_grad():
        torch.testing.assert_close(load_lpips(hub)(a, b), lpips_net(a, b), rtol=0, atol=0)


@pytest.mark.parametrize("case", ["missing", "empty_dir", "linear_only", "backbone_only"])
def test_lpips_missing_weights_message(tmp_path, lpips_dir, case):
    if case == "missing":
        path = tmp_path / "nowhere"
    else:
        path = tmp_path / case
        path.mkdir()
        if case == "linear_only":
            (path / "vgg.pth").write_bytes((lpips_dir / "vgg.pth").read_bytes())
        if case == "backbone_only":
            (path / "vgg16-397923af.pth").write_bytes(
                (lpips_dir / "vgg16-397923af.pth").read_bytes())
    with pytest.raises(FileNotFoundError) as err:
        load_lpips(path)
    assert isinstance(err.value, LPIPSWeightsError)
    msg = str(err.value)
    assert "\n" not in msg
    assert "vgg16-397923af.pth" in msg and "vgg.pth" in msg
    assert "https://download.pytorch.org/models/vgg16-397923af.pth" in msg
    assert "PerceptualSimilarity" in msg


def test_lpips_rejects_tiny_images(lpips_net):
    with pytest.raises(ValueError):
        lpips_net(torch.zeros(1, 3, 8, 64), torch.zeros(1, 3, 8, 64))


def test_lpips_equals_pyiqa_on_the_same_weights(lpips_single, lpips_net, images, monkeypatch):
    """pyiqa's LPIPS(net='vgg') loads the same single file; its torchvision backbone download is
    replaced by an untrained VGG16 feature stack (overwritten by the file's net.slice* weights)."""
    lpips_arch = pytest.importorskip("pyiqa.archs.lpips_arch")
    import torchvision

    def vgg16_features_only(*args, **kwargs):
        return types.SimpleNamespace(
            features=torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"]))

    monkeypatch.setattr(lpips_arch.models, "vgg16", vgg16_features_only)
    theirs = lpips_arch.LPIPS(pretrained=False, net="vgg", version="0.1",
                              pretrained_model_path=str(lpips_single))
    ours = lpips_net  # loaded from the folder format; the same weights as lpips_single
    a, b = images
    with torch.no_grad():
        ref = theirs(a, b, normalize=False).reshape(-1)
        val = ours(a, b)
    assert ref.shape == val.shape == (2,)
    torch.testing.assert_close(val, ref, rtol=1e-5, atol=1e-7)
