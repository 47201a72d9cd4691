#!/usr/bin/env bash
# Faults against a clean run (docs/faults.md): the same DiLoCo run (3 workers of the tiny model on
# the default corpus, H inner steps, ROUNDS rounds) twice through `loco launch`: once undisturbed,
# once hit by real signals sent to the pids the launcher reports in run.dir/launch_events.jsonl,
# with the launcher's failure policy (sync.on_failure restart) doing all the recovery:
#   round  4: SIGKILL worker w2 (mid-round)       -> the launcher restarts it, it rejoins
#   round 10: SIGKILL the coordinator             -> the launcher restarts it with --resume
#   round 14: SIGSTOP worker w1 for lease + 2 s (hung: dropped, then late), then SIGCONT
#   round 17: SIGTERM worker w0 (it leaves, exits) -> the launcher restarts it, it rejoins
# Then checks the launch exited 0, every round is in the coordinator's metrics exactly once, and
# compares the final val loss with the clean run's. Writes bench/results/faults.{md,json}.
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
events="$dir/run/launch_events.jsonl"
round() {  # the last round in the coordinator's metrics
  /usr/bin/python3 -c 'import json, sys
r = 0
try:
    for line in open(sys.argv[1]):
        try: r = max(r, json.loads(line).get("round", 0))
        except ValueError: pass
except OSError: pass
print(r)' "$dir/run/coordinator/metrics.jsonl"
}
pid_of() {  # the pid the launcher last started $1 under (its events file)
  /usr/bin/python3 -c 'import json, sys
pid = -1
for line in open(sys.argv[1]):
    e = json.loads(line)
    if e["process"] == sys.argv[2] and e["event"] in ("started", "restarted"): pid = e["pid"]
print(pid)' "$events" "$1"
}
wait_round() { while (( $(round) < $1 )); do sleep 0.2; done; }
log() { echo "    [round $(round)] $*"; echo "$(date +%T) round $(round): $*" >>"$dir/faults.log"; }
hit() {  # hit SIGNAL PROCESS: the signal to the launched process's current pid
  local p; p=$(pid_of "$2"); kill -"$1" "$p"; log "SIG$1 $2 (pid $p)"
}

echo "==> faulty run: $dir (loco launch, sync.on_failure restart)"
"$LOCO" launch "${ARGS[@]}" --set run.dir="$dir/run" \
  --set sync.coordinator.address=127.0.0.1:"$(port)" >"$dir/launch.log" 2>&1 &
launch=$!
wait_round 4;  hit KILL w2
wait_round 10; hit KILL coord
wait_round 14; hit STOP w1
sleep $((LEASE + 2)); hit CONT w1
wait_round 17; hit TERM w0
status=0
wait "$launch" || status=$?
(( status == 0 )) || { tail -30 "$dir/launch.log"; echo "error: the faulty launch exited $status ($dir/launch.log)" >&2; exit 1; }

/usr/bin/python3 - "$OUT" "$ROUNDS" <<'EOF'
import json, sys
out, rounds = sys.argv[1], int(sys.argv[2])
run_dir = {"clean": f"{out}/clean", "faulty": f"{out}/faulty/run"}
def metrics(run):
    return [json.loads(l) for l in open(f"{run_dir[run]}/coordinator/metrics.jsonl") if l.strip()]
def summary(run):
    return json.load(open(f"{run_dir[run]}/coordinator/summary.json"))
clean, faulty = summary("clean"), summary("faulty")
fm = metrics("faulty")
seen = [r["round"] for r in fm]
once = seen == list(range(1, rounds + 1))
tokens_ok = sum(r["round_tokens"] for r in fm) == faulty["tokens"]
members = {r["round"]: r["members"] for r in fm}
gap = 100 * (faulty["final_val_loss"] / clean["final_val_loss"] - 1)
faults = [line.strip().split(": ", 1) for line in open(f"{out}/faulty/faults.log")]
events = [json.loads(l) for l in open(f"{out}/faulty/run/launch_events.jsonl") if l.strip()]
def launcher_did(process, pid):
    """What the launcher logged after `process` (pid) exited: restarted, or nothing."""
    after = False
    for e in events:
        if e["process"] != process: continue
        if e["event"] == "exited" and e["pid"] == pid and e.get("action") != "none": after = True
        elif after and e["event"] == "restarted":
            return f"exited; the launcher restarted it ({e['action']}, attempt {e['attempt']})"
    return "no failure: it rejoined by itself" if not after else "exited; not restarted"
rows = ["| fault injected (real signal) | at | what followed |", "|---|---|---|"]
for when, what in faults:
    sig, process, pid = what.split()[0], what.split()[1], int(what.split("pid ")[1].rstrip(")"))
    outcome = "continued" if sig == "SIGCONT" else launcher_did(process, pid)
    rows.append(f"| {what} | {when.split(' ', 1)[1]} | {outcome} |")
restarts = sum(e["event"] == "restarted" for e in events)
result = {
    "clean_val_loss": clean["final_val_loss"], "faulty_val_loss": faulty["final_val_loss"],
    "gap_pct": gap, "rounds_once_each": once, "tokens_consistent": tokens_ok,
    "clean_tokens": clean["tokens"], "faulty_tokens": faulty["tokens"],
    "members": members, "complete": faulty["complete"], "launcher_restarts": restarts,
}
json.dump(result, open("bench/results/faults.json", "w"), indent=1)
md = "\n".join(rows) + "\n\n" + "\n".join([
    "| run | rounds | tokens | final val loss | vs clean |", "|---|---|---|---|---|",
    f"| clean | {rounds} | {clean['tokens']:,} | {clean['final_val_loss']:.4f} | – |",
    f"| faulty | {rounds} | {faulty['tokens']:,} | {faulty['final_val_loss']:.4f} | {gap:+.2f}% |",
]) + "\n\n" + (f"Every round in the faulty run's metrics exactly once: {'yes' if once else 'NO'}; "
               f"round tokens add up to the run's total: {'yes' if tokens_ok else 'NO'}; "
               f"summary complete: {faulty['complete']}; the launcher restarted {restarts} "
               f"processes and exited 0.\n")
md += "\nMembers by round: " + "; ".join(
    f"{r}: {','.join(m)}" for r, m in members.items()) + "\n"
open("bench/results/faults.md", "w").write(md)
print(md)
sys.exit(0 if once and tokens_ok and faulty["complete"] else 1)
EOF
echo "table: bench/results/faults.md"
