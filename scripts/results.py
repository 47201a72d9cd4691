#!/usr/bin/python3
"""Summarise finished runs as a markdown table (final val loss, bits per byte, speed).

usage: scripts/results.py RUN_DIR... [--out runs/results.md] [--readme README.md]

Reads each run's config.yaml and metrics.jsonl. With --readme, replaces the table between the
README's `<!-- results:begin -->` and `<!-- results:end -->` markers, so the README's numbers
always come from real runs.
"""
import argparse
import json
import math
import os
import re
import sys


def read_config_value(path, section, key):
    """The value of `key` under top-level `section` in a resolved loco config.yaml."""
    current = None
    with open(path) as f:
        for line in f:
            if re.match(r"^\S", line):
                current = line.split(":")[0].strip()
            elif current == section:
                m = re.match(r"^\s+(\w+):\s*(.*)$", line)
                if m and m.group(1) == key:
                    return m.group(2).strip().strip('"')
    return None


def summarise(run_dir):
    if os.path.isdir(os.path.join(run_dir, "coordinator")):
        return summarise_diloco(run_dir)
    metrics = os.path.join(run_dir, "metrics.jsonl")
    config = os.path.join(run_dir, "config.yaml")
    if not os.path.exists(metrics):
        sys.exit(f"error: {metrics}: no such file (has the run started?)")
    records = []
    with open(metrics) as f:
        for line in f:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                pass  # a torn last line
    evals = [r for r in records if "val_loss" in r]
    if not records or not evals:
        sys.exit(f"error: {metrics}: no evaluation recorded yet")
    last, final = records[-1], evals[-1]
    vocab = int(read_config_value(config, "model", "vocab_size") or 0)
    return {
        "run": read_config_value(config, "run", "name") or os.path.basename(run_dir),
        "mode": read_config_value(config, "sync", "mode") or "single",
        "steps": last["step"],
        "tokens": last["tokens"],
        "val_loss": final["val_loss"],
        "val_bpb": final["val_bpb"],
        "uniform": math.log(vocab) if vocab else float("nan"),
        "wall_s": last["wall_s"],
        "tok_s": last["tokens"] / max(last["wall_s"], 1e-9),
    }


def summarise_diloco(run_dir):
    """A DiLoCo run: the coordinator's metrics are the global model's; steps are per worker."""
    row = summarise(os.path.join(run_dir, "coordinator"))
    config = os.path.join(run_dir, "coordinator", "config.yaml")
    row["mode"] = "diloco x%s, H=%s" % (read_config_value(config, "sync", "workers"),
                                       read_config_value(config, "sync", "inner_steps"))
    up = down = 0
    with open(os.path.join(run_dir, "coordinator", "metrics.jsonl")) as f:
        for line in f:
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue
            up += r.get("bytes_up", 0)
            down += r.get("bytes_down", 0)
    row["bytes"] = up + down
    return row


def table(rows):
    lines = [
        "| run | mode | steps | tokens | val loss (uniform) | val bpb | bytes exchanged | wall time | tokens/s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['run']} | {r['mode']} | {r['steps']} | {r['tokens']:,} | "
            f"{r['val_loss']:.3f} ({r['uniform']:.3f}) | {r['val_bpb']:.3f} | "
            f"{r.get('bytes', 0) / 1e6:,.1f} MB | "
            f"{r['wall_s'] / 60:.1f} min | {r['tok_s']:,.0f} |"
        )
    return "\n".join(lines) + "\n"


def update_readme(path, text):
    with open(path) as f:
        readme = f.read()
    begin, end = "<!-- results:begin -->", "<!-- results:end -->"
    if begin not in readme or end not in readme:
        sys.exit(f"error: {path}: no {begin} ... {end} markers")
    head, rest = readme.split(begin, 1)
    _, tail = rest.split(end, 1)
    with open(path, "w") as f:
        f.write(head + begin + "\n" + text + end + tail)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--out", default="runs/results.md")
    parser.add_argument("--readme")
    args = parser.parse_args()
    text = table([summarise(r) for r in args.runs])
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        f.write(text)
    print(text, end="")
    if args.readme:
        update_readme(args.readme, text)
        print(f"updated {args.readme}")


if __name__ == "__main__":
    main()
