#!/usr/bin/env bash
# Launches a trainer with accelerate for train_base.sh / train_draft.sh, which source this file
# with their own arguments after setting: script, trainer, help_lines and the args array.
# The first argument picks the case (single, the default, or multi; help); the rest is appended.
case_name=single
if [[ $# -gt 0 && ( "$1" != --* || "$1" == --help ) ]]; then
  case_name="$1"
  shift
fi
cd "$(dirname "${BASH_SOURCE[0]}")/.."

launcher() {
  if ! command -v accelerate >/dev/null 2>&1; then
    echo "${script}: 'accelerate' not found on PATH (activate the environment first:" \
         "source .venv/bin/activate)" >&2
    exit 2
  fi
}

case "$case_name" in
  single)
    launcher
    exec accelerate launch --config_file config/accelerate_config_single.yaml \
      "${trainer}" "${args[@]}" "$@"
    ;;
  multi)
    missing=()
    for v in RANK MASTER_ADDR MASTER_PORT; do
      if [[ -z "${!v:-}" ]]; then
        missing+=("$v")
      fi
    done
    if [[ ${#missing[@]} -gt 0 ]]; then
      echo "${script} multi: ${missing[*]} not set; the multi-node launch needs RANK (this" \
           "machine's rank, 0 on the main one), MASTER_ADDR (the main machine's address) and" \
           "MASTER_PORT (a free port on it)" >&2
      exit 2
    fi
    launcher
    exec accelerate launch --config_file config/accelerate_config_multi.yaml \
      --machine_rank "${RANK}" --main_process_ip "${MASTER_ADDR}" \
      --main_process_port "${MASTER_PORT}" \
      "${trainer}" "${args[@]}" "$@"
    ;;
  -h|--help|help)
    sed -n "2,${help_lines}p" "${script}"
    ;;
  *)
    echo "${script}: unknown case '$case_name' (use 'single' or 'multi')" >&2
    exit 2
    ;;
esac
