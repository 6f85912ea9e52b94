#!/usr/bin/env bash
# Import UCSD Ped2 into a vidseq dataset (once) and train the anomaly head on it.
#   scripts/train_ped2.sh [PED2_DIR] [OUT] [extra `vidseq train anomaly` args...]
#   PED2_DIR  UCSD Ped2 folder: train/ + test/ videos or frame folders, labels.csv or UCSDped2.m
#             (default: ../shared/data/ucsd_ped2 beside the checkout)
#   OUT       run folder (default: runs/anomaly_ped2)
#   VIDSEQ_PED2_DS  where the imported dataset goes (default: runs/datasets/ped2)
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
cd "$VIDSEQ_ROOT"
src=${1:-$VIDSEQ_ROOT/../shared/data/ucsd_ped2}
out=${2:-runs/anomaly_ped2}
ds=${VIDSEQ_PED2_DS:-runs/datasets/ped2}
if [ ! -f "$ds/dataset.yaml" ]; then
  vidseq data import ucsd-ped2 "$src" "$ds"
fi
vidseq data validate "$ds"
config=()
if [ -f configs/anomaly.yaml ]; then config=(--config configs/anomaly.yaml); fi
vidseq train anomaly --data "$ds" "${config[@]}" --out "$out" "${@:3}"
