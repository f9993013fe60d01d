"""Benchmarks of PS-SR (questions, commands and result files: benchmarks/README.md)."""
