"""``benchmarks/inference/memory.py`` under the name its issue gives: GPU memory budgets of step 1
(``python benchmarks/bench_memory.py --light --out benchmarks/results/memory_h200.json``)."""
from named import run_as

if __name__ == "__main__":
    run_as("inference/memory.py")
