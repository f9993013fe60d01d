#!/usr/bin/env bash
# Do two versions of the trainers run at the same speed? Both command lines (train_base.py,
# train_draft.py) at the real Wan2.1-1.3B sizes with random weights, this tree and an older one,
# on one GPU in one run; seconds per step from the trainers' DEBUG log. Then one base run with
# --gradient_accumulation_steps 2 (seconds per update of two samples).
#
#   git archive <older commit> Wan_SR benchmarks train_base.py train_draft.py config | tar -x -C OLD
#   bash benchmarks/training/ab_cli.sh OLD        # logs into $OUT (default /tmp/ab_cli)
#
# Needs diffsynth (its light import, benchmarks/light_run.py) and PyAV. Result of 2026-12-02:
# benchmarks/results/training/trainers_ab_h200.json.
set -u
OLD=$(cd "$1" && pwd)
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${OUT:-/tmp/ab_cli}
mkdir -p "$OUT"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export PSSR_CACHE_DIR=/tmp/ab_cli_cache PYTHONUNBUFFERED=1
cd "$ROOT"
python benchmarks/light_run.py -m Wan_SR.tools.make_tiny_checkpoints --out /tmp/ab_cli_real \
  --size real --no_ram > "$OUT/factory.log" 2>&1 || { tail -20 "$OUT/factory.log"; exit 1; }
python -c "from Wan_SR.testing.lpips import write_random_lpips_weights as w; w('/tmp/ab_cli_lpips')"
printf 'video,prompt\n1.mp4,\n2.mp4,\n4.mp4,\n' > /tmp/ab_cli_meta.csv  # the default prompt
COMMON="--dataset_base_path $ROOT/videos_for_test/input --dataset_metadata_path /tmp/ab_cli_meta.csv
  --wan_model_dir /tmp/ab_cli_real/dependent_models/Wan2.1-T2V-1.3B --lpips_weights /tmp/ab_cli_lpips
  --report_to none --save_steps 1000 --log_level debug --no_progress --dataloader_num_workers 2"
BASE="--load_model_base_from /tmp/ab_cli_real/checkpoints/pretrained_models/base.safetensors"

run() {  # name, tree, script, options...
  local name=$1 tree=$2 script=$3
  shift 3
  # shellcheck disable=SC2086
  (cd "$tree" && timeout 300 python benchmarks/light_run.py "$script" $COMMON \
     --output_path "/tmp/ab_cli_$name" "$@") > "$OUT/$name.log" 2>&1
  echo "$name rc=$? $(grep -o 'step [0-9]*: [0-9.]* s' "$OUT/$name.log" | tr '\n' ' ')"
}
run new_base "$ROOT" train_base.py --max_train_steps 4
run old_base "$OLD" train_base.py --max_train_steps 4
run new_draft "$ROOT" train_draft.py --max_train_steps 3 $BASE
run old_draft "$OLD" train_draft.py --max_train_steps 3 $BASE
run new_base_accum2 "$ROOT" train_base.py --max_train_steps 2 --gradient_accumulation_steps 2
