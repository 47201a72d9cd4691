#!/usr/bin/env bash
# Training speed, loco vs. eager PyTorch, on the same model shape, batch and threads.
#
# Reads the shape from the config, runs `loco bench train --json` and bench/pytorch_train.py,
# prints a table with the ratio and writes bench/results/speed.json.
#
#   bench/speed.sh          environment: LOCO (build/loco), CONFIG (configs/tiny.yaml),
#                           STEPS (10), WARMUP (2), PYTHON (/usr/bin/python3, needs torch + yaml),
#                           OPENBLAS_NUM_THREADS / OMP_NUM_THREADS (default: the config's threads)
set -euo pipefail
cd "$(dirname "$0")/.."

LOCO=${LOCO:-build/loco}
CONFIG=${CONFIG:-configs/tiny.yaml}
STEPS=${STEPS:-10}
WARMUP=${WARMUP:-2}
PYTHON=${PYTHON:-/usr/bin/python3}
RESULTS=bench/results/speed.json

[[ -f $CONFIG ]] || { echo "speed.sh: config '$CONFIG' not found" >&2; exit 2; }
command -v "$LOCO" >/dev/null || { echo "speed.sh: loco binary '$LOCO' not found (build it or set LOCO)" >&2; exit 2; }

# Shape and threads from the YAML; keys it leaves out take loco's defaults (include/loco/config.h).
echo "speed.sh: reading model shape from $CONFIG"
pytorch_args=$("$PYTHON" - "$CONFIG" <<'EOF'
import sys, yaml
cfg = yaml.safe_load(open(sys.argv[1])) or {}
model, train = cfg.get("model") or {}, cfg.get("train") or {}
opt = train.get("optimizer") or {}
if opt.get("name", "adamw") != "adamw":
    print(f"speed.sh: note: config uses optimizer {opt['name']}, the PyTorch baseline uses AdamW", file=sys.stderr)
args = {
    "n-layer": model.get("n_layer", 4), "n-head": model.get("n_head", 4),
    "n-embd": model.get("n_embd", 256), "seq-len": model.get("seq_len", 256),
    "vocab-size": model.get("vocab_size", 4096), "softcap": model.get("softcap", 15.0),
    "batch-size": train.get("batch_size", 8), "threads": train.get("threads", 1),
    "lr": opt.get("lr", 3e-3), "device": train.get("device", "cpu"),
}
print(" ".join(f"--{k} {v}" for k, v in args.items()))
EOF
)
echo "speed.sh: shape $pytorch_args"

# torch::set_num_threads / torch.set_num_threads do not reach OpenBLAS's own pthread pool (Debian's
# libopenblas0-pthread starts one thread per core), so both sides would run their matmuls on more
# threads than configured. Pin BLAS and OpenMP to the configured count, the same for both; a value
# already in the environment wins (threads: 0 leaves the libraries' defaults).
threads=$(sed -n 's/.*--threads \([0-9]*\).*/\1/p' <<<"$pytorch_args")
if [[ ${threads:-0} -gt 0 ]]; then
  export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-$threads} OMP_NUM_THREADS=${OMP_NUM_THREADS:-$threads}
fi
echo "speed.sh: OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-unset} OMP_NUM_THREADS=${OMP_NUM_THREADS:-unset}"

echo "speed.sh: running loco ($LOCO bench train, $WARMUP warm-up + $STEPS timed steps)"
loco_json=$("$LOCO" bench train --config "$CONFIG" --steps "$STEPS" --warmup "$WARMUP" --json | tail -n 1)

echo "speed.sh: running PyTorch eager (bench/pytorch_train.py, same steps)"
# shellcheck disable=SC2086  # word splitting of the argument list is intended
pytorch_json=$("$PYTHON" bench/pytorch_train.py $pytorch_args --steps "$STEPS" --warmup "$WARMUP" | tail -n 1)

mkdir -p "$(dirname "$RESULTS")"
"$PYTHON" - "$RESULTS" "$CONFIG" "$pytorch_args" "$loco_json" "$pytorch_json" <<'EOF'
import datetime, json, platform, sys
out, config, shape, loco_line, pytorch_line = sys.argv[1:]
runs = {}
for impl, line in (("loco", loco_line), ("pytorch", pytorch_line)):
    try:
        runs[impl] = json.loads(line)
        float(runs[impl]["tokens_per_s"]), float(runs[impl]["ms_per_step"])
    except (ValueError, KeyError, TypeError):
        sys.exit(f"speed.sh: {impl} did not end with a JSON line holding tokens_per_s and ms_per_step: {line!r}")
ratio = runs["loco"]["tokens_per_s"] / runs["pytorch"]["tokens_per_s"]

print(f"\n{'impl':10s} {'tokens/s':>12s} {'ms/step':>10s}")
for impl, r in runs.items():
    print(f"{impl:10s} {r['tokens_per_s']:12.1f} {r['ms_per_step']:10.1f}")
loco = runs["loco"]
if "mfu" in loco:
    print(f"loco: peak mem {loco.get('peak_mem_mb')} MB, mfu {loco.get('mfu')}, "
          f"matmul peak {loco.get('matmul_peak_gflops')} GFLOP/s")
print(f"loco / pytorch = {ratio:.2f} x")

with open(out, "w") as f:
    json.dump({"date": datetime.datetime.now().isoformat(timespec="seconds"), "host": platform.node(),
               "config": config, "shape": shape, "loco": loco, "pytorch": runs["pytorch"],
               "ratio": round(ratio, 3)}, f, indent=2)
    f.write("\n")
print(f"speed.sh: wrote {out}")
EOF
