#!/usr/bin/env bash
# One GPU sprint of the planner run (issue 24): on a machine with one GPU and ~16 cores and no network,
# generate the scene-video data, train for at most TRAIN_MINUTES, and write the checkpoint to $OUT.
#
#   OUT=/path/to/out bash launch/gpu_sprint.sh                 # the real sprint (defaults below)
#   OUT=/tmp/sprint TINY=1 bash launch/gpu_sprint.sh           # the CPU test: tiny config, 2 scenes, seconds
#
# Settings (environment): SCENES (train scenes, 240), VAL_SCENES (12), TRAIN_MINUTES (8), BATCH (32 on
# the GPU), CONFIG (launch/train_default.yaml), INIT (the pipeline the run starts from: the shipped one),
# RUN (run folder: runs/gpu_sprint; --resume continues it). Missing packages travel as wheels in .whl/
# (see the device tool's README); the project itself is installed from this tree without the network.
# What comes back in $OUT (the device tool returns at most 8 files of < 16 MB, 2 folders down):
# checkpoint.tar.part-* (the exported checkpoint folder: pipeline/, idm/, loss curve; rejoin with
# `cat checkpoint.tar.part-* | tar -x`), metrics.jsonl, train_config.json and sprint.log.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:?set OUT to the output folder}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}

if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
if ! $PY -c "import v4s_agent.training" 2>/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-build-isolation --target /tmp/v4s . >"$OUT/install.log" 2>&1
  export PYTHONPATH=/tmp/v4s${PYTHONPATH:+:$PYTHONPATH}
fi

if [ "${TINY:-0}" = 1 ]; then
  SCENES=${SCENES:-2}; VAL_SCENES=${VAL_SCENES:-2}; TRAIN_MINUTES=${TRAIN_MINUTES:-0.2}; BATCH=${BATCH:-2}
  RES="--resolution 16 16"; CFG_ARGS="--config tiny"; INIT=${INIT:-none}
else
  SCENES=${SCENES:-240}; VAL_SCENES=${VAL_SCENES:-12}; TRAIN_MINUTES=${TRAIN_MINUTES:-8}; BATCH=${BATCH:-32}
  RES=""; CFG_ARGS="--config-path ${CONFIG:-launch/train_default.yaml}"
  INIT=${INIT:-v4s_agent/checkpoints/default/pipeline}
fi
RUN=${RUN:-runs/gpu_sprint}
DATA=${DATA:-data/sprint}
WORKERS=${WORKERS:-$(nproc)}
echo "sprint: $SCENES scenes, $TRAIN_MINUTES min, batch $BATCH, $WORKERS workers, init $INIT -> $OUT" | tee "$OUT/sprint.log"

t0=$(date +%s)
$PY -m v4s_agent.training.generate_data --split train --scenes "$SCENES" --out "$DATA/train" --workers "$WORKERS" \
  --no-progress $RES 2>&1 | tail -n 2 | tee -a "$OUT/sprint.log"
$PY -m v4s_agent.training.generate_data --split val_scenes --scenes "$VAL_SCENES" --out "$DATA/val_scenes" \
  --workers "$WORKERS" --no-progress $RES 2>&1 | tail -n 2 | tee -a "$OUT/sprint.log"
echo "data: $(( $(date +%s) - t0 )) s" | tee -a "$OUT/sprint.log"

# the run's config: the chosen preset with this machine's data, batch and starting weights
$PY - "$RUN" "$INIT" "$DATA" "$BATCH" $CFG_ARGS <<'EOF'
import json, sys
from pathlib import Path
from v4s_agent.training.config import TrainConfig, get_train_config
run, init, data, batch, flag, value = sys.argv[1:7]
cfg = TrainConfig.from_file(value) if flag == "--config-path" else get_train_config(value)
cfg = cfg.replace(data_dir=f"{data}/train", val_data_dir=f"{data}/val_scenes", batch_size=int(batch),
                  num_threads=0, init_from=None if init == "none" else init, sample_every=10**9)
Path(run).mkdir(parents=True, exist_ok=True)
Path(run, "sprint_config.json").write_text(json.dumps(cfg.to_dict(), indent=1))
EOF
t1=$(date +%s)
$PY -m v4s_agent.training.train --config-path "$RUN/sprint_config.json" --output "$RUN" --resume \
  --max-minutes "$TRAIN_MINUTES" --no-progress 2>&1 | grep -v Warning | tail -n 5 | tee -a "$OUT/sprint.log"
echo "train: $(( $(date +%s) - t1 )) s" | tee -a "$OUT/sprint.log"

rm -rf "$RUN/export"
$PY -m v4s_agent.training.package --run "$RUN" --out "$RUN/export/checkpoint" \
  --idm v4s_agent/checkpoints/default/idm 2>&1 | tail -n 3 | tee -a "$OUT/sprint.log"
tar -cf - -C "$RUN/export" checkpoint | split -b 15M - "$OUT/checkpoint.tar.part-"
cp "$RUN/metrics.jsonl" "$RUN/train_config.json" "$OUT/"
echo "done in $(( $(date +%s) - t0 )) s" | tee -a "$OUT/sprint.log"
