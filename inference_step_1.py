#!/usr/bin/env python
"""PS-SR step 1: base step + draft steps. See `python inference_step_1.py --help`."""
import sys

from Wan_SR.cli.step1 import main

if __name__ == "__main__":
    sys.exit(main())
