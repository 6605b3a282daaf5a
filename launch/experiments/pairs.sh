#!/bin/bash
# Sourced by the launch scripts: in_pairs FN ITEM... runs "FN ITEM" for the items two at a time (this
# project's CPU has 2 cores; each job gets one torch thread) and fails if any of them failed.
in_pairs() {
  local fn=$1 status=0 pids
  shift
  local items=("$@")
  for ((i = 0; i < ${#items[@]}; i += 2)); do
    pids=()
    "$fn" "${items[i]}" &
    pids+=($!)
    if ((i + 1 < ${#items[@]})); then
      "$fn" "${items[i + 1]}" &
      pids+=($!)
    fi
    for p in "${pids[@]}"; do wait "$p" || status=1; done
  done
  return $status
}
