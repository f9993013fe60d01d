"""The benchmarks keep working as the package changes (they run on GPU machines only now and
then): every Wan_SR name they use exists (benchmarks/wan_sr.py imports them all), every script
takes the four shared options, and a result carries its command line, commit and environment."""
import importlib
import json

import pytest

SCRIPTS = ["vae.speed", "inference.window", "inference.e2e", "inference.memory",
           "inference.memory_profile",
           "inference.fusion", "inference.bf16_conformance", "training.trainers",
           "training.pixel_graphs", "training.encode_parts", "inference.step_parts",
           "data.degradation", "data.tagger", "ci.footprint"]


@pytest.mark.parametrize("name", SCRIPTS)
def test_script_imports_and_takes_the_shared_options(name, capsys):
    script = importlib.import_module(f"benchmarks.{name}")
    with pytest.raises(SystemExit) as stop:
        script.main(["--help"])
    assert stop.value.code == 0
    shown = capsys.readouterr().out
    for option in ("--out OUT", "--quick", "--light", "--repeats REPEATS"):
        assert option in shown, f"{name}: {option} missing"


def test_repeats_below_one_is_refused():
    from benchmarks.inference import fusion

    with pytest.raises(SystemExit) as stop:
        fusion.main(["--repeats", "0"])
    assert stop.value.code == 2


def test_a_quick_run_writes_the_shared_result_format(tmp_path):
    from benchmarks.inference import fusion

    path = fusion.main(["--quick", "--repeats", "2", "--out", str(tmp_path / "fusion.json")])
    result = json.loads(path.read_text())
    assert result["command"].startswith("python ")
    assert set(result["git"]) == {"commit", "dirty"}
    for key in ("device", "torch", "cuda", "cudnn", "python", "cpu", "cpu_count", "date"):
        assert key in result["env"], key
    assert result["settings"]["quick"] is True and result["settings"]["repeats"] == 2
    assert len(result["timing"]["runs"]) == 2
    assert result["shape"] == [2, 3, 64, 64]


def test_default_result_path_names_folder_device_and_quick():
    from benchmarks.common import RESULTS, results_path

    assert results_path("vae/vae_speed", {"device": "NVIDIA H200"}) == \
        RESULTS / "vae" / "vae_speed_h200.json"
    assert results_path("inference/e2e", {"device": "cpu"}, quick=True) == \
        RESULTS / "inference" / "e2e_cpu_quick.json"


def test_e2e_variant_names():
    from benchmarks.inference.e2e import variant

    args, env, mods = variant("latent_compile_reference_vae")
    assert args == ["--outputs", "final", "--window_space", "latent", "--compile"]
    assert env == {"PSSR_VAE": "reference"} and mods == ["compile", "reference_vae"]
    assert variant("pixel_deterministic") == (["--outputs", "final", "--deterministic"],
                                              {"PSSR_VAE": "fast"}, ["deterministic"])
    # --final and step 1's default outputs replace --outputs final
    assert variant("pixel_final_profile")[0] == ["--final"]
    assert variant("pixel_branches")[0] == []
    assert variant("latent_fp8")[0] == ["--outputs", "final", "--window_space", "latent",
                                        "--fp8"]
    with pytest.raises(SystemExit, match="unknown modifier"):
        variant("pixel_fast")
    with pytest.raises(SystemExit, match="starts with"):
        variant("tiles")


def test_e2e_summary_keys_from_runs(tmp_path):
    from benchmarks.inference.e2e import merge_summary, speed, summarize

    log = ("INFO 1: 90 frames at 30 fps in 20.0 s (4.50 frames/s) -> x\n"
           "INFO 2: 30 frames at 30 fps in 5.0 s (6.00 frames/s) -> x\n"
           "INFO 3: 30 frames at 30 fps in 5.0 s (6.00 frames/s) -> x\n"
           "INFO VAE passes: 7 encode(s), 14 decode(s)\n")
    run = speed(log, 1)
    assert (run["frames"], run["seconds"], run["encodes"], run["decodes"]) == (150, 30.0, 7, 14)
    assert run["steady_frames_per_s"] == 6.0  # clips 2 and 3
    slower = dict(run, seconds=45.0)
    runs = {"pixel": {"runs": [run]}, "pixel_final": {"runs": [slower]},
            "latent_fp8": {"runs": [dict(run, profile={"steady": {"gpu_busy": 0.93}})]}}
    got = summarize(runs, {"latent:latent_fp8": {"mean_db": 41.5}}, "five_clips")
    assert got == {"final_over_outputs_final": 1.5, "final_over_outputs_final_steady": 1.0,
                   "steady_fps_pixel": 6.0, "steady_fps_latent_fp8": 6.0,
                   "gpu_busy": {"latent_fp8": 0.93}, "fp8_psnr_vs_bf16": {"five_clips": 41.5}}
    # one clip (the smooth clip): no steady state, no ratios; the PSNR under its name
    assert summarize(runs, {"latent:latent_fp8": {"mean_db": 45.0}}, "smooth33") == {
        "gpu_busy": {"latent_fp8": 0.93}, "fp8_psnr_vs_bf16": {"smooth33": 45.0}}
    path = tmp_path / "speed.json"
    merge_summary(path, got)
    merged = merge_summary(path, {"fp8_psnr_vs_bf16": {"smooth33": 45.0}, "gpu_busy": {
        "pixel_profile": 0.9}})
    assert merged["fp8_psnr_vs_bf16"] == {"five_clips": 41.5, "smooth33": 45.0}
    assert merged["gpu_busy"] == {"latent_fp8": 0.93, "pixel_profile": 0.9}
    assert json.loads(path.read_text()) == merged


def test_trainers_time_ours_beside_the_release_structure(tmp_path):
    """A quick run of each --gradient_checkpointing setting and of the release's structure (bf16
    trainables, no autocast, ...): every run trains, and the summary compares them."""
    from benchmarks.training import trainers

    path = trainers.main(["--quick", "--trainers", "base", "--base_runs",
                          "auto:2,full:2,release:2", "--work", str(tmp_path / "work"),
                          "--out", str(tmp_path / "train.json")])
    result = json.loads(path.read_text())
    runs = result["training"]["base"]["9x32x48"]["runs"]
    assert set(runs) == {"auto", "full", "release"}
    for label, run in runs.items():
        assert run["returncode"] == 0, (label, run["log_tail"])
        assert len(run["losses"]) == 2 and run["profile"]["step"] == 2
        assert run["samples_per_s"] == pytest.approx(1 / run["s_per_step"])
    summary = result["summary"]
    assert summary["base_release_over_ours"] == pytest.approx(
        runs["release"]["s_per_step"] / runs["auto"]["s_per_step"])
    assert summary["base_first_losses_rel_diff_to_full"]["auto"] < 1e-5  # on the CPU: all recomputed


def test_pixel_graphs_quick_run_compares_both_paths(tmp_path):
    """Tiny sizes on the CPU (no graphs there: both paths run plainly): the two paths' losses and
    gradients are compared over the same crops, and both are timed."""
    from benchmarks.training import pixel_graphs

    pixel_graphs.main(["--quick", "--repeats", "2", "--crop", "4",
                       "--out", str(tmp_path / "pg.json")])
    result = json.loads((tmp_path / "pg.json").read_text())
    assert result["max_rel_diff_losses"] == 0 and result["max_rel_diff_gradient_norm"] == 0
    assert len(result["plain_s"]["runs"]) == len(result["graphed_s"]["runs"]) == 2
    assert result["graphs_used"] is False  # graphs need a GPU


def test_encode_parts_quick_run_times_each_part(tmp_path):
    """Tiny sizes on the CPU: every part is timed and the VAE encode gives the same latents
    whatever the input's memory layout."""
    from benchmarks.training import encode_parts

    encode_parts.main(["--quick", "--repeats", "1", "--out", str(tmp_path / "ep.json")])
    result = json.loads((tmp_path / "ep.json").read_text())
    assert set(result["seconds"]) >= {"inputs_encode", "vae_encode", "degradation"}
    assert result["same_latents"] == {"contiguous": True, "channels_last": True}


def test_step_parts_quick_run_measures_every_part(tmp_path):
    """Tiny sizes on the CPU: the FP8 attention's emulation is timed and its error given, the
    VAE's longer steps give the same values, and the steps run with FP8 linears."""
    from benchmarks.inference import step_parts

    step_parts.main(["--quick", "--repeats", "1", "--parts", "attention,vae,steps",
                     "--out", str(tmp_path / "sp.json")])
    result = json.loads((tmp_path / "sp.json").read_text())
    assert 0 < result["attention"]["rel_err_vs_fp32"]["fp8"] < 0.1
    assert result["attention"]["kernel_vs_emulation_rel"] == 0  # the CPU runs the emulation
    for part, ref in (("encode", "max_abs_diff_to_4"), ("decode", "max_abs_diff_to_1")):
        diffs = [v[ref] for v in result["vae"][part].values() if ref in v]
        assert len(diffs) == 3 and max(diffs) < 1e-5
    assert result["steps"]["fp8_linears"]["base_x0_rel_err_vs_bf16"] > 0


def test_fp8_attention_ignores_shared_key_and_value_offsets():
    """The experiment's quantisation subtracts K's and V's means over the tokens: a softmax is
    blind to a key offset shared by all tokens, and a value offset comes out added once, so
    both leave the FP8 result as it was (to float rounding); and it is near float attention."""
    import torch

    from benchmarks.inference import fp8_attention as fa

    g = torch.Generator().manual_seed(0)
    B, L, H, D = 1, 200, 2, 128
    q, k, v = (torch.randn(B, L, H * D, generator=g) for _ in range(3))
    c = torch.randn(1, 1, H * D, generator=g) * 3
    out = fa.attention_fp8(q, k, v, H)
    assert torch.allclose(fa.attention_fp8(q, k + c, v, H), out, atol=1e-4)
    assert torch.allclose(fa.attention_fp8(q, k, v + c, H), out + c, atol=1e-4)
    h = [x.view(B, L, H, D).transpose(1, 2) for x in (q, k, v)]
    ref = torch.nn.functional.scaled_dot_product_attention(*h).transpose(1, 2).reshape(B, L, -1)
    assert ((out - ref).norm() / ref.norm()) < 0.08
    q8, qs, k8, ks, vt8, vs, vm = fa.quantize(q, k, v, H)
    assert q8.dtype == fa.E4M3 and q8.shape == (B * H, 256, D) and vt8.shape == (B * H, D, 256)
    assert (q8[:, L:].float() == 0).all() and (qs[:, L:] == 0).all()


def test_ci_footprint_reads_the_tests_seconds_and_sizes_a_folder(tmp_path):
    from benchmarks.ci.footprint import folder_bytes, tests_seconds

    out = "....\n=== short test summary info ===\n541 passed, 1 skipped in 367.66s (0:06:07)\n"
    assert tests_seconds(out) == 367.66
    assert tests_seconds("ERROR: no tests ran") is None
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "f").write_bytes(b"x" * 1000)
    (tmp_path / "g").write_bytes(b"y" * 24)
    assert folder_bytes(tmp_path) == 1024
