#!/usr/bin/env bash
# The bytes-versus-loss trade-off of the DCT methods (docs/dct.md): the points of
# configs/experiments/dct_sweep.yaml (fp32 DiLoCo, DiLoCo + DCT over k, value format, download k
# and outer momentum, the decoupled method at its own eta and with resync_every; 4 workers,
# H = 25, 8 rounds, equal tokens), run by scripts/experiments.py into $OUT/dct_sweep/POINT/, then
# their table and plot by bench/dct_sweep.py into bench/results/dct_sweep.{jsonl,md,png}.
# Finished points are skipped, so an interrupted sweep resumes; `--list` shows each point's state.
#
#   bench/dct_sweep.sh [--jobs N] [--list]
#
# Env: LOCO (build/loco), OUT (runs/reproduce, shared with scripts/reproduce.sh, so a point equal
# to one run there is copied, not run again), SCALE (step counts x SCALE; 0.1 for a smoke run).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=/usr/bin/python3  # Debian's, which has python3-yaml
OUT=${OUT:-runs/reproduce}
ACTION=run
ARGS=()
for a in "$@"; do
  if [[ $a == --list ]]; then ACTION=list; else ARGS+=("$a"); fi
done
ARGS+=(--out "$OUT" --scale "${SCALE:-1}" --loco "${LOCO:-build/loco}")
if [[ $ACTION == list ]]; then
  exec "$PY" scripts/experiments.py list dct_sweep "${ARGS[@]}"
fi
[[ -f data/nlp-corpus/val.bin ]] || { echo "error: run scripts/quickstart.sh first (needs data/nlp-corpus)" >&2; exit 2; }
rc=0
"$PY" scripts/experiments.py run dct_sweep "${ARGS[@]}" || rc=$?
"$PY" bench/dct_sweep.py "$OUT/dct_sweep" --name dct_sweep
exit $rc
