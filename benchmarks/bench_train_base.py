"""``benchmarks/training/trainers.py --trainers base`` under the name its issue gives: seconds
per step, samples/s and frames/s per GPU, peak memory, first losses and the profile of one
step of ``train_base.py`` for each ``--gradient_checkpointing`` run and for the release's
structure; the other options as trainers.py takes them:

    python benchmarks/bench_train_base.py --light --base_runs "auto+compile:10,auto:10,full:5,auto@75:5,release:5"
"""
from named import run_as

if __name__ == "__main__":
    run_as("training/trainers.py", "--trainers", "base")
