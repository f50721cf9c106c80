#!/usr/bin/env bash
# The evidence runs of issue 14 (see README.md here): starts each cell, or continues it with --resume from its
# checkpoint, or skips it when final.json says it finished. One thread per run, niced, in the background.
#   bash results/evidence/run.sh dmc_k1m1_s1 dmc_pixels_s1      # named cells; no argument lists them
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=results/evidence
DMC="--env-id cartpole-swingup --total-timesteps 100000 --batch-size 128 --eval-frequency 10000 --eval-episodes 10 --checkpoint-interval 5000 --no-cuda"
# Atari: 100k agent steps, then the recipe's final evaluation. --buffer-size 130000 holds every row of a 100k-step
# run (the recipe's 1M would allocate 7.1 GB of frames that are never written), so sampling is unchanged.
ATARI="--seed 1 --checkpoint-interval 5000 --buffer-size 130000 --no-cuda"
# cell -> "run-directory prefix|command"
declare -A CELL=(
  [dmc_k2m2_s1]="cartpole-swingup__drq_sac_k2m2__1__|drq_sac.py --exp-name drq_sac_k2m2 --k 2 --m 2 --seed 1 $DMC"
  [dmc_k2m2_s2]="cartpole-swingup__drq_sac_k2m2__2__|drq_sac.py --exp-name drq_sac_k2m2 --k 2 --m 2 --seed 2 $DMC"
  [dmc_k1m1_s1]="cartpole-swingup__drq_sac_k1m1__1__|drq_sac.py --exp-name drq_sac_k1m1 --k 1 --m 1 --seed 1 $DMC"
  [dmc_k1m1_s2]="cartpole-swingup__drq_sac_k1m1__2__|drq_sac.py --exp-name drq_sac_k1m1 --k 1 --m 1 --seed 2 $DMC"
  [dmc_pixels_s1]="cartpole-swingup__sac_pixels__1__|sac_pixels.py --seed 1 $DMC"
  [dmc_pixels_s2]="cartpole-swingup__sac_pixels__2__|sac_pixels.py --seed 2 $DMC"
  [dmc_state_s1]="cartpole-swingup__sac_state__1__|sac_state.py --seed 1 $DMC"
  [atari_drq_eps_krull]="KrullNoFrameskip-v4__drq_dqn__1__|drq_dqn.py drq-eps --env-id Krull $ATARI"
  [atari_drq_eps_boxing]="BoxingNoFrameskip-v4__drq_dqn__1__|drq_dqn.py drq-eps --env-id Boxing $ATARI"
  [atari_nddqn_krull]="KrullNoFrameskip-v4__nddqn_atari__1__|nddqn_atari.py efficient-dqn --env-id Krull $ATARI"
  [atari_nddqn_boxing]="BoxingNoFrameskip-v4__nddqn_atari__1__|nddqn_atari.py efficient-dqn --env-id Boxing $ATARI"
)
if [ $# -eq 0 ]; then for c in $(echo "${!CELL[@]}" | tr ' ' '\n' | sort); do echo "$c: python ${CELL[$c]#*|}"; done; exit 0; fi
for c in "$@"; do
  prefix=${CELL[$c]%%|*}; cmd=(${CELL[$c]#*|})
  dir=$(ls -d $OUT/${prefix}* 2>/dev/null | head -1 || true)
  if [ -n "$dir" ] && [ -f "$dir/final.json" ]; then echo "$c: finished ($dir)"; continue; fi
  extra=(--runs-dir $OUT)
  if [ -n "$dir" ] && [ -f "$dir/checkpoint.pt" ]; then extra=(--resume "$dir"); fi
  echo "$c: python ${cmd[*]} ${extra[*]}"
  OMP_NUM_THREADS=1 LP_NUM_THREADS=1 nohup nice -n 10 .venv/bin/python "${cmd[@]}" "${extra[@]}" >> "$OUT/$c.log" 2>&1 &
done
