"""Step 1 with windows in latent space (opt-in: ``--window_space latent``; docs/method.md,
"Latent windows"). The video loop is ``Wan_SR.runs.step1.sources.LatentWindows``.

Each clip is encoded ONCE by the causal VAE, the DiT (base step + the needed draft steps) runs
on overlapping latent windows x latent tiles, the x0 latents of each branch are blended into one
latent volume, and each needed branch is decoded ONCE. Every frame is therefore encoded once and
decoded once per branch, whatever the window overlaps (the published pixel-window mode of docs/method.md §6,
``Wan_SR.runs.step1.sources.PixelWindows``, encodes and decodes a frame once per window x tile
it falls in).

1. Streamed encode: the whole clip, padded to 4n+1 frames (last frame repeated) and H, W to
   multiples of 16 (edge replication, :func:`pipeline.pad_frames`), is fed to the VAE encoder chunk
   by chunk (:meth:`PSSRPipeline.encode_streamed`), so the full-resolution video is never in
   memory. Equals ``pipe.encode(whole padded clip)`` to float tolerance.
2. Latent windows: temporal window ``(window_t - 1)//4 + 1`` latents with overlap ``overlap_t//4``;
   spatial tiles of ``2*ceil(window_h/16)`` x ``2*ceil(window_w/16)`` latents (the latent size of a
   pixel-mode tile after its /16 padding; even, as the DiT's 2x2 patch needs) with overlap
   ``overlap_h//8`` x ``overlap_w//8``; starts from :func:`windows.window_starts` /
   :func:`windows.tile_boxes` on the latent sizes.
3. Blend: each branch's x0 tiles are accumulated as ``sum(w * x0) / sum(w)`` into a latent volume
   (16 x T/4 x H/8 x W/8) with the separable weight ``ramp_1d(time) x tile_weight(h, w)``.
4. Streamed decode: one latent frame at a time, like ``VideoVAE_.decode`` (1 frame for the first
   latent, 4 after), each chunk mapped to [0, 1], cropped to the clip and written at once. With
   ``final``, base and the last draft branch are decoded in lockstep so the step-2 fusion runs
   per chunk; other branches are decoded one after the other
   (:meth:`PSSRPipeline.decode_streamed`). Equals ``pipe.decode(volume)``.

Documented differences from the published pixel-window mode:
- The causal VAE sees the whole clip: only the clip's first latent encodes a single frame; a
  temporal window after the first starts on a latent that summarises 4 frames with causal context
  from everything before it (pixel mode re-encodes every window, so every window starts with a
  single-frame latent and forgets what came before), and tiles see their real neighbours through
  the VAE's receptive field instead of replicated tile edges.
- Blending happens on the x0 latents, not on decoded pixels, and along time it uses the same ramp
  weights as in space (``ramp_1d``, ``sum(w x0)/sum(w)``) instead of the pixel mode's linear
  cross-fade of decoded frames.
- Windows and overlaps are counted in latents: temporal boundaries fall on 4-frame latent steps,
  a window after the first covers 4 x (its latents) frames (window_t 33 -> 9 latents = frames
  0-32 for the first window, 36 frames for the others), and overlaps are rounded down to whole
  latents (``overlap_t//4``, ``overlap//8``).
- Padding (4n+1 frames, /16 sizes) is applied once to the whole clip, not to every tile.
- Memory: the latent volumes of the decoded branches stay in memory (small), and the decoder's
  full-resolution feature cache is held per branch being decoded (two with ``final``).
With one window and one tile covering the clip, both modes compute the same thing:
``decode(sample_latents(encode(padded clip)))``, cropped.
"""
from __future__ import annotations

from typing import Sequence

import torch

from Wan_SR.core.options import WindowOptions
from Wan_SR.core.windows import ramp_1d, tile_boxes, tile_weight, window_starts


def latent_windows(z_shape: Sequence[int], windows: WindowOptions):
    """Temporal starts, window length, overlap and spatial (top, left, h, w) boxes in latents,
    with the ramp overlaps: ``(starts, lt, lo, boxes, ov_h, ov_w)``."""
    Tl, Hl, Wl = z_shape[-3:]
    lt = min((windows.window_t - 1) // 4 + 1, Tl)
    lo = windows.overlap_t // 4
    th, tw = 2 * -(-windows.window_h // 16), 2 * -(-windows.window_w // 16)
    ov_h, ov_w = windows.overlap_h // 8, windows.overlap_w // 8
    return (window_starts(Tl, lt, lo), lt, lo, tile_boxes(Hl, Wl, th, tw, ov_h, ov_w), ov_h, ov_w)


@torch.no_grad()
def sample_windows(pipe, z_l: torch.Tensor, branches: Sequence[str], windows: WindowOptions,
                   on_tile=None) -> dict:
    """Base + draft steps on every latent window x tile of ``z_l`` and blended x0 latents:
    {branch: (1,16,T',h,w)} for ``branches``. One window and one tile give the DiT's own x0."""
    names = pipe.branch_names()
    idx = {b: names.index(b) for b in branches}
    need = max(idx.values())
    starts, lt, lo, boxes, ov_h, ov_w = latent_windows(z_l.shape, windows)
    if len(starts) == 1 and len(boxes) == 1:
        x0s = pipe.sample_latents(z_l, num_draft_steps=need)
        if on_tile:
            on_tile()
        return {b: x0s[i] for b, i in idx.items()}
    acc = {b: torch.zeros(z_l.shape, device=z_l.device, dtype=torch.float32) for b in branches}
    wsum = torch.zeros(z_l.shape[2:], device=z_l.device, dtype=torch.float32)
    wt = ramp_1d(lt, lo, device=z_l.device)
    for s in starts:
        for top, left, th, tw in boxes:
            sl = (slice(None), slice(None), slice(s, s + lt), slice(top, top + th),
                  slice(left, left + tw))
            x0s = pipe.sample_latents(z_l[sl].contiguous(), num_draft_steps=need)
            w = wt.view(-1, 1, 1) * tile_weight(th, tw, ov_h, ov_w, device=z_l.device)
            for b, i in idx.items():
                acc[b][sl] += x0s[i].float() * w
            wsum[sl[2:]] += w
            if on_tile:
                on_tile()
    return {b: (acc[b] / wsum).to(pipe.dtype) for b in branches}
