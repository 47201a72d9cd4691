#!/usr/bin/env bash
# Faults against a clean run (docs/faults.md): the same DiLoCo run (3 workers of the tiny model on
# the default corpus, H inner steps, ROUNDS rounds) once undisturbed through `loco launch`, and
# once as separate processes hit by real signals:
#   round  4: SIGKILL worker w2 (mid-round)          round  7: start w2 again (it rejoins)
#   round 10: SIGKILL the coordinator, restart it with --resume 2 s later
#   round 14: SIGSTOP worker w1 for lease + 2 s (hung: dropped, then late), then SIGCONT
#   round 17: SIGTERM worker w0 (it leaves)           round 19: start w0 again
# Then checks every round is in the coordinator's metrics exactly once and compares the final
# val loss with the clean run's. Writes bench/results/faults.{md,json}.
set -euo pipefail
cd "$(dirname "$0")/.."
LOCO=${LOCO:-build/loco}
H=${H:-10}
ROUNDS=${ROUNDS:-24}
OUT=${OUT:-runs/faults}
[[ -f data/nlp-corpus/val.bin ]] || { echo "error: run scripts/quickstart.sh first (needs data/nlp-corpus)" >&2; exit 2; }
mkdir -p "$OUT" bench/results
port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
ARGS=(--config configs/diloco-tiny.yaml --set sync.workers=3 --set sync.inner_steps="$H"
  --set train.max_steps=$((ROUNDS * H)) --set train.eval_every=0 --set train.checkpoint_every=0
  --set train.eval_batches=16 --set train.log_every="$H" --set sync.coordinator.heartbeat_s=0.5
  --set sync.coordinator.lease_s=3)
LEASE=3

echo "==> clean run: $OUT/clean (3 workers, $ROUNDS rounds of $H steps)"
rm -rf "$OUT/clean"
"$LOCO" launch "${ARGS[@]}" --set run.dir="$OUT/clean" \
  --set sync.coordinator.address=127.0.0.1:"$(port)" >"$OUT/clean.log" 2>&1 ||
  { tail -20 "$OUT/clean.log"; echo "error: the clean run failed ($OUT/clean.log)" >&2; exit 1; }

dir="$OUT/faulty"
rm -rf "$dir" && mkdir -p "$dir"
ADDR=127.0.0.1:$(port)
F=("${ARGS[@]}" --set sync.coordinator.address="$ADDR")
coordinator() { "$LOCO" coordinator "${F[@]}" --set run.dir="$dir/coordinator" "$@" >>"$dir/coordinator.log" 2>&1 & }
worker() { "$LOCO" worker "${F[@]}" --set run.dir="$dir/worker-$1" --name "$1" >>"$dir/$1.log" 2>&1 & }
round() {  # the last round in the coordinator's metrics
  /usr/bin/python3 -c 'import json, sys
r = 0
try:
    for line in open(sys.argv[1]):
        try: r = max(r, json.loads(line).get("round", 0))
        except ValueError: pass
except OSError: pass
print(r)' "$dir/coordinator/metrics.jsonl"
}
wait_round() { while (( $(round) < $1 )); do sleep 0.2; done; }
declare -A pid
log() { echo "    [round $(round)] $*"; echo "$(date +%T) round $(round): $*" >>"$dir/faults.log"; }

echo "==> faulty run: $dir"
coordinator; pid[coord]=$!
for w in w0 w1 w2; do worker "$w"; pid[$w]=$!; done
wait_round 4;  kill -KILL "${pid[w2]}"; log "SIGKILL w2"
wait_round 7;  worker w2; pid[w2]=$!; log "started w2 again"
wait_round 10; kill -KILL "${pid[coord]}"; log "SIGKILL coordinator"
sleep 2;       coordinator --resume; pid[coord]=$!; log "restarted the coordinator with --resume"
wait_round 14; kill -STOP "${pid[w1]}"; log "SIGSTOP w1"
sleep $((LEASE + 2)); kill -CONT "${pid[w1]}"; log "SIGCONT w1"
wait_round 17; kill -TERM "${pid[w0]}"; log "SIGTERM w0"
wait_round 19; worker w0; pid[w0]=$!; log "started w0 again"
status=0
for p in "${pid[@]}"; do wait "$p" || status=$?; done
(( status == 0 )) || { echo "error: a process of the faulty run failed (logs in $dir)" >&2; exit 1; }

/usr/bin/python3 - "$OUT" "$ROUNDS" <<'EOF'
import json, sys
out, rounds = sys.argv[1], int(sys.argv[2])
def metrics(run):
    return [json.loads(l) for l in open(f"{out}/{run}/coordinator/metrics.jsonl") if l.strip()]
def summary(run):
    return json.load(open(f"{out}/{run}/coordinator/summary.json"))
clean, faulty = summary("clean"), summary("faulty")
fm = metrics("faulty")
seen = [r["round"] for r in fm]
once = seen == list(range(1, rounds + 1))
tokens_ok = sum(r["round_tokens"] for r in fm) == faulty["tokens"]
members = {r["round"]: r["members"] for r in fm}
gap = 100 * (faulty["final_val_loss"] / clean["final_val_loss"] - 1)
faults = [line.strip().split(": ", 1) for line in open(f"{out}/faulty/faults.log")]
rows = ["| fault injected (real signal) | at | outcome |", "|---|---|---|"]
for when, what in faults:
    rows.append(f"| {what} | {when.split(' ', 1)[1]} | survived |")
result = {
    "clean_val_loss": clean["final_val_loss"], "faulty_val_loss": faulty["final_val_loss"],
    "gap_pct": gap, "rounds_once_each": once, "tokens_consistent": tokens_ok,
    "clean_tokens": clean["tokens"], "faulty_tokens": faulty["tokens"],
    "members": members, "complete": faulty["complete"],
}
json.dump(result, open("bench/results/faults.json", "w"), indent=1)
md = "\n".join(rows) + "\n\n" + "\n".join([
    "| run | rounds | tokens | final val loss | vs clean |", "|---|---|---|---|---|",
    f"| clean | {rounds} | {clean['tokens']:,} | {clean['final_val_loss']:.4f} | – |",
    f"| faulty | {rounds} | {faulty['tokens']:,} | {faulty['final_val_loss']:.4f} | {gap:+.2f}% |",
]) + "\n\n" + (f"Every round in the faulty run's metrics exactly once: {'yes' if once else 'NO'}; "
               f"round tokens add up to the run's total: {'yes' if tokens_ok else 'NO'}; "
               f"summary complete: {faulty['complete']}.\n")
md += "\nMembers by round: " + "; ".join(
    f"{r}: {','.join(m)}" for r, m in members.items()) + "\n"
open("bench/results/faults.md", "w").write(md)
print(md)
sys.exit(0 if once and tokens_ok and faulty["complete"] else 1)
EOF
echo "table: bench/results/faults.md"
