#!/usr/bin/env bash
# DDP over Gloo on one machine: W ranks of the tiny model on loopback; the share of each step
# spent in the gradient all-reduce, and the bytes per step against the ring formula
# 2(W-1)/W * 4N (N parameters, fp32 gradients).
#
#   bench/ddp_bench.sh      environment: LOCO (build/loco), CONFIG (configs/tiny.yaml),
#                           WORLD (2), STEPS (20), SKIP (3 warm-up steps left out), PYTHON (python3)
#
# Uses the config's data when its shards exist (data/nlp-corpus after `scripts/quickstart.sh`),
# else prepares tests/data/sample.json with a 512-token vocabulary. Every rank is a real
# `loco train` process with RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT set, as `loco launch` or
# torchrun would. Writes bench/results/ddp.json. On a machine with fewer cores than ranks times
# train.threads, the ranks share the CPU: compute slows down, and so may the all-reduce, which
# then also waits for the slower rank.
set -euo pipefail
cd "$(dirname "$0")/.."

LOCO=${LOCO:-build/loco}
CONFIG=${CONFIG:-configs/tiny.yaml}
WORLD=${WORLD:-2}
STEPS=${STEPS:-20}
SKIP=${SKIP:-3}
PYTHON=${PYTHON:-python3}
RESULTS=bench/results/ddp.json

[[ -f $CONFIG ]] || { echo "ddp_bench.sh: config '$CONFIG' not found" >&2; exit 2; }
command -v "$LOCO" >/dev/null || { echo "ddp_bench.sh: loco binary '$LOCO' not found (build it or set LOCO)" >&2; exit 2; }
((STEPS > SKIP)) || { echo "ddp_bench.sh: STEPS ($STEPS) must exceed SKIP ($SKIP)" >&2; exit 2; }

work=$(mktemp -d /tmp/loco_ddp_bench.XXXXXX)
overrides=(--set sync.mode=ddp --set sync.workers="$WORLD" --set run.dir="$work/run"
           --set train.max_steps="$STEPS" --set train.eval_every=0 --set train.eval_batches=1
           --set train.checkpoint_every=0 --set train.log_every=5)
train_bin=$(sed -n 's/^ *train: *//p' "$CONFIG" | head -n 1)
if [[ ! -f $train_bin ]]; then
  echo "ddp_bench.sh: $train_bin not found; preparing tests/data/sample.json (vocabulary 512)"
  "$LOCO" data prepare --input tests/data/sample.json --out "$work/data" --vocab-size 512 >/dev/null
  overrides+=(--set data.train="$work/data/train.bin" --set data.val="$work/data/val.bin"
              --set data.tokenizer="$work/data/tokenizer.model" --set model.vocab_size=512)
fi

port=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
echo "ddp_bench.sh: $WORLD ranks of $CONFIG, $STEPS steps, MASTER_PORT $port, $(nproc) CPU cores; logs in $work"
pids=()
for ((r = 0; r < WORLD; r++)); do
  RANK=$r WORLD_SIZE=$WORLD MASTER_ADDR=127.0.0.1 MASTER_PORT=$port \
    "$LOCO" train --config "$CONFIG" "${overrides[@]}" >"$work/rank-$r.log" 2>&1 &
  pids+=($!)
done
failed=0
for ((r = 0; r < WORLD; r++)); do
  if ! wait "${pids[$r]}"; then
    echo "ddp_bench.sh: rank $r failed; the end of its log:" >&2
    tail -n 5 "$work/rank-$r.log" >&2
    failed=1
  fi
done
((failed == 0)) || exit 1

mkdir -p "$(dirname "$RESULTS")"
"$PYTHON" - "$RESULTS" "$work" "$WORLD" "$SKIP" "$CONFIG" "$(nproc)" <<'EOF'
import datetime, json, re, statistics, sys
out, work, world, skip, config, cores = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], int(sys.argv[6])
params = float(re.search(r"([0-9.]+)M parameters", open(f"{work}/rank-0.log").read()).group(1)) * 1e6
ranks = []
for r in range(world):
    path = f"{work}/run/metrics.jsonl" if r == 0 else f"{work}/run/rank-{r}/metrics.jsonl"
    recs = [json.loads(line) for line in open(path)][skip:]
    step_s = [x["step_ms"] / 1e3 for x in recs]
    comm_s = [x["comm_s"] for x in recs]
    ranks.append({
        "rank": r,
        "steps": len(recs),
        "step_ms_mean": 1e3 * statistics.mean(step_s),
        "comm_ms_mean": 1e3 * statistics.mean(comm_s),
        "comm_fraction": sum(comm_s) / sum(step_s),
        "comm_fraction_median": statistics.median(c / s for c, s in zip(comm_s, step_s)),
        "allreduce_bytes": recs[-1]["allreduce_bytes"],
        "bytes_up": recs[-1]["bytes_up"],
        "wire_bytes_sent_mean": statistics.mean(x["wire_bytes_sent"] for x in recs) if "wire_bytes_sent" in recs[-1] else None,
    })
ring = 2 * (world - 1) / world * 4 * params
result = {"date": datetime.date.today().isoformat(), "config": config, "world": world, "cpu_cores": cores,
          "params": params, "ring_bytes_formula": ring, "ranks": ranks}
json.dump(result, open(out, "w"), indent=2)
print(f"\nparameters {params / 1e6:.2f}M; ring formula 2(W-1)/W * 4N = {ring / 1e6:.2f} MB per rank per step")
print(f"{'rank':>4} {'step ms':>9} {'comm ms':>9} {'comm %':>7} {'median %':>8} {'reduced MB':>10} {'ring MB':>8} {'wire MB':>8} {'wire/ring':>9}")
for x in ranks:
    wire = x["wire_bytes_sent_mean"]
    print(f"{x['rank']:>4} {x['step_ms_mean']:>9.1f} {x['comm_ms_mean']:>9.1f} {100 * x['comm_fraction']:>6.1f}% "
          f"{100 * x['comm_fraction_median']:>7.1f}% {x['allreduce_bytes'] / 1e6:>10.2f} {x['bytes_up'] / 1e6:>8.2f} "
          + (f"{wire / 1e6:>8.2f} {wire / ring:>9.3f}" if wire is not None else f"{'n/a':>8} {'n/a':>9}"))
print(f"(steps {skip + 1}.. of each rank; {world} ranks on {cores} cores; results in {out})")
EOF
