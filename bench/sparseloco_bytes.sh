#!/usr/bin/env bash
# Bytes and val loss of SparseLoCo's combination of knobs (configs/sparseloco-tiny.yaml) against
# fp32 DiLoCo on the same short run: the tiny model, WORKERS workers, H inner steps, STEPS steps
# per worker, the same data and seed. Prints one line per run from its coordinator/summary.json
# and metrics.jsonl (docs/codec.md, "SparseLoCo").
#
#   DATA=data/nlp-corpus LOCO=build/loco bench/sparseloco_bytes.sh [OUT_DIR]
set -euo pipefail
LOCO=${LOCO:-build/loco}
DATA=${DATA:-data/nlp-corpus}
WORKERS=${WORKERS:-2}
H=${H:-25}
STEPS=${STEPS:-100}
OUT=${1:-runs/sparseloco-bytes}
PORT=${PORT:-$((52000 + RANDOM % 2000))}
common=(--set data.train=$DATA/train.bin --set data.val=$DATA/val.bin
        --set data.tokenizer=$DATA/tokenizer.model --set sync.workers=$WORKERS
        --set sync.inner_steps=$H --set train.max_steps=$STEPS --set train.eval_every=$STEPS
        --set train.checkpoint_every=0 --set sync.coordinator.address=127.0.0.1:$PORT)
run() {  # name, extra --set ...
  local name=$1; shift
  rm -rf "$OUT/$name"
  echo "== $name" >&2
  "$LOCO" launch --config configs/sparseloco-tiny.yaml "${common[@]}" \
    --set run.dir="$OUT/$name" "$@" > "$OUT/$name.log" 2>&1 || { tail -20 "$OUT/$name.log"; exit 1; }
}
mkdir -p "$OUT"
run sparseloco --set sync.codec.topk_down=$((64 * WORKERS))
run diloco-fp32 --set sync.codec.type=none --set sync.codec.transform=dct \
  --set sync.codec.values=int8 --set sync.codec.values_down= --set sync.codec.error_decay=1 \
  --set sync.codec.topk_down=0 --set sync.outer.lr=0.7 --set sync.outer.momentum=0.5
/usr/bin/python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
print("| run | bytes_total | × fewer than fp32 DiLoCo | final val loss | resyncs |")
print("|---|---:|---:|---:|---:|")
for name in ("diloco-fp32", "sparseloco"):
    s = json.load(open(f"{out}/{name}/coordinator/summary.json"))
    rounds = [json.loads(l) for l in open(f"{out}/{name}/coordinator/metrics.jsonl")]
    val = [r["val_loss"] for r in rounds if "val_loss" in r]
    resyncs = 0
    import glob
    for f in glob.glob(f"{out}/{name}/worker-*/metrics.jsonl"):
        resyncs += sum(1 for l in open(f) if '"resynced":true' in l.replace(" ", ""))
    print(f"| {name} | {s['bytes_total']:,} | {s['ratio_vs_diloco_fp32']:.1f} | "
          f"{val[-1]:.4f} | {resyncs} |")
PY
