"""DOVER and FasterVQA (Wan_SR.metrics.vqa): conformance with the official code's outputs on tiny
random weights in the official layouts (tests/fixtures/vqa_conformance.json, made by
scripts/make_vqa_fixtures.py), strict loading, missing weights named before any scoring, and the
metrics through eval_metrics.py."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from Wan_SR.metrics.vqa import DOVER, FasterVQA, read_state_dict
from Wan_SR.metrics.vqa_nets import WeightLayoutError
from Wan_SR.testing.vqa import synthetic_clip, write_tiny_dover, write_tiny_fastervqa

cv2 = pytest.importorskip("cv2")

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "vqa_conformance.json").read_text())
TOL = 1e-4


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    d = tmp_path_factory.mktemp("vqa_weights")
    write_tiny_dover(d / "nested" / "DOVER.pth")
    write_tiny_fastervqa(d / "FAST_VQA_3D_1_1.pth")
    return d


@pytest.fixture(autouse=True)
def _empty_hub(tmp_path, monkeypatch):
    """No weight file from the user's cache may leak in."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))


def getter(clip):
    return lambda idx: {int(i): clip[i] for i in idx}


def test_dover_equals_official(weights):
    """The clip long and large enough for random frame and fragment offsets (the small clip,
    which takes the upscaling path, is checked through eval_metrics.py below)."""
    case = FIXTURE["dover"][1]
    clip = synthetic_clip(case["frames"], case["height"], case["width"], case["clip_seed"])
    raw = DOVER(weights / "nested" / "DOVER.pth").raw_scores(case["frames"], getter(clip),
                                                             case["seed"])
    assert abs(raw["technical"] - case["raw_technical"]) <= TOL
    assert abs(raw["aesthetic"] - case["raw_aesthetic"]) <= TOL


@pytest.mark.parametrize("case", FIXTURE["fastervqa"], ids=lambda c: f"{c['frames']}x{c['height']}")
def test_fastervqa_equals_official(weights, case):
    clip = synthetic_clip(case["frames"], case["height"], case["width"], case["clip_seed"])
    raw = FasterVQA(weights / "FAST_VQA_3D_1_1.pth").raw_score(case["frames"], getter(clip),
                                                               case["seed"])
    assert abs(raw - case["raw"]) <= TOL


def test_fusion_formulas():
    out = DOVER.fuse({"technical": 0.1107, "aesthetic": -0.08285})
    assert out == {"dover": 0.5, "dover_technical": 0.5, "dover_aesthetic": 0.5}
    t, a = (0.2 - 0.1107) / 0.07355, (0.1 + 0.08285) / 0.03774
    out = DOVER.fuse({"technical": 0.2, "aesthetic": 0.1})
    assert out["dover"] == pytest.approx(1 / (1 + np.exp(-(0.6104 * t + 0.3896 * a))), abs=1e-12)


def test_strict_loading_names_the_keys(weights, tmp_path):
    sd = read_state_dict(weights / "nested" / "DOVER.pth")
    bad = dict(sd)
    bad.pop("technical_backbone.layers.1.blocks.0.mlp.fc2.bias")
    bad["technical_backbone.extra"] = torch.zeros(1)
    torch.save(bad, tmp_path / "DOVER.pth")
    with pytest.raises(WeightLayoutError, match=r"layers\.1\.blocks\.0\.mlp\.fc2\.bias") as e:
        DOVER(tmp_path / "DOVER.pth")
    assert "1 unexpected key(s): extra" in str(e.value)
    bad = dict(sd)
    bad["aesthetic_head.fc_last.weight"] = torch.zeros(1, 5, 1, 1, 1)
    torch.save(bad, tmp_path / "DOVER.pth")
    with pytest.raises(WeightLayoutError, match="1 mis-shaped key.s.: fc_last.weight"):
        DOVER(tmp_path / "DOVER.pth")
    torch.save(sd, tmp_path / "flat.pth")  # a DOVER file is not a FasterVQA file
    with pytest.raises(WeightLayoutError, match="state_dict"):
        FasterVQA(tmp_path / "flat.pth")
    # the released FAST-VQA files also hold their validation results as numpy numbers
    fast = torch.load(weights / "FAST_VQA_3D_1_1.pth")
    torch.save({**fast, "validation_results": [np.float64(0.81), np.float32(0.87)]},
               tmp_path / "FAST_VQA_3D_1*1.pth")
    FasterVQA(tmp_path / "FAST_VQA_3D_1*1.pth")


def _write_pngs(folder: Path, frames: np.ndarray) -> Path:
    folder.mkdir(parents=True)
    for i, f in enumerate(frames):
        assert cv2.imwrite(str(folder / f"{i:04d}.png"), np.ascontiguousarray(f[..., ::-1]))
    return folder


def test_through_eval_metrics(weights, tmp_path):
    """dover* and fastervqa as eval_metrics.py metrics: the official numbers of the fixture's
    clip (frames read from PNGs), weight files found at any depth under --weights_dir."""
    from Wan_SR.runs.evaluate import evaluate

    case = FIXTURE["dover"][0]
    clip = synthetic_clip(case["frames"], case["height"], case["width"], case["clip_seed"])
    _write_pngs(tmp_path / "pred" / "v", clip)
    res = evaluate(pred=tmp_path / "pred", metrics="dover,dover_technical,fastervqa,psnr",
                   gt=tmp_path / "pred", weights_dir=weights, write_json=False, progress=False,
                   device="cpu")
    got = res["per_sample"]["v"]
    raw_t = 0.1107 + 0.07355 * np.log(got["dover_technical"] / (1 - got["dover_technical"]))
    assert abs(raw_t - case["raw_technical"]) <= TOL  # the official raw score, recovered
    want = DOVER.fuse({"technical": case["raw_technical"], "aesthetic": case["raw_aesthetic"]})
    assert abs(got["dover"] - want["dover"]) <= TOL
    fast = FasterVQA(weights / "FAST_VQA_3D_1_1.pth")(case["frames"], getter(clip))
    assert got["fastervqa"] == pytest.approx(fast["fastervqa"], abs=TOL)
    assert got["psnr"] == 100.0 and res["settings"]["lower_better"]["dover"] is False


@pytest.mark.parametrize("metric,file", [("dover_aesthetic", "DOVER.pth"),
                                         ("fastervqa", "FAST_VQA_3D_1_1.pth"),
                                         ("ewarp_raft", "raft_large_C_T_SKHT_V2-ff5fadd5.pth")])
def test_missing_weights_stop_before_scoring(tmp_path, monkeypatch, caplog, metric, file):
    """One message naming the file and where to get it; exit status 2, nothing written; the
    weight-free metrics still run offline."""
    from Wan_SR.cli.evaluate import main

    monkeypatch.setenv("PSSR_OFFLINE", "1")
    _write_pngs(tmp_path / "pred" / "v", synthetic_clip(3, 32, 32, 0))
    (tmp_path / "w").mkdir()
    argv = ["--pred", str(tmp_path / "pred"), "--out", str(tmp_path / "o"), "--device", "cpu",
            "--weights_dir", str(tmp_path / "w"), "--no_progress", "--metrics"]
    assert main(argv + [f"psnr,{metric}", "--gt", str(tmp_path / "pred")]) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and f"'{file}'" in errors[0] and "https://" in errors[0]
    assert not (tmp_path / "o").exists()
    assert main(argv + ["psnr,ewarp", "--gt", str(tmp_path / "pred")]) == 0
