"""train_base.py: train the PS-SR base model (LoRA + widened patch embedding + head) with the
latent, pixel and regulariser losses (docs/method.md §9). Run it with `accelerate launch`
(see train_base.sh) on one or several GPUs; plain `python train_base.py` runs one process.

Writes into --output_path: latest_base.safetensors (what inference_step_1.py --lora_base_path
loads), latest_reg.safetensors, latest_discriminator.safetensors (with --alpha_adv/--alpha_perc),
state/step-XXXXXXX/ (everything --resume_from_checkpoint latest needs), losses.jsonl and the
tracker logs. Every option and file is checked before a model loads."""
from __future__ import annotations

import sys

from .training import run, training_parser


def build_parser():
    return training_parser("base", __doc__)


def main(argv=None) -> int:
    return run(build_parser(), argv, "base")


if __name__ == "__main__":
    sys.exit(main())
