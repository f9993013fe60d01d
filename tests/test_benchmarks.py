"""The benchmarks keep working as the package changes (they run on GPU machines only now and
then): every Wan_SR name they use exists (benchmarks/wan_sr.py imports them all), every script
takes the four shared options, and a result carries its command line, commit and environment."""
import importlib
import json

import pytest

SCRIPTS = ["vae.speed", "inference.window", "inference.e2e", "inference.memory",
           "inference.memory_profile",
           "inference.fusion", "inference.bf16_conformance", "training.trainers",
           "data.degradation", "data.tagger"]


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

    args, env, compiles = variant("latent_compile_reference_vae")
    assert args == ["--window_space", "latent", "--compile"]
    assert env == {"PSSR_VAE": "reference"} and compiles
    assert variant("pixel_deterministic") == (["--deterministic"], {"PSSR_VAE": "fast"}, False)
    with pytest.raises(SystemExit, match="unknown modifier"):
        variant("pixel_fast")
    with pytest.raises(SystemExit, match="starts with"):
        variant("tiles")


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
