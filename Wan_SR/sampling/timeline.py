"""Flow-matching timeline (docs/method.md §1): 1000 steps, shift 5, sigma 1 -> 0, extra one step."""
from __future__ import annotations

import torch


class FlowTimeline:
    """``sigmas[i] = 5 s_i / (1 + 4 s_i)``, ``s = linspace(1, 0, 1001)[:-1]``, ``t_i = 1000 sigma_i``.

    A timestep maps to the sigma of the grid point whose t_i is nearest. Timesteps are handled
    as one-element tensors in the pipeline's dtype, so bf16 rounding (699 -> 700) is kept, as in
    the published pipeline.
    """

    def __init__(self, num_steps: int = 1000, shift: float = 5.0, sigma_max: float = 1.0,
                 sigma_min: float = 0.0, num_train_timesteps: int = 1000):
        s = torch.linspace(sigma_max, sigma_min, num_steps + 1)[:-1]
        self.sigmas = shift * s / (1 + (shift - 1) * s)
        self.timesteps = self.sigmas * num_train_timesteps
        self.num_steps = num_steps

    def timestep(self, t: float, dtype=torch.float32, device="cpu") -> torch.Tensor:
        """The pipeline's timestep tensor (shape (1,)) for the value ``t``."""
        return torch.tensor([float(t)], dtype=dtype, device=device)

    def index(self, t) -> int:
        t = float(t.float().cpu().reshape(-1)[0]) if torch.is_tensor(t) else float(t)
        return int(torch.argmin((self.timesteps - t).abs()))

    def sigma(self, t) -> float:
        """Sigma for a timestep value or tensor (nearest grid point)."""
        return float(self.sigmas[self.index(t)])

    def training_weights(self) -> torch.Tensor:
        """DiffSynth FlowMatchScheduler(training=True) bell-shaped loss weight per grid point."""
        x = self.timesteps
        y = torch.exp(-2 * ((x - self.num_steps / 2) / self.num_steps) ** 2)
        y = y - y.min()
        return y * (self.num_steps / y.sum())
