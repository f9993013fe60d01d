#!/usr/bin/env python
"""PS-SR web app: restore, tune the fusion live, compare. See `python app.py --help`."""
import sys

from Wan_SR.cli.app import main

if __name__ == "__main__":
    sys.exit(main())
