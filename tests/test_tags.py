"""Prompt tags in step 1 and the trainers: '<prompt>, <tags>' from one seeded frame per clip,
computed once per clip, encoded (and cached) like any prompt; --no_tags and absent weights."""
import logging
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from Wan_SR.core.options import DEFAULT_PROMPT
from Wan_SR.data import video_io
from Wan_SR.models.tagger import load_tagger, pick_frame, prompt_with_tags

ON = (5, 17, 40)  # the tags a forced tagger always finds (vocabulary indices)


@pytest.fixture
def forced(monkeypatch):
    """Every RAM the code loads finds exactly the tags ``ON`` (thresholds -1 there, 2 elsewhere);
    records the frames it is asked to tag."""
    import Wan_SR.models.ram as ram_mod

    seen = []
    load = ram_mod.load_ram

    def forced_load(*a, **k):
        ram = load(*a, **k)
        ram.thresholds.fill_(2.0)
        ram.thresholds[list(ON)] = -1.0
        tags = ram.tags

        def recording(frame):
            seen.append(np.asarray(frame.cpu() if isinstance(frame, torch.Tensor) else frame))
            return tags(frame)

        ram.tags = recording
        return ram

    monkeypatch.setattr(ram_mod, "load_ram", forced_load)
    return seen


@pytest.fixture(scope="module")
def names():
    from Wan_SR.models.ram import load_tag_vocabulary

    return load_tag_vocabulary()[0]


def ram_files(tiny_root):
    d = tiny_root / "dependent_models"
    return d / "ram_swin_large_14m.pth", d / "DAPE.pth"


def test_prompt_and_frame_choice():
    assert prompt_with_tags("p", "a, b") == "p, a, b"
    assert prompt_with_tags("p", "") == "p"  # no trailing ", "
    picks = [pick_frame(30, seed=7) for _ in range(3)]
    assert len(set(picks)) == 1 and 0 <= picks[0] < 30
    g = torch.Generator().manual_seed(7)
    assert pick_frame(30, g) == picks[0]
    assert len({pick_frame(1000, seed=s) for s in range(20)}) > 10


def test_load_tagger_off_absent_and_without_dape(tiny_root, tmp_path, caplog):
    ram, dape = ram_files(tiny_root)
    with caplog.at_level(logging.INFO):
        assert load_tagger(ram, dape, enabled=False) is None
        assert load_tagger(tmp_path / "none.pth", dape) is None
        t = load_tagger(ram, tmp_path / "no_dape.pth")
    assert "--no_tags" in caplog.text and "none.pth" in caplog.text and "no_dape.pth" in caplog.text
    assert t is not None and not t.with_dape
    assert load_tagger(ram, dape).with_dape


def make_clip(path, n, h=48, w=48, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (1, h, w, 3))
    frames = ((base + np.arange(n)[:, None, None, None] * 9) % 256).astype(np.uint8)
    video_io.write_video(path, frames, fps=24, quality=10)
    return video_io.read_video(path)


def step1_args(tiny_paths, tiny_root, inp, out, tmp_path, *extra):
    ram, dape = ram_files(tiny_root)
    return ["--input_dir", str(inp), "--output_dir", str(out),
            "--wan_model_dir", str(tiny_paths["wan_dir"]), "--lora_base_path",
            str(tiny_paths["base"]), "--lora_draft_path", str(tiny_paths["draft"]),
            "--ram_path", str(ram), "--DAPE_path", str(dape), "--torch_dtype", "float32",
            "--device", "cpu", "--window_t", "5", "--overlap_t", "1", "--window_h", "32",
            "--overlap_h", "16", "--window_w", "32", "--overlap_w", "16", "--outputs", "base",
            "--prompt_cache_dir", str(tmp_path / "pc"), "--no_progress", *extra]


def test_step1_tags_each_clip_once_and_encodes_the_tagged_prompt(
        tiny_paths, tiny_root, tmp_path, forced, names, monkeypatch, caplog):
    from Wan_SR.cli.step1 import main
    from Wan_SR.models.text import PromptEncoder

    clips = {n: make_clip(tmp_path / "in" / f"{n}.mp4", 9, seed=i)
             for i, n in enumerate(("a", "b"))}
    encoded = []
    encode = PromptEncoder.encode
    monkeypatch.setattr(PromptEncoder, "encode",
                        lambda self, p: (encoded.append(p), encode(self, p))[1])
    with caplog.at_level(logging.INFO):
        rc = main(step1_args(tiny_paths, tiny_root, tmp_path / "in", tmp_path / "out", tmp_path))
    assert rc == 0
    # once per clip, although each clip has several windows and tiles
    assert len(forced) == 2
    idx = pick_frame(9, seed=0)
    for name in ("a", "b"):  # frame idx of each clip (in whichever order they ran)
        assert sum(np.array_equal(f, clips[name][idx]) for f in forced) == 1
    tagged = f"{DEFAULT_PROMPT}, {names[ON[0]]}, {names[ON[1]]}, {names[ON[2]]}"
    assert tagged in encoded
    assert f"(tags of frame {idx}): {tagged}" in caplog.text
    assert "tags: 2 clip(s)" in caplog.text
    for name in ("a", "b"):
        assert video_io.probe(tmp_path / "out" / "base" / f"{name}.mp4").num_frames == 9


def test_step1_no_tags_uses_the_prompt_alone(tiny_paths, tiny_root, tmp_path, forced,
                                              monkeypatch):
    from Wan_SR.cli.step1 import main
    from Wan_SR.models.text import PromptEncoder

    make_clip(tmp_path / "in" / "a.mp4", 5)
    encoded = []
    encode = PromptEncoder.encode
    monkeypatch.setattr(PromptEncoder, "encode",
                        lambda self, p: (encoded.append(p), encode(self, p))[1])
    assert main(step1_args(tiny_paths, tiny_root, tmp_path / "in", tmp_path / "out", tmp_path,
                           "--no_tags")) == 0
    assert forced == [] and encoded == [DEFAULT_PROMPT]


def tagged_pipe(tiny_paths, tiny_root, tmp_path, seed=0):
    """A pipeline and the per-clip prompts of a tagged run (seed: the frame draw's)."""
    from Wan_SR.models.tagger import ClipPrompts
    from Wan_SR.models.text import PromptEncoder
    from Wan_SR.models.wan import resolve_wan_files
    from Wan_SR.sampling.pipeline import PSSRPipeline, SamplingConfig

    ram, dape = ram_files(tiny_root)
    files = resolve_wan_files(str(tiny_paths["wan_dir"]))
    text = PromptEncoder(files.t5, files.tokenizer, cache_dir=str(tmp_path / "pc"))
    pipe = PSSRPipeline.from_files(
        files, tiny_paths["base"], tiny_paths["draft"], prompt="p", negative_prompt="n",
        config=SamplingConfig(timestep_draft_list=(599.0,)), device="cpu", dtype=torch.float32,
        text=text)
    return pipe, ClipPrompts("p", load_tagger(ram, dape), text, seed=seed)


def test_pipeline_context_is_the_tagged_prompts_embedding(tiny_paths, tiny_root, tmp_path,
                                                          forced, names):
    from Wan_SR.runs.step1 import restore

    pipe, prompts = tagged_pipe(tiny_paths, tiny_root, tmp_path, seed=3)
    frames = make_clip(tmp_path / "c.mp4", 5)
    out = restore(pipe, frames, outputs=["base"], prompts=prompts)
    assert out["base"].shape == frames.shape
    want = "p, " + ", ".join(names[i] for i in ON)
    assert pipe.prompt == want
    assert torch.equal(pipe.context, prompts.text.encode(want).to(pipe.context.dtype))
    assert np.array_equal(forced[0], frames[pick_frame(5, seed=3)])


def test_a_video_split_across_processes_is_tagged_once(tiny_paths, tiny_root, tmp_path,
                                                       forced, names):
    """The path every process takes for one long video (here one process): tagged once, by the
    main process, before the windows are shared out."""
    from Wan_SR.core.options import WindowOptions
    from Wan_SR.runs.step1 import restore_video
    from test_step1 import step1_config

    pipe, prompts = tagged_pipe(tiny_paths, tiny_root, tmp_path, seed=5)
    frames = make_clip(tmp_path / "a.mp4", 9, h=32, w=32)
    opts = step1_config(["base"], seed=5, windows=WindowOptions(
        window_t=5, overlap_t=1, window_h=32, overlap_h=16, window_w=32, overlap_w=16))
    out, made = restore_video(pipe, tmp_path / "a.mp4", tmp_path / "out", opts,
                              info=video_io.probe(tmp_path / "a.mp4"), name="a",
                              prompts=prompts, together=True)
    assert made == 9 and list(out) == ["base"]
    assert len(forced) == 1 and np.array_equal(forced[0], frames[pick_frame(9, seed=5)])
    assert pipe.prompt == "p, " + ", ".join(names[i] for i in ON)


def test_training_tags_one_frame_per_sample_from_the_step_generator():
    from Wan_SR.training.build import Inputs

    seen = []
    fake = SimpleNamespace(tagger=SimpleNamespace(
        tags=lambda f: (seen.append(f), "x, y")[1]))
    clips = torch.rand(2, 5, 3, 8, 8)
    out = Inputs.tagged_prompts(fake, ["a", "b"], clips, torch.Generator().manual_seed(3))
    assert out == ["a, x, y", "b, x, y"]
    g = torch.Generator().manual_seed(3)
    assert torch.equal(seen[0], clips[0, pick_frame(5, g)])
    assert torch.equal(seen[1], clips[1, pick_frame(5, g)])
    assert Inputs.tagged_prompts(SimpleNamespace(tagger=None), ["a"], clips, g) == ["a"]


def test_training_run_encodes_tagged_prompts(tiny_paths, tiny_root, tmp_path, forced, names,
                                             monkeypatch, source="hq"):
    from test_train_base import config, run

    from Wan_SR.training.build import ContextBank

    got = []
    get = ContextBank.get
    monkeypatch.setattr(ContextBank, "get", lambda self, ps: (got.append(list(ps)),
                                                              get(self, ps))[1])
    root = tmp_path / "data"
    root.mkdir()
    rows = ["video,prompt"]
    for i in range(2):
        make_clip(root / f"c{i}.mp4", 9, h=32, w=48, seed=i)
        rows.append(f"c{i}.mp4,clip {i}")
    (root / "meta.csv").write_text("\n".join(rows) + "\n")
    ram, _ = ram_files(tiny_root)
    cfg = config(tiny_paths, root, tmp_path / "out", ram_path=str(ram), tag_source=source,
                 max_train_steps=2, alpha_reg=0.0)
    run(cfg)
    suffix = ", " + ", ".join(names[i] for i in ON)
    tagged = [p for ps in got for p in ps if p.endswith(suffix)]
    assert {p[:-len(suffix)] for p in tagged} <= {"clip 0", "clip 1"} and len(tagged) == 2
    assert len(forced) == 2  # one frame per sample
    hq = {i: video_io.read_video(root / f"c{i}.mp4") for i in range(2)}
    if source == "hq":  # the tagged frame is one of the HQ clip's frames
        f = (forced[0].transpose(1, 2, 0) * 255).round().astype(np.uint8)
        assert any(np.abs(f.astype(int) - fr.astype(int)).max() <= 1
                   for clip in hq.values() for fr in clip)
