#!/usr/bin/env bash
# README command 1: install what is missing, fetch and prepare the default corpus (the npm
# package nlp-corpus), build loco, run a small comparison of DDP, DiLoCo and DiLoCo with the DCT
# codec on the tiny model (4 workers each, the same tokens), and say where the plots and the
# table are. Safe to run again: every step skips what is already done.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh

CORPUS_VERSION=4.4.0
RAW=data/raw/nlp-corpus-$CORPUS_VERSION
DATA=data/nlp-corpus
RUN=runs/quickstart
STEPS=${QUICKSTART_STEPS:-50}    # steps of each of the 4 workers (DDP ranks), 8x256 tokens each
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

build_loco loco  # the tests are scripts/test.sh's

# val.bin appears last, once every shard and index is written; a corpus prepared before shards
# (no val.index.json) is prepared again.
if [[ ! -f $DATA/val.bin || ! -f $DATA/val.index.json ]]; then
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

ckpt() { printf '%s/checkpoints/step_%08d.pt' "$1" "$2"; }
common=(--set train.max_steps="$STEPS" --set train.checkpoint_every=0)
say "1/3 DDP: 4 ranks of the tiny model (configs/tiny.yaml), $STEPS steps of 8x256 tokens each, gradients all-reduced every step, into $RUN/ddp"
train_once "$RUN/ddp" "$(ckpt "$RUN/ddp" "$STEPS")" \
  build/loco launch --config configs/tiny.yaml --set run.dir="$RUN/ddp" --set run.name=ddp \
    --set sync.mode=ddp --set sync.workers=4 --set train.eval_every=10 "${common[@]}"

# Both DiLoCo runs take the outer momentum the DCT config was tuned with (docs/dct.md), so the
# two differ only in what they send.
say "2/3 DiLoCo: a coordinator and 4 workers (configs/diloco-tiny.yaml), $STEPS steps each, H=$H, fp32, outer momentum 0.5, into $RUN/diloco"
train_once "$RUN/diloco" "$(ckpt "$RUN/diloco/coordinator" $((STEPS / H)))" \
  build/loco launch --config configs/diloco-tiny.yaml --set run.dir="$RUN/diloco" \
    --set run.name=diloco --set sync.inner_steps="$H" --set sync.outer.momentum=0.5 \
    --set train.eval_every=0 "${common[@]}"

say "3/3 DiLoCo + DCT: the same, sending top-k DCT coefficients both ways (configs/diloco-dct-tiny.yaml), into $RUN/diloco-dct"
train_once "$RUN/diloco-dct" "$(ckpt "$RUN/diloco-dct/coordinator" $((STEPS / H)))" \
  build/loco launch --config configs/diloco-dct-tiny.yaml --set run.dir="$RUN/diloco-dct" \
    --set run.name=diloco-dct --set sync.inner_steps="$H" --set train.eval_every=0 "${common[@]}"

say "a sample from the DDP model"
build/loco sample --checkpoint "$(ckpt "$RUN/ddp" "$STEPS")" --prompt "The film" --max-tokens 40 --seed 1

say "comparing the three runs (baseline: DDP)"
build/loco compare "$RUN/ddp" "$RUN/diloco" "$RUN/diloco-dct" --out "$RUN/compare"
echo "runs:   $RUN/ddp  $RUN/diloco  $RUN/diloco-dct   (metrics.jsonl, tb/, checkpoints/)"
echo "table:  $RUN/compare/table.md"
echo "plots:  $RUN/compare/val_loss_vs_tokens.png  val_loss_vs_time.png  val_loss_vs_bytes.png (and .svg)"
