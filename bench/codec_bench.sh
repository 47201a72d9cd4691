#!/usr/bin/env bash
# Codec speed, loco vs. eager PyTorch: the dct codec's encode + decode over the tiny model's
# tensors (bench/codec_bench.cpp and bench/codec_bench.py), same chunk, k and thread count.
#
# Runs the two ROUNDS times, alternating, and prints the ratio of their medians in CPU time
# (steadier on a shared machine) and in wall time; writes bench/results/codec.json.
#
#   bench/codec_bench.sh    environment: BENCH (build/bench/codec_bench), PYTHON (/usr/bin/python3,
#                           needs torch), ROUNDS (3), REPEATS (20), THREADS (1), CHUNK (64), TOPK (32)
set -euo pipefail
cd "$(dirname "$0")/.."

BENCH=${BENCH:-build/bench/codec_bench}
PYTHON=${PYTHON:-/usr/bin/python3}
ROUNDS=${ROUNDS:-3}
REPEATS=${REPEATS:-20}
THREADS=${THREADS:-1}
CHUNK=${CHUNK:-64}
TOPK=${TOPK:-32}
RESULTS=bench/results/codec.json

[[ -x $BENCH ]] || { echo "codec_bench.sh: '$BENCH' not found (build the codec_bench target or set BENCH)" >&2; exit 2; }
# BLAS libraries may start threads of their own; hold them to the same count as LibTorch's.
export OPENBLAS_NUM_THREADS=$THREADS OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS

args=(--chunk "$CHUNK" --topk "$TOPK" --repeats "$REPEATS" --threads "$THREADS")
lines=$(mktemp)
trap 'rm -f "$lines"' EXIT
for round in $(seq "$ROUNDS"); do
  echo "codec_bench.sh: round $round of $ROUNDS" >&2
  "$BENCH" "${args[@]}" --values int8 >>"$lines"
  "$PYTHON" bench/codec_bench.py "${args[@]}" >>"$lines"
done

mkdir -p "$(dirname "$RESULTS")"
"$PYTHON" - "$lines" "$RESULTS" <<'EOF'
import json, statistics, sys
runs = [json.loads(line) for line in open(sys.argv[1])]
loco = [r for r in runs if r["impl"] == "loco"]
eager = [r for r in runs if r["impl"] == "pytorch-eager"]
med = lambda rs, key: statistics.median(r[key] for r in rs)
summary = {
    "loco_cpu_ms": med(loco, "encode_decode_cpu_ms"), "eager_cpu_ms": med(eager, "encode_decode_cpu_ms"),
    "loco_wall_ms": med(loco, "encode_decode_ms"), "eager_wall_ms": med(eager, "encode_decode_ms"),
    "payload_bytes": loco[0]["payload_bytes"], "fp32_over_payload": loco[0]["fp32_over_payload"],
}
summary["speedup_cpu"] = summary["eager_cpu_ms"] / summary["loco_cpu_ms"]
summary["speedup_wall"] = summary["eager_wall_ms"] / summary["loco_wall_ms"]
json.dump({"summary": summary, "runs": runs}, open(sys.argv[2], "w"), indent=1)
r = loco[0]
print(f"dct codec, chunk {r['chunk']}, top-{r['topk']}, int8 values, {r['tensors']} tensors "
      f"({r['elements']} values), {r['threads']} thread(s), median of {len(loco)} rounds")
print(f"{'':14}{'CPU ms':>10}{'wall ms':>10}")
print(f"{'loco':14}{summary['loco_cpu_ms']:10.1f}{summary['loco_wall_ms']:10.1f}")
print(f"{'PyTorch eager':14}{summary['eager_cpu_ms']:10.1f}{summary['eager_wall_ms']:10.1f}")
print(f"{'speed-up':14}{summary['speedup_cpu']:9.2f}x{summary['speedup_wall']:9.2f}x")
print(f"payload {summary['payload_bytes']} bytes, {summary['fp32_over_payload']:.0f}x smaller than fp32")
EOF
echo "codec_bench.sh: wrote $RESULTS" >&2
