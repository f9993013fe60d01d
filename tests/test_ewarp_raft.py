"""ewarp_raft (Wan_SR.metrics.raft_ewarp): the protocol's arithmetic against a hand computation
with known (injected) flow, the occlusion rules, and 0 on static clips through torchvision's RAFT
(random weights in torchvision's file layout, found under --weights_dir)."""
import numpy as np
import pytest
import torch

from Wan_SR.metrics.raft_ewarp import (RaftEwarpAccumulator, ewarp_raft, pair_error,
                                       visible_mask)
from Wan_SR.testing.vqa import write_random_raft

cv2 = pytest.importorskip("cv2")


def constant_flow(dx: float):
    """Injected flow: the accumulator asks for F (t -> t+1) then B (t+1 -> t) for every pair,
    so the calls alternate +dx, -dx."""
    calls = [0]

    def flow(a, b):
        f = torch.zeros(1, 2, *a.shape[-2:])
        f[:, 0] = dx if calls[0] % 2 == 0 else -dx
        calls[0] += 1
        return f
    return flow


def test_hand_computation_on_a_shifted_clip():
    """Frames whose half-size versions are a texture shifted by 2 px per frame plus a brightness
    step; with the true flow (+2, 0) every pixel is visible and W(x) = P_t+1(min(x + 2, w - 1))
    (border replication), so E_t is the mean over pixels of the squared RGB distance."""
    rng = np.random.default_rng(0)
    h, w, s = 12, 20, 2
    half = rng.integers(0, 200, size=(h, w + 3 * s, 3))
    halves = [np.clip(half[:, (2 - t) * s:(2 - t) * s + w] + 10 * t, 0, 255).astype(np.uint8)
              for t in range(3)]  # frame t+1 = frame t moved right by s, 10 levels brighter
    frames = np.stack([f.repeat(2, 0).repeat(2, 1) for f in halves])  # 0.5x gives `halves`
    acc = RaftEwarpAccumulator(constant_flow(s))
    acc.update(frames)
    want = []
    for t in range(2):
        a = halves[t].astype(np.float64) / 255
        b = halves[t + 1].astype(np.float32) / 255
        warped = b[:, np.minimum(np.arange(w) + s, w - 1)].astype(np.float64)
        want.append(((a - warped) ** 2).sum(-1).mean())  # squared RGB distance per pixel
    assert acc.errors == pytest.approx(want, abs=1e-7)
    assert acc.value() == pytest.approx(1000 * np.mean(want), abs=1e-4)
    assert want[0] > 1e-3  # the brightness step is measured (about (10/255)^2)


def test_occlusion_rules():
    h, w = 6, 9
    fw = torch.zeros(1, 2, h, w)
    fw[:, 0] = 2.0
    assert visible_mask(fw, -fw).all()  # consistent: every pixel visible
    assert not visible_mask(fw, fw).any()  # |F + B_w|^2 = 16 > 0.01 * 8 + 0.5
    step = fw.clone()
    step[:, 0, :, 5:] = 0.0  # a motion boundary between columns 4 and 5
    bw = torch.zeros_like(step)
    m = visible_mask(step, bw)
    # columns 0..4 move by 2 and see a zero backward flow there: inconsistent (4 > 0.54)
    assert not m[0, :, :5].any()
    # columns 5..8: no motion, consistent, no boundary (forward differences are 0 there)
    assert m[0, :, 5:].all()
    img = torch.rand(1, 3, h, w)
    assert pair_error(img, img + 0.5, fw, fw) == 0.0  # nothing visible: 0 (Lai et al.)


def test_static_textured_clip_is_exactly_zero():
    """A static textured clip with zero flow scores 0 (no rounding from the warp); fewer than
    two frames give no value."""
    rng = np.random.default_rng(1)
    tex = np.repeat(rng.integers(0, 255, (1, 40, 56, 3), dtype=np.uint8), 3, axis=0)
    zero = constant_flow(0.0)
    assert ewarp_raft(tex, zero) == 0.0
    assert ewarp_raft(tex[:1], zero) is None


def test_static_clip_is_zero_through_raft_and_eval_metrics(tmp_path):
    """Through torchvision's raft_large (random weights in its file layout, found at any depth
    under --weights_dir) inside eval_metrics.py: a static clip scores 0, one value per pair."""
    from Wan_SR.runs.evaluate import evaluate

    write_random_raft(tmp_path / "w" / "deep")
    folder = tmp_path / "pred" / "still"
    folder.mkdir(parents=True)
    for i in range(2):
        cv2.imwrite(str(folder / f"{i}.png"), np.full((40, 56, 3), 60, np.uint8))
    res = evaluate(pred=tmp_path / "pred", metrics="ewarp_raft,ewarp", weights_dir=tmp_path / "w",
                   write_json=False, progress=False, device="cpu", curves=True)
    assert res["per_sample"]["still"]["ewarp_raft"] == 0.0
    assert res["per_frame"]["still"]["ewarp_raft"] == [0.0]
    assert res["settings"]["lower_better"]["ewarp_raft"] is True
