"""--profile: the interval arithmetic of the timeline, and a profiled step-1 run's file."""
import json
import subprocess
import sys

import pytest

from conftest import ROOT
from Wan_SR.core.profile import busy, idle, own_time, summarize


def test_busy_is_the_union_of_intervals_within_the_range():
    kernels = [(0.0, 1.0), (0.5, 2.0), (3.0, 4.0), (9.0, 12.0)]
    assert busy(kernels, 0.0, 10.0) == pytest.approx(2.0 + 1.0 + 1.0)
    assert busy(kernels, 1.5, 3.5) == pytest.approx(0.5 + 0.5)
    assert busy([], 0.0, 1.0) == 0.0


def test_own_time_counts_a_nested_phase_once():
    spans = [("read", 0.0, 1.0), ("upload", 0.2, 0.5), ("decode", 2.0, 3.0),
             ("write", 5.0, 7.0)]
    got = own_time(spans, 0.0, 6.0)
    assert got == pytest.approx({"read": 0.7, "upload": 0.3, "decode": 1.0, "write": 1.0})


def test_idle_gaps_go_to_the_phase_the_main_thread_was_in():
    # marks end phases: "encode" ran until 1.0, "forward" until 2.0; the step ends at 3.0
    tr = {"marks": [("clip", "step", 0.0), ("window", "encode", 1.0), ("window", "forward", 2.0),
                    ("window", "(end)", 3.0)],
          "kernels": [(0.2, 0.9), (0.5, 0.7), (1.1, 1.5), (1.6, 2.9)], "copies": [],
          "spans": [], "end": 3.0}
    got = idle(tr, 0.0, 3.0, top=2)
    assert got["kernels_s"] == pytest.approx(2.4) and got["gpu_busy"] == pytest.approx(0.8)
    assert got["idle_s"] == pytest.approx(0.6) and got["gaps"] == 4
    assert got["idle_s_by_phase"] == pytest.approx({"encode": 0.4, "forward": 0.1,
                                                    "(end)": 0.1})
    assert [(g["at_s"], g["phase"]) for g in got["longest_gaps"]] == [(0.9, "encode"),
                                                                    (0.0, "encode")]


def test_summary_rows_per_window_and_steady_state_without_the_first_clip():
    tr = {"marks": [("clip", "a", 0.0), ("window", "0", 1.0), ("clip", "b", 5.0),
                    ("window", "0", 6.0), ("window", "1", 8.0)],
          "spans": [("decode", 1.0, 2.0), ("close", 4.0, 5.0), ("write", 9.0, 9.5)],
          "kernels": [(1.0, 4.0), (6.0, 7.5), (8.0, 9.0)], "copies": [(9.0, 9.5)], "end": 10.0}
    s = summarize(tr)
    assert [(w["clip"], w["window"]) for w in s["windows"]] == [
        ("a", "(set-up)"), ("a", "0"), ("b", "(set-up)"), ("b", "0"), ("b", "1")]
    assert s["clips"]["a"]["wall_s"] == 5.0 and s["clips"]["a"]["kernels_s"] == 3.0
    st = s["steady"]
    assert st["clips"] == ["b"] and st["wall_s"] == 5.0
    assert st["kernels_s"] == pytest.approx(2.5) and st["gpu_any_s"] == pytest.approx(3.0)
    assert st["gpu_busy"] == pytest.approx(0.5)
    assert st["main_s"]["write"] == pytest.approx(0.5)
    assert st["main_s"]["(other)"] == pytest.approx(4.5)


def test_profiled_step1_writes_a_row_per_window(tiny_paths, tmp_path):
    from test_step1 import make_clip

    for name, n in (("a", 9), ("b", 5)):
        make_clip(tmp_path / "in" / f"{name}.mp4", n=n, h=48, w=48)
    prof = tmp_path / "p" / "profile.json"
    cmd = [sys.executable, str(ROOT / "inference_step_1.py"), "--input_dir", str(tmp_path / "in"),
           "--output_dir", str(tmp_path / "out"), "--wan_model_dir", str(tiny_paths["wan_dir"]),
           "--lora_base_path", str(tiny_paths["base"]), "--lora_draft_path",
           str(tiny_paths["draft"]), "--torch_dtype", "float32", "--device", "cpu",
           "--window_t", "5", "--overlap_t", "1", "--final", "--sort_files",
           "--prompt_cache_dir", str(tmp_path / "pc"), "--profile", str(prof)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "VAE passes: 3 encode(s), 12 decode(s)" in r.stderr  # 2 + 1 windows, 4 branches
    d = json.loads(prof.read_text())
    assert [(w["clip"], w["window"]) for w in d["windows"]] == [
        ("a", "(set-up)"), ("a", "0"), ("a", "1"), ("b", "(set-up)"), ("b", "0")]
    window = d["windows"][1]["main_s"]
    for phase in ("encode", "base", "draft", "decode", "blend", "render", "fuse", "write"):
        assert phase in window, phase
    assert d["steady"]["clips"] == ["b"] and d["steady"]["gpu_busy"] == 0.0  # no GPU
    rows = sum(w["wall_s"] for w in d["windows"])
    assert rows == pytest.approx(d["clips"]["a"]["wall_s"] + d["clips"]["b"]["wall_s"])
