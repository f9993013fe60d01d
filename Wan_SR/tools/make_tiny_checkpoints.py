"""Command line of the tiny-checkpoint factory (the work, and the files it writes:
:mod:`Wan_SR.testing.checkpoints`).

python -m Wan_SR.tools.make_tiny_checkpoints --out DIR [--size tiny|real] [--no_ram]
"""
from __future__ import annotations

import argparse
import sys

from Wan_SR.testing import checkpoints
from Wan_SR.testing.checkpoints import make_checkpoints


def main(argv=None):
    ap = argparse.ArgumentParser(description=checkpoints.__doc__,
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
