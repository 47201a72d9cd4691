#!/usr/bin/env bash
# DiLoCo sync cost on loopback: 4 workers of the tiny model, H = 50, one real launch
# (coordinator + workers). Reports, from the run's own metrics:
#   - sync share: (push + pull - time waiting for the slowest worker) / compute of the H steps
#   - codec share: the worker's encode + decode (codec_s) / compute of the H steps
#   - the coordinator's own work rate (decode + weighted average + outer step), GB/s of fp32
#   - the raw loopback rate of the streamed state download (pull minus its wait), MB/s
# CONFIG picks the run (default configs/diloco-tiny.yaml, fp32; configs/diloco-dct-tiny.yaml for
# the DCT codec). Needs the prepared corpus (scripts/quickstart.sh). Writes
# bench/results/sync.json (fp32) or bench/results/sync-<config name>.json.
set -euo pipefail
cd "$(dirname "$0")/.."
LOCO=${LOCO:-build/loco}
ROUNDS=${ROUNDS:-2}
H=${H:-50}
CONFIG=${CONFIG:-configs/diloco-tiny.yaml}
NAME=$(basename "$CONFIG" .yaml)
RESULT=bench/results/sync.json
[[ $NAME == diloco-tiny ]] || RESULT=bench/results/sync-$NAME.json
RUN=runs/bench-sync
[[ -f data/nlp-corpus/val.bin ]] || { echo "error: run scripts/quickstart.sh first (needs data/nlp-corpus)" >&2; exit 2; }
rm -rf "$RUN"
PORT=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
echo "==> launching 4 workers x $((ROUNDS * H)) steps (H=$H, $CONFIG) into $RUN"
"$LOCO" launch --config "$CONFIG" --set run.dir="$RUN" --set sync.workers=4 \
  --set train.max_steps=$((ROUNDS * H)) --set sync.inner_steps="$H" \
  --set train.eval_every=0 --set train.checkpoint_every=0 --set train.log_every=25 \
  --set sync.coordinator.address=127.0.0.1:$PORT >"$RUN.log" 2>&1 || { tail -20 "$RUN.log"; exit 1; }
mkdir -p bench/results
/usr/bin/python3 - "$RUN" "$H" "$RESULT" "$CONFIG" <<'PY'
import glob, json, statistics, sys
run, H, result, config = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
def load(path):
    return [json.loads(l) for l in open(path) if l.strip()]
shares, codec, rates = [], [], []
for path in sorted(glob.glob(f"{run}/worker-*/metrics.jsonl")):
    recs = load(path)
    for i, r in enumerate(recs):
        if "sync_s" not in r:
            continue
        compute = sum(x["step_ms"] for x in recs[i - H + 1:i + 1]) / 1e3
        shares.append((r["sync_s"] - r["idle_s"]) / compute)
        codec.append(r.get("codec_s", 0.0) / compute)
        rates.append(r["bytes_down"] / max(r["pull_s"] - r["idle_s"], 1e-9) / 1e6)
coord = load(f"{run}/coordinator/metrics.jsonl")
gbps = [c["coord_work_bytes"] / c["coord_work_s"] / 1e9 for c in coord]
out = {"config": config, "workers": 4, "H": H, "rounds": len(coord),
       "sync_share_median": statistics.median(shares), "sync_share_max": max(shares),
       "codec_share_median": statistics.median(codec), "codec_share_max": max(codec),
       "coordinator_gb_per_s_median": statistics.median(gbps),
       "loopback_pull_mb_per_s_median": statistics.median(rates)}
json.dump(out, open(result, "w"), indent=1)
print(f"sync share of a round's compute: median {100*out['sync_share_median']:.2f}%, max {100*out['sync_share_max']:.2f}%  (target < 5%)")
print(f"codec share (encode + decode on the worker): median {100*out['codec_share_median']:.2f}%, max {100*out['codec_share_max']:.2f}%  (target < 5%)")
print(f"coordinator work (decode + average + outer step): {out['coordinator_gb_per_s_median']:.2f} GB/s of fp32  (target >= 1)")
print(f"loopback state download (streamed gRPC): {out['loopback_pull_mb_per_s_median']:.0f} MB/s")
PY
