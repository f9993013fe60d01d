"""Our loaders + base step + draft steps reproduce the published method's numbers (float32)."""
import pytest
import torch

from conftest import CONFORMANCE
from Wan_SR.models.draft import load_draft, select_blocks
from Wan_SR.models.lora import load_base_checkpoint
from Wan_SR.models.wan import load_dit, load_safetensors
from Wan_SR.sampling.speculative import base_step, draft_steps
from Wan_SR.sampling.timeline import FlowTimeline

TOL = 1e-5


@pytest.fixture(scope="module")
def outputs():
    exp, _ = load_safetensors(CONFORMANCE / "expected.safetensors")
    # The fixture's tiny DiT has 2 heads (its README); head count is not stored in weights.
    dit = load_dit(CONFORMANCE / "dependent_models/Wan2.1-T2V-1.3B/diffusion_pytorch_model.safetensors",
                   num_heads=2)
    load_base_checkpoint(dit, CONFORMANCE / "checkpoints/pretrained_models/base.safetensors")
    draft = load_draft(CONFORMANCE / "checkpoints/pretrained_models/draft.safetensors", 1.5,
                       base_num_layers=len(dit.blocks), num_heads=2)
    tl = FlowTimeline()
    ids = select_blocks(len(dit.blocks), 1.5)
    assert ids == [2, 5]
    with torch.no_grad():
        b = base_step(dit, exp["z_l"], exp["context"], tl, t_base=699, t_next=599,
                      record_blocks=ids)
        x0s, _ = draft_steps(draft, b.z_next, exp["z_l"], exp["context"], b.features, tl,
                             [599, 499, 399])
    got = {"x0_base": b.x0, "z_next": b.z_next, "feature_0": b.features[0],
           "feature_1": b.features[1], "x0_draft_1": x0s[0], "x0_draft_2": x0s[1],
           "x0_draft_3": x0s[2]}
    # the same draft fed [h, f] instead of [f, h]: swap the two input halves of every fc weight
    with torch.no_grad():
        for fc in draft.fc_layers:
            d = fc.weight.shape[0]
            fc.weight.copy_(torch.cat([fc.weight[:, d:], fc.weight[:, :d]], dim=1))
        swapped, _ = draft_steps(draft, b.z_next, exp["z_l"], exp["context"], b.features, tl,
                                 [599, 499, 399])
    got["x0_draft_1_swapped_order"] = swapped[0]
    return got, exp


@pytest.mark.parametrize("name", ["x0_base", "z_next", "feature_0", "feature_1", "x0_draft_1",
                                  "x0_draft_2", "x0_draft_3"])
def test_matches_published_outputs(outputs, name):
    got, exp = outputs
    assert got[name].shape == exp[name].shape
    assert (got[name] - exp[name]).abs().max().item() <= TOL


def test_feature_order_matters(outputs):
    """The published order is [base feature, h]: feeding [h, f] instead (fc weight halves
    swapped) must miss the published draft output by far more than the tolerance, while the
    right order meets it. Fails if the draft forward used the other order."""
    got, exp = outputs
    assert (got["x0_draft_1"] - exp["x0_draft_1"]).abs().max() <= TOL
    assert (got["x0_draft_1_swapped_order"] - exp["x0_draft_1"]).abs().max() > 1e-3


def test_timeline_reference_values():
    tl = FlowTimeline()
    ref = {699: (683, 698.8536, 0.6988536), 599: (770, 598.9583, 0.5989583),
           499: (834, 498.7981, 0.4987981), 399: (883, 398.5014, 0.3985014),
           0: (999, 4.98008, 0.00498008)}
    for t, (idx, ti, sigma) in ref.items():
        assert tl.index(t) == idx
        assert abs(float(tl.timesteps[idx]) - ti) < 1e-3
        assert abs(tl.sigma(t) - sigma) < 1e-6
    bf16 = {699: 0.6998240, 599: 0.6003118, 499: 0.5005996, 399: 0.4008152}
    for t, sigma in bf16.items():
        assert abs(tl.sigma(tl.timestep(t, torch.bfloat16)) - sigma) < 1e-6
