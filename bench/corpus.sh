#!/usr/bin/env bash
# Corpora larger than memory (docs/performance.md, "Corpora larger than memory"). Two parts:
#  (a) memory: the tiny model (configs/tiny.yaml) trains STEPS steps on the prepared default
#      corpus (~5 MB of tokens), then on a synthetic corpus of BIG_TOKENS tokens (default 2^31:
#      4 GiB at 2 bytes a token, written by bench/corpus_synth as ordinary shards); peak RSS of
#      each `loco train` process from /usr/bin/time -v, and the difference.
#  (b) `loco data prepare` throughput, MB/s of text in its encoding phase, on all cores and on
#      one, beside SentencePiece's own Encode on the same text file and tokenizer.model
#      (bench/spm_encode_bench, no loco code), on the same thread counts, in the same run.
# Input: the default corpus (data/raw/nlp-corpus-4.4.0, fetched by scripts/quickstart.sh),
# flattened into one document per line. Everything goes to WORK (default runs/bench-corpus); the
# big corpus is deleted at the end. Writes bench/results/corpus.json.
set -euo pipefail
cd "$(dirname "$0")/.."
LOCO=${LOCO:-build/loco}
SYNTH=${SYNTH:-build/bench/corpus_synth}
SPM=${SPM:-build/bench/spm_encode_bench}
STEPS=${STEPS:-40}
BIG_TOKENS=${BIG_TOKENS:-2147483648}
WORK=${WORK:-runs/bench-corpus}
RAW=data/raw/nlp-corpus-4.4.0/builds
CORES=$(nproc)
for tool in "$LOCO" "$SYNTH" "$SPM"; do
  [[ -x $tool ]] || { echo "error: $tool missing: build first (cmake --build build)" >&2; exit 2; }
done
[[ -d $RAW ]] || { echo "error: $RAW missing: run scripts/quickstart.sh first" >&2; exit 2; }
need_gb=$(( BIG_TOKENS * 2 / 1000000000 + 2 ))
mkdir -p "$WORK"
free_gb=$(df -P --block-size=1G "$WORK" | awk 'NR==2 {print $4}')
(( free_gb > need_gb )) || { echo "error: $need_gb GB of disk needed for the big corpus, $free_gb GB free" >&2; exit 2; }
rm -rf "$WORK"
mkdir -p "$WORK" bench/results
trap 'rm -rf "$WORK/big"' EXIT

echo "==> (b) text: $RAW as one document per line"
/usr/bin/python3 - "$RAW" "$WORK/corpus.txt" <<'PY'
import json, pathlib, sys
docs = []
for f in sorted(pathlib.Path(sys.argv[1]).glob("*.json")):
    docs += [" ".join(d.split()) for d in json.load(open(f)) if d.strip()]
pathlib.Path(sys.argv[2]).write_text("\n".join(docs) + "\n")
print(f"{len(docs)} documents")
PY

mbps() { sed -n 's/.*prepare: encoded .* (\([0-9.]*\) MB\/s).*/\1/p' "$1"; }
for threads in "$CORES" 1; do
  echo "==> (b) loco data prepare --threads $threads"
  "$LOCO" data prepare --input "$WORK/corpus.txt" --out "$WORK/prep$threads" --vocab-size 4096 \
    --threads "$threads" >"$WORK/prepare$threads.log" 2>&1 || { tail -5 "$WORK/prepare$threads.log"; exit 1; }
  grep -E "prepare: encoded|tokenize" "$WORK/prepare$threads.log" | tail -2
  echo "==> (b) SentencePiece's own Encode, $threads threads"
  "$SPM" "$WORK/prep$CORES/tokenizer.model" "$WORK/corpus.txt" "$threads" | tee "$WORK/spm$threads.log"
done
# The train stream's shards in order: train.bin, then train-000001.bin, ... (if any).
stream() { cat "$1/train.bin"; if compgen -G "$1/train-*.bin" >/dev/null; then cat "$1"/train-*.bin; fi; }
cmp <(stream "$WORK/prep$CORES") <(stream "$WORK/prep1") \
  && echo "==> (b) the $CORES-thread and 1-thread shards are byte-identical"

peak_rss_mb() { sed -n 's/.*Maximum resident set size (kbytes): \([0-9]*\).*/\1/p' "$1" | awk '{printf "%.0f", $1 / 1024}'; }
train() {  # NAME TRAIN_BIN
  echo "==> (a) loco train: tiny model, $STEPS steps on $2"
  /usr/bin/time -v "$LOCO" train --config configs/tiny.yaml --set run.dir="$WORK/run-$1" \
    --set data.train="$2" --set data.val="$WORK/prep$CORES/val.bin" \
    --set data.tokenizer="$WORK/prep$CORES/tokenizer.model" --set train.max_steps="$STEPS" \
    --set train.eval_every=0 --set train.checkpoint_every=0 --set train.log_every=20 \
    >"$WORK/train-$1.log" 2>&1 || { tail -5 "$WORK/train-$1.log"; exit 1; }
  grep -E "Maximum resident|Elapsed" "$WORK/train-$1.log"
}
train small "$WORK/prep$CORES/train.bin"
echo "==> (a) writing the synthetic corpus: $BIG_TOKENS tokens, vocab 4096"
start=$(date +%s.%N)
"$SYNTH" "$WORK/big/train.bin" "$BIG_TOKENS" 4096 >"$WORK/synth.log" 2>&1 || { tail -5 "$WORK/synth.log"; exit 1; }
echo "written in $(echo "$(date +%s.%N) - $start" | bc) s: $(du -sh "$WORK/big" | cut -f1)"
train big "$WORK/big/train.bin"

/usr/bin/python3 - "$WORK" "$CORES" "$BIG_TOKENS" "$STEPS" \
  "$(peak_rss_mb "$WORK/train-small.log")" "$(peak_rss_mb "$WORK/train-big.log")" \
  "$(mbps "$WORK/prepare$CORES.log")" "$(mbps "$WORK/prepare1.log")" <<'PY'
import json, pathlib, re, sys
work, cores, big_tokens, steps, rss_small, rss_big, prep_n, prep_1 = sys.argv[1:]
work = pathlib.Path(work)
def spm(threads):
    return float(re.search(r"([0-9.]+) MB/s", (work / f"spm{threads}.log").read_text()).group(1))
small = json.loads((work / f"prep{cores}/train.index.json").read_text())["tokens"]
text_mb = (work / "corpus.txt").stat().st_size / 1e6
r = {"cores": int(cores), "steps": int(steps),
     "small_corpus_tokens": small, "small_corpus_mb": small * 2 / 1e6,
     "big_corpus_tokens": int(big_tokens), "big_corpus_gb": int(big_tokens) * 2 / 1e9,
     "peak_rss_small_mb": int(rss_small), "peak_rss_big_mb": int(rss_big),
     "peak_rss_extra_mb": int(rss_big) - int(rss_small),
     "text_mb": round(text_mb, 1),
     "prepare_mb_s": {cores: float(prep_n), "1": float(prep_1)},
     "spm_encode_mb_s": {cores: spm(cores), "1": spm(1)}}
out = pathlib.Path("bench/results/corpus.json")
out.write_text(json.dumps(r, indent=1) + "\n")
print(json.dumps(r, indent=1))
print(f"peak RSS: {rss_small} MB on {r['small_corpus_mb']:.1f} MB of tokens, {rss_big} MB on "
      f"{r['big_corpus_gb']:.2f} GB ({r['peak_rss_extra_mb']:+d} MB)")
print(f"encode MB/s of text: loco data prepare {prep_n} ({cores} threads), {prep_1} (1); "
      f"SentencePiece alone {spm(cores)} ({cores}), {spm(1)} (1)")
PY
