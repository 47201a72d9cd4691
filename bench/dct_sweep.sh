#!/usr/bin/env bash
# The bytes-versus-loss trade-off of the DCT methods on the default corpus: fp32 DiLoCo, DiLoCo
# with the DCT codec for every k in $KS and fp16 / int8 values, and the decoupled method (demo)
# with and without sync.resync_every and at its own eta, DiLoCo (fp32 and DCT) at another outer
# momentum, and the chosen setting on a second seed. Every run: 4 workers of the tiny model, H
# inner steps, $ROUNDS rounds, the same data, so all see the same tokens. Finished runs (their
# summary.json exists) are skipped, so an interrupted sweep resumes.
# Writes bench/results/dct_sweep.{jsonl,md,png} via bench/dct_sweep.py.
set -euo pipefail
cd "$(dirname "$0")/.."
LOCO=${LOCO:-build/loco}
H=${H:-25}
ROUNDS=${ROUNDS:-8}
BATCH=${BATCH:-4}
KS=${KS:-"8 32 128 256 512"}   # int8 values
KS_FP16=${KS_FP16:-"32 256"}      # fp16 values, to compare the formats
# up:down pairs (int8): the download's k (sync.codec.topk_down; default up k x workers) decides
# most of the bytes, since the average of 4 top-k sets has up to 4k coefficients per chunk
KS_DOWN=${KS_DOWN:-"128:128 256:256 256:512 384:384"}
# outer learning rates besides the config's 0.7: the decoupled method's eta scales its whole
# local step eta * (delta + beta * m), and m carries what was not sent, so it wants its own
DEMO_LRS=${DEMO_LRS:-"0.2 0.4"}
DEMO_RESYNC_LR=${DEMO_RESYNC_LR:-0.2}   # eta of the resync_every points (the best of DEMO_LRS)
# up:down@lr@momentum points (int8): error feedback applies what a round held back in later
# rounds, a delay the outer Nesterov momentum then amplifies, so the DCT runs may want their own
DCT_OUTER=${DCT_OUTER:-"384:384@0.7@0.5 256:256@0.7@0.5 32:128@0.7@0.5"}
FP32_OUTER=${FP32_OUTER:-"0.7@0.5"}   # lr@momentum: fp32 DiLoCo at the DCT points' other settings
# seed@up:down@lr@momentum: the chosen default again with other seeds, beside fp32 DiLoCo's run
# at the same outer settings and seed, to see whether its gap holds beyond one seed
SEEDS=${SEEDS:-"2@256:256@0.7@0.5"}
OUT=${OUT:-runs/dct-sweep}
[[ -f data/nlp-corpus/val.bin ]] || { echo "error: run scripts/quickstart.sh first (needs data/nlp-corpus)" >&2; exit 2; }
mkdir -p "$OUT" bench/results

run() {  # run NAME OVERRIDES...
  local name=$1; shift
  local dir="$OUT/$name"
  if /usr/bin/python3 -c 'import json, sys; s = json.load(open(sys.argv[1]))
sys.exit(0 if s.get("complete", s["rounds"] == int(sys.argv[2])) else 1)' \
      "$dir/coordinator/summary.json" "$ROUNDS" 2>/dev/null; then
    echo "==> $name: done already"; return
  fi
  rm -rf "$dir"
  local port
  port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  local args=(--set run.dir="$dir" --set train.max_steps=$((ROUNDS * H)) --set sync.inner_steps="$H"
    --set train.batch_size="$BATCH" --set train.eval_every=0 --set train.checkpoint_every=0
    --set train.eval_batches=16 --set train.log_every=25 --set sync.coordinator.address=127.0.0.1:$port)
  for o in "$@"; do args+=(--set "$o"); done
  echo "==> $name ($((ROUNDS * H)) steps x 4 workers, H=$H): $*"
  local start=$SECONDS
  mkdir -p "$dir"
  if ! "$LOCO" launch --config configs/diloco-tiny.yaml "${args[@]}" >"$dir.log" 2>&1; then
    tail -20 "$dir.log"; echo "error: $name failed (log: $dir.log)" >&2; exit 1
  fi
  echo "    $(grep -o 'done at round.*' "$dir.log" | tail -1 | cut -c1-160) [$((SECONDS - start)) s]"
}

run diloco-fp32 sync.codec.type=none
for point in $FP32_OUTER; do
  IFS=@ read -r lr mom <<<"$point"
  run "diloco-fp32-lr$lr-m$mom" sync.codec.type=none sync.outer.lr="$lr" sync.outer.momentum="$mom"
done
for k in $KS; do
  run "diloco-dct-k$k-int8" sync.codec.type=dct sync.codec.topk="$k" sync.codec.values=int8
done
for k in $KS_FP16; do
  run "diloco-dct-k$k-fp16" sync.codec.type=dct sync.codec.topk="$k" sync.codec.values=fp16
done
for pair in $KS_DOWN; do
  up=${pair%:*} down=${pair#*:}
  run "diloco-dct-k$up-d$down-int8" sync.codec.type=dct sync.codec.topk="$up" \
    sync.codec.topk_down="$down" sync.codec.values=int8
done
# dct_outer UP:DOWN LR MOMENTUM SUFFIX [OVERRIDES...]: an int8 DCT run at those outer settings
dct_outer() {
  local up=${1%:*} down=${1#*:} lr=$2 mom=$3 suffix=$4
  shift 4
  run "diloco-dct-k$up-d$down-int8-lr$lr-m$mom$suffix" sync.codec.type=dct sync.codec.topk="$up" \
    sync.codec.topk_down="$down" sync.codec.values=int8 sync.outer.lr="$lr" \
    sync.outer.momentum="$mom" "$@"
}
for point in $DCT_OUTER; do
  IFS=@ read -r pair lr mom <<<"$point"
  dct_outer "$pair" "$lr" "$mom" ""
done
for point in $SEEDS; do
  IFS=@ read -r seed pair lr mom <<<"$point"
  run "diloco-fp32-lr$lr-m$mom-seed$seed" sync.codec.type=none sync.outer.lr="$lr" \
    sync.outer.momentum="$mom" run.seed="$seed"
  dct_outer "$pair" "$lr" "$mom" "-seed$seed" run.seed="$seed"
done
run demo-k32-int8 sync.mode=demo sync.codec.type=dct sync.codec.topk=32 sync.codec.values=int8
run demo-k256-int8 sync.mode=demo sync.codec.type=dct sync.codec.topk=256 sync.codec.values=int8
for lr in $DEMO_LRS; do
  run "demo-k32-int8-lr$lr" sync.mode=demo sync.codec.type=dct sync.codec.topk=32 \
    sync.codec.values=int8 sync.outer.lr="$lr"
done
suffix=$([[ $DEMO_RESYNC_LR == 0.7 ]] || echo "-lr$DEMO_RESYNC_LR")
for r in 4 2; do
  run "demo-k32-int8-resync$r$suffix" sync.mode=demo sync.codec.type=dct sync.codec.topk=32 \
    sync.codec.values=int8 sync.resync_every="$r" sync.outer.lr="$DEMO_RESYNC_LR"
done
/usr/bin/python3 bench/dct_sweep.py "$OUT" --h "$H"
