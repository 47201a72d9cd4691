#!/usr/bin/env bash
# Training speed of fp32 against bf16 (train.precision), side by side, at 1 and at 2 threads.
#
# For each thread count, runs `loco bench train --json` on the config alternately in fp32 and in
# bf16, REPEATS times each, with the same threads on both sides: torch's intra-op threads
# (train.threads) and OpenBLAS's and OpenMP's pools (OPENBLAS_NUM_THREADS, OMP_NUM_THREADS)
# pinned to the same count. Prints the medians, the bf16/fp32 ratio and the 2-thread/1-thread
# scaling, and writes bench/results/precision.json. MFU is against the matmul peak of the
# precision in use, measured by each bench process itself.
#
#   bench/precision.sh      environment: LOCO (build/loco), CONFIG (configs/tiny.yaml),
#                           THREADS ("1 2"), REPEATS (3), STEPS (10), WARMUP (2),
#                           PYTHON (/usr/bin/python3)
set -euo pipefail
cd "$(dirname "$0")/.."

LOCO=${LOCO:-build/loco}
CONFIG=${CONFIG:-configs/tiny.yaml}
THREADS=${THREADS:-1 2}
REPEATS=${REPEATS:-3}
STEPS=${STEPS:-10}
WARMUP=${WARMUP:-2}
PYTHON=${PYTHON:-/usr/bin/python3}
RESULTS=bench/results/precision.json

[[ -f $CONFIG ]] || { echo "precision.sh: config '$CONFIG' not found" >&2; exit 2; }
command -v "$LOCO" >/dev/null || { echo "precision.sh: loco binary '$LOCO' not found (build it or set LOCO)" >&2; exit 2; }

lines=$(mktemp)
trap 'rm -f "$lines"' EXIT
for t in $THREADS; do
  for ((r = 1; r <= REPEATS; r++)); do
    for p in fp32 bf16; do
      echo "precision.sh: threads $t, $p, run $r/$REPEATS ($WARMUP warm-up + $STEPS timed steps)" >&2
      OPENBLAS_NUM_THREADS=$t OMP_NUM_THREADS=$t "$LOCO" bench train --config "$CONFIG" \
        --set train.threads="$t" --set train.precision="$p" --steps "$STEPS" --warmup "$WARMUP" \
        --json | tail -n 1 >> "$lines"
    done
  done
done

mkdir -p "$(dirname "$RESULTS")"
"$PYTHON" - "$RESULTS" "$CONFIG" "$lines" <<'EOF'
import datetime, json, platform, statistics, sys
out, config, path = sys.argv[1:]
runs = {}
for line in open(path):
    r = json.loads(line)
    runs.setdefault((r["threads"], r["precision"]), []).append(r)

def med(key, rs):
    return statistics.median(r[key] for r in rs)

rows = []
print(f"\n{'threads':>7} {'precision':>9} {'tokens/s':>9} {'ms/step':>8} {'GFLOP/s':>8} "
      f"{'peak':>8} {'MFU':>6} {'bf16/fp32':>9} {'vs 1 thr':>8}")
for (t, p), rs in sorted(runs.items()):
    tok = med("tokens_per_s", rs)
    row = {"threads": t, "precision": p, "runs": len(rs), "tokens_per_s": tok,
           "tokens_per_s_all": [round(r["tokens_per_s"], 1) for r in rs],
           "ms_per_step": med("ms_per_step", rs), "achieved_gflops": med("achieved_gflops", rs),
           "matmul_peak_gflops": med("matmul_peak_gflops", rs), "mfu": med("mfu", rs),
           "peak_mem_mb": med("peak_mem_mb", rs)}
    fp32 = runs.get((t, "fp32"))
    row["bf16_over_fp32"] = tok / med("tokens_per_s", fp32) if p == "bf16" and fp32 else None
    one = runs.get((1, p))
    row["over_1_thread"] = tok / med("tokens_per_s", one) if one and t != 1 else None
    rows.append(row)
    fmt = lambda v: f"{v:.2f}x" if v else "-"
    print(f"{t:>7} {p:>9} {tok:>9.0f} {row['ms_per_step']:>8.1f} {row['achieved_gflops']:>8.1f} "
          f"{row['matmul_peak_gflops']:>8.1f} {100 * row['mfu']:>5.1f}% "
          f"{fmt(row['bf16_over_fp32']):>9} {fmt(row['over_1_thread']):>8}")
print("(medians; peak = the bench's own square-matmul GFLOP/s in that precision)")
with open(out, "w") as f:
    json.dump({"date": datetime.datetime.now().isoformat(timespec="seconds"),
               "host": platform.node(), "config": config, "rows": rows}, f, indent=2)
    f.write("\n")
print(f"precision.sh: wrote {out}")
EOF
