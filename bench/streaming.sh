#!/usr/bin/env bash
# Streaming DiLoCo against plain DiLoCo over slow links (issue #16's targets; docs/streaming.md).
# 4 workers of the tiny model (configs/diloco-tiny.yaml), H = 40, each worker behind a link of
# MBPS Mbit/s with 50 ms of one-way latency, or none. Every run is a real `loco launch`.
#
#   bench/streaming.sh [speed] [loss] [wallclock]      (default: speed)
#
# speed: plain DiLoCo (fp32), DiLoCo with the delayed outer step (fp32) and streaming DiLoCo
#   (P = 4, tau = 5, alpha = 0.5, int4) at every link in LINKS (default "0 100 10"; 0 = no
#   limit), and streaming in fp32 without a limit (its pushes against DiLoCo's show what the
#   fragments alone cut), STEPS inner steps each (default 80: two outer rounds, so that a whole
#   sync falls between the first step and the last). Reports per run the time per inner step (a
#   worker's wall-clock from its first step's end to its last's over the steps between, mean over
#   workers: the join and the first pull of the state are left out), the share of that
#   wall-clock training spent in syncs (sum of sync_s / wall), and the bytes of one push
#   (the largest bytes_up of a worker's sync: the peak in flight per sync event).
# loss: plain DiLoCo (fp32) and streaming (P = 4, tau = 5, alpha = 0.5, int4) without a link
#   limit, LOSS_STEPS inner steps each (default 400): final val loss at equal tokens.
# wallclock: the equal-wall-clock comparison on the 100 Mbit/s link (50 ms): DDP (its all-reduce's
#   link modelled, docs/link.md) for DDP_STEPS steps (default 80) sets the wall-clock T; plain
#   DiLoCo (fp32) and streaming (P = 4, tau = 5, alpha = 0.5, int4) then run WALL_STEPS steps
#   (default 320, more than fits in T) and each is read at the coordinator's last evaluation
#   (one every H steps) within T: the tokens trained by then and that evaluation's val loss,
#   against DDP's tokens and final val loss. Both clocks start at their launch's first process
#   (DDP: rank 0's wall_s; DiLoCo: the coordinator's).
#
# BATCH: the per-worker batch of every run (default: configs/diloco-tiny.yaml's, 8), with
#   train.eval_batches = 64 / BATCH so that every batch is evaluated on the same 64 windows; a
#   BATCH other than 8 runs into runs/bench-streaming-bBATCH/ and writes
#   bench/results/streaming-bBATCH.{json,md}. Against DDP the batch matters: a DDP step is its
#   compute plus the all-reduce on the link, which does not shrink with the batch, so a smaller
#   batch lets a method that hides the link train more times DDP's tokens (docs/streaming.md).
#
# Needs the prepared corpus (scripts/quickstart.sh) and build/loco. Pins OPENBLAS_NUM_THREADS=1
# and one thread per worker for every run. Writes bench/results/streaming.json (every run's
# numbers) and bench/results/streaming.md (the tables docs/streaming.md shows).
set -euo pipefail
cd "$(dirname "$0")/.."
LOCO=${LOCO:-build/loco}
LINKS=${LINKS:-"0 100 10"}
STEPS=${STEPS:-80}
LOSS_STEPS=${LOSS_STEPS:-400}
DDP_STEPS=${DDP_STEPS:-80}
WALL_STEPS=${WALL_STEPS:-320}
H=40
BATCH=${BATCH:-8}
(( BATCH > 0 && 64 % BATCH == 0 )) || { echo "error: BATCH=$BATCH: give a divisor of 64 (the val windows)" >&2; exit 2; }
SUFFIX=$([[ $BATCH == 8 ]] || echo "-b$BATCH")
OUT=${OUT:-runs/bench-streaming$SUFFIX}
PHASES=("$@")
(( ${#PHASES[@]} )) || PHASES=(speed)
[[ -f data/nlp-corpus/val.bin ]] || { echo "error: run scripts/quickstart.sh first (needs data/nlp-corpus)" >&2; exit 2; }
[[ -x $LOCO ]] || { echo "error: $LOCO not found (build loco first)" >&2; exit 2; }
export OPENBLAS_NUM_THREADS=1
mkdir -p "$OUT" bench/results

STREAMING=(--set sync.mode=streaming --set sync.streaming.fragments=4
           --set sync.streaming.delay_steps=5 --set sync.streaming.alpha=0.5)
INT4=(--set sync.codec.type=int4 --set sync.codec.chunk=64)

# run NAME STEPS MBPS [--set ...]: one launch into $OUT/NAME (skipped when it finished before).
run() {
  local name=$1 steps=$2 mbps=$3
  shift 3
  local dir=$OUT/$name
  if [[ -f $dir/coordinator/summary.json || -f $dir/summary.json ]]; then
    echo "    $name: done already"
    return
  fi
  rm -rf "$dir"
  local port link=()
  port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  (( mbps > 0 )) && link=(--set sync.link.mbps="$mbps" --set sync.link.latency_ms=50)
  echo "==> $name: 4 workers x $steps steps${link:+, ${mbps} Mbit/s + 50 ms}"
  local start=$SECONDS
  "$LOCO" launch --config configs/diloco-tiny.yaml --set run.dir="$dir" \
    --set train.max_steps="$steps" --set sync.inner_steps=$H --set train.eval_every=0 \
    --set train.checkpoint_every=0 --set train.log_every=20 --set train.threads=1 \
    --set train.batch_size="$BATCH" --set train.eval_batches=$(( 64 / BATCH )) \
    --set sync.outer.momentum=0.5 --set sync.coordinator.address=127.0.0.1:"$port" \
    "${link[@]}" "$@" >"$dir.log" 2>&1 || { tail -20 "$dir.log"; exit 1; }
  echo "    $name: $(( SECONDS - start )) s"
}

for phase in "${PHASES[@]}"; do
  case $phase in
    speed)
      for mbps in $LINKS; do
        run "diloco-$mbps" "$STEPS" "$mbps"
        run "delayed-$mbps" "$STEPS" "$mbps" --set sync.overlap=delayed
        if [[ $mbps == 0 ]]; then run "streaming-$mbps" "$STEPS" "$mbps" "${STREAMING[@]}"; fi
        run "streaming-int4-$mbps" "$STEPS" "$mbps" "${STREAMING[@]}" "${INT4[@]}"
      done ;;
    loss)
      run "loss-diloco" "$LOSS_STEPS" 0
      run "loss-streaming-int4" "$LOSS_STEPS" 0 "${STREAMING[@]}" "${INT4[@]}" ;;
    wallclock)
      run "wall-ddp" "$DDP_STEPS" 100 --set sync.mode=ddp
      run "wall-diloco" "$WALL_STEPS" 100
      run "wall-streaming-int4" "$WALL_STEPS" 100 "${STREAMING[@]}" "${INT4[@]}" ;;
    *) echo "error: unknown phase '$phase' (speed, loss, wallclock)" >&2; exit 2 ;;
  esac
done

/usr/bin/python3 - "$OUT" "$LINKS" "$SUFFIX" <<'PY'
import glob, json, os, statistics, sys
out, links, suffix = sys.argv[1], sys.argv[2].split(), sys.argv[3]

def load(path):
    return [json.loads(l) for l in open(path) if l.strip()]

def measure(name):
    d = f"{out}/{name}"
    if not os.path.exists(f"{d}/coordinator/summary.json"):
        return None
    per_step, share, peak = [], [], 0
    for path in sorted(glob.glob(f"{d}/worker-*/metrics.jsonl")):
        recs = [r for r in load(path) if "step" in r]
        # From the first step's end to the last's: the join and the first pull of the whole
        # state (seconds over a slow link) are before it; a record's wall_s is taken before its
        # own sync, so the syncs inside are those of every step but the last.
        wall = recs[-1]["wall_s"] - recs[0]["wall_s"]
        per_step.append(wall / (len(recs) - 1))
        share.append(sum(r.get("sync_s", 0.0) for r in recs[:-1]) / wall)
        peak = max([peak] + [r["bytes_up"] for r in recs if "bytes_up" in r])
    summary = json.load(open(f"{d}/coordinator/summary.json"))
    n = len(per_step)
    return {"run": name, "step_s": sum(per_step) / n, "sync_share": sum(share) / n,
            "peak_push_bytes": peak, "bytes_up": summary.get("bytes_up"),
            "tokens": summary.get("tokens"), "final_val_loss": summary.get("final_val_loss")}

kinds = [("diloco", "DiLoCo fp32"), ("delayed", "DiLoCo, delayed outer step, fp32"),
         ("streaming", "streaming P4 tau5 a0.5, fp32"),
         ("streaming-int4", "streaming P4 tau5 a0.5, int4")]
runs = {}
for k, _ in kinds:
    for m in links:
        r = measure(f"{k}-{m}")
        if r: runs[r["run"]] = r
for name in ("loss-diloco", "loss-streaming-int4"):
    r = measure(name)
    if r: runs[name] = r

def at_wall(name, limit):
    """A coordinated run read at its coordinator's last evaluation within `limit` seconds."""
    d = f"{out}/{name}"
    if not os.path.exists(f"{d}/coordinator/summary.json"):
        return None
    evals = [r for r in load(f"{d}/coordinator/metrics.jsonl") if "val_loss" in r]
    within = [r for r in evals if r["wall_s"] <= limit]
    if not within:
        return None
    r = within[-1]
    # The tokens the workers trained within `limit` by their own clocks (each from its process's
    # start, as DDP's ranks), finer than the evaluations, which come once a round.
    trained = 0
    for path in sorted(glob.glob(f"{d}/worker-*/metrics.jsonl")):
        steps = [x for x in load(path) if "step" in x and x["wall_s"] <= limit]
        trained += steps[-1]["tokens"] if steps else 0
    return {"run": name, "wall_s": r["wall_s"], "round": r["round"], "tokens": r["tokens"],
            "val_loss": r["val_loss"], "bytes_up": r["bytes_up"], "trained_tokens": trained,
            "run_wall_s": evals[-1]["wall_s"], "run_tokens": evals[-1]["tokens"]}

wall = {}
ddp_dir = f"{out}/wall-ddp"
if os.path.exists(f"{ddp_dir}/summary.json"):
    s = json.load(open(f"{ddp_dir}/summary.json"))
    wall["ddp"] = {"run": "wall-ddp", "wall_s": s["wall_s"], "tokens": s["tokens"],
                   "trained_tokens": s["tokens"],
                   "val_loss": s["final_val_loss"], "bytes_up": s["bytes_up"], "steps": s["steps"]}
    # A DDP step split: its whole time and the all-reduce's time on the link (medians over rank 0's
    # steps); the rest is its compute and Gloo's own time, the bound 1 + link / rest.
    recs = [r for r in load(f"{ddp_dir}/metrics.jsonl") if "step_ms" in r and "link_s" in r]
    if recs:
        wall["ddp"]["step_s"] = statistics.median(r["step_ms"] for r in recs) / 1e3
        wall["ddp"]["link_s"] = statistics.median(r["link_s"] for r in recs)
    for k in ("diloco", "streaming-int4"):
        r = at_wall(f"wall-{k}", s["wall_s"])
        if r: wall[k] = r
runs["wallclock"] = wall
json.dump(runs, open(f"bench/results/streaming{suffix}.json", "w"), indent=1)

lines = ["| method | link | time per inner step | vs no limit | sync share of wall | bytes of one push |",
         "|---|---|---|---|---|---|"]
for k, label in kinds:
    base = runs.get(f"{k}-0")
    for m in links:
        r = runs.get(f"{k}-{m}")
        if not r: continue
        vs = f"{100 * (r['step_s'] / base['step_s'] - 1):+.1f}%" if base and m != "0" else "-"
        link = "none" if m == "0" else f"{m} Mbit/s, 50 ms"
        lines.append(f"| {label} | {link} | {r['step_s']:.3f} s | {vs} | {100 * r['sync_share']:.1f}% | "
                     f"{r['peak_push_bytes'] / 1e6:.2f} MB |")
a, b = runs.get("loss-diloco"), runs.get("loss-streaming-int4")
if a and b:
    lines += ["", "| method (no link limit) | tokens | final val loss | vs DiLoCo | bytes up |",
              "|---|---|---|---|---|"]
    for r, label in ((a, "DiLoCo fp32"), (b, "streaming P4 tau5 a0.5, int4")):
        lines.append(f"| {label} | {r['tokens']:,} | {r['final_val_loss']:.4f} | "
                     f"{100 * (r['final_val_loss'] / a['final_val_loss'] - 1):+.2f}% | "
                     f"{r['bytes_up'] / 1e6:.1f} MB |")
if "ddp" in wall:
    d = wall["ddp"]
    lines += ["", f"Equal wall-clock on the 100 Mbit/s, 50 ms link: DDP's {d['steps']} steps took "
              f"{d['wall_s']:.0f} s"
              + (f" (a step {d['step_s']:.2f} s, median, of which {d['link_s']:.2f} s the link and "
                 f"{d['step_s'] - d['link_s']:.2f} s the rest: a method that hides the link and computes "
                 f"a step as fast as DDP trains {d['step_s'] / (d['step_s'] - d['link_s']):.2f}x DDP's tokens)"
                 if "step_s" in d else "")
              + "; the others are read at their last evaluation within it (one "
              "every H steps), and by their workers' step records for the tokens trained in it.", "",
              "| method | tokens trained in DDP's time | vs DDP | last evaluation within it | its tokens | "
              "val loss | vs DDP |", "|---|---|---|---|---|---|---|"]
    for k, label in (("ddp", "DDP (link modelled)"), ("diloco", "DiLoCo fp32"),
                     ("streaming-int4", "streaming P4 tau5 a0.5, int4")):
        r = wall.get(k)
        if not r: continue
        lines.append(f"| {label} | {r['trained_tokens']:,} | {r['trained_tokens'] / d['tokens']:.2f}x | "
                     f"{r['wall_s']:.0f} s | {r['tokens']:,} | {r['val_loss']:.4f} | "
                     f"{100 * (r['val_loss'] / d['val_loss'] - 1):+.2f}% |")
open(f"bench/results/streaming{suffix}.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
