"""The scripts as a user runs them (in-process, tiny checkpoints): step 1 --final against
step 2, run settings, shared option defaults, help texts."""
import json

import numpy as np
import pytest

from Wan_SR.data import video_io
from test_step1 import make_clip

# non-default windows: 48x64 frames in 32x48 tiles (2x2 tiles), overlap 16
WIN = ["--window_t", "5", "--overlap_t", "1", "--window_h", "32", "--overlap_h", "16",
       "--window_w", "48", "--overlap_w", "16"]


def step1_args(tiny_paths, tmp_path, *extra):
    return ["--wan_model_dir", str(tiny_paths["wan_dir"]), "--lora_base_path",
            str(tiny_paths["base"]), "--lora_draft_path", str(tiny_paths["draft"]),
            "--torch_dtype", "float32", "--device", "cpu", "--prompt_cache_dir",
            str(tmp_path / "pc"), "--no_progress", *extra]


@pytest.fixture(scope="module")
def fused_runs(tiny_paths, tmp_path_factory):
    """Step 1 with --final and non-default windows, then step 2 on its base/draft_3 outputs with
    the same window arguments; the fusion calls of both are recorded."""
    from Wan_SR.cli import step1, step2
    from Wan_SR.runs import step2 as run2
    from Wan_SR.runs.step1 import sink as run1

    tmp = tmp_path_factory.mktemp("final")
    make_clip(tmp / "in" / "clip.mp4", n=7, h=48, w=64)
    calls = {"step1": [], "step2": []}
    orig1, orig2 = run1.fuse_video, run2.fuse_video

    def rec(which, orig):
        def f(*a, **k):
            calls[which].append(k)
            return orig(*a, **k)
        return f

    run1.fuse_video, run2.fuse_video = rec("step1", orig1), rec("step2", orig2)
    try:
        out = tmp / "out"
        rc1 = step1.main(step1_args(tiny_paths, tmp, "--input_dir", str(tmp / "in"),
                                    "--output_dir", str(out), "--final", "--save_quality", "10",
                                    "--alpha", "0.8", *WIN))
        rc2 = step2.main(["--consistent_dir", str(out / "base"), "--sharp_dir",
                          str(out / "base+draft_3"), "--output_dir", str(tmp / "step2"),
                          "--device", "cpu", "--save_quality", "10", "--alpha", "0.8",
                          "--no_progress", *WIN])
    finally:
        run1.fuse_video, run2.fuse_video = orig1, orig2
    return tmp, rc1, rc2, calls


def test_final_uses_the_same_fusion_as_step2(fused_runs):
    _, rc1, rc2, calls = fused_runs
    assert rc1 == 0 and rc2 == 0
    assert calls["step1"] and calls["step2"]
    k1, k2 = calls["step1"][0], calls["step2"][0]
    assert k1 == k2
    assert (k1["window_h"], k1["window_w"], k1["alpha"]) == (32, 48, 0.8)


def test_final_matches_step2_frames(fused_runs):
    """Same fusion on the same branches: step 2 reads step 1's H.264 (yuv420p) files, so the
    frames agree up to that round trip (the random tiny model's output is all fine detail, the
    worst case for 4:2:0 chroma); the fusion arguments themselves are equal (test above)."""
    tmp, *_ = fused_runs
    a = video_io.read_video(tmp / "out" / "final" / "clip.mp4").astype(np.float64)
    b = video_io.read_video(tmp / "step2" / "clip.mp4").astype(np.float64)
    assert a.shape == b.shape == (7, 48, 64, 3)
    psnr = 10 * np.log10(255.0 ** 2 / np.mean((a - b) ** 2))
    print("psnr", psnr, "mean abs", np.abs(a - b).mean())
    assert psnr > 36, psnr


def test_run_config_written_with_resolved_settings(fused_runs):
    tmp, *_ = fused_runs
    cfg = json.loads((tmp / "out" / "run_config.json").read_text())
    s = cfg["settings"]
    assert cfg["script"] == "inference_step_1.py"
    assert s["windows"]["window_h"] == 32 and s["fusion"]["alpha"] == 0.8
    assert s["sampling"]["timestep_draft_list"] == [599.0, 499.0, 399.0]
    cfg2 = json.loads((tmp / "step2" / "run_config.json").read_text())
    assert cfg2["settings"]["fusion"] == s["fusion"]


def test_defaults_come_from_the_option_dataclasses():
    from Wan_SR.cli import step1, step2
    from Wan_SR.core.options import FusionOptions, SamplingOptions, WindowOptions, step2_windows

    a1 = step1.build_parser().parse_args([])
    a2 = step2.build_parser().parse_args(["--consistent_dir", "a", "--sharp_dir", "b",
                                          "--output_dir", "c"])
    for f, v in vars(WindowOptions()).items():
        assert getattr(a1, f) == v
    for f, v in vars(step2_windows()).items():
        assert getattr(a2, f) == v
    assert a2.overlap_t == 8 and a1.overlap_t == 16
    for f, v in vars(FusionOptions()).items():
        assert getattr(a1, f) == v and getattr(a2, f) == v
    s = SamplingOptions()
    assert a1.timestep_base == s.timestep_base == 699
    assert a1.timestep_draft_list == s.timestep_draft_list


@pytest.mark.parametrize("parser_name", ["step1", "step2", "evaluate"])
def test_every_option_has_help_and_no_duplicated_default(parser_name):
    import importlib

    mod = importlib.import_module(f"Wan_SR.cli.{parser_name}")
    p = mod.build_parser()
    for action in p._actions:
        if not action.option_strings or action.dest == "help":
            continue
        assert action.help, f"{action.option_strings} has no help"
    text = p.format_help()
    assert "(default: default" not in text
    for line in text.splitlines():
        assert line.count("default") <= 1, line



def test_step1_config_holds_every_option_and_is_the_run_config(fused_runs):
    """Every option of inference_step_1.py (but logging and the release's) is a field of
    Step1Config, built from the parsed arguments as they are; run_config.json holds it as
    data beside the settings that decide the outputs."""
    import dataclasses

    from Wan_SR.cli.common import config_from_args
    from Wan_SR.cli.step1 import build_parser
    from Wan_SR.core.options import Step1Config

    parser = build_parser()
    dests = {a.dest for a in parser._actions if a.option_strings and a.dest != "help"
             and not a.dest.startswith("release_")} - {"log_level", "no_progress"}
    args = parser.parse_args(["--outputs", "base, final", "--upscale", "2", "--alpha", "0.8"])
    cfg = config_from_args(Step1Config, args)
    sections = dataclasses.asdict(cfg)
    assert {k for part in sections.values() for k in part} == dests
    assert all(getattr(getattr(cfg, s), k) == getattr(args, k)
               for s, part in sections.items() for k in part)
    assert cfg.step1.outputs == ["base", "final"] and cfg.fusion.alpha == 0.8
    tmp, *_ = fused_runs
    run = json.loads((tmp / "out" / "run_config.json").read_text())
    assert run["config"]["windows"] == run["settings"]["windows"]
    assert run["config"]["step1"]["final"] is True and run["config"]["fusion"]["alpha"] == 0.8
    assert run["config"]["folders"]["output_dir"] == str(tmp / "out")
