#!/usr/bin/env bash
# Run the test suite in .venv (created and filled on first use). Extra arguments go to pytest.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
cd "$VIDSEQ_ROOT"
export VIDSEQ_OFFLINE=1   # tests never download weights, online or not
# OpenVINO's and NNCF's telemetry is off under CI=true (their disable_in_ci). Otherwise, after an export, it forks a
# sender from this threaded process, and a forked sender that inherits a held libcrypto lock never exits; the
# interpreter then waits for it at exit (seen once: pytest hung after its summary).
export CI="${CI:-true}"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
exec python -m pytest -q "$@"
