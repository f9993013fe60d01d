"""Latent discriminator and the adversarial losses of base training (docs/method.md, "Training").

The network follows the release's ``Wan_SR/models/discriminator_wan.py``: torchvision's VGG16
layout without pretrained weights, its first convolution taking the 16 Wan-VAE latent channels,
the 13-convolution / 5-max-pool feature stack, ``AdaptiveAvgPool2d(7)`` and a new head
``Linear(512*7*7 -> 1024) -> ReLU -> Linear(1024 -> 1)``. With the default arguments the state
dict has exactly the release's keys and shapes::

    feature_extractor.{0,2,5,7,10,12,14,17,19,21,24,26,28}.{weight,bias}
    classifier.{0,2}.{weight,bias}

so a release ``*_discriminator.safetensors`` loads with ``strict=True``. :func:`load_discriminator`
(``--load_model_discriminator_from``) reads such a file, ours or the release's, and builds the
network at the widths its tensors have (:func:`discriminator_shape`).

Latents ``(B, 16, T, h, w)`` are scored frame by frame (the frames are stacked into the batch)
and the per-frame scores are averaged over ``T`` into ``(B, 1)``. ``return_features=True`` also
returns the feature-stack output (after the last max-pool) of every frame, ``(B*T, 512, h', w')``.

Small latents: the release's five 2x2 max-pools need ``h, w >= 32``; below that torch raises
("output size is too small"). Here a max-pool is applied with a window of 1 along any spatial
dimension that has already shrunk to 1, so every size ``>= 1`` works (e.g. 6x6 -> 3x3 -> 1x1 ->
1x1 ...). For ``h, w >= 32`` this is exactly the release's computation (floor mode, no padding);
only sizes the release cannot run at all behave differently.

Losses (pure functions of scores / features; docs/method.md §9, "Base training"):

* :func:`generator_adv_loss` ``= -mean(fake_scores)``
* :func:`feature_matching_loss` ``= mean|fake_feat - stopgrad(real_feat)|``
* :func:`discriminator_hinge_loss` ``= (mean relu(1 - real) + mean relu(1 + fake)) / 2``
"""
from __future__ import annotations

import logging
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from Wan_SR.models.lora import CheckpointMismatchError
from Wan_SR.models.wan import load_safetensors, require_file

from .losses import zero_loss

logger = logging.getLogger(__name__)

# torchvision's VGG16 ("D") configuration: conv widths per stage, "M" = 2x2 max-pool.
VGG16_STAGE_CONVS = (2, 2, 3, 3, 3)
VGG16_CHANNELS = (64, 128, 256, 512, 512)
CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)  # positions in the feature stack


def _vgg_feature_stack(in_channels: int, channels: Sequence[int]) -> nn.Sequential:
    """Conv3x3+ReLU blocks and 2x2 max-pools laid out like ``torchvision.models.vgg16().features``
    (same module indices), first conv taking ``in_channels``."""
    layers: list[nn.Module] = []
    c_in = in_channels
    for n_conv, width in zip(VGG16_STAGE_CONVS, channels, strict=True):
        for _ in range(n_conv):
            layers += [nn.Conv2d(c_in, width, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            c_in = width
        layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
    return nn.Sequential(*layers)


class LatentDiscriminator(nn.Module):
    """VGG16-style per-frame discriminator on Wan latents (release layout by default).

    Args:
        in_channels: latent channels (16 for Wan2.1's VAE).
        channels: the five stage widths (default VGG16's ``(64, 128, 256, 512, 512)``); smaller
            widths only for tests, the module indices and key names do not change.
        width_scale: alternative to ``channels``: VGG16's widths times this factor (rounded, >= 1).
        hidden: width of the head's hidden layer (1024 in the release).
        pool_size: output side of the adaptive average pool (7 in the release).
    """

    def __init__(self, in_channels: int = 16, channels: Sequence[int] | None = None,
                 width_scale: float = 1.0, hidden: int = 1024, pool_size: int = 7):
        super().__init__()
        if channels is None:
            channels = tuple(max(1, int(round(c * width_scale))) for c in VGG16_CHANNELS)
        channels = tuple(int(c) for c in channels)
        if len(channels) != 5:
            raise ValueError(f"channels must hold 5 stage widths, got {channels}")
        self.in_channels = int(in_channels)
        self.channels = channels
        self.feature_extractor = _vgg_feature_stack(self.in_channels, channels)
        self.avgpool = nn.AdaptiveAvgPool2d((pool_size, pool_size))
        self.classifier = nn.Sequential(
            nn.Linear(channels[-1] * pool_size * pool_size, hidden),
            nn.ReLU(inplace=False),
            nn.Linear(hidden, 1),
        )
        self._init_like_release()

    def _init_like_release(self) -> None:
        """Initialise as the release ends up: torchvision's VGG init (Kaiming-normal fan_out, zero
        bias) on the convolutions it keeps; PyTorch's default init on the replaced first
        convolution and on the new head."""
        convs = [m for m in self.feature_extractor if isinstance(m, nn.Conv2d)]
        for conv in convs[1:]:
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(conv.bias)
        # convs[0] and the classifier keep nn.Conv2d / nn.Linear's own reset_parameters().

    def features(self, frames: torch.Tensor) -> torch.Tensor:
        """Feature stack on a batch of frames ``(N, C, h, w)``; max-pools never shrink a spatial
        dimension of size 1 (see the module docstring)."""
        x = frames
        for layer in self.feature_extractor:
            if isinstance(layer, nn.MaxPool2d):
                h, w = x.shape[-2:]
                if h >= 2 and w >= 2:
                    x = layer(x)
                elif h >= 2 or w >= 2:
                    k = (2 if h >= 2 else 1, 2 if w >= 2 else 1)
                    x = F.max_pool2d(x, kernel_size=k, stride=k)
                # both sides 1: the pool is the identity
            else:
                x = layer(x)
        return x

    def forward(self, x: torch.Tensor, return_features: bool = False):
        """``x``: latents ``(B, C, T, h, w)``. Returns scores ``(B, 1)`` (mean over frames of the
        per-frame scores), and with ``return_features`` also the per-frame feature maps
        ``(B*T, C_last, h', w')`` (frame-major within each sample, as in the release)."""
        if x.ndim != 5:
            raise ValueError(f"expected latents (B, C, T, h, w), got shape {tuple(x.shape)}")
        b, c, t, h, w = x.shape
        if c != self.in_channels:
            raise ValueError(f"expected {self.in_channels} latent channels, got {c}")
        if min(t, h, w) < 1:
            raise ValueError(f"empty latent clip: shape {tuple(x.shape)}")
        frames = x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
        feat = self.features(frames)
        pooled = torch.flatten(self.avgpool(feat), 1)
        score = self.classifier(pooled).view(b, t, 1).mean(dim=1)
        if return_features:
            return score, feat
        return score


STAGE_FIRST_CONVS = (0, 5, 10, 17, 24)  # the first convolution of each stage in the stack


def discriminator_shape(sd: dict) -> dict:
    """:class:`LatentDiscriminator`'s arguments (``in_channels``, ``channels``, ``hidden``,
    ``pool_size``) read from the tensors of a saved state dict."""
    try:
        first = sd["feature_extractor.0.weight"]
        channels = tuple(int(sd[f"feature_extractor.{i}.weight"].shape[0])
                         for i in STAGE_FIRST_CONVS)
        head = sd["classifier.0.weight"]
    except KeyError as e:
        raise CheckpointMismatchError(f"not a discriminator state dict: no tensor {e}") from None
    pooled = int(head.shape[1]) // channels[-1]
    pool_size = int(round(pooled ** 0.5))
    if pool_size * pool_size * channels[-1] != head.shape[1]:
        raise CheckpointMismatchError(f"classifier.0.weight {tuple(head.shape)} does not fit "
                                      f"{channels[-1]} channels pooled to a square")
    return dict(in_channels=int(first.shape[1]), channels=channels, hidden=int(head.shape[0]),
                pool_size=pool_size)


def load_discriminator(path, what: str = "discriminator warm start "
                                         "(--load_model_discriminator_from)"):
    """A :class:`LatentDiscriminator` with the weights of a ``*_discriminator.safetensors`` file
    (the release's or ours), at the widths the file has; every tensor must fit (strict)."""
    path = require_file(path, what, "an earlier training run (--output_path)")
    sd, _ = load_safetensors(path)
    try:
        disc = LatentDiscriminator(**discriminator_shape(sd))
    except CheckpointMismatchError as e:
        raise CheckpointMismatchError(f"{path}: {e}") from None
    own = disc.state_dict()
    missing = [k for k in own if k not in sd]
    bad = [k for k, v in sd.items() if k not in own or own[k].shape != v.shape]
    if missing or bad:
        raise CheckpointMismatchError(f"{path}: not a discriminator of one shape: missing "
                                      f"{missing[:3]}, unexpected or misshapen {bad[:3]}")
    disc.load_state_dict(sd, strict=True)
    logger.info("warm start: discriminator from %s (stage widths %s)", path, disc.channels)
    return disc


def generator_adv_loss(fake_scores: torch.Tensor) -> torch.Tensor:
    """Generator's adversarial loss: ``-mean(D(fake))``."""
    return -fake_scores.mean()


def feature_matching_loss(fake_feat: torch.Tensor, real_feat: torch.Tensor) -> torch.Tensor:
    """L1 between the discriminator features of fake and real; no gradient into the real side."""
    return (fake_feat - real_feat.detach()).abs().mean()


def discriminator_hinge_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """Hinge loss of the discriminator: ``(mean relu(1 - real) + mean relu(1 + fake)) / 2``.

    The caller passes scores of detached fakes, so only D receives gradients.
    """
    return (F.relu(1.0 - real_scores).mean() + F.relu(1.0 + fake_scores).mean()) / 2


def adversarial_terms(disc: LatentDiscriminator, x0: torch.Tensor, z_h: torch.Tensor,
                      alpha_adv: float, alpha_perc: float) -> list:
    """The base's adversarial terms with a weight above 0, as ``(name, weight, value)``:
    ``loss_adv`` (:func:`generator_adv_loss` of ``D(x0)``) and ``loss_perc``
    (:func:`feature_matching_loss` against the features of ``z_H``). ``disc`` is frozen while
    they are computed: gradients reach ``x0`` only."""
    disc.requires_grad_(False)
    try:
        fake_scores, fake_feat = disc(x0, return_features=True)
        terms = []
        if alpha_adv > 0:
            terms.append(("loss_adv", alpha_adv, generator_adv_loss(fake_scores.float())))
        if alpha_perc > 0:
            with torch.no_grad():
                _, real_feat = disc(z_h, return_features=True)
            terms.append(("loss_perc", alpha_perc,
                          feature_matching_loss(fake_feat.float(), real_feat.float())))
        return terms
    finally:
        disc.requires_grad_(True)


class DiscriminatorLoss(nn.Module):
    """The discriminator's update as a module (the one accelerate prepares, so data-parallel
    gradients are averaged): the hinge loss of real ``z_H`` against the (detached) base
    prediction. ``active=False`` (a sample that cannot have it: a single latent frame, while
    another sample of the step can) gives a zero loss that still reaches every parameter, so
    every process takes part in the same gradient exchange."""

    def __init__(self, disc: LatentDiscriminator):
        super().__init__()
        self.disc = disc

    def forward(self, z_h: torch.Tensor, x0: torch.Tensor, active: bool = True) -> torch.Tensor:
        if not active:
            return zero_loss(self.parameters())
        return discriminator_hinge_loss(self.disc(z_h).float(), self.disc(x0).float())
