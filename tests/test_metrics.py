"""eval_metrics.py / Wan_SR.metrics: PSNR/SSIM against numpy references, ewarp, offline weights,
JSON schema, video vs frame-folder inputs, size/frame-count cuts. CPU only, small clips.

Tolerances: PSNR 1e-6 dB, SSIM 1e-6 (the reference SSIM below is the MATLAB/pyiqa definition:
11x11 Gaussian window sigma 1.5, 'valid' filtering, K1 .01, K2 .03, data range 255 with inputs
rounded to 8-bit levels, cs term clamped at 0 as pyiqa does).
"""
import json
import os
import re
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

cv2 = pytest.importorskip("cv2")
from scipy.ndimage import gaussian_filter  # noqa: E402
from scipy.signal import convolve2d  # noqa: E402

from Wan_SR.data.video_io import read_video, write_video  # noqa: E402

H, W, T = 48, 64, 6
PSNR_TOL = 1e-6
SSIM_TOL = 1e-6


# ----------------------------------------------------------------------------- helpers
def smooth_texture(rng, h, w):
    big = np.stack([gaussian_filter(rng.standard_normal((h, w)), 3) for _ in range(3)], -1)
    return ((big - big.min()) / (big.max() - big.min()) * 190 + 30).astype(np.uint8)


def moving_clip(rng, t=T, h=H, w=W, dy=1, dx=2):
    big = smooth_texture(rng, h + dy * t + 4, w + dx * t + 4)
    return np.stack([big[i * dy:i * dy + h, i * dx:i * dx + w] for i in range(t)])


def noisy(rng, frames, amp=12):
    return np.clip(frames.astype(int) + rng.integers(-amp, amp + 1, frames.shape),
                   0, 255).astype(np.uint8)


def write_folder(folder, frames):
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(frames):
        assert cv2.imwrite(str(folder / f"{i:04d}.png"), np.ascontiguousarray(f[..., ::-1]))
    return folder


def to_y(x):  # x float64 [0,1] (..., 3)
    return 0.257 * x[..., 0] + 0.504 * x[..., 1] + 0.098 * x[..., 2] + 0.0625


def _prep(g, p, crop, y):
    g = g.astype(np.float64) / 255.0
    p = p.astype(np.float64) / 255.0
    if crop:
        g, p = g[:, crop:-crop, crop:-crop], p[:, crop:-crop, crop:-crop]
    if y:
        g, p = to_y(g)[..., None], to_y(p)[..., None]
    return g, p


def psnr_ref(gt, pred, crop=0, y=False):
    g, p = _prep(gt, pred, crop, y)
    vals = []
    for a, b in zip(g, p):
        mse = np.mean((a - b) ** 2)
        vals.append(100.0 if mse == 0 else min(100.0, 10 * np.log10(1.0 / mse)))
    return float(np.mean(vals))


def _gauss_win(size=11, sigma=1.5):
    r = (size - 1) / 2
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    h = np.exp(-(xx ** 2 + yy ** 2) / (2 * sigma ** 2))
    return h / h.sum()


def ssim_ref(gt, pred, crop=0, y=False):
    g, p = _prep(gt, pred, crop, y)
    win = _gauss_win()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    vals = []
    for a, b in zip(g, p):
        per_ch = []
        for c in range(a.shape[-1]):
            x, z = np.round(a[..., c] * 255), np.round(b[..., c] * 255)
            f = lambda im: convolve2d(im, win, mode="valid")  # noqa: E731
            m1, m2 = f(x), f(z)
            s1, s2, s12 = f(x * x) - m1 ** 2, f(z * z) - m2 ** 2, f(x * z) - m1 * m2
            cs = np.maximum((2 * s12 + c2) / (s1 + s2 + c2), 0)
            per_ch.append(((2 * m1 * m2 + c1) / (m1 ** 2 + m2 ** 2 + c1) * cs).mean())
        vals.append(np.mean(per_ch))
    return float(np.mean(vals))


def strict_json(path):
    def bad(c):
        raise ValueError(f"non-standard JSON constant {c}")

    return json.loads(Path(path).read_text(), parse_constant=bad)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    rng = np.random.default_rng(1234)
    root = tmp_path_factory.mktemp("metrics")
    clips = {"a": moving_clip(rng), "b": moving_clip(rng, dy=0, dx=1)}
    preds = {"a": noisy(rng, clips["a"], 12), "b": noisy(rng, clips["b"], 4)}
    for k in clips:
        write_folder(root / "gt" / k, clips[k])
        write_folder(root / "pred" / k, preds[k])
    return Namespace(root=root, gt=root / "gt", pred=root / "pred", clips=clips, preds=preds,
                     rng=rng)


def run_eval(**kw):
    from Wan_SR.runs.evaluate import evaluate

    kw.setdefault("write_json", False)
    kw.setdefault("progress", False)
    kw.setdefault("device", "cpu")
    return evaluate(**kw)


# ----------------------------------------------------------------------------- tests
def test_help_is_light():
    code = ("import sys; sys.path.insert(0, %r); import eval_metrics; eval_metrics.build_parser()"
            "; print('pyiqa' in sys.modules, 'torch' in sys.modules, 'diffsynth' in sys.modules)"
            % str(ROOT))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["False", "False", "False"], out.stderr
    h = subprocess.run([sys.executable, str(ROOT / "eval_metrics.py"), "--help"],
                       capture_output=True, text=True, timeout=60)
    assert h.returncode == 0 and "--weights_dir" in h.stdout


@pytest.mark.parametrize("crop,y", [(0, False), (0, True), (3, False), (5, True)])
def test_psnr_ssim_match_numpy(data, crop, y):
    res = run_eval(gt=data.gt, pred=data.pred, metrics="psnr,ssim", crop=crop, test_y_channel=y)
    assert res["count"] == 2 and not res["errors"]
    for k in ("a", "b"):
        g, p = data.clips[k], data.preds[k]
        assert abs(res["per_sample"][k]["psnr"] - psnr_ref(g, p, crop, y)) < PSNR_TOL
        assert abs(res["per_sample"][k]["ssim"] - ssim_ref(g, p, crop, y)) < SSIM_TOL
    for m in ("psnr", "ssim"):
        assert res["average"][m] == pytest.approx(
            np.mean([res["per_sample"][k][m] for k in ("a", "b")]), abs=1e-12)
    # the options really change the numbers
    if crop or y:
        plain = run_eval(gt=data.gt, pred=data.pred, metrics="psnr")
        assert plain["per_sample"]["a"]["psnr"] != res["per_sample"]["a"]["psnr"]


def test_fast_ssim_equals_pyiqa_ssim(data):
    import torch

    from Wan_SR.metrics.iqa import IQAMetric

    g = torch.from_numpy(data.clips["a"][:3]).permute(0, 3, 1, 2).double() / 255
    p = torch.from_numpy(data.preds["a"][:3]).permute(0, 3, 1, 2).double() / 255
    for y in (False, True):
        slow = IQAMetric("ssim", test_y_channel=y, fast_ssim=False)(p, g)
        fast = IQAMetric("ssim", test_y_channel=y, fast_ssim=True)(p, g)
        assert np.abs(slow - fast).max() < 1e-6  # pyiqa keeps its window in float32
        assert abs(slow.mean() - ssim_ref(data.clips["a"][:3], data.preds["a"][:3], 0, y)) \
            < SSIM_TOL


def test_psnry_ssimc_names(data):
    res = run_eval(gt=data.gt, pred=data.pred, metrics="psnry,ssimc")
    g, p = data.clips["a"], data.preds["a"]
    assert abs(res["per_sample"]["a"]["psnry"] - psnr_ref(g, p, 0, True)) < PSNR_TOL
    assert abs(res["per_sample"]["a"]["ssimc"] - ssim_ref(g, p, 0, False)) < SSIM_TOL


def test_cli_json_schema_and_values(data, tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, PSSR_OFFLINE="1")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "eval_metrics.py"), "--gt", str(data.gt), "--pred",
         str(data.pred), "--out", str(out), "--metrics", "psnr, ssim,ewarp", "--crop", "2",
         "--test_y_channel", "--device", "cpu"],
        capture_output=True, text=True, timeout=120, env=env, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    files = sorted(p.name for p in out.iterdir())
    assert files == ["metrics_psnr_ssim_ewarp.json"], files  # no temp file left behind
    js = strict_json(out / "metrics_psnr_ssim_ewarp.json")
    assert {"per_sample", "average", "count", "settings"} <= set(js)
    assert js["count"] == 2 and set(js["per_sample"]) == {"a", "b"}
    assert set(js["average"]) == {"psnr", "ssim", "ewarp"}
    for k in ("a", "b"):
        assert set(js["per_sample"][k]) == {"psnr", "ssim", "ewarp"}
        g, p = data.clips[k], data.preds[k]
        assert abs(js["per_sample"][k]["psnr"] - psnr_ref(g, p, 2, True)) < PSNR_TOL
        assert abs(js["per_sample"][k]["ssim"] - ssim_ref(g, p, 2, True)) < SSIM_TOL
    s = js["settings"]
    assert s["crop"] == 2 and s["test_y_channel"] is True and s["metrics"] == ["psnr", "ssim",
                                                                                "ewarp"]
    assert s["device"] == "cpu" and s["is_center"] is False and s["batch_mode"] is False
    # the Python function gives the same numbers
    res = run_eval(gt=data.gt, pred=data.pred, metrics="psnr,ssim,ewarp", crop=2,
                   test_y_channel=True)
    for k in ("a", "b"):
        for m in ("psnr", "ssim", "ewarp"):
            assert js["per_sample"][k][m] == pytest.approx(res["per_sample"][k][m], abs=1e-12)


def test_default_out_is_pred_folder(data, tmp_path):
    pred = tmp_path / "p"
    write_folder(pred / "a", data.preds["a"])
    run_eval(gt=data.gt, pred=pred, metrics="psnr", write_json=True)
    assert (pred / "metrics_psnr.json").is_file()


def test_identical_inputs_psnr_capped_valid_json(data, tmp_path):
    res = run_eval(gt=data.gt, pred=data.gt, metrics="psnr,ssim", out=tmp_path,
                   write_json=True)
    js = strict_json(tmp_path / "metrics_psnr_ssim.json")
    for k in ("a", "b"):
        assert js["per_sample"][k]["psnr"] == 100.0
        assert js["per_sample"][k]["ssim"] == pytest.approx(1.0, abs=1e-12)
    assert js["settings"]["psnr_cap_db"] == 100.0
    assert res["average"]["psnr"] == 100.0


def test_batch_mode_and_chunking_same_numbers(data):
    a = run_eval(gt=data.gt, pred=data.pred, metrics="psnr,ssim,ewarp")
    b = run_eval(gt=data.gt, pred=data.pred, metrics="psnr,ssim,ewarp", batch_mode=True,
                 batch_size=4)
    for k in ("a", "b"):
        for m in ("psnr", "ssim", "ewarp"):
            assert a["per_sample"][k][m] == pytest.approx(b["per_sample"][k][m], rel=1e-12)
    # ewarp carries the previous frame across chunk boundaries
    from Wan_SR.runs.evaluate import score_pair
    from Wan_SR.metrics.temporal import ewarp

    one = score_pair(data.pred / "a", data.gt / "a", {}, True, chunk=1)
    whole = ewarp(data.preds["a"], data.clips["a"])
    assert one["ewarp"] == pytest.approx(whole, rel=1e-12)
    assert a["per_sample"]["a"]["ewarp"] == pytest.approx(whole, rel=1e-12)


def test_ewarp_static_is_zero_motion_below_flicker(data):
    from Wan_SR.metrics.temporal import ewarp

    rng = np.random.default_rng(7)
    still = np.repeat(smooth_texture(rng, H, W)[None], T, axis=0)
    assert ewarp(still) == 0.0
    assert ewarp(still, still) == 0.0
    moving = moving_clip(rng)
    gains = rng.uniform(0.75, 1.25, (T, 1, 1, 1))
    flicker = np.clip(moving.astype(np.float64) * gains, 0, 255).astype(np.uint8)
    e_move, e_flick = ewarp(moving), ewarp(flicker)
    assert e_move < 0.05 * e_flick, (e_move, e_flick)
    # with a ground truth the flow comes from it
    assert ewarp(moving, moving) < 0.05 * ewarp(flicker, moving)
    assert ewarp(moving[:1]) is None  # one frame: no pair


def test_ewarp_without_gt_uses_prediction(data):
    res = run_eval(pred=data.pred, metrics="ewarp")
    from Wan_SR.metrics.temporal import ewarp

    assert res["per_sample"]["a"]["ewarp"] == pytest.approx(ewarp(data.preds["a"]), rel=1e-12)


def test_video_and_folder_inputs_agree(data, tmp_path):
    clip = data.clips["a"]
    write_video(tmp_path / "vid_gt" / "a.mp4", clip, fps=24)
    write_video(tmp_path / "vid_pred" / "a.mp4", data.preds["a"], fps=24)
    # folders holding exactly the decoded frames of those (lossy) videos
    write_folder(tmp_path / "dec_gt" / "a", read_video(tmp_path / "vid_gt" / "a.mp4"))
    write_folder(tmp_path / "dec_pred" / "a", read_video(tmp_path / "vid_pred" / "a.mp4"))
    m = "psnr,ssim,ewarp"
    vv = run_eval(gt=tmp_path / "vid_gt", pred=tmp_path / "vid_pred", metrics=m)
    ff = run_eval(gt=tmp_path / "dec_gt", pred=tmp_path / "dec_pred", metrics=m)
    vf = run_eval(gt=tmp_path / "dec_gt", pred=tmp_path / "vid_pred", metrics=m)
    for k in m.split(","):
        assert vv["per_sample"]["a"][k] == ff["per_sample"]["a"][k] == vf["per_sample"]["a"][k]
    # a single video file against a single frame folder is accepted too
    single = run_eval(gt=tmp_path / "dec_gt" / "a", pred=tmp_path / "vid_pred" / "a.mp4",
                      metrics="psnr")
    assert single["per_sample"]["a"]["psnr"] == vv["per_sample"]["a"]["psnr"]


@pytest.mark.parametrize("center", [False, True])
def test_mismatch_cut_with_notice(data, tmp_path, caplog, center):
    rng = np.random.default_rng(3)
    gt = moving_clip(rng, t=7, h=H, w=W)
    pred = noisy(rng, moving_clip(rng, t=5, h=H - 6, w=W + 4))
    write_folder(tmp_path / "g" / "x", gt)
    write_folder(tmp_path / "p" / "x", pred)
    with caplog.at_level("INFO", logger="Wan_SR"):
        res = run_eval(gt=tmp_path / "g", pred=tmp_path / "p", metrics="psnr,ssim",
                       is_center=center)
    out = caplog.text
    assert "frame count differs" in out and "size differs" in out
    notes = " ".join(res["notes"]["x"])
    assert "first 5 frames" in notes and f"{W}x{H - 6}" in notes
    h, w = H - 6, W
    if center:
        gy, gx = (H - h) // 2, (W - w) // 2
        py, px = (pred.shape[1] - h) // 2, (pred.shape[2] - w) // 2
    else:
        gy = gx = py = px = 0
    g = gt[:5, gy:gy + h, gx:gx + w]
    p = pred[:, py:py + h, px:px + w]
    assert abs(res["per_sample"]["x"]["psnr"] - psnr_ref(g, p)) < PSNR_TOL
    assert abs(res["per_sample"]["x"]["ssim"] - ssim_ref(g, p)) < SSIM_TOL


def test_sample_errors_reported_others_scored(data, tmp_path, caplog):
    from Wan_SR.runs.evaluate import main

    pred = tmp_path / "pred"
    write_folder(pred / "a", data.preds["a"])
    write_folder(pred / "zzz", data.preds["b"])  # no ground truth of that name
    (pred / "broken.mp4").write_bytes(b"not a video at all")
    gt = tmp_path / "gt"
    write_folder(gt / "a", data.clips["a"])
    (gt / "broken.mp4").write_bytes(b"nope")
    args = Namespace(gt=str(gt), pred=str(pred), out=str(tmp_path / "o"), metrics="psnr",
                     crop=0, test_y_channel=False, is_center=False, batch_mode=False,
                     batch_size=8, device="cpu", weights_dir=None)
    rc = main(args)
    assert rc == 1
    js = strict_json(tmp_path / "o" / "metrics_psnr.json")
    assert js["count"] == 1 and set(js["per_sample"]) == {"a"}
    assert set(js["errors"]) == {"zzz", "broken"}
    assert "broken" in "\n".join(r.getMessage() for r in caplog.records if r.levelname == "ERROR")


def test_a_metric_that_fails_on_a_sample_keeps_the_others(data, tmp_path, caplog):
    """ms_ssim cannot score 160x96 frames (its coarsest scale is smaller than its filter): on
    that sample it is reported by name, its psnr and ssim are kept; the large sample gets all
    three. psnr and ssim equal those of a run with only them; exit status 1."""
    from Wan_SR.runs.evaluate import main

    rng = np.random.default_rng(11)
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    for name, (h, w) in {"small": (96, 160), "large": (176, 176)}.items():
        clip = moving_clip(rng, t=3, h=h, w=w)
        write_folder(gt / name, clip)
        write_folder(pred / name, noisy(rng, clip))
    two = run_eval(gt=gt, pred=pred, metrics="psnr,ssim")
    args = Namespace(gt=str(gt), pred=str(pred), out=str(tmp_path / "o"),
                     metrics="psnr,ssim,ms_ssim", crop=0, test_y_channel=False,
                     is_center=False, batch_mode=False, batch_size=8, device="cpu",
                     weights_dir=None)
    with caplog.at_level("INFO", logger="Wan_SR"):
        assert main(args) == 1
    js = strict_json(tmp_path / "o" / "metrics_psnr_ssim_ms_ssim.json")
    assert js["count"] == 2 and set(js["errors"]) == {"small"}
    assert set(js["errors"]["small"]) == {"ms_ssim"}
    assert "Kernel size" in js["errors"]["small"]["ms_ssim"]  # pyiqa's reason, under its name
    assert js["per_sample"]["small"]["ms_ssim"] is None
    assert 0 < js["per_sample"]["large"]["ms_ssim"] <= 1
    assert js["average"]["ms_ssim"] == js["per_sample"]["large"]["ms_ssim"]
    for k in ("psnr", "ssim"):
        assert js["average"][k] == two["average"][k]
        for name in ("small", "large"):
            assert js["per_sample"][name][k] == two["per_sample"][name][k]
    log = caplog.text
    assert "small: ms_ssim failed (RuntimeError: " in log
    assert "1 sample(s) failed: small (ms_ssim)" in log
    # a sample every metric failed on is not scored; without a callback the error names it
    only = run_eval(gt=gt, pred=pred, metrics="ms_ssim")
    assert set(only["per_sample"]) == {"large"} and set(only["errors"]) == {"small"}
    from Wan_SR.metrics.iqa import IQAMetric
    from Wan_SR.metrics.score import MetricFailed, score_pair

    with pytest.raises(MetricFailed, match="^ms_ssim: RuntimeError: "):
        score_pair(pred / "small", gt / "small", {"ms_ssim": IQAMetric("ms_ssim")}, False)


def test_release_syntax_empty_gt_and_out_mean_none_and_default(data, tmp_path, monkeypatch):
    """The published eval_metrics.py's defaults: --gt '' (no ground truth), --out '' (the
    prediction folder), and its flags, parse here; '' is never the current folder."""
    from Wan_SR.cli.evaluate import build_parser, main

    args = build_parser().parse_args(["--gt", "", "--pred", "p", "--out", "", "--metrics",
                                      "psnr,ssim", "--batch_mode", "--crop", "4",
                                      "--test_y_channel", "--is_center"])
    assert args.gt is None and args.out is None and args.crop == 4
    assert args.batch_mode and args.test_y_channel and args.is_center
    pred = write_folder(tmp_path / "pred" / "a", data.preds["a"]).parent
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    assert main(["--gt", "", "--pred", str(pred), "--out", "", "--metrics", "ewarp",
                 "--device", "cpu", "--no_progress"]) == 0
    js = strict_json(pred / "metrics_ewarp.json")
    assert js["settings"]["gt"] is None and js["settings"]["out"] == str(pred)
    assert not list(cwd.iterdir())
    res = run_eval(gt="", pred=pred, out="", metrics="ewarp")
    assert res["per_sample"] == js["per_sample"] and res["settings"]["gt"] is None


def test_out_folder_is_not_created_when_nothing_is_scored(data, tmp_path):
    from Wan_SR.cli.evaluate import main

    out = tmp_path / "o" / "deeper"
    assert main(["--gt", str(data.gt), "--pred", str(data.pred), "--out", str(out), "--metrics",
                 "psnr,nosuchmetric", "--device", "cpu", "--no_progress"]) == 2
    assert not (tmp_path / "o").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(SystemExit) as e:  # an --out that can never be a folder: exit 2 early
        main(["--pred", str(data.pred), "--out", str(tmp_path / "file" / "o"), "--metrics",
              "ewarp"])
    assert e.value.code == 2


def test_bad_requests_fail_before_scoring(data):
    from Wan_SR.runs.evaluate import EvalError

    with pytest.raises(EvalError, match="full-reference"):
        run_eval(pred=data.pred, metrics="psnr")
    with pytest.raises(EvalError, match="unknown metric 'nosuchmetric'"):
        run_eval(gt=data.gt, pred=data.pred, metrics="psnr,nosuchmetric")
    with pytest.raises(EvalError, match="set-level"):
        run_eval(pred=data.pred, metrics="fid")
    with pytest.raises(EvalError, match="--crop"):
        run_eval(gt=data.gt, pred=data.pred, metrics="psnr", crop=-1)


def test_missing_weights_fail_fast_main(data, tmp_path, monkeypatch, caplog):
    """lpips with empty caches: exit 2 and one clear error naming metric, file, folder and
    --weights_dir, before anything is scored."""
    import pyiqa.utils.download_util as du
    import torch.hub

    from Wan_SR.cli.evaluate import main

    monkeypatch.setenv("PSSR_OFFLINE", "1")  # never download, even where a network exists
    monkeypatch.setattr(du, "DEFAULT_CACHE_DIR", str(tmp_path / "hub" / "pyiqa"))
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    try:
        rc = main(["--gt", str(data.gt), "--pred", str(data.pred), "--out", str(tmp_path / "o"),
                   "--metrics", "psnr,lpips", "--device", "cpu", "--weights_dir", str(tmp_path),
                   "--no_progress"])
    finally:
        torch.hub.set_dir(old)
    err = caplog.text
    assert rc == 2, err
    assert "metric 'lpips'" in err and "alexnet-owt-7be5be79.pth" in err
    assert str(tmp_path / "hub" / "checkpoints") in err and "--weights_dir" in err
    assert "LPIPS_v0.1_alex-df73285e.pth" in err  # the full list for known metrics
    assert not (tmp_path / "o").exists()  # nothing scored: no JSON, no folder


def test_network_probe_is_bounded(monkeypatch):
    from Wan_SR.metrics import weights

    monkeypatch.delenv("PSSR_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    # a loopback server that accepts the connection and never answers: the probe must give up
    # after its timeout (the test would hang otherwise) and say "not reachable"
    import socket

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    try:
        port = srv.getsockname()[1]
        assert weights.host_reachable(f"http://127.0.0.1:{port}/x.pth", timeout=1.0) is False
    finally:
        srv.close()
    monkeypatch.setenv("PSSR_OFFLINE", "1")
    assert weights.host_reachable("https://huggingface.co/x") is False


def test_missing_weights_in_process_offline(monkeypatch, tmp_path):
    import pyiqa.utils.download_util as du
    import torch.hub

    from Wan_SR.metrics.iqa import IQAMetric
    from Wan_SR.metrics.weights import MissingWeightsError

    monkeypatch.setenv("PSSR_OFFLINE", "1")
    monkeypatch.setattr(du, "DEFAULT_CACHE_DIR", str(tmp_path / "pyiqa"))
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    try:
        with pytest.raises(MissingWeightsError) as ei:
            IQAMetric("niqe", device="cpu")
        e = ei.value
        assert e.metric == "niqe" and e.file == "niqe_modelparameters.mat"
        assert e.folder == str(tmp_path / "pyiqa") and "--weights_dir" in str(e)
    finally:
        torch.hub.set_dir(old)


def test_weights_dir_used_offline(data, monkeypatch, tmp_path):
    """Files in --weights_dir (any depth) are used instead of downloads: lpips built from
    stand-in weight files runs offline end to end."""
    import pyiqa.utils.download_util as du
    import torch
    import torch.hub
    import torchvision

    from Wan_SR.metrics.weights import weight_guard

    monkeypatch.setenv("PSSR_OFFLINE", "1")
    monkeypatch.setattr(du, "DEFAULT_CACHE_DIR", str(tmp_path / "empty_pyiqa"))
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "empty_hub"))
    wd = tmp_path / "weights"
    (wd / "sub").mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(torchvision.models.alexnet(weights=None).state_dict(),
               wd / "sub" / "alexnet-owt-7be5be79.pth")
    try:
        with weight_guard("lpips", str(wd)):
            from pyiqa.archs.lpips_arch import LPIPS

            lin = {k: v for k, v in LPIPS(pretrained=False).state_dict().items()
                   if k.startswith("lin")}
        # pyiqa's own loader finds a file of --weights_dir (linked into its cache), offline
        url = "https://example.invalid/niqe_modelparameters.mat"
        (wd / "niqe_modelparameters.mat").write_bytes(b"x")
        with weight_guard("niqe", str(wd)):
            assert Path(du.load_file_from_url(url)).resolve() == (wd / "niqe_modelparameters.mat"
                                                                  ).resolve()
        torch.save(lin, wd / "LPIPS_v0.1_alex-df73285e.pth")
        res = run_eval(gt=data.gt, pred=data.pred, metrics="lpips,psnr", weights_dir=wd)
        assert not res["errors"] and res["settings"]["weights_dir"] == str(wd)
        v = res["per_sample"]["a"]["lpips"]
        assert v is not None and np.isfinite(v) and v > 0
        same = run_eval(gt=data.gt, pred=data.gt, metrics="lpips", weights_dir=wd)
        assert same["per_sample"]["a"]["lpips"] == pytest.approx(0.0, abs=1e-6)
    finally:
        torch.hub.set_dir(old)


def test_known_weight_files_are_the_ones_the_libraries_load():
    """Every file of the weights table is named in the installed pyiqa / torchvision / timm
    sources (so a renamed file after an upgrade fails here, not on a user's offline machine),
    and each sits in the folder its loader reads."""
    import importlib.util

    from Wan_SR.metrics.weights import KNOWN_WEIGHTS

    def source(pkg):
        root = Path(importlib.util.find_spec(pkg).origin).parent
        return "\n".join(p.read_text(encoding="utf-8", errors="replace")
                         for p in root.rglob("*.py"))

    text = {"pyiqa": source("pyiqa"), "torchvision": source("torchvision"), "timm": source("timm")}
    for metric, files in KNOWN_WEIGHTS.items():
        for f in files:
            name = f.name.split("/", 1)[1] if f.kind == "hf" else f.name
            assert any(name in t for t in text.values()), (metric, str(f))
            assert f.url.endswith(name), (metric, f.url)
    # files pyiqa loads through torch.hub go to <torch hub dir>/checkpoints ("tv")
    assert re.search(r"torch\.hub\.load_state_dict_from_url\(\s*default_model_urls\['ARNIQA'\]",
                     text["pyiqa"])
    assert [f.kind for f in KNOWN_WEIGHTS["arniqa"]] == ["tv", "tv", "tv"]


def test_weight_guard_leaves_the_libraries_as_they_are(monkeypatch, tmp_path):
    """No function of pyiqa, torch or huggingface_hub is replaced while a metric is created."""
    import huggingface_hub
    import pyiqa.utils.download_util as du
    import torch.hub

    from Wan_SR.metrics.weights import weight_guard

    monkeypatch.setenv("PSSR_OFFLINE", "1")
    before = (du.load_file_from_url, torch.hub.load_state_dict_from_url,
              huggingface_hub.hf_hub_download, du.DEFAULT_CACHE_DIR, torch.hub.get_dir())
    with weight_guard("niqe", str(tmp_path)):
        inside = (du.load_file_from_url, torch.hub.load_state_dict_from_url,
                  huggingface_hub.hf_hub_download, du.DEFAULT_CACHE_DIR, torch.hub.get_dir())
    assert inside == before


def test_hugging_face_model_in_weights_dir(monkeypatch, tmp_path):
    """A timm model under --weights_dir, as a Hugging Face cache folder, is linked into the HF
    cache where timm looks; without it, offline, the error names the repo and the cache."""
    import huggingface_hub
    import huggingface_hub.constants as hf_const
    import pyiqa.utils.download_util as du

    from Wan_SR.metrics.weights import MissingWeightsError, require_weights

    monkeypatch.setenv("PSSR_OFFLINE", "1")
    monkeypatch.setattr(hf_const, "HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    monkeypatch.setattr(du, "DEFAULT_CACHE_DIR", str(tmp_path / "pyiqa"))
    wd = tmp_path / "weights"
    (wd / "cfanet_nr_koniq_res50-9a73138b.pth").parent.mkdir(parents=True)
    (wd / "cfanet_nr_koniq_res50-9a73138b.pth").write_bytes(b"x")
    with pytest.raises(MissingWeightsError) as ei:
        require_weights("topiq_nr", str(wd))
    assert ei.value.file == "model.safetensors of the Hugging Face repo timm/resnet50.a1_in1k"
    assert ei.value.folder == str(tmp_path / "hf_cache")
    repo = wd / "some" / "hub" / "models--timm--resnet50.a1_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "snapshots" / "abc123" / "model.safetensors").write_bytes(b"weights")
    require_weights("topiq_nr", str(wd))
    got = huggingface_hub.try_to_load_from_cache("timm/resnet50.a1_in1k", "model.safetensors")
    assert Path(got).read_bytes() == b"weights" and str(tmp_path / "hf_cache") in got
    assert (tmp_path / "pyiqa" / "cfanet_nr_koniq_res50-9a73138b.pth").read_bytes() == b"x"
