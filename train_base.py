#!/usr/bin/env python
"""PS-SR base-model training. See `python train_base.py --help` and train_base.sh."""
import sys

from Wan_SR.cli.train_base import main

if __name__ == "__main__":
    sys.exit(main())
