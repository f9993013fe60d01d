"""Several processes (torchrun, 2 CPU processes with gloo): the plan functions, the exchange
protocol, and the three scripts against one process, output for output and frame for frame."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from conftest import ROOT, same_frames
from test_cli import step1_args
from test_step1 import make_clip
from Wan_SR.core.distributed import assign_by_cost, items_per_part, split_by_windows
from Wan_SR.core.options import WindowOptions
from Wan_SR.core.windows import new_frame_ranges, split_parts, window_starts
from Wan_SR.data import video_io
from Wan_SR.runs.common import record_path
from Wan_SR.sampling.clip import iter_pixel_windows, pixel_window_plan

# ------------------------------------------------------------------ plans (no processes)


def test_assign_by_cost_is_greedy_balanced_and_deterministic():
    costs = {"a": 5, "b": 4, "c": 3, "d": 3, "e": 1}
    owner = assign_by_cost(costs, 2)
    assert owner == {"a": 0, "b": 1, "c": 1, "d": 0, "e": 1}  # loads 8 and 8
    assert assign_by_cost(dict(reversed(list(costs.items()))), 2) == owner  # input order
    assert assign_by_cost({"y": 1, "x": 1}, 2) == {"x": 0, "y": 1}  # ties by name
    assert set(assign_by_cost(costs, 1).values()) == {0}
    assert sorted(assign_by_cost(costs, 8).values()) == [0, 1, 2, 3, 4]


def test_split_by_windows():
    costs = {"film": 100, "a": 10, "b": 10, "c": 10}
    assert split_by_windows(costs, 2) == {"film"}                # larger than half of the whole
    assert split_by_windows(costs, 4) == set(costs)              # 3 left for 4 processes
    assert split_by_windows({k: 10 for k in "abcd"}, 2) == set()  # equal videos: whole
    assert split_by_windows({"a": 1}, 2) == {"a"}                # fewer videos than processes
    assert split_by_windows(costs, 2, "videos") == set()
    assert split_by_windows(costs, 2, "windows") == set(costs)
    assert split_by_windows(costs, 1, "windows") == set()
    with pytest.raises(ValueError):
        split_by_windows(costs, 2, "frames")


@pytest.mark.parametrize("n, procs, cap", [(3, 2, 99), (6, 2, 99), (7, 3, 2), (10, 4, 1),
                                           (1, 4, 9), (20, 2, 3), (5, 1, 99)])
def test_split_parts(n, procs, cap):
    parts = split_parts(n, procs, cap)
    assert parts[0][0] == 0 and parts[-1][1] == n
    assert all(a < b for a, b in parts) and all(p[1] == q[0] for p, q in zip(parts, parts[1:]))
    sizes = [b - a for a, b in parts]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)
    assert len(parts) == n or len(parts) % procs == 0
    assert len(parts) >= min(n, procs) and (max(sizes) <= cap or len(parts) == n)
    assert split_parts(3, 2, 99) == [(0, 2), (2, 3)] and split_parts(0, 2, 9) == []
    assert items_per_part(10, 1 << 20) > items_per_part(10, 1 << 30) >= 1


def test_new_frame_ranges_cover_each_frame_once():
    for n, w, o in [(10, 4, 2), (13, 5, 1), (3, 5, 1), (21, 9, 4)]:
        ranges = new_frame_ranges(n, w, o)
        assert [f for a, b in ranges for f in range(a, b)] == list(range(n))
        ends = [min(s + w, n) for s in window_starts(n, min(w, n), o)]
        assert [b for _, b in ranges] == sorted(set(ends))


class _FakePipe:
    """run_tile: a fixed non-linear function of the tile's pixels (like the model: the output
    depends on the window's frames only)."""
    device = "cpu"

    def run_tile(self, frames, branches):
        return {b: torch.sin(frames * (3 + i) + frames.mean(0, keepdim=True) * 7) * 0.5 + 0.5
                for i, b in enumerate(branches)}


@pytest.mark.parametrize("n, win", [(13, (5, 1)), (21, (9, 4)), (19, (9, 6)), (9, (9, 4))])
def test_window_parts_blend_exactly_as_the_whole_clip(n, win):
    """Every cut into parts, each with the windows before its seam, gives the whole run's frames
    bit for bit (forced last window, three windows over one frame, 2x2 tiles)."""
    clip = torch.rand(n, 3, 24, 40, generator=torch.Generator().manual_seed(n))
    w = WindowOptions(window_t=win[0], overlap_t=win[1], window_h=16, overlap_h=8, window_w=24,
                      overlap_w=8)
    get = lambda s, c: clip[s:s + c]  # noqa: E731
    branches = ["base", "base+draft_1"]

    def run(part=None):
        out = list(iter_pixel_windows(_FakePipe(), get, n, 24, 40, branches, w, part=part))
        return {b: torch.cat([d[b] for d in out]) for b in branches}

    whole = run()
    assert whole["base"].shape[0] == n
    n_win = len(pixel_window_plan(n, 24, 40, w)[1])
    cuts = {tuple(split_parts(n_win, k, 99)) for k in (1, 2, 3, 4)}
    cuts |= {((0, k), (k, n_win)) for k in range(1, n_win)}
    for parts in cuts:
        got = [run(p) for p in parts]
        for b in branches:
            assert torch.equal(torch.cat([g[b] for g in got]), whole[b]), (parts, b)


def test_split_video_path_in_one_process_gives_the_whole_run(pipe, tmp_path, monkeypatch):
    """restore_video(together=True) with one window per part (each part re-reading the clip for its
    lead-in windows: overlap 4 of 5) writes the frames restore_video writes."""
    from Wan_SR.runs import parallel
    from Wan_SR.runs.step1 import restore_video
    from test_step1 import step1_config

    path = make_clip(tmp_path / "a.mp4", n=9, h=32, w=32)
    opts = step1_config(["base", "final"], windows=WindowOptions(
        window_t=5, overlap_t=4, window_h=32, overlap_h=16, window_w=32, overlap_w=16))
    whole, _ = restore_video(pipe, path, tmp_path / "whole", opts, show_progress=False)
    monkeypatch.setattr(parallel, "items_per_part", lambda *a: 1)
    opened, reader = [], video_io.FrameReader
    monkeypatch.setattr(video_io, "FrameReader",
                        lambda *a, **k: opened.append(1) or reader(*a, **k))
    parts, made = restore_video(pipe, path, tmp_path / "parts", opts, info=video_io.probe(path),
                                name="a", together=True)
    assert made == 9 and list(parts) == list(whole) == ["base", "final"]
    assert len(opened) == 4  # parts 2, 3 and 4 start before the window their process read last
    assert all(same_frames(whole[o], parts[o]) for o in whole)


def test_device_under_several_processes(monkeypatch):
    from Wan_SR.core.devices import resolve_device

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("ACCELERATE_USE_CPU", "true")
    assert resolve_device(None) == torch.device("cpu") == resolve_device("cuda")
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.delenv("ACCELERATE_USE_CPU")
    if torch.cuda.is_available():
        assert resolve_device("auto") == torch.device("cuda", 1 % torch.cuda.device_count())
    else:
        assert resolve_device("auto") == torch.device("cpu")


# ------------------------------------------------------------------ 2 processes

def torchrun(*args, timeout=300):
    """``torchrun --nproc_per_node 2`` on CPU (gloo); returns the CompletedProcess."""
    env = dict(os.environ, ACCELERATE_USE_CPU="true", CUDA_VISIBLE_DEVICES="",
               OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout,
                          cwd=ROOT)


def one_thread(fn, *args, **kw):
    """Run ``fn`` in this process with one CPU thread, as each torchrun process has."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return fn(*args, **kw)
    finally:
        torch.set_num_threads(n)


PROTOCOL = textwrap.dedent("""
    import json, sys
    import numpy as np
    from Wan_SR.core import distributed as D

    r = D.init()
    log = {}

    def produce(fail_part=None, fail_rank=None):
        def f(i):
            for j in range(2):
                if (i, r.rank) == (fail_part, fail_rank) and j == 1:
                    raise ValueError("bad frame")
                yield {"x": np.full((j + 1, 3), i, np.uint8), "y": np.arange(i, dtype=np.int64)}
        return f

    def run(name, n, consume_fails_at=None, **kw):
        got = []
        def consume(item):
            if item["x"][0, 0] == consume_fails_at:
                raise OSError("disk full")
            got.append([int(item["x"][0, 0]), item["x"].shape[0], item["y"].tolist()])
        try:
            D.ordered_parts(n, produce(**kw), consume)
            log[name] = got
        except D.PartFailed as e:
            log[name] = "failed: " + str(e)

    run("ok", 5)
    run("one part", 1)
    run("rank 1 fails", 5, fail_part=3, fail_rank=1)
    run("writer fails", 4, consume_fails_at=2)
    run("after", 3)
    try:
        D.on_main(lambda: 1 / 0)
    except ZeroDivisionError:
        log["on_main"] = "raised"
    log["shared"] = D.on_main(lambda: {"plan": 7}, share=True)
    log["gathered"] = D.all_gather(r.rank * 10)
    json.dump(log, open(sys.argv[1] + f"/rank{r.rank}.json", "w"))
""")


def test_ordered_parts_protocol(tmp_path):
    """Parts arrive in order; a failure while making a part on process 1 or while writing on the
    main process stops both processes (no hang), and later exchanges still line up."""
    script = tmp_path / "protocol.py"
    script.write_text(PROTOCOL)
    r = torchrun(script, tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    main, other = (json.loads((tmp_path / f"rank{i}.json").read_text()) for i in range(2))
    ok = [[i, n, list(range(i))] for i in range(5) for n in (1, 2)]
    assert main["ok"] == ok and main["after"] == ok[:6]
    assert main["one part"] == ok[:2]
    assert main["rank 1 fails"] == "failed: process 1: bad frame"
    assert other["rank 1 fails"] == "failed: process 1: bad frame"
    assert main["writer fails"] == "failed: process 0: disk full"
    assert other["writer fails"].startswith("failed: ")
    for log in (main, other):
        assert log["on_main"] == "raised" and log["shared"] == {"plan": 7}
        assert log["gathered"] == [0, 10]


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """4 small clips (one window each), a long one (3 windows of 2x2 tiles, more than half of
    the work: split by windows), and a file that is not a video."""
    root = tmp_path_factory.mktemp("dist")
    for i in range(4):
        make_clip(root / "in" / f"c{i}.mp4", n=5, h=32, w=32, seed=i)
    make_clip(root / "in" / "long.mp4", n=13, h=48, w=48, seed=7)
    (root / "in" / "junk.mp4").write_bytes(b"not a video" * 40)
    return root


WIN = ["--window_t", "5", "--overlap_t", "1", "--window_h", "32", "--overlap_h", "16",
       "--window_w", "32", "--overlap_w", "16"]
NAMES = ["c0", "c1", "c2", "c3", "long"]
BRANCHES = ["base", "final"]  # final: fused from base and base+draft_3 on the process


@pytest.fixture(scope="module")
def step1_runs(clips, tiny_paths):
    """Step 1 by one process (in this one) and by two (c1 already complete and recorded:
    skipped)."""
    from Wan_SR.cli import step1

    args = step1_args(tiny_paths, clips, "--input_dir", clips / "in", "--outputs", "base,final",
                      *WIN)
    rc1 = one_thread(step1.main, [str(a) for a in args + ["--output_dir", clips / "one"]])
    two = clips / "two"
    for b in BRANCHES:
        (two / b).mkdir(parents=True)
        for f in (Path(b) / "c1.mp4", record_path(Path(b) / "c1.mp4")):
            (two / f).write_bytes((clips / "one" / f).read_bytes())
    kept = {p: p.stat().st_mtime_ns for p in two.rglob("c1.mp4")}
    r = torchrun(ROOT / "inference_step_1.py", *args, "--output_dir", two, "--skip_existing",
                 "--device", "auto")
    return rc1, r, kept


def test_step1_two_processes_write_what_one_writes(clips, step1_runs):
    rc1, r, kept = step1_runs
    log = r.stderr
    assert rc1 == 1 and r.returncode == 1, log[-3000:]  # junk.mp4 failed, the others written
    assert "1 of 6 input(s) split by windows over 2 processes" in log  # long
    assert "step 1: 4 done, 1 skipped (complete), 1 failed" in log
    assert "failed: junk (" in log and log.count("step 1:") == 1  # one summary
    per_process = [line for line in log.splitlines() if "INFO process " in line]
    assert len(per_process) == 2 and "all 2 processes:" in log
    assert all(p.stat().st_mtime_ns == m for p, m in kept.items())
    for b in BRANCHES:
        assert sorted(p.stem for p in (clips / "two" / b).glob("*.mp4")) == NAMES
        for name in NAMES:
            assert same_frames(clips / "one" / b / f"{name}.mp4",
                               clips / "two" / b / f"{name}.mp4"), (b, name)
    assert not list((clips / "two").rglob("*.partial*"))
    one, two = (json.loads((clips / d / "run_config.json").read_text()) for d in ("one", "two"))
    assert two["settings"] == one["settings"] and two["exit_status"] == 1
    # every output is recorded by the process that wrote it (split videos: the main process),
    # with the run's id and settings; c1 keeps the record of the run that made it
    for b in BRANCHES:
        for name in NAMES:
            rec = json.loads(record_path(clips / "two" / b / f"{name}.mp4").read_text())
            assert rec["settings"] == one["settings"], (b, name)
            assert rec["run_id"] == (one if name == "c1" else two)["run_id"], (b, name)


def test_step2_two_processes_write_what_one_writes(clips, step1_runs):
    """4 clips whole on one process each, the long one split by windows (3 chunks)."""
    from Wan_SR.cli import step2

    args = ["--consistent_dir", clips / "one" / "base", "--sharp_dir", clips / "one" / "final",
            "--no_progress", *WIN]
    assert one_thread(step2.main, [str(a) for a in args + ["--output_dir", clips / "f1",
                                                           "--device", "cpu"]]) == 0
    r = torchrun(ROOT / "inference_step_2.py", *args, "--output_dir", clips / "f2")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "1 of 5 input(s) split by windows" in r.stderr
    assert "step 2: 5 done, 0 skipped (complete), 0 failed" in r.stderr
    assert sorted(p.stem for p in (clips / "f2").glob("*.mp4")) == NAMES
    run = json.loads((clips / "f2" / "run_config.json").read_text())["run_id"]
    for name in NAMES:
        assert same_frames(clips / "f1" / f"{name}.mp4", clips / "f2" / f"{name}.mp4"), name
        assert json.loads(record_path(clips / "f2" / f"{name}.mp4").read_text())["run_id"] == run


def test_corrupt_frame_on_one_process_stops_that_video_only(tmp_path):
    """Step 2 on one pair split by windows: process 1's part holds a corrupt frame. Both
    processes stop that video (no output, no partial file), the summary names the failure and
    the process, and the run ends (exit 1) instead of hanging."""
    rng = np.random.default_rng(0)
    for side in ("cons", "sharp"):
        folder = tmp_path / side / "clip"
        folder.mkdir(parents=True)
        for i in range(25):
            cv2.imwrite(str(folder / f"{i:04d}.png"), rng.integers(0, 255, (32, 32, 3), np.uint8))
    (tmp_path / "sharp" / "clip" / "0024.png").write_bytes(b"not a png")
    r = torchrun(ROOT / "inference_step_2.py", "--consistent_dir", tmp_path / "cons",
                 "--sharp_dir", tmp_path / "sharp", "--output_dir", tmp_path / "out",
                 "--window_t", "5", "--overlap_t", "1", timeout=120)
    assert r.returncode == 1, r.stderr[-3000:]
    assert "failed: clip (process 1: " in r.stderr and "0024.png" in r.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["run_config.json"]


def test_eval_two_processes_write_one_json_equal_to_one_process(clips, step1_runs):
    from Wan_SR.runs.evaluate import evaluate

    out = clips / "eval"
    kw = dict(gt=clips / "in", pred=clips / "one" / "base", metrics="psnr,ssim,ewarp")
    one = one_thread(evaluate, out=out, device="cpu", progress=False, **kw)
    r = torchrun(ROOT / "eval_metrics.py", *[f"--{k}={v}" for k, v in kw.items()], "--out", out)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("psnr:") == 1
    two = json.loads((out / "metrics_psnr_ssim_ewarp.json").read_text())
    one = json.loads(json.dumps(one))
    for res in (one, two):
        res["settings"].pop("seconds")
    assert two == one and list(two["per_sample"]) == NAMES
