#!/usr/bin/env python
"""PS-SR draft-model training. See `python train_draft.py --help` and train_draft.sh."""
import sys

from Wan_SR.cli.train_draft import main

if __name__ == "__main__":
    sys.exit(main())
