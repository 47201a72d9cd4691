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
STEPS=${QUICKSTART_STEPS:-300}

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

final=$(printf '%s/checkpoints/step_%08d.pt' "$RUN" "$STEPS")
if [[ -f $final ]]; then
  say "the quickstart run already finished ($final); remove $RUN to train again"
else
  rm -rf "$RUN"
  say "training the tiny model (configs/tiny.yaml) for $STEPS steps on 1 thread into $RUN"
  build/loco train --config configs/tiny.yaml --set run.dir="$RUN" --set run.name=quickstart \
    --set train.max_steps="$STEPS" --set train.eval_every=50 --set train.checkpoint_every=100
fi

say "a sample from the trained model"
build/loco sample --checkpoint "$final" --prompt "The film" --max-tokens 40 --seed 1

say "results"
/usr/bin/python3 scripts/results.py "$RUN"
echo "metrics:    $RUN/metrics.jsonl"
echo "config:     $RUN/config.yaml"
echo "checkpoint: $final"
echo "results:    runs/results.md (scripts/results.py also updates the README's table)"
