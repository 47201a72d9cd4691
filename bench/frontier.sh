#!/usr/bin/env bash
# Issue 21's measurement (docs/dct.md, "Every method at its own best"): each method's outer
# settings tuned on the same budget of runs (configs/experiments/tune_*.yaml: fp32 DiLoCo,
# DiLoCo+DCT, SparseLoCo, MuLoCo, the decoupled method; four runs each), then the frontier of
# final val loss against bytes at each method's best (frontier_*.yaml: k from 1% to 12% of a
# chunk, int8 / int4 / int2 values), all at one shape (4 workers of the tiny model, batch 4,
# H 25, 8 rounds, the same data), run by scripts/experiments.py into $OUT/EXPERIMENT/POINT/; then
# their table and plot by bench/dct_sweep.py into bench/results/frontier.{jsonl,md,png}, and the
# finished runs' small files (no checkpoints) into results/, committed (experiments.py keep).
# Finished points are skipped, so an interrupted measurement resumes; `--list` shows each point's
# state; `--tune` runs only the tuning. A fresh clone's table without rerunning anything:
# `scripts/experiments.py restore tune_diloco ...` (every experiment named above), then this.
#
#   bench/frontier.sh [--jobs N] [--list] [--tune]
#
# Env: LOCO (build/loco), OUT (runs/reproduce, shared with scripts/reproduce.sh), SCALE (step
# counts x SCALE; 0.1 for a smoke run).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=/usr/bin/python3  # Debian's, which has python3-yaml
OUT=${OUT:-runs/reproduce}
TUNE=(tune_diloco tune_sparseloco tune_dct tune_muloco tune_demo)
FRONTIER=(frontier_seeds frontier_muloco frontier_dct frontier_sparseloco frontier_demo)
ACTION=run
ARGS=()
for a in "$@"; do
  case $a in
    --list) ACTION=list ;;
    --tune) FRONTIER=() ;;
    *) ARGS+=("$a") ;;
  esac
done
ARGS+=(--out "$OUT" --scale "${SCALE:-1}" --loco "${LOCO:-build/loco}")
if [[ $ACTION == list ]]; then
  exec "$PY" scripts/experiments.py list "${TUNE[@]}" "${FRONTIER[@]}" "${ARGS[@]}"
fi
[[ -f data/nlp-corpus/val.bin ]] || { echo "error: run scripts/quickstart.sh first (needs data/nlp-corpus)" >&2; exit 2; }
rc=0
"$PY" scripts/experiments.py run "${TUNE[@]}" "${FRONTIER[@]}" "${ARGS[@]}" || rc=$?
dirs=()
for e in "${TUNE[@]}" "${FRONTIER[@]}"; do [[ -d $OUT/$e ]] && dirs+=("$OUT/$e"); done
"$PY" bench/dct_sweep.py "${dirs[@]}" --name frontier
"$PY" scripts/experiments.py keep "${TUNE[@]}" "${FRONTIER[@]}" --out "$OUT" | tail -1
exit $rc
