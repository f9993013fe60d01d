"""Model layer: loaders on tiny official-layout files, LoRA export/merge, draft, prompt cache."""
import pytest
import torch

from Wan_SR.models import wan
from Wan_SR.models.draft import (DraftMismatchError, build_draft, identity_init_fc, load_draft,
                                 save_draft, select_blocks)
from Wan_SR.models.lora import (CheckpointMismatchError, export_base_state_dict, inject_lora,
                                load_base_checkpoint, merge_lora_state_dict)
from Wan_SR.core.files import save_safetensors_atomic
from Wan_SR.models.text import PromptEncoder


def _inputs(dit, seed=0, in_ch=32):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, in_ch, 3, 8, 12, generator=g)
    ctx = torch.randn(1, 7, dit.config["text_dim"], generator=g)
    return x, torch.tensor([699.0]), ctx


def test_tiny_files_load_through_public_loaders(tiny_paths):
    files = wan.resolve_wan_files(str(tiny_paths["wan_dir"]))
    assert files.dit == tiny_paths["dit"] and files.tokenizer == tiny_paths["tokenizer"]
    dit = wan.load_dit(files.dit)
    assert dit.config["dim"] == 64 and dit.config["num_layers"] == 6
    assert dit.config["num_heads"] == 2 and dit.config["in_dim"] == 16
    assert dit.patch_embedding.weight.shape == (64, 16, 1, 2, 2)

    vae = wan.load_vae(files.vae)
    assert vae.config == {"dim": 8, "z_dim": 16, "num_res_blocks": 1}
    video = torch.rand(1, 3, 9, 32, 48) * 2 - 1
    with torch.no_grad():
        z = wan.vae_encode(vae, video)
        assert z.shape == (1, 16, 3, 4, 6)
        y = wan.vae_decode(vae, z)
    assert y.shape == (1, 3, 9, 32, 48) and y.abs().max() <= 1

    enc = wan.load_text_encoder(files.t5, dtype=torch.float32)
    prompter = wan.load_prompter(files.tokenizer)
    prompter.fetch_models(enc)
    ctx = prompter.encode_prompt("a cat", device="cpu")
    assert ctx.shape == (1, 512, 32)
    n_tokens = int((ctx.abs().sum(-1) > 0).sum())
    assert 1 < n_tokens < 20  # padded positions zeroed


def test_missing_file_is_one_line_error(tmp_path):
    with pytest.raises(wan.MissingWeightsError) as e:
        wan.load_dit(tmp_path / "diffusion_pytorch_model.safetensors")
    msg = str(e.value)
    assert "diffusion_pytorch_model.safetensors" in msg and "huggingface.co" in msg
    assert "\n" not in msg
    with pytest.raises(wan.MissingWeightsError, match="Wan2.1_VAE.pth"):
        wan.load_vae(tmp_path / "Wan2.1_VAE.pth")


def test_widen_patch_embedding_keeps_pretrained_and_zero_inits(tiny_paths):
    dit = wan.load_dit(tiny_paths["dit"])
    old_w = dit.patch_embedding.weight.clone()
    old_b = dit.patch_embedding.bias.clone()
    x, t, ctx = _inputs(dit, in_ch=16)
    with torch.no_grad():
        before = dit(x, t, ctx)
        wan.widen_patch_embedding(dit, 32)
        after = dit(torch.cat([x, torch.randn_like(x)], 1), t, ctx)
    assert dit.patch_embedding.weight.shape == (64, 32, 1, 2, 2)
    assert torch.equal(dit.patch_embedding.weight[:, :16], old_w)
    assert torch.count_nonzero(dit.patch_embedding.weight[:, 16:]) == 0
    assert torch.equal(dit.patch_embedding.bias, old_b)
    assert torch.allclose(before, after, atol=1e-6)  # new channels contribute nothing yet


def test_peft_lora_equals_merged_base_checkpoint(tiny_paths, tmp_path):
    torch.manual_seed(1)
    dit = wan.load_dit(tiny_paths["dit"])
    wan.widen_patch_embedding(dit, 32)
    inject_lora(dit, rank=4)
    n_lora = 0
    with torch.no_grad():
        for name, p in dit.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn_like(p) * 0.05)
                n_lora += 1
        dit.patch_embedding.weight[:, 16:].normal_(0, 0.05)
        dit.head.head.bias.add_(0.1)
    # 6 blocks x (4 self + 4 cross + 2 ffn) modules x (A, B)
    assert n_lora == 6 * 10 * 2
    x, t, ctx = _inputs(dit)
    with torch.no_grad():
        ref = dit(x, t, ctx)
    sd = export_base_state_dict(dit)
    assert "blocks.0.self_attn.q.lora_A.default.weight" in sd
    assert "blocks.5.cross_attn.o.lora_B.default.weight" in sd
    assert sd["blocks.0.ffn.0.lora_A.default.weight"].shape == (4, 64)
    assert sd["blocks.0.ffn.0.lora_B.default.weight"].shape == (128, 4)
    assert sd["patch_embedding.weight"].shape == (64, 32, 1, 2, 2)
    path = tmp_path / "base.safetensors"
    save_safetensors_atomic(path, sd)

    plain = wan.load_dit(tiny_paths["dit"])  # 16-channel, as a user's Wan file
    assert load_base_checkpoint(plain, path) == 60
    with torch.no_grad():
        out = plain(x, t, ctx)
    assert (out - ref).abs().max().item() <= 1e-5
    assert (out - ref).abs().max().item() < 1e-3 * ref.abs().max().item()
    assert not any("lora" in k for k in plain.state_dict())


def test_unmatched_tensor_in_base_checkpoint_is_an_error(tiny_paths):
    dit = wan.load_dit(tiny_paths["dit"])
    sd = {"blocks.9.self_attn.q.lora_A.default.weight": torch.zeros(4, 64),
          "blocks.9.self_attn.q.lora_B.default.weight": torch.zeros(64, 4)}
    with pytest.raises(CheckpointMismatchError, match="blocks.9"):
        merge_lora_state_dict(dit, sd)
    with pytest.raises(CheckpointMismatchError, match="unknown"):
        merge_lora_state_dict(dit, {"unknown.weight": torch.zeros(3)})


@pytest.mark.parametrize("k,expected", [
    (1.5, list(range(2, 30, 3))), (3, list(range(2, 30, 3))),
    (2, list(range(1, 30, 2))), (1, list(range(30)))])
def test_draft_block_selection(k, expected):
    ids = select_blocks(30, k)
    assert ids == expected
    assert len(ids) == {1.5: 10, 3: 10, 2: 15, 1: 30}[k]


def test_identity_fc_passes_base_feature():
    fc = torch.nn.Linear(8, 4)
    identity_init_fc(fc)
    f, h = torch.randn(5, 4), torch.randn(5, 4)
    assert torch.equal(fc(torch.cat([f, h], -1)), f)


def _merged_base(tiny_paths):
    dit = wan.load_dit(tiny_paths["dit"])
    load_base_checkpoint(dit, tiny_paths["base"])
    return dit


def test_draft_build_save_load_round_trip(tiny_paths, tmp_path):
    base = _merged_base(tiny_paths)
    draft = build_draft(base, 1.5)
    assert draft.block_ids == [2, 5]
    assert len(draft.blocks) == 2 and len(draft.fc_layers) == 2
    # kept blocks are copies of base blocks 2 and 5, renumbered
    assert torch.equal(draft.blocks[1].ffn[0].weight, base.blocks[5].ffn[0].weight)
    assert torch.equal(draft.patch_embedding.weight, base.patch_embedding.weight)
    with torch.no_grad():
        for fc in draft.fc_layers:
            fc.weight.add_(torch.randn_like(fc.weight) * 0.1)
    path = tmp_path / "draft.safetensors"
    save_draft(draft, path)
    loaded = load_draft(path, 1.5, base_num_layers=6)
    a, b = draft.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    x, t, ctx = _inputs(base)
    feats = [torch.randn(1, 72, 64), torch.randn(1, 72, 64)]
    with torch.no_grad():
        assert torch.equal(draft(x, t, ctx, feats), loaded(x, t, ctx, feats))


def test_draft_with_wrong_k_select_names_both_numbers(tiny_paths):
    with pytest.raises(DraftMismatchError) as e:
        load_draft(tiny_paths["draft"], 2, base_num_layers=6)
    msg = str(e.value)
    assert "2 blocks" in msg and "selects 3" in msg and "--k_select 2" in msg


def test_cached_prompt_is_reused_without_text_encoder(tiny_paths, tmp_path, monkeypatch):
    pe = PromptEncoder(tiny_paths["t5"], tiny_paths["tokenizer"], cache_dir=tmp_path / "c",
                       dtype=torch.float32)
    first = pe.encode("a sharp video of a cat")
    assert pe.encoder_loads == 1 and pe.cache_path("a sharp video of a cat").exists()

    def boom(*a, **k):
        raise AssertionError("text encoder constructed although the prompt is cached")

    monkeypatch.setattr(wan, "load_text_encoder", boom)
    monkeypatch.setattr(wan, "load_prompter", boom)
    again = PromptEncoder(tiny_paths["t5"], tiny_paths["tokenizer"], cache_dir=tmp_path / "c")
    assert torch.equal(again.encode("a sharp video of a cat"), first)
    assert again.encoder_loads == 0
    with pytest.raises(AssertionError, match="constructed"):
        again.encode("another prompt")


def test_real_size_layouts_match_registered_hashes():
    """Built on the meta device, our real-size configs reproduce the key/shape hashes diffsynth
    registers for the official files: the layouts we write match the real ones."""
    from diffsynth.models.utils import hash_state_dict_keys, init_weights_on_device
    from diffsynth.models.wan_video_dit import WanModel
    from diffsynth.models.wan_video_text_encoder import WanTextEncoder
    from diffsynth.models.wan_video_vae import VideoVAE_, WanVideoVAE

    from Wan_SR.testing.checkpoints import REAL_DIT, REAL_T5, REAL_VAE

    with init_weights_on_device():
        dit = WanModel(**REAL_DIT)
        t5 = WanTextEncoder(**REAL_T5)
        vae = WanVideoVAE()
        vae.model = VideoVAE_(**REAL_VAE)
    assert hash_state_dict_keys(dit.state_dict()) == "9269f8db9040a9d860eaca435be61814"
    assert hash_state_dict_keys(t5.state_dict()) == "9c8818c2cbea55eca56c7b447df170da"
    assert hash_state_dict_keys(vae.model.state_dict()) in (
        "1378ea763357eea97acdef78e65d6d96", "ccc42284ea13e1ad04693284c7a09be6")
    # our readers recover the real configs from the real layouts
    cfg = wan.dit_config_from_state_dict(dit.state_dict())
    assert {k: cfg[k] for k in ("dim", "ffn_dim", "num_heads", "num_layers", "text_dim")} == \
        {"dim": 1536, "ffn_dim": 8960, "num_heads": 12, "num_layers": 30, "text_dim": 4096}
    assert wan.vae_config_from_state_dict(vae.model.state_dict()) == REAL_VAE
    assert wan.t5_config_from_state_dict(t5.state_dict())["num_layers"] == 24


def test_draft_metadata_round_trip_needs_no_k_select(tiny_paths, tmp_path):
    """A draft we write records k_select, block ids and heads; loading without --k_select uses
    them, a matching --k_select is accepted, another one is refused naming both."""
    from safetensors import safe_open

    base = _merged_base(tiny_paths)
    draft = build_draft(base, 3)
    path = tmp_path / "d.safetensors"
    save_draft(draft, path, extra_metadata={"draft_condition": "zeros"})
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    assert meta["block_ids"] == "2,5" and float(meta["k_select"]) == 3.0
    assert meta["draft_condition"] == "zeros" and meta["num_heads"] == str(base.config["num_heads"])
    loaded = load_draft(path, None, base_num_layers=6)
    assert loaded.block_ids == [2, 5] and loaded.k_select == 3.0
    assert load_draft(path, 1.5, base_num_layers=6).block_ids == [2, 5]  # same blocks
    with pytest.raises(DraftMismatchError, match=r"k_select 3.0.*--k_select 2 selects 3"):
        load_draft(path, 2, base_num_layers=6)


def test_pipeline_takes_the_draft_files_blocks(tiny_paths, tmp_path):
    """The base features recorded for the draft are the ones the draft file names."""
    import torch as _t

    from Wan_SR.sampling.pipeline import PSSRPipeline, SamplingConfig

    base = _merged_base(tiny_paths)
    draft = build_draft(base, 2)  # blocks 1, 3, 5
    pipe = PSSRPipeline(None, base, draft, _t.zeros(1, 4, 32), None, SamplingConfig())
    assert pipe.config.record_blocks == [1, 3, 5] and pipe.config.k_select == 2


def test_head_count_that_cannot_be_derived_is_a_clear_error():
    sd = {"patch_embedding.weight": torch.zeros(100, 16, 1, 2, 2),
          "blocks.0.ffn.0.weight": torch.zeros(8, 100), "head.head.weight": torch.zeros(64, 100),
          "text_embedding.0.weight": torch.zeros(100, 32),
          "time_embedding.0.weight": torch.zeros(100, 256)}
    with pytest.raises(ValueError, match="--num_heads"):
        wan.dit_config_from_state_dict(sd)
    with pytest.raises(ValueError, match="do not fit"):
        wan.dit_config_from_state_dict(sd, num_heads=3)
    assert wan.dit_config_from_state_dict(sd, num_heads=2)["num_heads"] == 2


def test_all_missing_weights_listed_at_once(tmp_path):
    files = wan.resolve_wan_files(str(tmp_path / "nowhere"))
    with pytest.raises(wan.MissingWeightsError) as e:
        wan.require_files(files, tmp_path / "base.safetensors", tmp_path / "draft.safetensors",
                          text_encoder=True)
    msg = str(e.value)
    assert msg.startswith("6 weight files are missing")
    for name in ("diffusion_pytorch_model.safetensors", "Wan2.1_VAE.pth", "base.safetensors",
                 "draft.safetensors", "models_t5_umt5-xxl-enc-bf16.pth", "umt5-xxl"):
        assert name in msg
    assert "huggingface.co/Wan-AI/Wan2.1-T2V-1.3B" in msg and "drive.google.com" in msg


def test_compile_blocks_compiles_each_resident_block_for_any_token_count():
    """Inference compiles the DiT blocks with dynamic shapes (a clip shorter than a window must
    not compile again); blocks streamed from host memory stay eager (their hooks swap weights)."""
    from Wan_SR.sampling.speed import compile_blocks

    class Block(torch.nn.Module):
        def compile(self, **kwargs):
            self.compiled_with = kwargs

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = torch.nn.ModuleList([Block() for _ in range(3)])

    m = Model()
    m.blocks[1]._pssr_stream_index = 0
    compile_blocks(m, dynamic=True)
    assert m.blocks[0].compiled_with == {"dynamic": True}
    assert m.blocks[2].compiled_with == {"dynamic": True}
    assert not hasattr(m.blocks[1], "compiled_with")
