#!/usr/bin/python3
"""Table and plot of the DCT sweep (configs/experiments/dct_sweep.yaml): bytes against loss.

The runs are scripts/experiments.py's (bench/dct_sweep.sh runs them, then this). For each run
under RUNS that finished (its coordinator's summary.json says complete): the method, k and value
format (from its resolved config, coordinator/config.yaml), the bytes the method sent
(summary.json: pushes, per-round downloads and resyncs; not the first pull of the state, nor
demo's consensus for evaluation, which is listed on its own), the ratio to fp32 DiLoCo, the final
val loss and bits per byte, the gap to the best fp32 DiLoCo run of its seed, and the share of a
round's compute the workers spent encoding and decoding.

    dct_sweep.py [RUNS] [--results DIR]   RUNS: runs/reproduce/dct_sweep (a folder of runs);
                                          writes DIR/dct_sweep.{jsonl,md,png} (bench/results)
"""
import argparse
import glob
import json
import os
import subprocess
import sys

import yaml

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))
from experiments import flatten  # noqa: E402


def load_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def codec_share(run, h):
    shares = []
    for path in glob.glob(f"{run}/worker-*/metrics.jsonl"):
        recs = load_jsonl(path)
        for i, r in enumerate(recs):
            if "codec_s" in r and i + 1 >= h:
                compute = sum(x["step_ms"] for x in recs[i - h + 1:i + 1]) / 1e3
                shares.append(r["codec_s"] / compute)
    return max(shares) if shares else float("nan")


def down_k(r):
    """The download's k: sync.codec.topk_down, or its default (up k x 4 workers) when 0."""
    if r["k"] is None or r["method"] == "demo":
        return "–"
    return str(r["k_down"]) if r["k_down"] else f"{r['k'] * 4} (default)"


def rows_of(runs):
    """One row per complete run under `runs`, each with its gap to its seed's best fp32 DiLoCo."""
    rows = []
    for run in sorted(glob.glob(f"{runs}/*/")):
        run = run.rstrip("/")
        try:
            with open(f"{run}/coordinator/summary.json") as f:
                s = json.load(f)
            with open(f"{run}/coordinator/config.yaml") as f:
                c = flatten(yaml.safe_load(f))
        except (OSError, ValueError):
            continue  # not run, or killed while writing
        # summary.json from before its `complete` (2026-11-26): every round ran
        rounds = int(c["train.max_steps"]) // int(c["sync.inner_steps"])
        if not s.get("complete", s.get("rounds") == rounds):
            continue
        codec = c.get("sync.codec.type", "none")
        dct = codec == "dct"
        rows.append({
            "run": os.path.basename(run),
            "method": c["sync.mode"] + ("+dct" if c["sync.mode"] == "diloco" and dct else ""),
            "k": int(c["sync.codec.topk"]) if dct else None,
            "k_down": int(c.get("sync.codec.topk_down", 0)) if dct else None,
            "values": c["sync.codec.values"] if dct else "fp32",
            "resync_every": int(c.get("sync.resync_every", 0)),
            "outer_lr": float(c["sync.outer.lr"]),
            "outer_momentum": float(c["sync.outer.momentum"]),
            "seed": int(c["run.seed"]),
            "h": int(c["sync.inner_steps"]),
            "bytes": s["bytes_total"],
            "consensus_bytes": s["consensus_bytes_total"],
            "ratio_vs_diloco_fp32": s["ratio_vs_diloco_fp32"],
            "ratio_vs_ddp": s["ratio_vs_ddp"],
            "val_loss": s["final_val_loss"],
            "val_bpb": s["final_val_bpb"],
            "codec_share_max": codec_share(run, int(c["sync.inner_steps"])),
        })
    # Each run against the best fp32 DiLoCo run of its seed (its outer settings tuned as well)
    ref = {}
    for r in rows:
        if r["method"] == "diloco":
            ref[r["seed"]] = min(ref.get(r["seed"], r["val_loss"]), r["val_loss"])
    for r in rows:
        r["gap_pct"] = 100 * (r["val_loss"] / ref[r["seed"]] - 1) if r["seed"] in ref else float("nan")
    order = {"diloco": 0, "diloco+dct": 1, "demo": 2}
    rows.sort(key=lambda r: (order.get(r["method"], 3), r["values"], r["k"] or 0, r["k_down"] or 0,
                             r["resync_every"], r["outer_lr"], -r["outer_momentum"], r["seed"]))
    return rows


def table(rows):
    lines = ["| method | k up | k down | values | outer lr, momentum | resync every | seed | MB sent | × fewer than fp32 DiLoCo | × fewer than DDP | val loss | val bpb | vs fp32 DiLoCo | codec % of round (max) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['k'] or '–'} | {down_k(r)} | {r['values']} | {r['outer_lr']:g}, {r['outer_momentum']:g} | "
            f"{r['resync_every'] or '–'} | {r['seed']} | "
            f"{r['bytes'] / 1e6:.1f} | {r['ratio_vs_diloco_fp32']:.1f} | {r['ratio_vs_ddp']:.0f} | "
            f"{r['val_loss']:.4f} | {r['val_bpb']:.4f} | {r['gap_pct']:+.1f}% | "
            f"{100 * r['codec_share_max']:.2f} |")
    return "\n".join(lines) + "\n"


def plot(rows, h, results):
    """Val loss against MB sent (log scale), one line per value format, through gnuplot."""
    data = {}
    for r in rows:
        key = {"diloco": "fp32 DiLoCo", "diloco+dct": f"DiLoCo+DCT {r['values']}",
               "demo": "decoupled (demo)"}[r["method"]]
        label = f"k={r['k']}" if r["k"] else ""
        if r["k_down"]:
            label += f"/{r['k_down']}"
        if r["method"] == "demo":
            label += f" R={r['resync_every']}" if r["resync_every"] else ""
        if (r["outer_lr"], r["outer_momentum"]) != (0.7, 0.9):
            label += f" lr={r['outer_lr']:g} μ={r['outer_momentum']:g}"
        if r["seed"] != 1337:
            label += f" seed {r['seed']}"
        data.setdefault(key, []).append((r["bytes"] / 1e6, r["val_loss"], label or "-"))
    files, plots = [], []
    for i, (key, pts) in enumerate(sorted(data.items())):
        path = f"{results}/.sweep_{i}.dat"
        with open(path, "w") as f:
            for x, y, label in sorted(pts):
                f.write(f"{x} {y} \"{label}\"\n")
        files.append(path)
        style = "linespoints" if key.startswith("DiLoCo+DCT") else "points"
        plots.append(f"'{path}' using 1:2 with {style} pt 7 title '{key}'")
        if key != "fp32 DiLoCo" and "fp16" not in key:
            plots.append(f"'{path}' using 1:2:3 with labels offset 0,1 font ',9' notitle")
    script = (f"set terminal pngcairo size 900,600; set output '{results}/dct_sweep.png';"
              "set logscale x; set xlabel 'MB sent by the method (all workers, whole run)';"
              "set ylabel 'final val loss (nats)'; set grid; set key top right;"
              f"set title 'Bytes against loss: 4 workers, H={h}';"
              "plot " + ", ".join(plots))
    try:
        subprocess.run(["gnuplot", "-e", script], check=True)
        print(f"plot: {results}/dct_sweep.png")
    except (OSError, subprocess.CalledProcessError) as e:
        print(f"dct_sweep: no plot ({e})", file=sys.stderr)
    for f in files:
        os.remove(f)


def main():
    ap = argparse.ArgumentParser(description="table and plot of the DCT sweep's runs")
    ap.add_argument("runs", nargs="?", default="runs/reproduce/dct_sweep")
    ap.add_argument("--results", default="bench/results")
    args = ap.parse_args()
    rows = rows_of(args.runs)
    if not any(r["method"] == "diloco" for r in rows):
        print(f"dct_sweep: no finished fp32 DiLoCo run under {args.runs} to compare with",
              file=sys.stderr)
        return 1
    os.makedirs(args.results, exist_ok=True)
    with open(f"{args.results}/dct_sweep.jsonl", "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    text = table(rows)
    with open(f"{args.results}/dct_sweep.md", "w") as f:
        f.write(text)
    print(text)
    plot(rows, "/".join(str(h) for h in sorted({r["h"] for r in rows})), args.results)
    print(f"table: {args.results}/dct_sweep.md ({len(rows)} finished runs of {args.runs})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
