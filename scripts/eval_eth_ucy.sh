#!/usr/bin/env bash
# ETH/UCY leave-one-scene-out benchmark of the trajectory forecaster (see scripts/eval_eth_ucy.py).
#   scripts/eval_eth_ucy.sh [DATA_DIR] [eval_eth_ucy.py args: --out DIR --threads N -o key=value ...]
#   DATA_DIR  ETH/UCY folder with <scene>/{train,val,test}/*.txt (default: ../shared/data/eth_ucy)
# Prints a per-scene ADE/FDE table (CV, K=1, K=20) and a final JSON line.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
cd "$VIDSEQ_ROOT"
data=${1:-$VIDSEQ_ROOT/../shared/data/eth_ucy}
exec python scripts/eval_eth_ucy.py "$data" "${@:2}"
