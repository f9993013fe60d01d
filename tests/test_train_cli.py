"""The training command line: ``train_base.py --help``, the checks that stop a run before any
model loads (exit status 2), ``train_base.sh`` (both cases, pass-through, missing multi-node
variables) and the accelerate configs."""
import dataclasses
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT
from Wan_SR.data.video_io import write_video

SCRIPT = ROOT / "train_base.sh"
CONFIGS = {"single": ROOT / "config" / "accelerate_config_single.yaml",
           "multi": ROOT / "config" / "accelerate_config_multi.yaml"}
MULTI_VARS = ("RANK", "MASTER_ADDR", "MASTER_PORT")


def _option_classes():
    from Wan_SR.training.options import (BaseLossOptions, BaseModelOptions, BaseOptimOptions,
                                         CheckpointOptions, DataOptions)

    return DataOptions, BaseModelOptions, BaseLossOptions, BaseOptimOptions, CheckpointOptions


def _parser_options() -> set:
    from Wan_SR.cli.train_base import build_parser

    return {s for a in build_parser()._actions for s in a.option_strings}


# ----------------------------------------------------------------------------- (a) --help

def test_help_lists_every_option():
    r = subprocess.run([sys.executable, str(ROOT / "train_base.py"), "--help"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    listed = set(re.findall(r"--[A-Za-z0-9_]+", r.stdout))
    fields = {f"--{f.name}" for cls in _option_classes() for f in dataclasses.fields(cls)}
    assert fields - listed == set(), f"options missing from --help: {sorted(fields - listed)}"
    assert "--checkpointing_steps" in listed and "--lpips_weights" in listed


# ----------------------------------------------------------------------------- (b) early failures

@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    """One 9-frame 32x48 clip with a same-name prompt file."""
    root = tmp_path_factory.mktemp("train_cli_data")
    t = np.arange(9)[:, None, None, None]
    y = np.arange(32)[None, :, None, None]
    x = np.arange(48)[None, None, :, None]
    frames = np.broadcast_to((x * 5 + y * 3 + t * 7 + np.arange(3) * 50) % 256, (9, 32, 48, 3))
    write_video(root / "clip.mp4", frames.astype(np.uint8), fps=24)
    (root / "clip.txt").write_text("a test clip")
    return root


@pytest.fixture
def no_models(monkeypatch):
    """Any model load, or reaching the training loop, fails the test."""
    import Wan_SR.models.wan as wan
    import Wan_SR.training.base as base
    import Wan_SR.training.draft  # noqa: F401 - imported before the patch, so no module keeps it
    import Wan_SR.training.engine  # noqa: F401

    def boom(*a, **k):
        raise AssertionError("a model was loaded before the options were checked")

    monkeypatch.setattr(wan, "load_dit", boom)
    monkeypatch.setattr(wan, "load_vae", boom)
    calls = []

    def fake_train(cfg, *a, **k):
        calls.append(cfg)
        return {"step": 0, "nan_skipped": 0, "output": cfg.out.output_path}

    monkeypatch.setattr(base, "train_base", fake_train)
    return calls


@pytest.fixture
def argv(clip_dir, tiny_paths, tmp_path):
    """Options that pass every check (tiny weights, the clip above, no LPIPS, no tracker)."""
    return ["--dataset_base_path", str(clip_dir), "--num_frames", "9", "--height", "32",
            "--width", "48", "--wan_model_dir", str(tiny_paths["wan_dir"]),
            "--deg_file_path", str(ROOT / "config" / "degradation_pssr.yml"),
            "--alpha_pixel_lpips", "0", "--report_to", "none",
            "--output_path", str(tmp_path / "out"), "--no_progress"]


def _with(argv, **opts) -> list:
    """``argv`` with each ``--name value`` replaced (or appended)."""
    out = list(argv)
    for k, v in opts.items():
        flag = f"--{k}"
        if flag in out:
            out[out.index(flag) + 1] = str(v)
        else:
            out += [flag, str(v)]
    return out


def _run_main(args, capsys):
    from Wan_SR.cli.train_base import main

    try:
        code = main(args)
    except SystemExit as e:
        code = e.code
    cap = capsys.readouterr()
    return code, cap.out + cap.err


def test_valid_options_reach_the_trainer(argv, no_models, capsys):
    """Positive control: the base options pass, so each failure below is due to its option."""
    code, text = _run_main(argv, capsys)
    assert code == 0, text
    assert len(no_models) == 1 and no_models[0].data.num_frames == 9


@pytest.mark.parametrize("change, message", [
    (dict(dataset_base_path="{tmp}/no_such_folder"), "not a folder"),
    (dict(num_frames=32), "4n+1"),
    (dict(width=0), "give both --height and --width"),
    (dict(deg_file_path="{tmp}/missing.yml"), "--deg_file_path"),
    (dict(alpha_l2=0, alpha_reg=0, train_video_pixel="False"), "no generator loss"),
    (dict(alpha_reg=-1), "must not be negative"),
    (dict(pixel_crop=0), "--pixel_crop"),
    (dict(lora_target_modules="q,foo"), "unknown layer"),
    (dict(resume_from_checkpoint="latest"), "no saved state"),
    (dict(report_to="all"), "--report_to must be one of"),
    (dict(dataloader_num_workers=-1), "--dataloader_num_workers"),
])
def test_bad_option_exits_2_before_models(argv, no_models, capsys, tmp_path, change, message):
    change = {k: str(v).format(tmp=tmp_path) for k, v in change.items()}
    code, text = _run_main(_with(argv, **change), capsys)
    assert code == 2, text
    assert message in text
    assert not no_models


def test_report_to_missing_package(argv, no_models, capsys):
    import importlib.util

    if importlib.util.find_spec("wandb") is not None:
        pytest.skip("wandb is installed")
    code, text = _run_main(_with(argv, report_to="wandb"), capsys)
    assert code == 2 and "wandb" in text and "not installed" in text
    assert not no_models


def test_missing_weights_listed_in_one_message(argv, no_models, capsys, tmp_path):
    """A Wan folder without files and a missing LPIPS folder: one error names all of them."""
    fake = tmp_path / "Wan2.1-T2V-1.3B"
    fake.mkdir()
    code, text = _run_main(_with(argv, wan_model_dir=fake, alpha_pixel_lpips=2.0,
                                 lpips_weights=tmp_path / "no_lpips"), capsys)
    assert code == 2, text
    assert not no_models
    errors = [ln for ln in text.splitlines() if ln.startswith("ERROR")]
    assert len(errors) == 1, text
    assert "file(s) missing" in errors[0]
    for name in ("diffusion_pytorch_model.safetensors", "Wan2.1_VAE.pth",
                 "models_t5_umt5-xxl-enc-bf16.pth", "umt5-xxl", "no_lpips"):
        assert name in text, f"{name} not named in:\n{text}"


# ----------------------------------------------------------------------------- (c) train_base.sh

@pytest.fixture
def fake_launcher(tmp_path):
    """A stand-in ``accelerate`` first on PATH that records its arguments (one per line)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    record = tmp_path / "launched.txt"
    exe = bindir / "accelerate"
    exe.write_text(f'#!/usr/bin/env bash\nprintf "%s\\n" "$@" > "{record}"\n')
    exe.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in MULTI_VARS}
    env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"
    return env, record


def _sh(args, env):
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)


def test_script_syntax():
    r = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_multi_without_variables_fails_before_launching(fake_launcher):
    env, record = fake_launcher
    r = _sh(["multi"], env)
    assert r.returncode != 0
    for v in MULTI_VARS:
        assert v in r.stderr
    assert not record.exists(), "accelerate was launched"
    r = _sh(["multi"], dict(env, RANK="0", MASTER_ADDR="10.0.0.1"))  # one still missing
    assert r.returncode != 0 and "MASTER_PORT" in r.stderr and not record.exists()


def _launched(record) -> list:
    return record.read_text().splitlines()


def test_single_command_and_pass_through(fake_launcher):
    env, record = fake_launcher
    for args in ([], ["single"]):
        r = _sh(args, env)
        assert r.returncode == 0, r.stderr
        a = _launched(record)
        assert a[:3] == ["launch", "--config_file", "config/accelerate_config_single.yaml"]
        assert "--machine_rank" not in a
    r = _sh(["single", "--resume_from_checkpoint", "latest"], env)
    assert r.returncode == 0, r.stderr
    assert _launched(record)[-2:] == ["--resume_from_checkpoint", "latest"]


def test_multi_command(fake_launcher):
    env, record = fake_launcher
    r = _sh(["multi", "--seed", "3"], dict(env, RANK="1", MASTER_ADDR="10.0.0.1",
                                           MASTER_PORT="19500"))
    assert r.returncode == 0, r.stderr
    a = _launched(record)
    i = a.index("train_base.py")
    head = a[:i]
    assert head[:3] == ["launch", "--config_file", "config/accelerate_config_multi.yaml"]
    assert head[head.index("--machine_rank") + 1] == "1"
    assert head[head.index("--main_process_ip") + 1] == "10.0.0.1"
    assert head[head.index("--main_process_port") + 1] == "19500"
    assert a[-2:] == ["--seed", "3"]


# ----------------------------------------------------------------------------- (d) script options

PUBLISHED = {"dataset_base_path": "./datasets/YouHQ", "dataset_metadata_path": "./metadata_YouHQ.csv",
             "dataset_repeat": 10, "wan_model_dir": "./dependent_models/Wan2.1-T2V-1.3B",
             "learning_rate": 5e-5, "num_epochs": 20, "output_path": "./experiments/train_base",
             "lora_target_modules": "q,k,v,o,ffn.0,ffn.2", "lora_rank": 32, "save_steps": 200,
             "num_frames": 33, "height": 720, "width": 1280, "start_adv_step": 500,
             "alpha_adv": 0.0, "alpha_perc": 0.0, "alpha_pixel_l2": 1.0,
             "alpha_pixel_lpips": 2.0, "cfg_scale": 5.0, "train_video_pixel": True,
             "save_latest": True, "lpips_weights": "./dependent_models/lpips"}


def test_script_options_exist_in_the_parser():
    text = SCRIPT.read_text()
    block = re.search(r"^args=\((.*?)^\)", text, re.S | re.M).group(1)
    used = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9_]*", block))
    assert len(used) == len(PUBLISHED)
    unknown = used - _parser_options()
    assert not unknown, f"train_base.sh passes options the parser lacks: {sorted(unknown)}"


def test_script_values_are_the_published_ones(fake_launcher):
    from Wan_SR.cli.train_base import build_parser

    env, record = fake_launcher
    assert _sh([], env).returncode == 0
    a = _launched(record)
    args = build_parser().parse_args(a[a.index("train_base.py") + 1:])
    got = {k: getattr(args, k) for k in PUBLISHED}
    assert got == PUBLISHED


# ----------------------------------------------------------------------------- (e) accelerate configs

@pytest.mark.parametrize("case, machines, processes", [("single", 1, 1), ("multi", 2, 16)])
def test_accelerate_configs(case, machines, processes):
    import yaml

    cfg = yaml.safe_load(CONFIGS[case].read_text())
    want = dict(compute_environment="LOCAL_MACHINE", distributed_type="MULTI_GPU",
                num_processes=processes, num_machines=machines, machine_rank=0,
                mixed_precision="bf16", downcast_bf16="no", rdzv_backend="static",
                same_network=True, use_cpu=False)
    assert {k: cfg.get(k) for k in want} == want
    assert "main_process_ip" not in cfg  # the script passes it
    if case == "multi":
        assert cfg["main_process_port"] == 19500


# ----------------------------------------------------------------------------- train_draft

def test_train_draft_script_and_parser():
    """train_draft.sh passes only options train_draft.py has, with the draft's published values
    plus k_select 1.5 and the base it reads; its multi case needs the same variables."""
    from Wan_SR.cli.train_draft import build_parser

    script = ROOT / "train_draft.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    block = re.search(r"^args=\((.*?)^\)", script.read_text(), re.S | re.M).group(1)
    argv = block.split()
    parser = build_parser()
    known = {o for a in parser._actions for o in a.option_strings}
    used = {a for a in argv if a.startswith("--")}
    assert used <= known, used - known
    args = parser.parse_args(argv)
    assert args.k_select == 1.5 and args.draft_condition == "zeros"
    assert args.load_model_base_from.endswith("train_base/latest_base.safetensors")
    assert args.output_path.endswith("train_draft")
    dests = {o: a.dest for a in parser._actions for o in a.option_strings}
    for base_only in ("--alpha_reg", "--cfg_scale", "--alpha_adv", "--lora_rank"):
        # accepted for the release's commands, never reaching the draft's config (a notice)
        assert dests[base_only] == "release_" + base_only[2:]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "MASTER_ADDR", "MASTER_PORT")}
    r = subprocess.run(["bash", str(script), "multi"], capture_output=True, text=True, env=env)
    assert r.returncode != 0 and "MASTER_ADDR" in r.stderr


def test_train_draft_needs_the_base(argv, no_models, capsys):
    from Wan_SR.cli.train_draft import main

    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    assert code == 2
    assert "--load_model_base_from (the trained latest_base.safetensors) is required" in \
        capsys.readouterr().err
    assert not no_models


# ----------------------------------------------------------------------------- the configs

def test_each_trainer_gets_its_own_config_unpatched():
    """The draft's config has no regulariser, discriminator or LoRA options (the release's
    spellings of them only reach notices), and --load_model_base_from is the draft's own."""
    from Wan_SR.cli.train_base import build_parser as base_parser
    from Wan_SR.cli.train_draft import build_parser as draft_parser
    from Wan_SR.cli.training import config_from_args
    from Wan_SR.training.options import BaseTrainConfig, DraftTrainConfig

    argv = ["--load_model_base_from", "b.safetensors", "--alpha_reg", "3", "--lora_rank", "8"]
    cfg = config_from_args(draft_parser().parse_args(argv), "draft")
    assert type(cfg) is DraftTrainConfig and cfg.draft.load_model_base_from == "b.safetensors"
    for part, names in ((cfg.loss, ("alpha_reg", "cfg_scale", "alpha_adv", "alpha_perc")),
                        (cfg.model, ("lora_rank", "load_model_base_from", "load_model_reg_from")),
                        (cfg.optim, ("learning_rate_disc",))):
        assert not any(hasattr(part, n) for n in names), part
    assert cfg.out.output_path == "./experiments/train_draft"
    cfg = config_from_args(base_parser().parse_args(argv), "base")
    assert type(cfg) is BaseTrainConfig and cfg.loss.alpha_reg == 3 and cfg.model.lora_rank == 8
    assert cfg.model.load_model_base_from == "b.safetensors"


@pytest.mark.parametrize("part, change, message", [
    ("optim", dict(learning_rate_disc=0), "--learning_rate_disc must be positive"),
    ("optim", dict(gradient_accumulation_steps=0), "--gradient_accumulation_steps"),
    ("loss", dict(alpha_perc=-0.1), "--alpha_perc"),
    ("loss", dict(timestep_base=0), "--timestep_base"),
    ("model", dict(lora_rank=0), "--lora_rank"),
    ("out", dict(save_steps=0), "--save_steps"),
    ("data", dict(num_frames=8), "4n+1"),
])
def test_each_option_set_checks_its_numbers(part, change, message):
    from Wan_SR.training.options import BaseTrainConfig

    cfg = BaseTrainConfig()
    cfg.data.dataset_base_path = "d"
    cfg.validate()  # the defaults pass
    for k, v in change.items():
        setattr(getattr(cfg, part), k, v)
    with pytest.raises(ValueError, match=re.escape(message)):
        getattr(cfg, part).validate()
    with pytest.raises(ValueError, match=re.escape(message)):
        cfg.validate()


def test_draft_config_checks_its_timesteps_and_its_losses():
    from Wan_SR.training.options import DraftTrainConfig

    cfg = DraftTrainConfig()
    cfg.data.dataset_base_path, cfg.draft.load_model_base_from = "d", "b.safetensors"
    cfg.validate()
    cfg.draft.timestep_draft_list = [599.0, 700.0]
    with pytest.raises(ValueError, match="strictly decreasing"):
        cfg.validate()
    cfg.draft.timestep_draft_list = [599.0]
    cfg.loss.alpha_l2, cfg.loss.train_video_pixel = 0.0, False
    with pytest.raises(ValueError, match="no generator loss is on: set --alpha_l2 or the pixel"):
        cfg.validate()
