"""RAM (+ DAPE) tagger, Wan_SR/models/ram.py, on tiny files in the published layouts.

The references below are written from the published formulas (RAM's Swin / BERT tagging head,
loralib's merge), not from the module under test: the original Swin with its patch-merging order,
relative position bias and shifted windows with -100 masks; BERT cross-attention with post-norm
residuals; loralib's grouped (conv1d) MergedLinear delta."""
import copy
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from Wan_SR.models import ram
from Wan_SR.testing.ram import write_tiny_dape, write_tiny_ram

ROOT = Path(__file__).resolve().parents[1]
N_TAGS = 4585
WINDOW = 12  # RAM Swin-L at 384 px
LORA_SCALE = 1 / 8  # loralib: lora_alpha (1) / r (8)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("ram")
    return write_tiny_ram(d / ram.RAM_FILE), write_tiny_dape(d / ram.DAPE_FILE)


@pytest.fixture(scope="module")
def tagger(files):
    return ram.load_ram(files[0])


@pytest.fixture(scope="module")
def tagger_dape(files):
    return ram.load_ram(*files)


@pytest.fixture(scope="module")
def ref_tokens(files, images):
    return ref_swin(published(files[0]), images)


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(1)
    return torch.randn(1, 3, 384, 384, generator=g)


def published(path) -> dict:
    return torch.load(path, weights_only=True)["model"]


def vocabulary():
    """Names and thresholds read here from the data files: 0.68, replaced class by class."""
    names = (ram.DATA_DIR / "ram_tag_list.txt").read_text(encoding="utf-8").splitlines()
    lines = (ram.DATA_DIR / "ram_tag_list_threshold.txt").read_text(encoding="utf-8").splitlines()
    thr = [0.68] * len(names)
    for i, s in enumerate(lines):
        thr[i] = float(s.strip())
    return names, thr


# --------------------------------------------------------------------------- references

def _ln(x, sd, p, eps=1e-5):
    return F.layer_norm(x, x.shape[-1:], sd[p + ".weight"], sd[p + ".bias"], eps)


def _lin(x, sd, p):
    y = x @ sd[p + ".weight"].T
    return y + sd[p + ".bias"] if p + ".bias" in sd else y


def ref_block(x, sd, p, shifted, shift_windows=True):
    """One original Swin block on (B, H, W, C): W-MSA / SW-MSA with the cyclic shift, the three
    slice regions of the published mask (-100 between regions) and the relative position bias."""
    B, H, W, C = x.shape
    table = sd[p + ".attn.relative_position_bias_table"]
    heads, win = table.shape[1], WINDOW
    shift = win // 2 if shifted and shift_windows else 0
    if min(H, W) <= win:
        win, shift = min(H, W), 0
    h = _ln(x, sd, p + ".norm1")
    rows, cols = (torch.arange(H) + shift) % H, (torch.arange(W) + shift) % W
    rolled = h[:, rows][:, :, cols]  # rolled[a, b] = h[a + shift, b + shift]

    def region(n):
        idx = torch.arange(n)
        return (idx >= n - win).long() + (idx >= n - shift).long() if shift else 0 * idx

    label = region(H)[:, None] * 3 + region(W)[None, :]
    r, c = torch.meshgrid(torch.arange(win), torch.arange(win), indexing="ij")
    r, c = r.flatten(), c.flatten()
    rel = (r[:, None] - r[None, :] + win - 1) * (2 * win - 1) + (c[:, None] - c[None, :] + win - 1)
    bias = table[rel].permute(2, 0, 1)
    out, d = torch.empty_like(rolled), C // heads
    for a in range(0, H, win):
        for b in range(0, W, win):
            t = rolled[:, a:a + win, b:b + win].reshape(B, win * win, C)
            lab = label[a:a + win, b:b + win].reshape(-1)
            mask = (lab[:, None] != lab[None, :]).to(x.dtype) * -100.0
            qkv = _lin(t, sd, p + ".attn.qkv").view(B, -1, 3, heads, d).permute(2, 0, 3, 1, 4)
            att = ((qkv[0] * d ** -0.5) @ qkv[1].transpose(-2, -1) + bias + mask).softmax(-1)
            o = (att @ qkv[2]).transpose(1, 2).reshape(B, win * win, C)
            out[:, a:a + win, b:b + win] = _lin(o, sd, p + ".attn.proj").view(B, win, win, C)
    inv_r, inv_c = (torch.arange(H) - shift) % H, (torch.arange(W) - shift) % W
    x = x + out[:, inv_r][:, :, inv_c]
    return x + _lin(F.gelu(_lin(_ln(x, sd, p + ".norm2"), sd, p + ".mlp.fc1")), sd, p + ".mlp.fc2")


def ref_merge(x, sd, p, order=(0, 1, 2, 3)):
    parts = [x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]]
    x = torch.cat([parts[i] for i in order], -1)
    return _ln(x, sd, p + ".norm") @ sd[p + ".reduction.weight"].T


def ref_swin(sd, images, **kw):
    """RAM's visual_encoder: (B, 1 + L, C) = [mean token, tokens] after the final norm."""
    pre = "visual_encoder."
    w = sd[pre + "patch_embed.proj.weight"]
    x = F.conv2d(images, w, sd[pre + "patch_embed.proj.bias"], stride=w.shape[-1]).permute(0, 2, 3, 1)
    x = _ln(x, sd, pre + "patch_embed.norm")
    stage = 0
    while f"{pre}layers.{stage}.blocks.0.norm1.weight" in sd:
        j = 0
        while f"{pre}layers.{stage}.blocks.{j}.norm1.weight" in sd:
            x = ref_block(x, sd, f"{pre}layers.{stage}.blocks.{j}", j % 2 == 1,
                          kw.get("shift_windows", True))
            j += 1
        if f"{pre}layers.{stage}.downsample.reduction.weight" in sd:
            x = ref_merge(x, sd, f"{pre}layers.{stage}.downsample", kw.get("order", (0, 1, 2, 3)))
        stage += 1
    x = _ln(x, sd, pre + "norm").flatten(1, 2)
    return torch.cat([x.mean(1, keepdim=True), x], 1)


def ref_head(sd, tokens, heads=4):
    """RAM generate_tag after the Swin: image_proj tokens, relu(wordvec_proj(label_embed))
    queries, a BERT stack of cross-attention + feed-forward (post-norm, eps 1e-12), fc, sigmoid."""
    img = _lin(tokens, sd, "image_proj")
    B = img.shape[0]
    h = F.relu(_lin(sd["label_embed"], sd, "wordvec_proj")).expand(B, -1, -1)
    n = 0
    while f"tagging_head.encoder.layer.{n}.output.dense.weight" in sd:
        p = f"tagging_head.encoder.layer.{n}."

        def split(t):
            return t.view(B, t.shape[1], heads, -1).transpose(1, 2)

        q = split(_lin(h, sd, p + "crossattention.self.query"))
        k, v = split(_lin(img, sd, p + "crossattention.self.key")), split(_lin(img, sd, p + "crossattention.self.value"))
        ctx = ((q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])).softmax(-1) @ v
        ctx = ctx.transpose(1, 2).reshape(h.shape)
        h = _ln(_lin(ctx, sd, p + "crossattention.output.dense") + h, sd,
                p + "crossattention.output.LayerNorm", 1e-12)
        f = _lin(F.gelu(_lin(h, sd, p + "intermediate.dense")), sd, p + "output.dense")
        h = _ln(f + h, sd, p + "output.LayerNorm", 1e-12)
        n += 1
    return torch.sigmoid(_lin(h, sd, "fc").squeeze(-1))


def hand_merge_dape(sd, dape):
    """loralib: MergedLinear(enable_lora=[True, False, True]) delta = conv1d(A, B, groups=2)
    zero-padded into the q and v rows; Linear delta = B @ A; both times alpha / r."""
    out = dict(sd)
    for key in dape:
        if not key.endswith(".lora_A") or key.startswith(("tag_encoder.", "text_decoder.")):
            continue
        base = key[:-len(".lora_A")]
        a, b, w = dape[key], dape[base + ".lora_B"], sd[base + ".weight"]
        if base.endswith("attn.qkv"):
            delta = F.conv1d(a.unsqueeze(0), b.unsqueeze(-1), groups=2).squeeze(0)
            full = torch.zeros_like(w)
            ind = torch.tensor([True, False, True]).repeat_interleave(w.shape[0] // 3)
            full[ind] = delta
            delta = full
        else:
            delta = b @ a
        out[base + ".weight"] = w + delta * LORA_SCALE
    return out


# --------------------------------------------------------------------------- data files

def test_data_files():
    names, thr = vocabulary()
    assert len(names) == len(thr) == N_TAGS
    assert len(set(names)) == N_TAGS and all(n.strip() == n and n for n in names)
    assert all(0 < t <= 1 for t in thr)  # a threshold of 1 means the tag never fires
    assert sum(t != 0.68 for t in thr) > 4000 and {0.65, 0.8, 0.9} <= set(thr)
    assert (ram.DATA_DIR / "ram_tag_list.txt").stat().st_size == 46488  # byte-exact copies
    assert (ram.DATA_DIR / "ram_tag_list_threshold.txt").stat().st_size == 26601
    got_names, got_thr = ram.load_tag_vocabulary()
    assert got_names == names and torch.equal(got_thr, torch.tensor(thr, dtype=torch.float32))


def test_data_files_are_package_data():
    tomllib = pytest.importorskip("tomllib")
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    patterns = globs["Wan_SR.models"]
    for f in ram.DATA_DIR.iterdir():
        assert any(f.relative_to(ram.DATA_DIR.parent).match(p) for p in patterns), f


# --------------------------------------------------------------------------- loading

def test_tiny_files_have_the_published_layout(files):
    obj = torch.load(files[0], weights_only=True)
    assert set(obj) == {"model"}
    sd = obj["model"]
    assert sd["label_embed"].shape[0] == N_TAGS
    assert "visual_encoder.layers.0.downsample.reduction.weight" in sd  # end of stage 0
    assert not any(k.startswith("visual_encoder.layers.3.downsample") for k in sd)
    assert "tagging_head.encoder.layer.1.crossattention.self.query.weight" in sd
    assert "visual_encoder.layers.0.blocks.1.attn_mask" in sd
    dape = torch.load(files[1], weights_only=True)
    qkv_a = dape["visual_encoder.layers.0.blocks.0.attn.qkv.lora_A"]
    qkv_b = dape["visual_encoder.layers.0.blocks.0.attn.qkv.lora_B"]
    dim = sd["visual_encoder.layers.0.blocks.0.attn.qkv.weight"].shape[1]
    assert qkv_a.shape == (16, dim) and qkv_b.shape == (2 * dim, 8)  # rank 8, q and v


def test_tiny_files_load_without_missing_or_unexpected_keys(files, tagger_dape):
    sd, dape = published(files[0]), torch.load(files[1], weights_only=True)
    unused = sorted(k for k in sd if k.startswith(("tag_encoder.", "text_decoder."))
                    or re.search(r"\.(relative_position_index|attn_mask|position_ids)$", k))
    info = tagger_dape.load_info
    assert info["ram_ignored"] == unused and len(unused) > 3
    pairs = sorted({k.rsplit(".", 1)[0] for k in dape})
    assert info["dape_applied"] == [p for p in pairs if not p.startswith("tag_encoder.")]
    assert info["dape_ignored"] == ["tag_encoder.encoder.layer.0.attention.self.query"]
    assert not tagger_dape.training and not any(p.requires_grad for p in tagger_dape.parameters())
    assert tagger_dape.image_size == 384 and len(tagger_dape.tag_names) == N_TAGS


@pytest.mark.parametrize("edit, message", [
    (lambda sd: sd.pop("visual_encoder.layers.1.downsample.reduction.weight"),
     r"missing keys: visual_encoder\.layers\.1\.downsample\.reduction\.weight"),
    (lambda sd: sd.pop("tagging_head.encoder.layer.1.output.LayerNorm.bias"),
     r"missing keys: tagging_head\.encoder\.layer\.1\.output\.LayerNorm\.bias"),
    (lambda sd: sd.__setitem__("visual_encoder.absolute_pos_embed", torch.zeros(1)),
     r"unexpected keys: visual_encoder\.absolute_pos_embed"),
    (lambda sd: sd.__setitem__("extra_head.weight", torch.zeros(1)),
     r"unexpected keys: extra_head\.weight"),
])
def test_bad_ram_files_name_the_keys(files, tmp_path, edit, message):
    sd = published(files[0])
    edit(sd)
    path = tmp_path / "bad.pth"
    torch.save({"model": sd}, path)
    with pytest.raises(ram.RAMWeightsError, match=message) as e:
        ram.load_ram(path)
    assert str(path) in str(e.value)


def test_bad_dape_and_unreadable_files(files, tmp_path):
    dape = torch.load(files[1], weights_only=True)
    dape["visual_encoder.layers.0.blocks.0.mlp.fc9.lora_A"] = torch.zeros(8, 8)
    dape["visual_encoder.layers.0.blocks.0.mlp.fc9.lora_B"] = torch.zeros(8, 8)
    bad = tmp_path / "DAPE.pth"
    torch.save(dape, bad)
    with pytest.raises(ram.RAMWeightsError, match=r"unexpected keys visual_encoder\.layers\.0\.blocks\.0\.mlp\.fc9"):
        ram.load_ram(files[0], bad)
    dape = torch.load(files[1], weights_only=True)
    dape.pop("tagging_head.encoder.layer.0.crossattention.self.key.lora_B")
    torch.save(dape, bad)
    with pytest.raises(ram.RAMWeightsError, match=r"self\.key has lora_A only"):
        ram.load_ram(files[0], bad)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(ram.RAMWeightsError, match=re.escape(str(junk))):
        ram.load_ram(junk)
    with pytest.raises(ram.RAMWeightsError, match=re.escape(str(junk))):
        ram.load_ram(files[0], junk)
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "nope.pth"))):
        ram.load_ram(tmp_path / "nope.pth")
    alone = ram.load_ram(files[0], tmp_path / "no_dape.pth")  # a missing DAPE: RAM alone
    assert alone.load_info["dape"] is None


def test_vocabulary_size_must_match(tmp_path):
    path = write_tiny_ram(tmp_path / "r.pth", num_tags=7)
    with pytest.raises(ram.RAMWeightsError, match="7 tags"):
        ram.load_ram(path)
    names = [f"t{i}" for i in range(7)]
    small = ram.load_ram(path, tag_names=names, thresholds=[0.5] * 7)
    assert small.tag_names == names and small.thresholds.shape == (7,)


# --------------------------------------------------------------------------- numerics

def test_swin_conversion_matches_the_published_math(files, tagger, images, ref_tokens):
    """timm's Swin with the converted keys equals the original Swin written out; swapping the
    2x2 merge order or dropping the shifted windows moves the result (the check can fail)."""
    sd = published(files[0])
    got = tagger.visual_tokens(images)
    assert got.shape == (1, 1 + 12 * 12, sd["visual_encoder.norm.weight"].shape[0])
    assert (got - ref_tokens).abs().max() < 1e-4
    for kw in ({"order": (0, 2, 1, 3)}, {"shift_windows": False}):
        assert (got - ref_swin(sd, images, **kw)).abs().max() > 1e-2, kw


def test_probabilities_match_the_published_head(files, tagger, images, ref_tokens):
    want = ref_head(published(files[0]), ref_tokens)
    got = tagger.probabilities(images)
    assert got.dtype == torch.float32 and got.shape == (1, N_TAGS)
    assert (got - want).abs().max() < 1e-5
    assert want.std() > 0.05  # the tiny head gives varied probabilities


def test_dape_equals_a_hand_merge(files, tagger, tagger_dape, images):
    sd, dape = published(files[0]), torch.load(files[1], weights_only=True)
    merged = hand_merge_dape(sd, dape)
    ours = tagger_dape.state_dict()
    for key, name in [("visual_encoder.layers.2.blocks.1.attn.qkv.weight", None),
                      ("tagging_head.encoder.layer.1.crossattention.self.key.weight",
                       "tagging_head.layers.1.key.weight")]:
        assert torch.allclose(ours[name or key], merged[key], atol=1e-6)
        assert not torch.allclose(merged[key], sd[key], atol=1e-3)
    base, with_dape = tagger.probabilities(images), tagger_dape.probabilities(images)
    assert (with_dape - base).abs().max() > 1e-2
    want = ref_head(merged, ref_swin(merged, images))
    assert (with_dape - want).abs().max() < 1e-5


# --------------------------------------------------------------------------- tags

def test_tags_follow_the_per_class_thresholds(tagger):
    names, thr = vocabulary()
    frame = np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    probs = tagger.probabilities(tagger.preprocess(frame))[0].tolist()
    want = [n for n, p, t in zip(names, probs, thr) if p > t]
    assert 0 < len(want) < N_TAGS
    assert tagger.tags(frame) == ", ".join(want)

    fixed = copy.deepcopy(tagger)  # every tag at the same probability
    with torch.no_grad():
        fixed.fc.weight.zero_()
    got = {}
    for p in (0.705, 0.999, 0.3):
        with torch.no_grad():
            fixed.fc.bias.fill_(math.log(p / (1 - p)))
        got[p] = fixed.tag_lists([frame, frame])
        want = [n for n, t in zip(names, thr) if p > t]
        assert got[p] == [want, want]
    assert fixed.tags(frame) == ""  # at 0.3 no tag is on (the lowest threshold is 0.45)
    # at 0.705: a 0.65 tag and a 0.7 tag are on, a 0.8 tag and a 0.9 tag are off
    on = got[0.705][0]
    assert {names[thr.index(0.65)], names[thr.index(0.7)]} <= set(on)
    assert not {names[thr.index(0.8)], names[thr.index(0.9)]} & set(on)
    order = {n: i for i, n in enumerate(names)}
    assert [order[n] for n in on] == sorted(order[n] for n in on)  # vocabulary order
    never = [n for n, t in zip(names, thr) if t >= 0.999]  # thresholds of 1 never fire
    assert never and not set(never) & set(got[0.999][0])


def test_preprocess(tagger):
    from torchvision import transforms

    rng = np.random.default_rng(0)
    u8 = rng.integers(0, 256, (90, 160, 3), dtype=np.uint8)
    chw = torch.from_numpy(u8).permute(2, 0, 1).float() / 255
    a, b = tagger.preprocess(u8), tagger.preprocess(chw)
    assert a.shape == (1, 3, 384, 384) and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert torch.equal(tagger.preprocess(torch.from_numpy(u8)), a)
    ref = transforms.Compose([transforms.Resize((384, 384)),  # the release's RAM transform
                              transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    assert torch.allclose(a[0], ref(chw), atol=1e-6)
    ro = u8.copy()
    ro.flags.writeable = False
    assert torch.equal(tagger.preprocess(ro), a)
    batch = tagger.preprocess(np.stack([u8, u8[::-1]]))
    assert batch.shape == (2, 3, 384, 384) and torch.equal(batch[:1], a)
    assert tagger.preprocess([u8, chw]).shape == (2, 3, 384, 384)
    with pytest.raises(ValueError, match="uint8 frames"):
        tagger.preprocess(u8[..., :2])
    with pytest.raises(ValueError, match="one frame"):
        tagger.tags(np.stack([u8, u8]))


def test_make_checkpoints_cli_ram_flag(tmp_path, monkeypatch):
    import Wan_SR.tools.make_tiny_checkpoints as mk

    calls = []
    monkeypatch.setattr(mk, "make_checkpoints", lambda *a, **k: calls.append(k["ram"]))
    mk.main(["--out", str(tmp_path)])
    mk.main(["--out", str(tmp_path), "--no_ram"])
    mk.main(["--out", str(tmp_path), "--ram"])
    assert calls == [True, False, True]
