"""``benchmarks/training/trainers.py --trainers draft`` under the name its issue gives: seconds
per batch, samples/s and frames/s per GPU, peak memory, first losses and the profile of one
step of ``train_draft.py`` for each ``--gradient_checkpointing`` run and for the release's
structure; the other options as trainers.py takes them:

    python benchmarks/bench_train_draft.py --light --draft_runs "auto+compile:10,auto:10,full:5,release:5"
"""
from named import run_as

if __name__ == "__main__":
    run_as("training/trainers.py", "--trainers", "draft")
