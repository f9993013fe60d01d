"""The training losses as functions of tensors, the frozen models they use passed in
(docs/method.md §9, "Base training").

Every random choice (crop position, timesteps, noise) is drawn by the caller and passed in, so a
test can feed fixed tensors and compare with a hand computation. A trainer's step lists its
losses as ``(name, weight, value)`` terms: every term is logged, :func:`weighted_sum` adds those
with a weight above 0.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from Wan_SR.models.dit import dit_forward
from Wan_SR.models.wan import vae_decode
from Wan_SR.sampling.speculative import guided
from Wan_SR.sampling.timeline import FlowTimeline
from .graphs import Graphed

# The regulariser's timestep is redrawn while it falls outside [REG_T_MIN, REG_T_MAX].
REG_T_MIN, REG_T_MAX = 20.0, 980.0


def latent_l2(x0: torch.Tensor, z_h: torch.Tensor) -> torch.Tensor:
    """``loss_l2 = mean((x0 - z_H)^2)`` in float32."""
    return torch.mean((x0.float() - z_h.float()) ** 2)


def crop_box(latent_hw: tuple[int, int], size: int, generator: torch.Generator
             ) -> tuple[int, int, int, int]:
    """``(top, left, height, width)`` of a random ``size`` x ``size`` latent crop (smaller when
    the latent is smaller), every position equally likely."""
    h, w = latent_hw
    ch, cw = min(size, h), min(size, w)
    top = int(torch.randint(0, h - ch + 1, (1,), generator=generator))
    left = int(torch.randint(0, w - cw + 1, (1,), generator=generator))
    return top, left, ch, cw


def pixel_losses(decode: Callable[[torch.Tensor], torch.Tensor], x0: torch.Tensor,
                 hq: torch.Tensor, box: tuple[int, int, int, int],
                 lpips: Optional[Callable] = None, scale: int = 8) -> dict:
    """Decode the latent crop ``box`` of ``x0`` (B,16,T,h,w) through ``decode`` (frozen VAE,
    gradients flow to ``x0``) and compare it with the same region of ``hq`` (B,3,F,H,W) in
    [-1, 1] (rows ``scale*top ...``): ``loss_pixel_l2`` = mse, ``loss_pixel_lpips`` = mean over
    frames of LPIPS (when ``lpips`` is given); both in float32."""
    return crop_losses(decode, *crops(x0, hq, box, scale), lpips)


def crops(x0: torch.Tensor, hq: torch.Tensor, box: tuple[int, int, int, int], scale: int = 8
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """The latent crop ``box`` of ``x0`` and the same region of ``hq`` (x ``scale`` pixels)."""
    top, left, ch, cw = box
    return (x0[..., top:top + ch, left:left + cw],
            hq[..., scale * top:scale * (top + ch), scale * left:scale * (left + cw)])


def crop_losses(decode: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor,
                ref: torch.Tensor, lpips: Optional[Callable] = None) -> dict:
    """:func:`pixel_losses` of a latent crop ``z`` and its HQ region ``ref``."""
    dec = decode(z)
    if dec.shape != ref.shape:
        raise ValueError(f"decoded crop {tuple(dec.shape)} and HQ crop {tuple(ref.shape)} differ")
    out = {"loss_pixel_l2": torch.mean((dec.float() - ref.float()) ** 2)}
    if lpips is not None:
        frames = lambda v: v.transpose(1, 2).flatten(0, 1).float()  # noqa: E731 (B*F,3,h,w)
        out["loss_pixel_lpips"] = lpips(frames(dec), frames(ref)).mean().float()
    return out


def decode_native(vae, z: torch.Tensor) -> torch.Tensor:
    """The frozen VAE's decode in its own dtype, outside autocast: under bf16 autocast its
    normalisations would run (and keep their activations for the backward) in float32."""
    with torch.autocast(z.device.type, enabled=False):
        return vae_decode(vae, z)


class PixelLoss:
    """The trainers' pixel losses: :func:`pixel_losses` through the frozen ``vae`` (decoded in
    its own dtype) and ``lpips`` (None: no LPIPS term). With ``graphs`` the crop's decode and
    LPIPS, forward and backward, replay from CUDA graphs on a GPU (:class:`Graphed`: one capture
    per crop shape; thousands of small kernels otherwise launched one by one); same values."""

    def __init__(self, vae, lpips: Optional[Callable] = None, graphs: bool = False):
        self.vae, self.lpips = vae, lpips
        self.run = Graphed(self._losses, name="pixel losses") if graphs else self._losses

    def _losses(self, z: torch.Tensor, ref: torch.Tensor) -> tuple:
        return tuple(crop_losses(lambda q: decode_native(self.vae, q), z, ref,
                                 self.lpips).values())

    def terms(self, x0: torch.Tensor, hq: torch.Tensor, box, alpha_l2: float,
              alpha_lpips: float) -> list:
        """The losses of the crop ``box`` as weighted terms: ``loss_pixel_l2`` and, with an
        LPIPS network, ``loss_pixel_lpips``."""
        values = self.run(*crops(x0, hq, box))
        weights = {"loss_pixel_l2": alpha_l2, "loss_pixel_lpips": alpha_lpips}
        return [(name, weights[name], v) for name, v in zip(weights, values)]


def weighted_sum(terms) -> Optional[torch.Tensor]:
    """``sum(weight * value)`` over the ``(name, weight, value)`` terms with a weight above 0, in
    their order."""
    total = None
    for _, weight, value in terms:
        if weight > 0:
            total = value * weight if total is None else total + value * weight
    return total


def draw_reg_timestep(timeline: FlowTimeline, generator: torch.Generator, dtype) -> float:
    """A grid timestep uniform over the grid, redrawn while (in ``dtype``, as the DiT sees it)
    it lies above 980 or below 20. Returns the value as the DiT sees it."""
    while True:
        i = int(torch.randint(0, timeline.num_steps, (1,), generator=generator))
        t = float(timeline.timesteps[i].to(dtype))
        if REG_T_MIN <= t <= REG_T_MAX:
            return t


def regulariser_loss(x0_base: torch.Tensor, x0_fix: torch.Tensor, x0_upd: torch.Tensor
                     ) -> torch.Tensor:
    """Score-distillation regulariser, in float32: per sample ``W = mean|x0_base - x0_fix|``,
    ``g = (x0_upd - x0_fix) / W``, ``loss = mean((x0_base - sg(x0_base - g))^2)``: its value is
    ``mean(g^2)`` and its gradient with respect to ``x0_base`` is ``2 g / N``."""
    x0 = x0_base.float()
    dims = tuple(range(1, x0.dim()))
    w = (x0.detach() - x0_fix.float()).abs().mean(dim=dims, keepdim=True)
    g = (x0_upd.float() - x0_fix.float()) / w
    return torch.mean((x0 - (x0 - g).detach()) ** 2)


def regulariser(dit_fix, dit_update, x0: torch.Tensor, context: torch.Tensor,
                negative_context: Optional[torch.Tensor], t_value: float, noise: torch.Tensor,
                timeline: FlowTimeline, cfg_scale: float) -> torch.Tensor:
    """The regulariser of the base prediction ``x0``: noised to ``t_value`` (``noise``), denoised
    by the frozen DiT (with classifier-free guidance) and by ``dit_update``, without gradient;
    then :func:`regulariser_loss`."""
    t = timeline.timestep(t_value, dtype=x0.dtype, device=x0.device)
    s = timeline.sigma(t)
    with torch.no_grad():
        x_t = add_noise(x0.detach(), noise.to(x0.device, x0.dtype), s)
        x0_upd = x_t - s * dit_forward(dit_update, x_t, t, context)[0]
        v_fix = guided(lambda ctx: dit_forward(dit_fix, x_t, t, ctx)[0], cfg_scale, context,
                       negative_context)
        x0_fix = x_t - s * v_fix
    return regulariser_loss(x0, x0_fix, x0_upd)


def flow_matching_loss(v_pred: torch.Tensor, noise: torch.Tensor, x0: torch.Tensor,
                       weight: float) -> torch.Tensor:
    """Diffusion loss of the regulariser DiT: ``mse(v, noise - x0) * w(t)`` in float32."""
    return torch.mean((v_pred.float() - (noise.float() - x0.float())) ** 2) * weight


def add_noise(x0: torch.Tensor, noise: torch.Tensor, sigma: float) -> torch.Tensor:
    """``x_t = (1 - sigma) x0 + sigma n``."""
    return (1 - sigma) * x0 + sigma * noise


def zero_loss(params) -> torch.Tensor:
    """A loss of value 0 that reaches every parameter of ``params``: a process whose update is
    skipped, or whose sample cannot have a loss, still takes part in the data-parallel gradient
    exchange."""
    return sum(p.sum() * 0.0 for p in params)
