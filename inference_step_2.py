#!/usr/bin/env python
"""PS-SR step 2: frequency-domain update. See `python inference_step_2.py --help`."""
import sys

from Wan_SR.cli.step2 import build_parser, main  # noqa: F401 (build_parser: for tests and docs)

if __name__ == "__main__":
    sys.exit(main())
