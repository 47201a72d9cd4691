#!/usr/bin/env bash
# README command 1: install what is missing, fetch and prepare the default corpus (the npm
# package nlp-corpus), build loco, train the tiny model for a few minutes, and say where the
# results are. Safe to run again: every step skips what is already done.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh

CORPUS_VERSION=4.4.0
RAW=data/raw/nlp-corpus-$CORPUS_VERSION
DATA=data/nlp-corpus
RUN=runs/quickstart
STEPS=${QUICKSTART_STEPS:-200}   # single-worker steps; each of the 4 DiLoCo workers runs STEPS/4
H=${QUICKSTART_H:-10}            # DiLoCo inner steps per round

# npm fetches the corpus; a machine that already has Node.js's own npm keeps it.
if command -v npm >/dev/null; then install_packages; else install_packages npm; fi

if [[ ! -d $RAW/builds ]]; then
  say "fetching the default corpus: npm package nlp-corpus@$CORPUS_VERSION (MIT, ~9 MB of English sentences)"
  mkdir -p "$RAW"
  tarball=$(cd "$RAW" && npm pack --silent "nlp-corpus@$CORPUS_VERSION")
  tar -xzf "$RAW/$tarball" -C "$RAW" --strip-components=1 package/builds
  rm -f "$RAW/$tarball"
else
  say "default corpus already in $RAW"
fi

build_loco

if [[ ! -f $DATA/val.bin ]]; then
  say "preparing the corpus: BPE tokenizer (vocab 4096) and token shards into $DATA"
  build/loco data prepare --input "$RAW/builds" --out "$DATA" --vocab-size 4096
else
  say "prepared corpus already in $DATA"
fi

# train_once NAME COMMAND...: runs a training command unless its run already finished.
train_once() {
  local dir=$1 done_marker=$2
  shift 2
  if [[ -f $done_marker ]]; then
    say "$dir already finished; remove it to train again"
  else
    rm -rf "$dir"
    "$@"
  fi
}

single_ckpt=$(printf '%s/single/checkpoints/step_%08d.pt' "$RUN" "$STEPS")
say "1/2 single worker: the tiny model (configs/tiny.yaml), $STEPS steps of 8x256 tokens, into $RUN/single"
train_once "$RUN/single" "$single_ckpt" \
  build/loco train --config configs/tiny.yaml --set run.dir="$RUN/single" --set run.name=single \
    --set train.max_steps="$STEPS" --set train.eval_every=50 --set train.checkpoint_every=100

worker_steps=$((STEPS / 4))
diloco_ckpt=$(printf '%s/diloco/coordinator/checkpoints/step_%08d.pt' "$RUN" $((worker_steps / H)))
say "2/2 DiLoCo: a coordinator and 4 workers (configs/diloco-tiny.yaml), $worker_steps steps each, H=$H: the same total tokens"
train_once "$RUN/diloco" "$diloco_ckpt" \
  build/loco launch --config configs/diloco-tiny.yaml --set run.dir="$RUN/diloco" \
    --set run.name=diloco-4x --set train.max_steps="$worker_steps" --set sync.inner_steps="$H" \
    --set train.eval_every=0 --set train.checkpoint_every=0

say "a sample from the single-worker model"
build/loco sample --checkpoint "$single_ckpt" --prompt "The film" --max-tokens 40 --seed 1

say "results (same total tokens)"
/usr/bin/python3 scripts/results.py "$RUN/single" "$RUN/diloco" --out "$RUN/results.md"
echo "single-worker run:  $RUN/single   (metrics.jsonl, checkpoints/)"
echo "DiLoCo run:         $RUN/diloco   (coordinator/metrics.jsonl is the global model; worker-N/)"
echo "table:              $RUN/results.md"
