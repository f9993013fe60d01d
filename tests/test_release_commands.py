"""The published release's commands run here as written (docs/method.md, "The release's
options"): every option of the release's parsers is accepted with its value syntax; options with
no effect here log one line naming the option and the reason; checked options refuse other
values; the README's training commands train on tiny checkpoints (CPU); --model_paths,
--model_id_with_origin_paths and --denoising_strength work."""
import importlib
import json
import logging
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import FIXTURES, ROOT
from Wan_SR.cli.release import BY_SCRIPT, CHECK, NOTICE, check_release_options
from Wan_SR.data.video_io import write_video

DATA = json.loads((FIXTURES / "release_commands.json").read_text())
MODULES = {"inference_step_1.py": "step1", "inference_step_2.py": "step2",
           "eval_metrics.py": "evaluate", "train_base.py": "train_base",
           "train_draft.py": "train_draft"}


def parser_of(script):
    return importlib.import_module(f"Wan_SR.cli.{MODULES[script]}").build_parser()


def argv_of(options) -> list:
    out = []
    for name, value in options:
        out += [f"--{name}"] + ([] if value is None else [value])
    return out


def notices(script, argv, caplog) -> list:
    """Parse ``argv`` with our parser (a SystemExit fails the test) and run the release-option
    checks; returns the notice lines logged."""
    parser = parser_of(script)
    args = parser.parse_args(argv)
    if script == "eval_metrics.py":
        return []  # every option of the release's eval_metrics.py works here
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="Wan_SR.cli.release"):
        lines = check_release_options(parser, args, script)
    assert [r.getMessage() for r in caplog.records if r.name == "Wan_SR.cli.release"] == lines
    return lines


def named(lines) -> set:
    """The option each notice line names (``--name value: ...`` or ``--flag: ...``)."""
    return {re.match(r"--(\w+)", ln).group(1) for ln in lines}


def expected_notices(script, argv) -> set:
    given = {a[2:] for a in argv if a.startswith("--")}
    return {o.name for o in BY_SCRIPT.get(script, ()) if o.kind == NOTICE and o.name in given}


@pytest.mark.parametrize("script", sorted(DATA["parsers"]))
def test_every_option_of_the_release_parsers_is_accepted(script, caplog):
    argv = argv_of(DATA["parsers"][script])
    lines = notices(script, argv, caplog)
    assert named(lines) == expected_notices(script, argv)
    for ln in lines:  # one line naming the option, the script and the reason
        assert f"no effect in {script} (" in ln and ln.endswith(")")


@pytest.mark.parametrize("cmd", DATA["commands"], ids=lambda c: f"{c['source']}-{c['script']}")
def test_documented_commands_parse_with_their_notices(cmd, caplog):
    script, argv = cmd["script"], cmd["argv"]
    known = {name for name, _ in DATA["parsers"][script]}
    assert {a[2:] for a in argv if a.startswith("--")} <= known  # the data is consistent
    lines = notices(script, argv, caplog)
    assert named(lines) == expected_notices(script, argv)


def test_release_train_draft_script_notices_what_a_draft_ignores(caplog):
    cmd = next(c for c in DATA["commands"] if c["source"] == "train_draft.sh")
    lines = notices("train_draft.py", cmd["argv"], caplog)
    assert named(lines) == {"lora_model_reg", "lora_target_modules", "lora_rank",
                            "start_adv_step", "alpha_adv", "alpha_perc", "cfg_scale"}
    assert "--alpha_adv 0.0: no effect in train_draft.py (the draft trainer has no " \
           "discriminator)" in lines


@pytest.mark.parametrize("script, option, value", [
    ("train_base.py", "lora_model_base", "vae"),
    ("train_draft.py", "lora_model_base", "text_encoder"),
    ("train_base.py", "lora_model_reg", "dit"),
    ("train_base.py", "remove_prefix_in_ckpt", "pipe.dit."),
    ("train_base.py", "trainable_models", "dit"),
    ("train_draft.py", "remove_prefix_in_ckpt_reg", "x."),
])
def test_checked_options_refuse_other_values(script, option, value, capsys):
    check = next(o for o in BY_SCRIPT[script] if o.name == option)
    assert check.kind == CHECK
    parser = parser_of(script)
    args = parser.parse_args(["--dataset_base_path", "d", f"--{option}", value])
    with pytest.raises(SystemExit) as e:
        check_release_options(parser, args, script)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"--{option} {value!r}: {script} supports only {check.accepted()} here" in err


def test_step1_and_step2_say_temp_files_have_no_effect(caplog):
    for script in ("inference_step_1.py", "inference_step_2.py"):
        lines = notices(script, ["--consistent_dir", "a", "--sharp_dir", "b", "--output_dir", "c",
                                 "--temp_dir", "/tmp/t", "--keep_temp"]
                        if script == "inference_step_2.py" else
                        ["--temp_dir", "/tmp/t", "--keep_temp"], caplog)
        assert lines == [f"--temp_dir /tmp/t: no effect in {script} (tiles stay in memory; no "
                         "temporary files are written)",
                         f"--keep_temp: no effect in {script} (tiles stay in memory; no "
                         "temporary files are written)"]


# ----------------------------------------------------------------------------- options that work

def test_denoising_strength_scales_the_sigma_grid_as_the_release(pipe):
    """The release's scheduler: sigma_start = d (sigma_min 0), s = linspace(d, 0, 1001)[:-1],
    sigma = 5 s / (1 + 4 s), a timestep takes the sigma of the nearest grid t."""
    from Wan_SR.sampling.pipeline import PSSRPipeline, SamplingConfig

    for d in (1.0, 0.3):
        s = np.linspace(d, 0, 1001)[:-1]
        sig = 5 * s / (1 + 4 * s)
        want = sig[np.argmin(np.abs(1000 * sig - 699))]
        p = PSSRPipeline(pipe.vae, pipe.base, pipe.draft, pipe.context, None,
                         SamplingConfig(denoising_strength=d))
        assert p.timeline.sigma(699.0) == pytest.approx(want, abs=1e-6)
    # d = 0.3: the grid tops out at t = 682 (sigma 0.68), below 699
    assert want == pytest.approx(1.5 / 2.2, abs=1e-3) and pipe.timeline.sigma(699.0) > 0.69


def test_denoising_strength_is_checked():
    from Wan_SR.cli.step1 import build_parser, validate

    parser = build_parser()
    args = parser.parse_args(["--denoising_strength", "0"])
    with pytest.raises(SystemExit):
        validate(parser, args)


def _link(src, dst):
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(src, dst)
    return dst


def test_model_paths_any_names_classified_by_keys(tiny_paths, tmp_path):
    from Wan_SR.training.options import ModelOptions

    dit = _link(tiny_paths["dit"], tmp_path / "a" / "weights_1.safetensors")
    vae = _link(tiny_paths["vae"], tmp_path / "b" / "first_stage.pth")
    m = ModelOptions(wan_model_dir=str(tmp_path / "nowhere"),
                     model_paths=json.dumps([str(vae), str(dit)]))
    f = m.wan_files()
    assert (f.dit, f.vae) == (dit, vae)
    assert f.t5 == tmp_path / "nowhere" / "models_t5_umt5-xxl-enc-bf16.pth"  # not in the list
    t5 = _link(tiny_paths["t5"], tmp_path / "c" / "enc.pth")
    f = ModelOptions(model_paths=json.dumps([str(t5)])).wan_files()
    assert f.t5 == t5 and f.tokenizer == tmp_path / "c" / "google" / "umt5-xxl"
    other = tmp_path / "x.safetensors"
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(1)}, str(other))
    with pytest.raises(ValueError, match="not a Wan2.1 DiT, VAE or umT5"):
        ModelOptions(model_paths=json.dumps([str(other)])).wan_files()
    with pytest.raises(ValueError, match="JSON list"):
        ModelOptions(model_paths="dit.safetensors").wan_files()
    with pytest.raises(ValueError, match="both dit files"):
        ModelOptions(model_paths=json.dumps([str(dit), str(tiny_paths["dit"])])).wan_files()


def test_model_id_with_origin_paths_reads_diffsynths_local_folder(tiny_paths, tmp_path,
                                                                 monkeypatch):
    from Wan_SR.models.wan import MissingWeightsError
    from Wan_SR.training.options import ModelOptions

    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "models" / "Wan-AI" / "Wan2.1-T2V-1.3B"
    dit = _link(tiny_paths["dit"], folder / "diffusion_pytorch_model.safetensors")
    vae = _link(tiny_paths["vae"], folder / "Wan2.1_VAE.pth")
    spec = ("Wan-AI/Wan2.1-T2V-1.3B:diffusion_pytorch_model*.safetensors,"
            "Wan-AI/Wan2.1-T2V-1.3B:Wan2.1_VAE.pth")
    f = ModelOptions(wan_model_dir="elsewhere", model_id_with_origin_paths=spec).wan_files()
    assert (f.dit.resolve(), f.vae.resolve()) == (dit.resolve(), vae.resolve())
    with pytest.raises(MissingWeightsError, match="nothing is downloaded"):
        ModelOptions(model_id_with_origin_paths="Wan-AI/Other:x*.pth").wan_files()


# ----------------------------------------------------------------------------- the README's runs

CPU = ["--num_frames", "9", "--height", "32", "--width", "48", "--max_train_steps", "2",
       "--mixed_precision", "no", "--report_to", "none", "--dataloader_num_workers", "0",
       "--no_progress"]


@pytest.fixture
def release_layout(tiny_root, tmp_path):
    """A folder laid out as the release's README expects: ./dependent_models (tiny Wan2.1, RAM,
    DAPE and random LPIPS weights), ./datasets/YouHQ with two clips, ./metadata_YouHQ.csv."""
    from Wan_SR.testing.lpips import write_random_lpips_weights

    dm = tmp_path / "dependent_models"
    for item in (tiny_root / "dependent_models").iterdir():
        _link(item, dm / item.name)
    write_random_lpips_weights(dm / "lpips")
    data = tmp_path / "datasets" / "YouHQ"
    data.mkdir(parents=True)
    t, y, x = np.arange(9)[:, None, None, None], np.arange(32)[None, :, None, None], \
        np.arange(48)[None, None, :, None]
    rows = ["video,prompt"]
    for i in range(2):
        clip = ((x * 5 + y * 3 + t * 7 + np.arange(3) * 40 + i * 50) % 256).astype(np.uint8)
        write_video(data / f"{i}.mp4", np.ascontiguousarray(np.broadcast_to(clip, (9, 32, 48, 3))),
                    fps=24)
        rows.append(f"{i}.mp4,\"4K Ultra-clear, Sharp, Fine Details Restored\"")
    (tmp_path / "metadata_YouHQ.csv").write_text("\n".join(rows) + "\n")
    return tmp_path


def test_readme_training_commands_run_as_written(release_layout):
    """The README's train_base and train_draft commands, paths as written (run from a folder
    laid out like the release), plus the options a CPU needs (size, steps, precision)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="2")
    out = {}
    for script in ("train_base.py", "train_draft.py"):
        cmd = next(c for c in DATA["commands"] if c["script"] == script
                   and c["source"].startswith("README"))
        r = subprocess.run([sys.executable, str(ROOT / script), *cmd["argv"], *CPU],
                           cwd=release_layout, env=env, capture_output=True, text=True,
                           timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        out[script] = r.stderr
    base = release_layout / "experiments" / "train_base"
    assert (base / "latest_base.safetensors").is_file() and (base / "latest_reg.safetensors").is_file()
    assert (release_layout / "experiments" / "train_draft" / "latest_draft.safetensors").is_file()
    assert "done: 2 steps" in out["train_base.py"] and "done: 2 steps" in out["train_draft.py"]
    assert "--lora_rank 32: no effect in train_draft.py" in out["train_draft.py"]
    assert "no effect" not in out["train_base.py"]  # every option of that command works
