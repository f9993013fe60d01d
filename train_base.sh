#!/usr/bin/env bash
# Base-model training with the published settings (README, "Training").
#
# Usage:
#   bash train_base.sh [single] [extra train_base.py options...]   one machine (default)
#   bash train_base.sh multi    [extra train_base.py options...]   several machines; needs RANK
#                                                                  (this machine's rank),
#                                                                  MASTER_ADDR and MASTER_PORT
# Examples:
#   bash train_base.sh
#   bash train_base.sh single --resume_from_checkpoint latest
#   RANK=0 MASTER_ADDR=10.0.0.1 MASTER_PORT=19500 bash train_base.sh multi
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
  --output_path ./experiments/train_base
  --lora_target_modules q,k,v,o,ffn.0,ffn.2
  --lora_rank 32
  --save_steps 200
  --num_frames 33
  --height 720
  --width 1280
  --start_adv_step 500
  --alpha_adv 0.0
  --alpha_perc 0.0
  --alpha_pixel_l2 1.0
  --alpha_pixel_lpips 2.0
  --cfg_scale 5.0
  --train_video_pixel True
  --save_latest True
  --lpips_weights ./dependent_models/lpips
)

script=train_base.sh
trainer=train_base.py
help_lines=15
source "$(dirname "${BASH_SOURCE[0]}")/scripts/launch_training.sh" "$@"
