"""Step 1 with windows in latent space (opt-in: ``--window_space latent``).

Each clip is encoded ONCE by the causal VAE, the DiT (base step + the needed draft steps) runs
on overlapping latent windows x latent tiles, the x0 latents of each branch are blended into one
latent volume, and each needed branch is decoded ONCE. Every frame is therefore encoded once and
decoded once per branch, whatever the window overlaps (the published pixel-window mode of SPEC §6,
``restore.restore_video``, encodes and decodes a frame once per window x tile it falls in).

1. Streamed encode: the whole clip, padded to 4n+1 frames (last frame repeated) and H, W to
   multiples of 16 (edge replication, :func:`pipeline.pad_frames`), is fed to the VAE encoder the
   way diffsynth's ``VideoVAE_.encode`` does (frame 0 alone, then chunks of 4 frames, one feature
   cache), reading the frames chunk by chunk, so the full-resolution video is never in memory.
   Equals ``pipe.encode(whole padded clip)`` to float tolerance.
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
   per chunk; other branches are decoded one after the other. Equals ``pipe.decode(volume)``.

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

from typing import Iterator, Sequence

import torch

from ..data import video_io
from .pipeline import branch_names, pad_frames, padded_shape
from .restore import (FINAL, RestoreOptions, VideoJob, WindowOptions, close_writers,
                      plan_video, resize_frames, video_outputs, write_outputs)
from .windows import ramp_1d, tile_boxes, tile_weight, window_starts


# ------------------------------------------------------------------------------ VAE helpers

def _vae_dtype(pipe) -> torch.dtype:
    return next(pipe.vae.parameters()).dtype


def _memory_format(pipe, x: torch.Tensor) -> torch.Tensor:
    """The pipeline's VAE input layout (channels-last on GPU when enabled), else unchanged."""
    fmt = getattr(pipe, "_memory_format", None)
    return fmt(x) if fmt is not None else x


def _scale(vae, like: torch.Tensor):
    """(mean, 1/std) broadcastable over (B, C, T, H, W), as ``VideoVAE_.encode/decode`` use them."""
    scale, z_dim = vae.scale, vae.model.z_dim
    if isinstance(scale[0], torch.Tensor):
        mean, inv_std = (s.to(dtype=like.dtype, device=like.device) for s in scale)
        return mean.view(1, z_dim, 1, 1, 1), inv_std.view(1, z_dim, 1, 1, 1)
    scale = scale.to(dtype=like.dtype, device=like.device)
    return scale[0], scale[1]


def _new_cache(module) -> list:
    from diffsynth.models.wan_video_vae import count_conv3d

    return [None] * count_conv3d(module)


def padded_chunks(reader: video_io.FrameReader, job: VideoJob, device) -> Iterator[torch.Tensor]:
    """The padded clip in the VAE's chunk pattern: frame 0, then 4 frames at a time, each
    (n,3,Hp,Wp) in [0,1] on ``device``; frames past the clip repeat its last frame."""
    N = job.info.num_frames
    Tp, Hp, Wp = padded_shape(N, job.height, job.width)
    last = None
    a = 0
    while a < Tp:
        b = 1 if a == 0 else a + 4
        if a < N:
            real = video_io.frames_to_tensor(reader.get(a, min(b, N) - a), device)
            real = resize_frames(real, job)
            last = real[-1:]
        else:
            real = last
        yield pad_frames(real, b - a, Hp, Wp)
        a = b


@torch.no_grad()
def encode_streamed(pipe, chunks) -> torch.Tensor:
    """Encode a clip given as VAE chunks (frame 0, then 4 frames at a time; (n,3,H,W) in [0,1])
    with one causal feature cache, exactly like ``VideoVAE_.encode`` on the whole clip. Returns
    latents (1,16,T',H/8,W/8); counts as one ``pipe.encode`` call."""
    model, dtype = pipe.vae.model, _vae_dtype(pipe)
    cache, outs = _new_cache(model.encoder), []
    for chunk in chunks:
        x = (chunk.to(pipe.device, pipe.dtype) * 2 - 1).permute(1, 0, 2, 3).unsqueeze(0)
        x = _memory_format(pipe, x).to(dtype)
        outs.append(model.encoder(x, feat_cache=cache, feat_idx=[0]))
    del cache
    mu, _log_var = model.conv1(torch.cat(outs, 2)).chunk(2, dim=1)
    mean, inv_std = _scale(pipe.vae, mu)
    pipe.encode_calls += 1
    return ((mu - mean) * inv_std).contiguous()


class StreamDecoder:
    """Decodes a latent volume one latent frame at a time with its own causal cache, like
    ``VideoVAE_.decode``; :meth:`next` returns the next chunk as (n,3,H,W) float32 in [0,1]
    (n = 1 for the first latent, 4 after). Construction counts one ``pipe.decode`` call."""

    @torch.no_grad()
    def __init__(self, pipe, latents: torch.Tensor):
        model = pipe.vae.model
        z = _memory_format(pipe, latents.to(pipe.device, _vae_dtype(pipe)))
        mean, inv_std = _scale(pipe.vae, z)
        self.decoder = model.decoder
        self.x = model.conv2(z / inv_std + mean)
        self.cache = _new_cache(model.decoder)
        self.length, self.i = z.shape[2], 0
        pipe.decode_calls += 1

    @torch.no_grad()
    def next(self) -> torch.Tensor:
        if self.i >= self.length:
            raise RuntimeError("StreamDecoder: every latent frame is already decoded")
        y = self.decoder(self.x[:, :, self.i:self.i + 1], feat_cache=self.cache, feat_idx=[0])
        self.i += 1
        if self.i == self.length:
            self.cache = None
        return (y.clamp_(-1, 1)[0].permute(1, 0, 2, 3).float() + 1) / 2


def decode_streamed(pipe, volumes: dict, num_frames: int, height: int,
                    width: int) -> Iterator[dict]:
    """Decode the latent volumes {branch: (1,16,T',h,w)} in lockstep, yielding {branch: (n,3,H,W)}
    chunks in [0,1] cropped to ``num_frames`` x ``height`` x ``width``."""
    decs = {b: StreamDecoder(pipe, z) for b, z in volumes.items()}
    length = next(iter(decs.values())).length
    emitted = 0
    for _ in range(length):
        chunk = {b: d.next() for b, d in decs.items()}
        n = min(next(iter(chunk.values())).shape[0], num_frames - emitted)
        if n > 0:
            yield {b: c[:n, :, :height, :width] for b, c in chunk.items()}
            emitted += n


# ------------------------------------------------------------------------------ latent windows

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
    names = branch_names(len(pipe.config.timestep_draft_list))
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


# ------------------------------------------------------------------------------ runner

def _decode_groups(job: VideoJob) -> list[list[str]]:
    """Branches decoded together: base and the last draft in lockstep when 'final' is written
    (the fusion needs both per chunk), every other branch alone."""
    groups = []
    if FINAL in job.outputs:
        groups.append([job.names[0], job.names[-1]])
    groups += [[b] for b in job.decode if not any(b in g for g in groups)]
    return groups


def restore_video_latent(pipe, in_path, output_dir, opts: RestoreOptions, info=None,
                         progress: bool = True) -> dict:
    """``restore.restore_video`` with latent-space windows (same outputs, layout, skipping,
    audio, upscale, frame count and fps). Returns {output: path} of what was written."""
    from tqdm import tqdm

    job = plan_video(pipe, in_path, output_dir, opts, info)
    if job is None:
        return {}
    N = job.info.num_frames
    Tp, Hp, Wp = padded_shape(N, job.height, job.width)
    Tl = (Tp - 1) // 4 + 1
    starts, _, _, boxes, _, _ = latent_windows((Tl, Hp // 8, Wp // 8), opts.windows)
    groups = _decode_groups(job)
    total = Tl + len(starts) * len(boxes) + Tl * len(groups)
    reader = video_io.FrameReader(job.info.path, info=job.info, prefetch=4)
    bar = tqdm(total=total, desc=job.name, unit="step", dynamic_ncols=True, disable=not progress)
    with video_outputs(job, output_dir, opts, reader, bar) as writers, torch.no_grad():
        def chunks():
            for c in padded_chunks(reader, job, pipe.device):
                yield c
                bar.update(1)

        z_l = encode_streamed(pipe, chunks())
        reader.close()
        volumes = sample_windows(pipe, z_l, job.decode, opts.windows,
                                 on_tile=lambda: bar.update(1))
        del z_l
        for group in groups:
            for done in decode_streamed(pipe, {b: volumes.pop(b) for b in group}, N,
                                        job.height, job.width):
                write_outputs(writers, done, job, opts, pipe.device)
                bar.update(1)
        return close_writers(writers, job)
