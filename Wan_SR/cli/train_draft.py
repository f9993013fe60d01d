"""train_draft.py: train the PS-SR draft model (the DiT blocks chosen by --k_select, each fed the
frozen base's hidden state through an fc layer) from a trained base (docs/method.md §9, "Draft
training"). Run it with `accelerate launch` (see train_draft.sh); plain `python train_draft.py`
runs one process.

Writes into --output_path: latest_draft.safetensors (what inference_step_1.py --lora_draft_path
loads; it records k_select, the kept blocks and the training condition, so inference needs no
--k_select), state/step-XXXXXXX/ (for --resume_from_checkpoint latest), losses.jsonl and the
tracker logs. Every option and file is checked before a model loads."""
from __future__ import annotations

import sys

from .training import run, training_parser


def build_parser():
    return training_parser("draft", __doc__)


def main(argv=None) -> int:
    return run(build_parser(), argv, "draft")


if __name__ == "__main__":
    sys.exit(main())
