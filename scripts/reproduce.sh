#!/usr/bin/env bash
# The seed claims at small scale on CPU (issue #7, issue 21): runs the experiments of
# configs/experiments/ (headline: DDP vs DiLoCo vs DiLoCo+DCT vs SparseLoCo vs MuLoCo vs decoupled
# DCT at equal tokens, each at its own best; the tuning sweeps h_lr and batch, whose best settings
# go into the headline, and tune_* for each method's outer settings; the bytes-versus-loss
# frontier_*; workers; slow_link) with `loco launch`, then writes docs/RESULTS.md with the tables,
# plots and target checks.
#
#   scripts/reproduce.sh [EXPERIMENT...] [--jobs N] [--quick] [--list]
#
# EXPERIMENT: names of configs/experiments/*.yaml (default: all above; dct_sweep runs only
# when named, bench/dct_sweep.sh writes its table). --jobs N: points run at once (default: one per
# 4 cores, since a point is 4+ processes of 1 thread; 1 on 2 cores). --quick: step counts / 10
# into runs/reproduce-quick/, page in runs/reproduce-quick/RESULTS.md (a smoke test; its numbers
# are not the results). --list: the points and their state, nothing run.
# Finished points are skipped, so an interrupted reproduction resumes where it stopped and can be
# split over several sittings. Env: LOCO (build/loco), OUT (runs/reproduce), NICE (a niceness
# for the runs, e.g. 10 on a shared machine), SCALE (step counts x SCALE, instead of --quick).
set -euo pipefail
cd "$(dirname "$0")/.."
LOCO=${LOCO:-build/loco}
SCALE=${SCALE:-1}
JOBS=$(( $(nproc 2>/dev/null || echo 1) / 4 ))
(( JOBS >= 1 )) || JOBS=1
ACTION=run
EXPERIMENTS=()
while (( $# )); do
  case $1 in
    --jobs) JOBS=${2:?--jobs takes a number}; shift ;;
    --jobs=*) JOBS=${1#--jobs=} ;;
    --quick) SCALE=0.1 ;;
    --list) ACTION=list ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) EXPERIMENTS+=("$1") ;;
  esac
  shift
done
if [[ $SCALE == 1 ]]; then
  OUT=${OUT:-runs/reproduce}
  PAGE=${PAGE:-docs/RESULTS.md}
else
  OUT=${OUT:-runs/reproduce-quick}
  PAGE=${PAGE:-$OUT/RESULTS.md}
fi
[[ -f data/nlp-corpus/val.bin ]] || { echo "error: run scripts/quickstart.sh first (needs data/nlp-corpus)" >&2; exit 2; }
[[ -x $LOCO ]] || { echo "error: $LOCO not found: build loco first (scripts/quickstart.sh), or set LOCO" >&2; exit 2; }
# Debian's Python, which has python3-yaml (docs/design.md "Pitfalls on this machine")
PY=/usr/bin/python3
ARGS=(--out "$OUT" --scale "$SCALE" --loco "$LOCO")
ALL_EXPERIMENTS=(after_pretraining curtailment)  # those with pages of their own, when none is named

if [[ $ACTION == list ]]; then
  exec "$PY" scripts/experiments.py list "${EXPERIMENTS[@]}" "${ARGS[@]}"
fi
echo "==> reproducing into $OUT (step scale $SCALE, $JOBS point(s) at once${NICE:+, nice $NICE})"
start=$SECONDS
rc=0
${NICE:+nice -n "$NICE"} "$PY" scripts/experiments.py run "${EXPERIMENTS[@]}" "${ARGS[@]}" --jobs "$JOBS" || rc=$?
echo "==> runs took $(( (SECONDS - start) / 60 )) min"
# The finished points' small files into results/ (committed; `experiments.py restore` brings
# them back on a fresh machine: results/README.md). Not for a smoke run.
[[ $SCALE == 1 && $OUT == runs/reproduce ]] && "$PY" scripts/experiments.py keep "${EXPERIMENTS[@]}" --out "$OUT" | tail -1
# Experiments with a `page:` of their own (after_pretraining, curtailment) get that page (under
# OUT for a smoke run); the others go on the seed claims' page, written unless only experiments
# with their own pages were named.
own_pages=$("$PY" -c 'import sys, yaml
for n in sys.argv[1:]:
    p = (yaml.safe_load(open(f"configs/experiments/{n}.yaml")) or {}).get("page")
    print(f"{n} {p}" if p else f"{n} -")' "${EXPERIMENTS[@]:-${ALL_EXPERIMENTS[@]}}")
seed_page=$([[ ${#EXPERIMENTS[@]} == 0 ]] && echo yes || echo no)
while read -r name page; do
  if [[ $page == - ]]; then seed_page=yes; continue; fi
  [[ $SCALE == 1 ]] || page=$OUT/$(basename "$page")
  echo "==> writing $page"
  "$PY" scripts/results_page.py --out "$OUT" --scale "$SCALE" --loco "$LOCO" --page "$page" --experiments "$name"
done <<< "$own_pages"
if [[ $seed_page == yes ]]; then
  echo "==> writing $PAGE"
  README=()
  [[ $SCALE == 1 && $PAGE == docs/RESULTS.md ]] && README=(--readme README.md)  # not for a smoke run
  "$PY" scripts/results_page.py --out "$OUT" --scale "$SCALE" --loco "$LOCO" --page "$PAGE" "${README[@]}"
fi
exit $rc
