#!/usr/bin/env bash
# Alarm benchmark (issue 15): generated camera streams from the NORMAL Ped2 training clips (nuisances +
# injected events), run through vidseq's streaming pass in three modes; prints a table and, as the LAST line,
# the summary JSON. Only DATA_DIR/train is read. Details: docs/alarms.md.
# Usage: scripts/eval_alarms.sh DATA_DIR [--minutes 20] [--seeds 4] [--seed-set dev|report] [--modes ...]
set -euo pipefail
if [[ $# -lt 1 ]]; then
  echo "usage: $0 DATA_DIR [--minutes M] [--seeds N] [--seed-set dev|report] [--modes unsupervised,trained,live]" >&2
  exit 2
fi
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PY="${PYTHON:-python}"
if [[ -z "${PYTHON:-}" && -x "$HERE/../.venv/bin/python" ]]; then PY="$HERE/../.venv/bin/python"; fi
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
exec "$PY" "$HERE/eval_alarms.py" "$@"
