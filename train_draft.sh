#!/usr/bin/env bash
# Draft-model training with the published settings, from the trained base (README,
# "Training"). Run train_base.sh first: this reads the base it wrote,
# ./experiments/train_base/latest_base.safetensors.
#
# Usage:
#   bash train_draft.sh [single] [extra train_draft.py options...]   one machine (default)
#   bash train_draft.sh multi    [extra train_draft.py options...]   several machines; needs RANK
#                                                                  (this machine's rank),
#                                                                  MASTER_ADDR and MASTER_PORT
# Examples:
#   bash train_draft.sh
#   bash train_draft.sh single --resume_from_checkpoint latest
#   RANK=0 MASTER_ADDR=10.0.0.1 MASTER_PORT=19500 bash train_draft.sh multi
# Options given after the case word are appended (a later option overrides an earlier one);
# with no case word, options alone mean 'single'. Relative paths are taken from the repository
# root: the script changes into its own folder first.
set -euo pipefail

args=(
  --dataset_base_path ./datasets/YouHQ
  --dataset_metadata_path ./metadata_YouHQ.csv
  --dataset_repeat 10
  --wan_model_dir ./dependent_models/Wan2.1-T2V-1.3B
  --learning_rate 5e-5
  --num_epochs 20
  --output_path ./experiments/train_draft
  --load_model_base_from ./experiments/train_base/latest_base.safetensors
  --k_select 1.5
  --draft_condition zeros
  --save_steps 200
  --num_frames 33
  --height 720
  --width 1280
  --alpha_pixel_l2 1.0
  --alpha_pixel_lpips 2.0
  --train_video_pixel True
  --save_latest True
  --lpips_weights ./dependent_models/lpips
)

script=train_draft.sh
trainer=train_draft.py
help_lines=17
source "$(dirname "${BASH_SOURCE[0]}")/scripts/launch_training.sh" "$@"
