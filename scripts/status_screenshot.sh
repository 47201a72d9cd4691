#!/usr/bin/env bash
# docs/status.png: the live status page (sync.coordinator.status_address, docs/status.md) of a
# running `loco launch`, as Debian's headless chromium draws it. Prepares the shipped test sample
# (tests/data/sample.json) into a temporary directory, launches a small DiLoCo run (3 workers,
# a shared secret, the page on loopback), waits for ROUNDS closed rounds, prints `loco status`,
# takes the screenshot with ?token=, and stops the run with SIGINT. Needs build/loco and chromium.
#   scripts/status_screenshot.sh [OUT.png]     (default docs/status.png; ROUNDS=12 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-docs/status.png}
ROUNDS=${ROUNDS:-12}
LOCO=build/loco
command -v chromium >/dev/null || { echo "error: chromium is not installed (apt-get install chromium)" >&2; exit 1; }
[[ -x $LOCO ]] || { echo "error: $LOCO is missing: build loco first" >&2; exit 1; }

TMP=$(mktemp -d)
LAUNCH=
cleanup() {
  [[ -n $LAUNCH ]] && kill -INT "$LAUNCH" 2>/dev/null && wait "$LAUNCH" 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT

free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORT=$(free_port)
PAGE=$(free_port)
echo "status-page-demo" > "$TMP/secret"
$LOCO data prepare --input tests/data/sample.json --out "$TMP/data" --vocab-size 512 >/dev/null

$LOCO launch --config configs/diloco-tiny.yaml \
  --set run.name=status-demo --set run.dir="$TMP/run" \
  --set data.train="$TMP/data/train.bin" --set data.val="$TMP/data/val.bin" \
  --set data.tokenizer="$TMP/data/tokenizer.model" \
  --set model.n_layer=2 --set model.n_head=2 --set model.n_embd=128 --set model.seq_len=64 \
  --set model.vocab_size=512 --set train.batch_size=8 --set train.max_steps=1000 \
  --set train.eval_every=5 --set train.eval_batches=2 --set train.checkpoint_every=0 \
  --set train.log_every=5 --set sync.workers=3 --set sync.inner_steps=5 \
  --set sync.coordinator.address=127.0.0.1:$PORT \
  --set sync.coordinator.secret_file="$TMP/secret" \
  --set sync.coordinator.status_address=127.0.0.1:$PAGE > "$TMP/launch.log" 2>&1 &
LAUNCH=$!

metrics=$TMP/run/coordinator/metrics.jsonl
for _ in $(seq 1 600); do
  [[ -f $metrics ]] && (( $(wc -l < "$metrics") >= ROUNDS )) && break
  kill -0 "$LAUNCH" 2>/dev/null || { cat "$TMP/launch.log" >&2; exit 1; }
  sleep 0.5
done
$LOCO status 127.0.0.1:$PORT --secret-file "$TMP/secret"
chromium --headless --no-sandbox --disable-gpu --disable-dev-shm-usage \
  --user-data-dir="$TMP/chromium" --window-size=1100,700 --virtual-time-budget=3000 \
  --screenshot="$OUT" "http://127.0.0.1:$PAGE/?token=status-page-demo" 2>/dev/null
echo "wrote $OUT"
