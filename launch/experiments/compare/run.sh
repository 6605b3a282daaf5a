#!/bin/bash
# Issue 10's side-by-side: every candidate trains the same wall minutes on the same data and seed
# (two at a time on a 2-core CPU, one torch thread each), then one evaluation scores them on the same
# held-out val_scenes episodes (open loop with/without/wrong context, navigation PSNR, plan latency).
#   bash launch/experiments/compare/run.sh [MINUTES] [EPISODES]
set -euo pipefail
MIN=${1:-15}
EPS=${2:-24}
CANDS=(${CANDS:-v8 x8 x16 x16k16})
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
PY=${PY:-python}
source "$(dirname "$0")/../pairs.sh"
train() {
  $PY -m v4s_agent.training.train --config-path "launch/experiments/compare/$1.yaml" --output "runs/compare_$1" \
    --max-minutes "$MIN" --resume --no-progress > "runs/compare_$1.log" 2>&1
}
mkdir -p runs
in_pairs train "${CANDS[@]}"
for c in "${CANDS[@]}"; do
  $PY -m v4s_agent.training.package --run "runs/compare_$c" --idm v4s_agent/checkpoints/default/idm \
    --out "runs/compare_$c/ckpt" > /dev/null
done
evaluate() {
  $PY -m v4s_agent.evaluate --checkpoint "runs/compare_$1/ckpt" --splits val_scenes --sections open,nav \
    --episodes "$EPS" --baselines no_context,wrong_context --num-threads 1 --bf16 \
    --out "outputs/compare/$1" > "runs/compare_$1.eval.log" 2>&1
}
in_pairs evaluate "${CANDS[@]}"
$PY launch/experiments/compare/table.py "${CANDS[@]}"
