#!/bin/bash
# Issue 13's matched-budget ablations: the reference (full method) and three runs that each flip one
# switch, trained for the same steps on the same data and seed (two at a time on a 2-core CPU, one torch
# thread each; resumable: rerun to continue), then ONE evaluation that scores all four on the same
# held-out val_scenes episodes (open-loop SD / IF / PSNR with 95 % intervals).
#   bash launch/experiments/ablations/run.sh [EPISODES]   (then the table: outputs/ablations/ablations.md, docs/images/ablations.png)
set -euo pipefail
EPS=${1:-50}
RUNS=(reference no_aux_box contiguous_rope text_only_cfg)
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
PY=${PY:-python}
source "$(dirname "$0")/../pairs.sh"
train() {
  $PY -m v4s_agent.training.train --config-path "launch/experiments/ablations/$1.yaml" --output "runs/ablation_$1" \
    --resume --no-progress > "runs/ablation_$1.log" 2>&1
}
mkdir -p runs
in_pairs train "${RUNS[@]}"
for r in "${RUNS[@]}"; do
  $PY -m v4s_agent.training.package --run "runs/ablation_$r" --idm v4s_agent/checkpoints/default/idm \
    --out "runs/ablation_$r/ckpt" > /dev/null
done
$PY -m v4s_agent.evaluate --checkpoint runs/ablation_reference/ckpt --splits val_scenes --sections open,nav \
  --episodes "$EPS" --baselines no_context,wrong_context --num-threads 1 \
  --ablation no_aux_box=runs/ablation_no_aux_box/ckpt --ablation contiguous_rope=runs/ablation_contiguous_rope/ckpt \
  --ablation text_only_guidance=runs/ablation_text_only_cfg/ckpt --out outputs/ablations
# the guidance mechanism needs a null branch: the reference and text-only guidance again at guidance 2
$PY -m v4s_agent.evaluate --checkpoint runs/ablation_reference/ckpt --splits val_scenes --sections open \
  --episodes "$EPS" --baselines none --guidance 2 --num-threads 1 \
  --ablation text_only_guidance=runs/ablation_text_only_cfg/ckpt --out outputs/ablations_g2
$PY launch/experiments/ablations/table.py outputs/ablations outputs/ablations_g2
