#!/usr/bin/env bash
# The coordinator under many workers and at the real model size: `loco bench coordinator` (a real
# coordinator process on loopback, simulated workers pushing random fp32 pseudo-gradients through
# the workers' client and pulling the new parameters) for the cases of issue #18, one at a time:
#   5M model (configs/tiny.yaml's shape) x 1, 8, 16, 32, 64 workers   -- round time against W
#   561M model (configs/d20.yaml's shape) x 1 and 8 workers           -- a 2.2 GB push and pull,
#                                                                      memory at scale
# and prints one table (median time to close a round, GB/s of fp32 pseudo-gradients per round,
# the coordinator's own work rate, its peak RSS against 4 x model + 512 MB). The 561M cases need
# ~12 GB free (the bench refuses otherwise, naming the figure); SMALL_ONLY=1 skips them.
# Writes bench/results/coordinator.json (one object per case).
set -euo pipefail
cd "$(dirname "$0")/.."
LOCO=${LOCO:-build/loco}
ROUNDS=${ROUNDS:-3}
DIR=runs/bench-coordinator
mkdir -p bench/results "$DIR"
OUT=bench/results/coordinator.json
: >"$OUT"
cases=("5000000 1" "5000000 8" "5000000 16" "5000000 32" "5000000 64")
[[ ${SMALL_ONLY:-0} == 1 ]] || cases+=("561000000 1" "561000000 8")
for c in "${cases[@]}"; do
  read -r params workers <<<"$c"
  rounds=$ROUNDS
  [[ $params -lt 100000000 ]] || rounds=${BIG_ROUNDS:-2}
  echo "==> --params $params --workers $workers --rounds $rounds" >&2
  log=$DIR/p${params}-w${workers}.log
  "$LOCO" bench coordinator --params "$params" --workers "$workers" --rounds "$rounds" \
    --dir "$DIR/p${params}-w${workers}" | tee "$log" >&2
  grep '^json: ' "$log" | sed 's/^json: //' >>"$OUT"
done
/usr/bin/python3 - "$OUT" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print("| params | fp32 model | workers | close s (median) | s per worker | round GB/s | work GB/s | peak RSS MB | bound MB | within |")
print("|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    print(f"| {r['params']/1e6:.1f}M | {r['model_gb']:.2f} GB | {r['workers']} | {r['median_close_s']:.2f} | "
          f"{r['median_close_s']/r['workers']:.3f} | {r['round_gbps']:.2f} | {r['work_gbps']:.2f} | "
          f"{r['peak_rss_mb']:.0f} | {r['bound_mb']:.0f} | {'yes' if r['within_bound'] else 'NO'} |")
PY
