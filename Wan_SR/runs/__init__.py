"""Loops over folders and videos (the only package that knows about files, name pairing, --skip_existing, run settings and progress bars)."""
