"""Write random-weight checkpoints in exactly the official file layouts (docs/method.md §8).

    python -m Wan_SR.tools.make_tiny_checkpoints --out DIR [--size tiny|real] [--no_ram]

writes::

    DIR/dependent_models/Wan2.1-T2V-1.3B/diffusion_pytorch_model.safetensors   (original Wan keys)
    DIR/dependent_models/Wan2.1-T2V-1.3B/Wan2.1_VAE.pth
    DIR/dependent_models/Wan2.1-T2V-1.3B/models_t5_umt5-xxl-enc-bf16.pth
    DIR/dependent_models/Wan2.1-T2V-1.3B/google/umt5-xxl/                    (a T5 tokenizer)
    DIR/dependent_models/ram_swin_large_14m.pth                                (RAM tagger, {"model": sd})
    DIR/dependent_models/DAPE.pth                                              (DAPE LoRA pairs)
    DIR/checkpoints/pretrained_models/base.safetensors                         (LoRA + full tensors)
    DIR/checkpoints/pretrained_models/draft.safetensors                        (pruned draft)

The files go through the same public loaders as the real ones. ``--size real`` writes the real
Wan2.1-1.3B shapes (bf16) for GPU benchmarks; its 11 GB text encoder is skipped unless
``--text_encoder`` is given, and a random prompt embedding is put in the prompt cache instead.
The RAM tagger files (real: Swin-L shapes, fp32, about 0.9 GB) are skipped with ``--no_ram``.
"""
from __future__ import annotations

import argparse
import sys

from Wan_SR.testing.checkpoints import make_checkpoints


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output root (gets dependent_models/ and checkpoints/)")
    ap.add_argument("--size", choices=["tiny", "real"], default="tiny",
                    help="tiny (tests, seconds on CPU) or real Wan2.1-1.3B shapes (GPU benchmarks)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--k_select", type=float, default=1.5, help="block selection of the draft")
    ap.add_argument("--text_encoder", action="store_true",
                    help="with --size real, also write the 11 GB random umT5 encoder")
    ap.add_argument("--ram", dest="ram", action="store_true", default=True,
                    help="write the RAM tagger and DAPE files (default)")
    ap.add_argument("--no_ram", dest="ram", action="store_false",
                    help="skip the RAM tagger and DAPE files")
    a = ap.parse_args(argv)
    make_checkpoints(a.out, a.size, a.seed, text_encoder=True if a.text_encoder else None,
                     k_select=a.k_select, ram=a.ram)


if __name__ == "__main__":
    sys.exit(main())
