#!/bin/bash
# Reproduce the shipped default checkpoint (v4s_agent/checkpoints/default) end to end on one machine:
# data from the env -> planner training (resumable, session after session) -> inverse-dynamics model ->
# packaging. The shipped run continued the 15-minute side-by-side winner (launch/experiments/compare/run.sh, x16);
# started from scratch, this gives the same model config and training settings.
#   bash launch/train_default.sh [WORKDIR]          # MAX_MINUTES (default 90) per call; call again to resume
set -euo pipefail
WORK=${1:-.}
DATA=$WORK/data
RUN=$WORK/runs/default
IDM=$WORK/runs/idm
OUT=${OUT:-v4s_agent/checkpoints/default}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

python -m v4s_agent.training.generate_data --split train --scenes 150 --out "$DATA/train" --workers 2 --seed 0
python -m v4s_agent.training.generate_data --split val_scenes --scenes 6 --out "$DATA/val_scenes" --workers 2

# --resume continues after a kill or at the next session; constant LR, 1 thread, bf16 autocast
python -m v4s_agent.training.train --config-path launch/train_default.yaml --output "$RUN" \
  --data "$DATA/train" --val-data "$DATA/val_scenes" --max-minutes "${MAX_MINUTES:-90}" --resume

if [ ! -d "$IDM/idm" ]; then  # the shipped IDM (98.5 % held-out accuracy) is reused when present
  python -m v4s_agent.training.train_idm --data "$DATA/train" --val-data "$DATA/val_scenes" --output "$IDM" \
    --max-steps 1500 --batch-size 32 --max-shards 60 --num-threads 1
fi
python -m v4s_agent.training.package --run "$RUN" --idm "$IDM/idm" --out "$OUT"
