#!/usr/bin/env bash
# UCSD Ped2 anomaly benchmark: import, tune (label-free selection on normal training clips), train,
# evaluate, then a reporting-only grid on test. Prints stage wall times and, as the LAST line, the metrics
# JSON (auc_micro, auc_micro_minmax, the chosen design, tuning and grid summaries).
# Usage: scripts/eval_ped2.sh DATA_DIR [--work DIR] [--workers 2] [--no-grid] [--tune-set KEY=VALUE ...]
set -euo pipefail
if [[ $# -lt 1 ]]; then
  echo "usage: $0 DATA_DIR [--work DIR] [--workers N] [--no-grid] [--tune-set KEY=VALUE ...]" >&2
  exit 2
fi
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PY="${PYTHON:-python}"
if [[ -z "${PYTHON:-}" && -x "$HERE/../.venv/bin/python" ]]; then PY="$HERE/../.venv/bin/python"; fi
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
exec "$PY" "$HERE/eval_ped2.py" "$@"
