"""Real users, awkward inputs: everything is checked before a model loads, no output overwrites
another or an input, --skip_existing respects settings, nothing half-written survives."""
import os

import numpy as np
import pytest

from Wan_SR.core.options import WindowOptions
from Wan_SR.data import video_io
from Wan_SR.runs.step1 import restore_folder
from test_step1 import make_clip, step1_config

SMALL = WindowOptions(window_t=5, overlap_t=1, window_h=32, overlap_h=16, window_w=32,
                      overlap_w=16)


@pytest.fixture
def no_model_loads(monkeypatch):
    """Any model load fails the test."""
    from Wan_SR.models import draft, wan
    from Wan_SR.sampling import pipeline

    def boom(*a, **k):
        raise AssertionError("a model was loaded")

    for mod, name in ((wan, "load_dit"), (wan, "load_vae"), (wan, "load_text_encoder"),
                      (draft, "load_draft")):
        monkeypatch.setattr(mod, name, boom)
    monkeypatch.setattr(pipeline.PSSRPipeline, "from_files", classmethod(boom))


def step1(argv):
    from Wan_SR.cli import step1 as cli

    return cli.main(argv)


def common(tiny_paths, tmp_path):
    return ["--wan_model_dir", str(tiny_paths["wan_dir"]), "--lora_base_path",
            str(tiny_paths["base"]), "--lora_draft_path", str(tiny_paths["draft"]),
            "--device", "cpu", "--torch_dtype", "float32", "--no_progress",
            "--prompt_cache_dir", str(tmp_path / "pc")]


@pytest.fixture
def one_clip(tmp_path):
    make_clip(tmp_path / "in" / "a.mp4", n=5, h=32, w=32)
    return tmp_path / "in"


@pytest.mark.parametrize("extra, message", [
    (["--timestep_draft_list", "[5000]"], "(0, 1000]"),
    (["--timestep_draft_list", "[-5]"], "(0, 1000]"),
    (["--timestep_draft_list", "[599,699]"], "strictly decreasing"),
    (["--timestep_base", "1500"], "(0, 1000]"),
    (["--timestep_draft_list", "[699]"], "strictly decreasing"),
    (["--outputs", "fnal"], "unknown branch"),
    (["--fps", "abc"], "ratio"),
    (["--fps", "0"], "positive"),
    (["--window_w", "0"], "positive"),
    (["--overlap_t", "40"], "smaller than --window_t"),
    (["--upscale", "-1"], "positive"),
    (["--alpha", "-0.5"], "alpha"),
])
def test_bad_option_fails_before_any_model(tiny_paths, tmp_path, one_clip, no_model_loads,
                                          capsys, extra, message):
    with pytest.raises(SystemExit) as e:
        step1(common(tiny_paths, tmp_path) + ["--input_dir", str(one_clip), "--output_dir",
                                              str(tmp_path / "out"), *extra])
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_bad_folders_fail_before_any_model(tiny_paths, tmp_path, one_clip, no_model_loads,
                                           capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "afile").write_text("x")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("x")
    cases = [
        (["--input_dir", str(tmp_path / "missing"), "--output_dir", str(tmp_path / "o")],
         "input folder not found"),
        (["--input_dir", str(tmp_path / "empty"), "--output_dir", str(tmp_path / "o")],
         "holds no videos"),
        (["--input_dir", str(tmp_path / "notes"), "--output_dir", str(tmp_path / "o")],
         "readme.txt"),
        (["--input_dir", str(one_clip), "--output_dir", str(tmp_path / "afile")],
         "--output_dir"),
        (["--input_dir", str(one_clip), "--output_dir", str(one_clip)], "input folder"),
    ]
    for argv, message in cases:
        with pytest.raises(SystemExit) as e:
            step1(common(tiny_paths, tmp_path) + argv)
        assert e.value.code == 2, argv
        assert message in capsys.readouterr().err, argv


def test_cuda_without_gpu_fails_before_any_model(tiny_paths, tmp_path, one_clip, no_model_loads,
                                                 capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    argv = common(tiny_paths, tmp_path) + ["--input_dir", str(one_clip), "--output_dir",
                                           str(tmp_path / "o"), "--device", "cuda"]
    with pytest.raises(SystemExit) as e:
        step1(argv)
    assert e.value.code == 2 and "no CUDA GPU" in capsys.readouterr().err


def test_every_missing_weight_listed_in_one_message(tmp_path, one_clip, no_model_loads, caplog):
    rc = step1(["--input_dir", str(one_clip), "--output_dir", str(tmp_path / "o"),
                "--wan_model_dir", str(tmp_path / "wan"), "--lora_base_path",
                str(tmp_path / "b.safetensors"), "--lora_draft_path",
                str(tmp_path / "d.safetensors"), "--device", "cpu", "--no_progress",
                "--prompt_cache_dir", str(tmp_path / "pc")])
    assert rc == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1
    for name in ("diffusion_pytorch_model.safetensors", "Wan2.1_VAE.pth", "b.safetensors",
                 "d.safetensors", "models_t5_umt5-xxl-enc-bf16.pth", "umt5-xxl"):
        assert name in errors[0]


def test_fps_accepts_a_ratio():
    from Wan_SR.cli import step1 as cli
    from Wan_SR.core.options import parse_fps

    args = cli.build_parser().parse_args(["--fps", "30000/1001"])
    assert abs(parse_fps(args.fps) - 30000 / 1001) < 1e-12
    assert video_io.fps_to_rational(parse_fps("30000/1001")) == video_io.Fraction(30000, 1001)


def test_name_clash_gives_two_outputs(pipe, tmp_path, caplog):
    make_clip(tmp_path / "in" / "t.mp4", n=5, h=32, w=32, seed=1)
    frames = video_io.read_video(tmp_path / "in" / "t.mp4")
    with video_io.VideoWriter(tmp_path / "in" / "t.mkv.tmp.mp4", 24, (32, 32)) as w:
        w.write(frames[:4])
    os.replace(tmp_path / "in" / "t.mkv.tmp.mp4", tmp_path / "in" / "t.mkv")
    out = tmp_path / "out"
    with caplog.at_level("INFO", logger="Wan_SR"):
        assert restore_folder(pipe, tmp_path / "in", out,
                              step1_config(["base"], windows=SMALL)) == 0
    got = sorted(p.name for p in (out / "base").glob("*.mp4"))
    assert got == ["t_mkv.mp4", "t_mp4.mp4"]
    assert video_io.probe(out / "base" / "t_mp4.mp4").num_frames == 5
    assert video_io.probe(out / "base" / "t_mkv.mp4").num_frames == 4
    assert "share the name 't'" in caplog.text


def test_step2_into_its_own_input_is_refused(tmp_path, capsys):
    from Wan_SR.cli import step2

    for d in ("base", "sharp"):
        make_clip(tmp_path / d / "a.mp4", n=3, h=16, w=16)
    before = (tmp_path / "base" / "a.mp4").stat().st_mtime_ns
    with pytest.raises(SystemExit) as e:
        step2.main(["--consistent_dir", str(tmp_path / "base"), "--sharp_dir",
                    str(tmp_path / "sharp"), "--output_dir", str(tmp_path / "base" / "."),
                    "--device", "cpu"])
    assert e.value.code == 2 and "overwrite the inputs" in capsys.readouterr().err
    assert (tmp_path / "base" / "a.mp4").stat().st_mtime_ns == before


def test_eval_with_unwritable_out_fails_before_scoring(tmp_path, monkeypatch, capsys):
    from Wan_SR.cli import evaluate
    from Wan_SR.metrics import score

    make_clip(tmp_path / "pred" / "a.mp4", n=3, h=16, w=16)
    (tmp_path / "out_is_a_file").write_text("x")
    monkeypatch.setattr(score, "score_pair", lambda *a, **k: pytest.fail("scored"))
    with pytest.raises(SystemExit) as e:
        evaluate.main(["--pred", str(tmp_path / "pred"), "--out", str(tmp_path / "out_is_a_file"),
                       "--metrics", "psnr", "--device", "cpu"])
    assert e.value.code == 2 and "--out" in capsys.readouterr().err


def test_skip_existing_redoes_outputs_of_other_settings(pipe, tmp_path, caplog):
    make_clip(tmp_path / "in" / "a.mp4", n=5, h=32, w=32)
    out = tmp_path / "out"
    opts = step1_config(["base"], windows=SMALL, skip_existing=True)
    assert restore_folder(pipe, tmp_path / "in", out, opts) == 0
    pipe.stats.reset()
    assert restore_folder(pipe, tmp_path / "in", out, opts) == 0
    assert pipe.stats.encodes == 0  # same settings: skipped
    opts2 = step1_config(["base"], windows=SMALL, skip_existing=True, upscale=2.0)
    with caplog.at_level("WARNING", logger="Wan_SR"):
        assert restore_folder(pipe, tmp_path / "in", out, opts2) == 0
    assert pipe.stats.encodes > 0 and "other settings" in caplog.text
    info = video_io.probe(out / "base" / "a.mp4")
    assert (info.width, info.height) == (64, 64)


def test_no_partial_file_survives_an_interrupt(pipe, tmp_path, monkeypatch):
    make_clip(tmp_path / "in" / "a.mp4", n=9, h=32, w=32)
    out = tmp_path / "out"
    stale = out / "base" / ".old.99999999.partial.mp4"  # left by a killed run (no such pid)
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"x" * 100)
    calls = []
    orig = pipe.run_tile

    def interrupted(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return orig(*a, **k)

    monkeypatch.setattr(pipe, "run_tile", interrupted)
    with pytest.raises(KeyboardInterrupt):
        restore_folder(pipe, tmp_path / "in", out,
                       step1_config(["base", "base+draft_1"], windows=SMALL))
    assert len(calls) == 2
    assert not stale.exists()
    assert not [p for p in out.rglob("*") if "partial" in p.name]
    assert not list(out.rglob("*.mp4"))


def test_prompt_cache_key_follows_the_encoder_content(tmp_path):
    from Wan_SR.models.text import cache_key

    a, b = tmp_path / "a.pth", tmp_path / "b.pth"
    rng = np.random.default_rng(0)
    a.write_bytes(rng.bytes(3 << 20))
    b.write_bytes(rng.bytes(3 << 20))  # same size, other bytes
    assert cache_key("p", a) != cache_key("p", b)
    key = cache_key("p", a)
    os.replace(a, tmp_path / "moved.pth")  # same content elsewhere: same entry
    assert cache_key("p", tmp_path / "moved.pth") == key
    assert cache_key("q", tmp_path / "moved.pth") != key
