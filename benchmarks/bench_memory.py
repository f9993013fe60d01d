"""``benchmarks/inference/memory.py`` under the name its issue gives: GPU memory budgets of step 1
(``python benchmarks/bench_memory.py --light --out benchmarks/results/memory_h200.json``)."""
import runpy
import sys
from pathlib import Path

if __name__ == "__main__":
    sys.argv[0] = str(Path(__file__).resolve().parent / "inference" / "memory.py")
    runpy.run_path(sys.argv[0], run_name="__main__")
