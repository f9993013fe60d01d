"""eval_metrics.py with several --pred: one JSON per method, the table (Markdown, CSV, LaTeX) of
their averages with the best in bold, and --plots: per-video PNGs with step-1 window seams."""
import csv
import json
import struct
from pathlib import Path

import numpy as np
import pytest

from Wan_SR.runs.compare import method_names
from Wan_SR.runs.plots import PANEL_PX, WIDTH_PX, seams, temporal_windows

cv2 = pytest.importorskip("cv2")


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def write_clip(folder: Path, frames) -> None:
    folder.mkdir(parents=True)
    for i, f in enumerate(frames):
        assert cv2.imwrite(str(folder / f"{i:03d}.png"), np.ascontiguousarray(f[..., ::-1]))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    rng = np.random.default_rng(5)
    gt = {n: rng.integers(0, 256, (8, 24, 32, 3), dtype=np.uint8) for n in ("v1", "v2")}
    for n, clip in gt.items():
        write_clip(root / "gt" / n, clip)
        for method, amp in (("good", 4), ("bad", 30)):
            noise = rng.integers(-amp, amp + 1, clip.shape)
            write_clip(root / "res" / method / "out" / n,
                       np.clip(clip.astype(int) + noise, 0, 255).astype(np.uint8))
    # method "good" comes from a step-1 run with 4-frame windows overlapping by 2
    (root / "res" / "good" / "run_config.json").write_text(json.dumps(
        {"script": "inference_step_1.py",
         "settings": {"windows": {"window_t": 4, "overlap_t": 2}, "window_space": "pixel"}}))
    return root


def test_two_methods_table_and_plots(runs):
    from Wan_SR.cli.evaluate import main

    out = runs / "table"
    rc = main(["--gt", str(runs / "gt"), "--pred", f"good={runs / 'res' / 'good' / 'out'}",
               "--pred", f"bad={runs / 'res' / 'bad' / 'out'}", "--metrics", "psnr,ewarp",
               "--out", str(out), "--plots", "--device", "cpu", "--no_progress"])
    assert rc == 0
    js = {m: json.loads((out / m / "metrics_psnr_ewarp.json").read_text()) for m in ("good",
                                                                                  "bad")}
    assert js["good"]["average"]["psnr"] > js["bad"]["average"]["psnr"] + 5
    rows = list(csv.DictReader((out / "table_psnr_ewarp.csv").open()))
    assert [r["method"] for r in rows] == ["good", "bad"]
    for r in rows:  # the CSV's numbers are the JSONs' averages, exactly
        for k in ("psnr", "ewarp"):
            assert float(r[k]) == js[r["method"]]["average"][k]
        assert int(r["videos"]) == js[r["method"]]["count"] == 2
    md = (out / "table_psnr_ewarp.md").read_text().splitlines()
    assert md[0] == "| method | videos | psnr ↑ | ewarp ↓ |"
    cells = {ln.split("|")[1].strip(): [c.strip() for c in ln.split("|")[3:5]] for ln in md[2:]}
    for m in ("good", "bad"):
        for cell, k in zip(cells[m], ("psnr", "ewarp")):
            assert cell.strip("*") == f"{js[m]['average'][k]:.4f}"
    best_ewarp = min(js, key=lambda m: js[m]["average"]["ewarp"])
    assert cells["good"][0].startswith("**") and not cells["bad"][0].startswith("**")
    assert cells[best_ewarp][1].startswith("**")
    tex = (out / "table_psnr_ewarp.tex").read_text()
    assert "\\textbf{" + f"{js['good']['average']['psnr']:.4f}" + "}" in tex
    for n in ("v1", "v2"):  # two panels (psnr, ewarp) per video
        assert png_size(out / "plots" / f"{n}.png") == (WIDTH_PX, 2 * PANEL_PX)
    assert len(js["good"]["per_frame"]["v1"]["psnr"]) == 8
    assert len(js["good"]["per_frame"]["v1"]["ewarp"]) == 7


def test_single_pred_plots_next_to_its_json(runs):
    from Wan_SR.cli.evaluate import main

    out = runs / "single"
    assert main(["--pred", f"bad={runs / 'res' / 'bad' / 'out'}", "--metrics", "ewarp", "--out",
                 str(out), "--plots", "--device", "cpu", "--no_progress"]) == 0
    assert (out / "metrics_ewarp.json").is_file()
    assert png_size(out / "plots" / "v1.png") == (WIDTH_PX, PANEL_PX)


def test_window_seams_from_run_config(runs):
    assert temporal_windows(runs / "res" / "good" / "out") == (4, 2)
    assert temporal_windows(runs / "res" / "bad" / "out") is None
    assert seams(8, (4, 2)) == [(2, 4), (4, 6)]
    assert seams(4, (4, 2)) == [] and seams(8, None) == []


def test_method_names(tmp_path):
    a, b = tmp_path / "x" / "out", tmp_path / "y" / "out"
    a.mkdir(parents=True)
    b.mkdir(parents=True)
    assert list(method_names([str(a), str(b)])) == ["x/out", "y/out"]
    assert list(method_names([f"A={a}", str(b)])) == ["A", "out"]
    with pytest.raises(ValueError, match="two methods named 'A'"):
        method_names([f"A={a}", f"A={b}"])
