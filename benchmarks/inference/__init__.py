"""Step 1: one window in a process, the low-memory mode, the fusion, bf16, the whole command."""
