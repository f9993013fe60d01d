"""The base step and the draft steps (docs/method.md §3, §4) as pure functions on latents.

Both take the models and tensors explicitly and keep no state, in the spirit of k-diffusion's
samplers::

    base = base_step(base_dit, z_l, context, timeline, t_base=699, t_next=599, record_blocks=ids)
    x0s, z = draft_steps(draft, base.z_next, z_l, context, base.features, timeline, [599, 499, 399])
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from ..models.dit import dit_forward
from .timeline import FlowTimeline


@dataclass
class BaseStepOutput:
    x0: torch.Tensor          # clean-latent estimate of the base model
    z_next: torch.Tensor      # Euler step from t_base to t_next (the draft's starting point)
    features: list            # hidden states entering the selected blocks
    v: torch.Tensor           # velocity prediction


def _guided(fn, cfg_scale: float, context, negative_context):
    """Velocity with classifier-free guidance only when ``cfg_scale != 1``."""
    v_pos, extra = fn(context)
    if cfg_scale == 1.0 or negative_context is None:
        return v_pos, extra
    v_neg, _ = fn(negative_context)
    return v_neg + cfg_scale * (v_pos - v_neg), extra


def guided(velocity, cfg_scale: float, context: torch.Tensor,
           negative_context: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``velocity(context)`` with classifier-free guidance, ``v_neg + cfg_scale (v_pos - v_neg)``,
    only when ``cfg_scale != 1`` and a negative context is given (the steps' own rule)."""
    return _guided(lambda ctx: (velocity(ctx), None), cfg_scale, context, negative_context)[0]


def draft_schedule(timesteps: Sequence[float]) -> list[tuple[float, float]]:
    """``(t, t_next)`` of each draft step, as :func:`draft_steps` takes them: the last step moves
    to t = 0."""
    return list(zip(timesteps, [*timesteps[1:], 0]))


def base_step(dit, z_l: torch.Tensor, context: torch.Tensor, timeline: FlowTimeline, *,
              t_base: float = 699, t_next: float = 599, record_blocks: Sequence[int] = (),
              cfg_scale: float = 1.0, negative_context: Optional[torch.Tensor] = None,
              gradient_checkpointing: bool = False) -> BaseStepOutput:
    """One base denoising step from ``z_l`` at ``t_base``: the DiT sees ``cat([z_l, z_l])``.

    ``x0 = z_l - sigma(t_base) v``; ``z_next = z_l - (sigma(t_base) - sigma(t_next)) v``.
    Features are those of the positive (conditional) pass.
    """
    dtype = z_l.dtype
    t = timeline.timestep(t_base, dtype=dtype, device=z_l.device)
    x_in = torch.cat([z_l, z_l], dim=1)

    def run(ctx):
        return dit_forward(dit, x_in, t, ctx, record_blocks=record_blocks,
                           gradient_checkpointing=gradient_checkpointing)

    v, feats = _guided(run, cfg_scale, context, negative_context)
    s = timeline.sigma(timeline.timestep(t_base, dtype=dtype))  # on the host: no wait for the GPU
    s_next = timeline.sigma(timeline.timestep(t_next, dtype=dtype))
    return BaseStepOutput(x0=z_l - s * v, z_next=z_l - (s - s_next) * v, features=feats, v=v)


def draft_step(draft, z: torch.Tensor, cond: torch.Tensor, context: torch.Tensor,
               features: Sequence[torch.Tensor], timeline: FlowTimeline, t: float, t_next: float,
               *, cfg_scale: float = 1.0, negative_context: Optional[torch.Tensor] = None,
               gradient_checkpointing: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """One draft step at ``t``: returns ``(x0, z_next)``; the draft sees ``cat([z, cond])``."""
    tt = timeline.timestep(t, dtype=z.dtype, device=z.device)
    x_in = torch.cat([z, cond], dim=1)

    def run(ctx):
        return dit_forward(draft, x_in, tt, ctx, fc_layers=draft.fc_layers, features=features,
                           gradient_checkpointing=gradient_checkpointing)

    v, _ = _guided(run, cfg_scale, context, negative_context)
    s = timeline.sigma(timeline.timestep(t, dtype=z.dtype))  # on the host: no wait for the GPU
    s_next = timeline.sigma(timeline.timestep(t_next, dtype=z.dtype))
    return z - s * v, z - (s - s_next) * v


def draft_steps(draft, z_next: torch.Tensor, z_l: torch.Tensor, context: torch.Tensor,
                features: Sequence[torch.Tensor], timeline: FlowTimeline,
                timesteps: Sequence[float] = (599, 499, 399), *, cfg_scale: float = 1.0,
                negative_context: Optional[torch.Tensor] = None
                ) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The draft steps of docs/method.md §4: returns the x0 of every step and the final latent.

    The last step moves to t = 0 (the grid's nearest point, sigma 0.00498).
    """
    z, x0s = z_next, []
    for k, t in enumerate(timesteps):
        t_next = timesteps[k + 1] if k + 1 < len(timesteps) else 0
        x0, z = draft_step(draft, z, z_l, context, features, timeline, t, t_next,
                           cfg_scale=cfg_scale, negative_context=negative_context)
        x0s.append(x0)
    return x0s, z
