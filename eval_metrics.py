#!/usr/bin/env python
"""PS-SR evaluation metrics. See `python eval_metrics.py --help`."""
import sys

from Wan_SR.cli.evaluate import build_parser, main  # noqa: F401 (build_parser: for tests and docs)

if __name__ == "__main__":
    sys.exit(main())
