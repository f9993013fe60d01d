"""--fp8: the quantisation formula, FP8Linear against a hand computation, which layers swap,
and step 1 with --fp8 through its command line (on the CPU, the same _scaled_mm arithmetic)."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import ROOT
from Wan_SR.models.fp8 import E4M3, FP8Linear, quantize_rows, use_fp8

pytestmark = pytest.mark.skipif(not hasattr(torch, "_scaled_mm"), reason="torch without fp8")


def test_rows_scaled_so_their_largest_value_is_448():
    x = torch.tensor([[1.0, -2.0, 0.5], [0.0, 0.0, 0.0], [896.0, 1.0, -3.0]])
    q, scale = quantize_rows(x)
    assert q.dtype == E4M3
    assert torch.equal(scale, torch.tensor([[2 / 448], [1.0], [2.0]]))
    # the largest magnitude of each row lands on 448 exactly, zero rows stay zero
    assert q.float().abs().amax(1).tolist() == [448.0, 0.0, 448.0]
    # 1 * 448 / 2 = 224 and 0.5 * 224 = 112 are on the e4m3 grid: exact round trip
    assert torch.equal(q.float()[0] * scale[0], x[0])


def test_fp8_linear_is_the_scaled_product_of_the_quantised_operands():
    torch.manual_seed(0)
    lin = torch.nn.Linear(64, 32)
    x = torch.randn(2, 5, 64)
    f = FP8Linear(lin)
    qw, sw = quantize_rows(lin.weight.detach())
    qx, sx = quantize_rows(x.reshape(-1, 64))
    expect = ((qx.float() @ qw.float().t()) * sx * sw.t()).to(torch.bfloat16).float()
    expect = (expect + lin.bias.detach()).reshape(2, 5, 32)
    got = f(x)
    assert got.shape == (2, 5, 32) and got.dtype == torch.float32
    assert torch.allclose(got, expect, atol=2e-2, rtol=1e-2)
    # and close to the float32 layer: FP8 keeps ~2 significant digits
    ref = lin(x)
    assert ((got - ref).norm() / ref.norm()).item() < 0.05
    assert not torch.equal(got, ref)


def test_an_input_is_quantised_once_for_the_layers_that_share_it(pipe, monkeypatch):
    import copy

    from Wan_SR.models import fp8

    dit = copy.deepcopy(pipe.base)
    use_fp8(dit)
    calls = []
    real = fp8.quantize_rows
    monkeypatch.setattr(fp8, "quantize_rows", lambda x: calls.append(x.shape) or real(x))
    block = dit.blocks[0]
    x = torch.randn(1, 24, block.self_attn.q.in_features)
    # q, k and v of self-attention see one tensor: quantised once, the same result as alone
    q = block.self_attn.q(x)
    k = block.self_attn.k(x)
    v = block.self_attn.v(x)
    assert len(calls) == 1
    fp8.forget_inputs()
    assert torch.equal(block.self_attn.k(x), k) and len(calls) == 2
    # a changed tensor (in place) or another tensor is quantised anew
    x.mul_(2)
    assert not torch.equal(block.self_attn.v(x), v) and len(calls) == 3
    block.self_attn.q(x.clone())
    assert len(calls) == 4
    assert q.shape == (1, 24, block.self_attn.q.out_features)


def test_use_fp8_swaps_the_token_linears_and_keeps_the_text_keys_values(pipe):
    import copy

    dit = copy.deepcopy(pipe.base)
    n_linear = sum(isinstance(m, torch.nn.Linear) for m in dit.blocks.modules())
    swapped, kept = use_fp8(dit)
    names = {n for n, m in dit.blocks.named_modules() if isinstance(m, FP8Linear)}
    assert swapped == len(names) and swapped + kept == n_linear
    assert "0.self_attn.q" in names and "0.ffn.0" in names and "0.cross_attn.q" in names
    assert "0.cross_attn.k" not in names and "0.cross_attn.v" not in names
    # fp8 weights are buffers of the block: they move with it
    assert any(b.dtype == E4M3 for b in dit.blocks[0].buffers())


def test_step1_with_fp8_is_close_to_without_and_recorded(tiny_paths, tmp_path):
    from test_step1 import make_clip
    from Wan_SR.data import video_io

    make_clip(tmp_path / "in" / "clip.mp4", n=9, h=48, w=48)

    def run(out, *extra):
        cmd = [sys.executable, str(ROOT / "inference_step_1.py"), "--input_dir",
               str(tmp_path / "in"), "--output_dir", str(out), "--wan_model_dir",
               str(tiny_paths["wan_dir"]), "--lora_base_path", str(tiny_paths["base"]),
               "--lora_draft_path", str(tiny_paths["draft"]), "--torch_dtype", "float32",
               "--device", "cpu", "--outputs", "final", "--window_t", "5", "--overlap_t", "1",
               "--prompt_cache_dir", str(tmp_path / "pc"), *extra]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-2000:]
        return r.stderr

    run(tmp_path / "ref")
    log = run(tmp_path / "fp8", "--fp8")
    assert "linear layers of the base DiT" in log
    a = video_io.read_video(tmp_path / "ref" / "final" / "clip.mp4").astype(np.float64)
    b = video_io.read_video(tmp_path / "fp8" / "final" / "clip.mp4").astype(np.float64)
    psnr = 10 * np.log10(255 ** 2 / ((a - b) ** 2).mean())
    assert 30 < psnr < 80, psnr
    record = json.loads((tmp_path / "fp8" / "run_config.json").read_text())
    assert record["settings"]["sampling"]["fp8"] is True
    assert "fp8" not in json.loads(
        (tmp_path / "ref" / "run_config.json").read_text())["settings"]["sampling"]
