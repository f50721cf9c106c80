#!/usr/bin/env bash
# The evidence runs of issue 14 (see README.md here): starts each cell, or continues it with --resume from its
# checkpoint, or skips it when final.json says it finished. One thread per run, niced, in the background.
#   bash results/evidence/run.sh dmc_k1m1_s1 dmc_pixels_s1      # named cells; no argument lists them
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=results/evidence
DMC="--env-id cartpole-swingup --total-timesteps 100000 --batch-size 128 --eval-frequency 10000 --eval-episodes 10 --checkpoint-interval 5000 --no-cuda"
declare -A CELL=(
  [dmc_k2m2_s1]="drq_sac.py --exp-name drq_sac_k2m2 --k 2 --m 2 --seed 1 $DMC"
  [dmc_k1m1_s1]="drq_sac.py --exp-name drq_sac_k1m1 --k 1 --m 1 --seed 1 $DMC"
  [dmc_k1m1_s2]="drq_sac.py --exp-name drq_sac_k1m1 --k 1 --m 1 --seed 2 $DMC"
  [dmc_pixels_s1]="sac_pixels.py --seed 1 $DMC"
  [dmc_pixels_s2]="sac_pixels.py --seed 2 $DMC"
  [dmc_state_s1]="sac_state.py --seed 1 $DMC"
)
if [ $# -eq 0 ]; then for c in "${!CELL[@]}"; do echo "$c: python ${CELL[$c]}"; done; exit 0; fi
for c in "$@"; do
  cmd=(${CELL[$c]})
  exp=$(echo "${CELL[$c]}" | sed -n 's/.*--exp-name \([^ ]*\).*/\1/p'); exp=${exp:-${cmd[0]%.py}}
  seed=$(echo "${CELL[$c]}" | sed -n 's/.*--seed \([0-9]*\).*/\1/p')
  dir=$(ls -d $OUT/*__${exp}__${seed}__* 2>/dev/null | head -1 || true)
  if [ -n "$dir" ] && [ -f "$dir/final.json" ]; then echo "$c: finished ($dir)"; continue; fi
  extra=(--runs-dir $OUT)
  if [ -n "$dir" ] && [ -f "$dir/checkpoint.pt" ]; then extra+=(--resume "$dir"); fi
  echo "$c: python ${cmd[*]} ${extra[*]}"
  OMP_NUM_THREADS=1 LP_NUM_THREADS=1 nohup nice -n 10 .venv/bin/python "${cmd[@]}" "${extra[@]}" >> "$OUT/$c.log" 2>&1 &
done
