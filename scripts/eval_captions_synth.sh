#!/usr/bin/env bash
# Caption benchmark on synthetic scenes with held-out (object, motion) compositions: model vs
# nearest-neighbour retrieval. The last stdout line is JSON {"model": {...}, "retrieval": {...}, ...}.
#   scripts/eval_captions_synth.sh [OUT_DIR] [options of scripts/eval_captions_synth.py]
#   e.g. scripts/eval_captions_synth.sh runs/caption_synth --set features.backbone=none
# Designed to finish in <= 20 minutes on a 2-core CPU (see docs/captions.md, "Synthetic benchmark", for timings).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
cd "$VIDSEQ_ROOT"
export VIDSEQ_OFFLINE=1                      # never download weights
# One thread: these small LSTMs gain little from two, and on a shared 2-core machine two spinning
# threads per process made epochs up to 10x slower (measured: 12 s -> 150 s per epoch).
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
out=${1:-runs/caption_synth}
shift || true
exec python scripts/eval_captions_synth.py --out "$out" --threads "$OMP_NUM_THREADS" "$@"
