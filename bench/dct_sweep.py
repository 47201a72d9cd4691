#!/usr/bin/python3
"""Table and plot of bytes against loss: the DCT sweep (configs/experiments/dct_sweep.yaml) and
issue 21's tuning and frontier (configs/experiments/tune_*.yaml, frontier_*.yaml).

The runs are scripts/experiments.py's (bench/dct_sweep.sh and bench/frontier.sh run them, then
this). For each run under RUNS that finished (its coordinator's summary.json says complete): the
method (fp32 DiLoCo, DiLoCo with a dense codec, DiLoCo+DCT, SparseLoCo = top-k of raw chunks,
MuLoCo = Muon inside, the decoupled method), k and value format (from its resolved config,
coordinator/config.yaml), the bytes the method sent (summary.json: pushes, per-round downloads
and resyncs; not the first pull of the state, nor demo's consensus for evaluation, which is
listed on its own), the ratio to fp32 DiLoCo, the final val loss and bits per byte (the reported
model's; for the decoupled method also its consensus and its replicas' mean), the gap to the best
fp32 DiLoCo run of its seed, whether it is on the Pareto front of bytes against loss (no run of
its seed sends fewer or as many bytes and ends lower or as low), and the share of a round's
compute the workers spent encoding and decoding.

    dct_sweep.py [RUNS...] [--results DIR] [--name NAME]
        RUNS: folders of runs (runs/reproduce/dct_sweep); writes DIR/NAME.{jsonl,md,png}
        (bench/results/dct_sweep)
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


def method_of(c):
    """The method a resolved config runs, as the table names it."""
    codec = c.get("sync.codec.type", "none")
    if c["sync.mode"] == "demo":
        name = "demo"
    elif codec == "dct":
        name = "sparseloco" if c.get("sync.codec.transform", "dct") == "none" else "diloco+dct"
    elif codec != "none":
        name = f"diloco+{codec}"
    else:
        name = "diloco"
    if c.get("train.optimizer.name", "adamw") == "muon":
        name = "muloco" + name[len("diloco"):] if name.startswith("diloco") else name + "+muon"
    return name


def pareto(rows):
    """Marks each row on the front of its seed: no other row has bytes <= and loss <=, one <."""
    for r in rows:
        r["front"] = not any(
            o is not r and o["seed"] == r["seed"] and o["bytes"] <= r["bytes"] and
            o["val_loss"] <= r["val_loss"] and (o["bytes"], o["val_loss"]) != (r["bytes"], r["val_loss"])
            for o in rows)


def rows_of(runs_dirs):
    """One row per complete run under the folders, each with its gap to its seed's best fp32
    DiLoCo (AdamW inside) and whether it is on its seed's Pareto front."""
    rows = []
    for run in sorted(g for runs in runs_dirs for g in glob.glob(f"{runs}/*/")):
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
        replicas = s.get("replicas_final_val_loss") or {}
        rows.append({
            "run": os.path.relpath(run, os.path.dirname(os.path.dirname(run))),
            "method": method_of(c),
            "k": int(c["sync.codec.topk"]) if dct else None,
            "k_down": int(c.get("sync.codec.topk_down", 0)) if dct else None,
            "values": c["sync.codec.values"] if dct else ("fp32" if codec == "none" else codec),
            "resync_every": int(c.get("sync.resync_every", 0)),
            "outer_lr": float(c["sync.outer.lr"]),
            "outer_momentum": float(c["sync.outer.momentum"]),
            "error_decay": float(c.get("sync.codec.error_decay", 1.0)),
            "consensus_val_loss": s.get("consensus_final_val_loss"),
            "replicas_val_loss": replicas.get("mean"),
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
    order = {"diloco": 0, "diloco+dct": 1, "sparseloco": 2, "demo": 4}
    rows.sort(key=lambda r: (order.get(r["method"], 3), r["method"], r["values"], r["k"] or 0,
                             r["k_down"] or 0, r["resync_every"], r["outer_lr"],
                             -r["outer_momentum"], -r["error_decay"], r["seed"]))
    pareto(rows)
    return rows


def outer(r):
    """The outer settings as the method names them: lr and momentum, and the decayed error
    feedback's beta where it stands in for the momentum."""
    text = f"{r['outer_lr']:g}, {r['outer_momentum']:g}"
    return text + (f", β {r['error_decay']:g}" if r["error_decay"] < 1 else "")


def demo_losses(r):
    if r["consensus_val_loss"] is None:
        return "–"
    return f"{r['consensus_val_loss']:.4f} / {r['replicas_val_loss']:.4f}"


def table(rows):
    lines = ["| method | k up | k down | values | outer lr, momentum | resync every | seed | MB sent | × fewer than fp32 DiLoCo | × fewer than DDP | val loss | val bpb | vs fp32 DiLoCo | demo: consensus / replicas' mean | Pareto front | codec % of round (max) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['k'] or '–'} | {down_k(r)} | {r['values']} | {outer(r)} | "
            f"{r['resync_every'] or '–'} | {r['seed']} | "
            f"{r['bytes'] / 1e6:.1f} | {r['ratio_vs_diloco_fp32']:.1f} | {r['ratio_vs_ddp']:.0f} | "
            f"{r['val_loss']:.4f} | {r['val_bpb']:.4f} | {r['gap_pct']:+.1f}% | {demo_losses(r)} | "
            f"{'yes' if r['front'] else ''} | {100 * r['codec_share_max']:.2f} |")
    return "\n".join(lines) + "\n"


def plot(rows, h, results, name):
    """Val loss against MB sent (log scale), one series per method and value format, the Pareto
    front of the first seed drawn through its points, through gnuplot."""
    data = {}
    for r in rows:
        key = {"diloco": "fp32 DiLoCo", "demo": "decoupled (demo)"}.get(r["method"])
        key = key or f"{r['method']} {r['values']}"
        label = f"k={r['k']}" if r["k"] else ""
        if r["k_down"]:
            label += f"/{r['k_down']}"
        if r["method"] == "demo":
            label += f" R={r['resync_every']}" if r["resync_every"] else ""
        if (r["outer_lr"], r["outer_momentum"], r["error_decay"]) != (0.7, 0.9, 1.0):
            label += f" lr={r['outer_lr']:g} μ={r['outer_momentum']:g}"
            label += f" β={r['error_decay']:g}" if r["error_decay"] < 1 else ""
        if r["seed"] != 1337:
            label += f" seed {r['seed']}"
        data.setdefault(key, []).append((r["bytes"] / 1e6, r["val_loss"], label or "-"))
    files, plots = [], []
    seed = min(r["seed"] for r in rows)
    front = sorted((r["bytes"] / 1e6, r["val_loss"]) for r in rows if r["front"] and r["seed"] == seed)
    if front:
        path = f"{results}/.{name}_front.dat"
        with open(path, "w") as f:
            f.writelines(f"{x} {y}\n" for x, y in front)
        files.append(path)
        plots.append(f"'{path}' using 1:2 with steps lw 2 lc rgb '#999999' title 'Pareto front'")
    for i, (key, pts) in enumerate(sorted(data.items())):
        path = f"{results}/.{name}_{i}.dat"
        with open(path, "w") as f:
            for x, y, label in sorted(pts):
                f.write(f"{x} {y} \"{label}\"\n")
        files.append(path)
        style = "linespoints" if len(pts) > 1 and key != "fp32 DiLoCo" else "points"
        plots.append(f"'{path}' using 1:2 with {style} pt 7 title '{key}'")
        if key != "fp32 DiLoCo" and "fp16" not in key and len(rows) <= 20:
            plots.append(f"'{path}' using 1:2:3 with labels offset 0,1 font ',8' notitle")
    script = (f"set terminal pngcairo size 1000,650; set output '{results}/{name}.png';"
              "set logscale x; set xlabel 'MB sent by the method (all workers, whole run)';"
              "set ylabel 'final val loss (nats)'; set grid; set key outside right;"
              f"set title 'Bytes against loss: 4 workers, H={h}';"
              "plot " + ", ".join(plots))
    try:
        subprocess.run(["gnuplot", "-e", script], check=True)
        print(f"plot: {results}/{name}.png")
    except (OSError, subprocess.CalledProcessError) as e:
        print(f"dct_sweep: no plot ({e})", file=sys.stderr)
    for f in files:
        os.remove(f)


def main():
    ap = argparse.ArgumentParser(description="table and plot of bytes against loss")
    ap.add_argument("runs", nargs="*", default=["runs/reproduce/dct_sweep"])
    ap.add_argument("--results", default="bench/results")
    ap.add_argument("--name", default="dct_sweep", help="the results' file name")
    args = ap.parse_args()
    rows = rows_of(args.runs)
    if not any(r["method"] == "diloco" for r in rows):
        print(f"dct_sweep: no finished fp32 DiLoCo run under {' '.join(args.runs)} to compare with",
              file=sys.stderr)
        return 1
    os.makedirs(args.results, exist_ok=True)
    with open(f"{args.results}/{args.name}.jsonl", "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    text = table(rows)
    with open(f"{args.results}/{args.name}.md", "w") as f:
        f.write(text)
    print(text)
    plot(rows, "/".join(str(h) for h in sorted({r["h"] for r in rows})), args.results, args.name)
    print(f"table: {args.results}/{args.name}.md ({len(rows)} finished runs of {' '.join(args.runs)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
