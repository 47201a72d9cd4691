#!/usr/bin/python3
"""Writes the reproduction's page (docs/RESULTS.md) from the runs of scripts/reproduce.sh.

One table per experiment of configs/experiments/ (every point, "not run yet" where it has not
finished: no number on the page comes from anywhere but the runs), `loco compare`'s plots for the
experiments that ask for them, what the tuning carried into the headline, the machine and the
dates, and the issue's targets checked against the numbers: met, missed (with the measured gap)
or not run yet.

    results_page.py [--out runs/reproduce] [--scale 1] [--page docs/RESULTS.md] [--loco build/loco]
                    [--experiments NAME...]   (a page of those experiments only)
"""
import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import experiments  # noqa: E402  (this folder's)
from experiments import ORDER, describe, load, read_jsonl, resolve  # noqa: E402
from results import update_readme  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench"))
import dct_sweep  # noqa: E402  (the bytes-against-loss table of bench/)

PAGE_ORDER = ["headline", "h_lr", "batch", "workers", "slow_link"]  # the others have own pages
TOLERANCE = 5e-5  # "reached" as in loco compare: within half the table's last digit


def measure(p):
    """A finished point's numbers (docs/compare.md's conventions), or None. Bytes and ratios are
    the run's own summary.json's (include/loco/bytes.h), never recomputed here."""
    if p.state() != "done":
        return None
    summary = p.summary()
    if p.mode == "ddp":
        lines = read_jsonl(os.path.join(p.dir, "metrics.jsonl"))
        evals = [r for r in lines if "val_loss" in r]
    else:
        lines = read_jsonl(os.path.join(p.dir, "coordinator", "metrics.jsonl"))
        evals = [r for r in lines if "val_loss" in r and (p.mode != "demo" or r.get("consensus"))]
    m = {"tokens": summary["tokens"], "bytes": summary["bytes_total"], "wall": lines[-1]["wall_s"],
         "vs_ddp": summary["ratio_vs_ddp"], "vs_fp32": summary["ratio_vs_diloco_fp32"],
         "rounds": summary.get("rounds")}
    m.update(loss=evals[-1]["val_loss"], bpb=evals[-1]["val_bpb"],
             curve=[(r["wall_s"], r["val_loss"]) for r in evals], started=p.record().get("started"),
             host=p.record().get("host"))
    return m


def time_to(m, loss):
    return next((t for t, v in m["curve"] if v <= loss + TOLERANCE), None)


def loss_at(m, t):
    """The run's last val loss evaluated by wall-clock t (None before its first evaluation)."""
    return next((v for s, v in reversed(m["curve"]) if s <= t), None)


def ddp_to(ddp, m):
    """How long DDP took to reach the run's own final loss: the speed-up at that loss."""
    t = time_to(ddp, m["loss"])
    return "" if t is None else (f"; DDP took {duration(t)} to reach this run's "
                                 f"{m['loss']:.4f}, {t / m['wall']:.1f}× its time")


def ddp_then(ddp, t):
    """What DDP had reached by wall-clock t, for comparing at equal time."""
    v = loss_at(ddp, t)
    return (f"DDP at that wall-clock: {v:.4f}" if v is not None
            else "DDP had not evaluated yet at that wall-clock")


def size(b):
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if b >= scale:
            return f"{b / scale:.1f} {unit}"
    return f"{b:.0f} B"


def duration(s):
    return f"{s:.0f} s" if s < 600 else f"{s / 60:.1f} min" if s < 3 * 3600 else f"{s / 3600:.2f} h"


def times(x):
    return "—" if x is None else f"{x:,.1f}×"


class Runs:
    """Every experiment's points and their numbers, and each one's baseline."""

    def __init__(self, out, scale):
        self.memo = {}
        self.points = {n: resolve(n, out, scale, self.memo) for n in ORDER}
        self.numbers = {(p.exp, p.name): measure(p) for ps in self.points.values() for p in ps}

    def get(self, ref, exp=None):
        """(point, numbers) for 'point' (in exp) or 'experiment/point'."""
        e, _, name = ref.rpartition("/")
        e = e or exp
        point = next(p for p in self.points[e] if p.name == name)
        return point, self.numbers[(e, name)]


def table(runs, name):
    exp = load(name)
    base_point, base = runs.get(exp["baseline"], name)
    ref = f"{base_point.exp}/{base_point.name}"
    lines = [f"| point | settings | final val loss | vs {ref} | val bpb | tokens | bytes sent | "
             f"× fewer than DDP | × fewer than fp32 DiLoCo | wall-clock | time to {ref}'s final loss |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for p in runs.points[name]:
        m = runs.numbers[(p.exp, p.name)]
        if m is None:
            lines.append(f"| {p.name} | {describe(p)} | not run yet | | | | | | | | |")
            continue
        gap = f"{100 * (m['loss'] / base['loss'] - 1):+.1f}%" if base else "—"
        reach = time_to(m, base["loss"]) if base else None
        reach = "—" if not base else duration(reach) if reach is not None else "not reached"
        twin = p.record().get("same_as")
        settings = describe(p) + (f" (the run of {twin})" if twin else "")
        lines.append(f"| {p.name} | {settings} | {m['loss']:.4f} | {gap} | {m['bpb']:.4f} | "
                     f"{m['tokens']:,} | {size(m['bytes'])} | {times(m['vs_ddp'])} | "
                     f"{times(m['vs_fp32'])} | {duration(m['wall'])} | {reach} |")
    return "\n".join(lines) + "\n"


def replica_notes(runs, name):
    """For each finished point of the decoupled method: which model its val loss is (its
    summary.json's `reported`, docs/dct.md) and the consensus's and the replicas' beside it."""
    lines = []
    for p in runs.points[name]:
        s = p.summary() if runs.numbers[(p.exp, p.name)] is not None else {}
        if p.mode != "demo" or "consensus_final_val_loss" not in s:
            continue
        reps = s.get("replicas_final_val_loss") or {}
        spread = (f"; its replicas {reps['min']:.4f}–{reps['max']:.4f} (mean {reps['mean']:.4f})"
                  if reps else "")
        lines.append(f"- **{p.name}** reports {s.get('reported', '?')} (`sync.report_model: "
                     f"{s.get('report_model', '?')}`): {s['final_val_loss']:.4f}; the consensus of "
                     f"the replicas {s['consensus_final_val_loss']:.4f}{spread}.")
    return "\n" + "\n".join(lines) + "\n" if lines else ""


def frontier_section(out, page):
    """Issue 21's measurement: every run of the tuning and the frontier (experiments.TUNING and
    FRONTIER) in bench/dct_sweep.py's table, its plot beside the page, and the target (a method at
    >= 100x fewer bytes than fp32 DiLoCo within 3% of its final val loss, on two seeds)."""
    dirs = [os.path.join(out, n) for n in experiments.TUNING + experiments.FRONTIER
            if os.path.isdir(os.path.join(out, n))]
    rows = dct_sweep.rows_of(dirs) if dirs else []
    if not any(r["method"] == "diloco" for r in rows):
        return "Not run yet (`bench/frontier.sh`, or `scripts/reproduce.sh` with the tuning).\n"
    results = os.path.join(os.path.dirname(page), "results")
    os.makedirs(results, exist_ok=True)
    dct_sweep.plot(rows, "/".join(str(h) for h in sorted({r["h"] for r in rows})), results,
                   "frontier")
    by_setting = {}  # every setting at >= 100x: its runs, one per seed
    for r in rows:
        if r["method"] != "diloco" and r["ratio_vs_diloco_fp32"] >= 100:
            setting = (r["method"], r["k"], r["k_down"], r["values"], r["outer_lr"],
                       r["outer_momentum"], r["error_decay"], r["resync_every"])
            by_setting.setdefault(setting, []).append(r)
    within = [rs for rs in by_setting.values() if all(r["gap_pct"] <= 3 for r in rs)]
    met = [rs for rs in within if len({r["seed"] for r in rs}) >= 2]
    gaps = lambda rs: ", ".join(f"{r['gap_pct']:+.1f}% (seed {r['seed']})" for r in rs)
    if met:
        r = met[0][0]
        verdict_text = verdict(True, f"{r['run']}: {r['ratio_vs_diloco_fp32']:.0f}× fewer bytes, "
                                     f"{gaps(met[0])}")
    elif within:
        r = within[0][0]
        verdict_text = (f"**one seed only**: {r['run']} is {r['ratio_vs_diloco_fp32']:.0f}× fewer "
                        f"bytes at {r['gap_pct']:+.1f}%; its second seed has not run")
    else:
        close = min(by_setting.values(), key=lambda rs: max(r["gap_pct"] for r in rs), default=None)
        best = (f"; the closest at ≥ 100×: {close[0]['run']}, "
                f"{close[0]['ratio_vs_diloco_fp32']:.0f}× at {gaps(close)}") if close else \
            "; no run reached 100×"
        verdict_text = verdict(False, "no setting at ≥ 100× fewer bytes than fp32 DiLoCo within 3% "
                                      "on every seed it ran" + best)
    return (f"Target: a method at ≥ 100× fewer bytes than fp32 DiLoCo within 3% of fp32 DiLoCo's "
            f"final val loss, on two seeds: {verdict_text}.\n\n" + dct_sweep.table(rows) +
            f"\n![bytes against loss]({os.path.relpath(results, os.path.dirname(page))}/frontier.png)\n")


def read_eval(p):
    """A done point's eval.json (scripts/experiments.py `evaluate`), or None."""
    try:
        with open(os.path.join(p.dir, "eval.json")) as f:
            return json.load(f) if p.state() == "done" else None
    except (OSError, ValueError):
        return None


def eval_tables(runs, name):
    """An experiment with `evaluate`: each point's `loco eval` numbers (val loss on every corpus,
    the tasks' accuracies, per-layer CKA of second stages against the reference), and what the
    numbers say about the gap a first stage leaves after the second."""
    exp = load(name)
    spec = exp["evaluate"]
    corpora = [os.path.basename(os.path.normpath(d)) for d in spec.get("data", [])]
    tasks = [os.path.basename(t) for t in spec.get("tasks", [])]
    head = (["point", "stage", "settings"] + [f"val loss {c}" for c in corpora]
            + [f"{t} acc / acc_norm" for t in tasks] + [f"mean CKA vs {spec.get('similarity_to')}"])
    lines = ["| " + " | ".join(head) + " |", "|---|---|---|" + "---:|" * (len(head) - 3)]
    evals = {}
    for p in runs.points[name]:
        e = evals[p.name] = read_eval(p)
        stage = f"2: after {p.after}" if p.after else "1"
        if e is None:
            lines.append(f"| {p.name} | {stage} | {describe(p)} | not run yet |" + " |" * (len(head) - 4))
            continue
        cells = [f"{c['val_loss']:.4f}" for c in e["corpora"]]
        cells += [f"{t['accuracy']:.3f} / {t['accuracy_norm']:.3f} (chance {1 / t['choices']:.2f})"
                  for t in e["tasks"]]
        ckas = [l["cka"] for l in e.get("similarity", {}).get("layers", []) if l["cka"] is not None]
        cells.append(f"{sum(ckas) / len(ckas):.4f}" if ckas else "—")
        lines.append(f"| {p.name} | {stage} | {describe(p)} | " + " | ".join(cells) + " |")
    out = ["\n".join(lines) + "\n"]
    second = [p for p in runs.points[name] if p.after and evals.get(p.name)]
    if second:
        layers = [l["layer"] for l in evals[second[0].name]["similarity"]["layers"]]
        rows = ["| point | " + " | ".join(layers) + " |", "|---|" + "---:|" * len(layers)]
        for p in second:
            ls = evals[p.name]["similarity"]["layers"]
            rows.append(f"| {p.name} | " + " | ".join(
                (f"{l['cka']:.4f}" if l["cka"] is not None else "—") + f" ({l['weight_rel_l2']:.2f})"
                for l in ls) + " |")
        out += [f"Per layer, against {spec.get('similarity_to')}: linear CKA of the hidden states on "
                f"{corpora[0] if corpora else 'the val'} batches (relative L2 distance of the "
                f"weights in brackets; docs/eval.md):", "", "\n".join(rows) + "\n"]
    ref = spec.get("similarity_to")
    if evals.get(ref):
        findings = []
        for p in second:
            if p.name == ref:
                continue
            gaps = [f"{100 * (c['val_loss'] / r['val_loss'] - 1):+.1f}% on {n}" for c, r, n in
                    zip(evals[p.name]["corpora"], evals[ref]["corpora"], corpora)]
            first = evals.get(p.after)
            first_ref = evals.get(runs.get(ref, name)[0].after)
            was = ""
            if first and first_ref:
                was = (f" (after stage 1: {100 * (first['corpora'][0]['val_loss'] / first_ref['corpora'][0]['val_loss'] - 1):+.1f}% "
                       f"on {corpora[0]})")
            findings.append(f"- **{p.name}** against {ref}: val loss {', '.join(gaps)}{was}.")
        if findings:
            out += ["Measured gaps (val loss, relative to the reference's):", "", "\n".join(findings) + "\n"]
    return "\n".join(out)


def curtailment_table(runs, name):
    """An experiment with `curtailment: true`: each point's energy and emissions from its
    coordinator's summary.json (docs/curtailment.md), against the centralised baselines the
    coordinator computes, in trace time."""
    points = runs.points[name]
    regions = sorted({r for p in points for r in p.summary().get("baselines", {})})
    head = (["point", "settings", "final val loss", "tokens", "ended by", "trace time",
             "energy", "inside windows", "emissions"] + [f"÷ central in {r}" for r in regions])
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
    for p in points:
        s = p.summary() if p.state() == "done" else {}
        if not s:
            lines.append(f"| {p.name} | {describe(p)} | not run yet |" + " |" * (len(head) - 3))
            continue
        sites = s.get("sites", {})
        if not sites:  # trained centrally without a coordinator (DDP): its emissions are the
            # coordinated runs' centralised baselines, the ÷ central columns
            lines.append(f"| {p.name} | {describe(p)} | {s['final_val_loss']:.4f} | {s['tokens']:,} | "
                         f"budget | — | — | — | the ÷ central columns' baselines |"
                         + " — |" * len(regions))
            continue
        kwh = sum(e["energy_kwh"] for e in sites.values())
        grams = sum(e["emissions_g"] for e in sites.values())
        inside = [e.get("window_energy_kwh") for e in sites.values()]
        share = (f"{100 * sum(inside) / kwh:.0f}%" if kwh > 0 and None not in inside else "—")
        ratios = [f"{s['baselines'][r]['ratio']:.2f}" if r in s.get("baselines", {}) else "—"
                  for r in regions]
        lines.append(f"| {p.name} | {describe(p)} | {s['final_val_loss']:.4f} | {s['tokens']:,} | "
                     f"{s.get('ended_by', '—')} | {duration(s.get('trace_s', 0))} | {kwh:.2f} kWh | "
                     f"{share} | {grams / 1000:.2f} kg | " + " | ".join(ratios) + " |")
    return "\n".join(lines) + "\n"


def plots(runs, name, page, loco, out):
    """`loco compare` on the finished points (baseline first); the PNGs beside the page."""
    exp = load(name)
    if not exp.get("plots"):
        return ""
    base_point, _ = runs.get(exp["baseline"], name)
    done = [p for p in [base_point] + runs.points[name] if runs.numbers[(p.exp, p.name)]]
    done = list({p.dir: p for p in done}.values())
    if not done:
        return "Plots: not drawn yet (no point has finished).\n"
    work = os.path.join(out, name, "compare")
    result = subprocess.run([loco, "compare", *[p.dir for p in done], "--out", work],
                            capture_output=True, text=True)
    if result.returncode != 0:
        return f"Plots: `loco compare` failed: {result.stderr.strip().splitlines()[-1:]}\n"
    target = os.path.join(os.path.dirname(page), "results", name)
    os.makedirs(target, exist_ok=True)
    out = []
    for kind in ("tokens", "time", "bytes"):
        png = os.path.join(work, f"val_loss_vs_{kind}.png")
        if os.path.exists(png):
            shutil.copy(png, target)
            rel = os.path.relpath(os.path.join(target, os.path.basename(png)), os.path.dirname(page))
            out.append(f"![val loss vs {kind}]({rel})")
    return "\n".join(out) + "\n"


def carried(runs, name):
    lines = []
    for source, c in {s: c for p in runs.points[name] for s, c in p.carried.items()}.items():
        if c["used"]:
            values = ", ".join(f"{k} = {v}" for k, v in c["values"].items())
            lines.append(f"- from **{source}**: {values} ({c['from']}).")
        else:
            lines.append(f"- from **{source}**: not yet ({c['from']}); until it has, the file's "
                         f"values hold for {', '.join(c['keys'])}.")
    return "\n".join(lines) + "\n" if lines else ""


def verdict(ok, text):
    return f"**{'met' if ok else 'missed'}**: {text}"


def targets(runs):
    out = ["| target | method | result |", "|---|---|---|"]
    # 1: under the slow link, reach DDP's final val loss in at most a third of DDP's time.
    ddp_p, ddp = runs.get("slow_link/ddp")
    for name in ("diloco", "diloco-dct", "demo"):
        what = "slow link: DDP's final val loss in ≤ 1/3 of DDP's wall-clock"
        _, m = runs.get(f"slow_link/{name}")
        if ddp is None or m is None:
            out.append(f"| {what} | {name} | not run yet |")
            continue
        t, limit = time_to(m, ddp["loss"]), ddp["wall"] / 3
        if t is None:
            text = (f"never reached DDP's {ddp['loss']:.4f}: its final val loss is {m['loss']:.4f} "
                    f"({100 * (m['loss'] / ddp['loss'] - 1):+.1f}%) after {duration(m['wall'])}, "
                    f"{m['wall'] / ddp['wall']:.2f}× DDP's {duration(ddp['wall'])} "
                    f"({ddp_then(ddp, m['wall'])}{ddp_to(ddp, m)}): "
                    + ("it ends within a third of DDP's time, but " if m["wall"] <= limit else "")
                    + "at equal tokens it learns less per token than DDP and stops short of its loss")
            out.append(f"| {what} | {name} | {verdict(False, text)} |")
        else:
            text = (f"reached {ddp['loss']:.4f} at {duration(t)} = {t / ddp['wall']:.2f}× DDP's "
                    f"{duration(ddp['wall'])} (target ≤ 0.33×; {ddp_then(ddp, t)})")
            out.append(f"| {what} | {name} | {verdict(t <= limit, text)} |")
    # 2: DCT methods: >= 16x fewer bytes than fp32 DiLoCo, >= 1000x fewer than DDP, within 3%.
    _, ddp = runs.get("headline/ddp")
    for name in ("diloco-dct", "demo"):
        p, m = runs.get(f"headline/{name}")
        w, h = p.settings["sync.workers"], p.settings["sync.inner_steps"]
        checks = [("≥ 16× fewer bytes than fp32 DiLoCo", "vs_fp32", 16),
                  ("≥ 1000× fewer bytes than DDP", "vs_ddp", 1000)]
        for what, key, need in checks:
            if m is None:
                out.append(f"| {what} | {name} | not run yet |")
            else:
                text = (f"{m[key]:,.1f}× (target ≥ {need}×): {size(m['bytes'])} sent in all, "
                        f"{size(m['bytes'] / (m['rounds'] * w))} per worker per round")
                if key == "vs_ddp" and m[key] < need:
                    # what DDP would have sent over what fp32 DiLoCo would have (its summary's)
                    ratio = m["vs_ddp"] / m["vs_fp32"]
                    text += (f"; fp32 DiLoCo already sends {ratio:.1f}× less than DDP at H={h}, so "
                             f"1000× needs {1000 / ratio:.0f}× less than fp32 DiLoCo, "
                             f"and the codec gives {m['vs_fp32']:.1f}×")
                out.append(f"| {what} | {name} | {verdict(m[key] >= need, text)} |")
        what = "val loss within 3% of DDP's at equal tokens"
        if m is None or ddp is None:
            out.append(f"| {what} | {name} | not run yet |")
        else:
            gap = 100 * (m["loss"] / ddp["loss"] - 1)
            text = f"{m['loss']:.4f} vs DDP's {ddp['loss']:.4f}: {gap:+.1f}% (target ≤ +3%)"
            plain = runs.numbers[("headline", "diloco")]
            if gap > 3 and plain:
                own = 100 * (plain["loss"] / ddp["loss"] - 1)
                text += (f"; fp32 DiLoCo at the same settings is {own:+.1f}%, so {min(own, gap):.1f} "
                         f"points of the gap are DiLoCo's own and {max(gap - own, 0):.1f} "
                         + ("the compression's" if name == "diloco-dct"
                            else "the decoupled method's (its own update and compression)"))
            out.append(f"| {what} | {name} | {verdict(gap <= 3, text)} |")
    return "\n".join(out) + "\n"


def machine():
    model = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        mem = next(int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal"))
        mem = f"{mem / 2**20:.1f} GiB"
    except (OSError, StopIteration):
        mem = "unknown"
    osname = "unknown OS"
    try:
        osname = next(l.split("=", 1)[1].strip().strip('"') for l in open("/etc/os-release")
                      if l.startswith("PRETTY_NAME"))
    except (OSError, StopIteration):
        pass
    return f"{model}, {len(os.sched_getaffinity(0))} cores (nproc), {mem} of memory, {osname}, Linux {platform.release()}"


def commit():
    def git(*a):
        return subprocess.run(["git", *a], capture_output=True, text=True).stdout.strip()
    head = git("rev-parse", "--short", "HEAD") or "unknown"
    # The page and its plots are this script's own output: changes to them do not count.
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".",
                ":(exclude)docs/RESULTS.md", ":(exclude)docs/results")
    return head + (" (with uncommitted changes)" if dirty else "")


def add_section(path, name, text):
    """Puts `text` between `<!-- NAME:begin -->` and `<!-- NAME:end -->` in the page at `path`,
    adding the markers (under a heading of their own) at its end the first time."""
    page = open(path).read()
    if f"<!-- {name}:begin -->" not in page:
        heading = "## Reproductions with pages of their own"
        if heading not in page:
            page = page.rstrip("\n") + f"\n\n{heading}\n\nEach is written by `scripts/reproduce.sh NAME` " \
                "onto its own page and copied here.\n"
        page = page.rstrip("\n") + f"\n\n<!-- {name}:begin -->\n<!-- {name}:end -->\n"
        open(path, "w").write(page)
    update_readme(path, text, name)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/reproduce")
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--page", default="docs/RESULTS.md")
    ap.add_argument("--loco", default=os.environ.get("LOCO", "build/loco"))
    ap.add_argument("--experiments", nargs="+", metavar="NAME",
                    help="a page of these experiments only (no targets, no README table): e.g. "
                         "after_pretraining into docs/results/after_pretraining.md")
    ap.add_argument("--readme", help="also put the headline's table into this README, between "
                                     "its <!-- reproduce:begin --> and <!-- reproduce:end --> markers")
    args = ap.parse_args()
    os.chdir(experiments.ROOT)
    runs = Runs(args.out, args.scale)
    order = args.experiments or PAGE_ORDER
    numbers = {k: m for k, m in runs.numbers.items() if not args.experiments or k[0] in order}
    done = [m for m in numbers.values() if m]
    starts = sorted(m["started"] for m in done if m.get("started"))
    hosts = sorted({m["host"] for m in done if m.get("host")})
    now = datetime.datetime.now().astimezone().isoformat(timespec="minutes")
    heading = ("# Results: the seed claims at small scale on CPU" if not args.experiments else
               "# Results: " + "; ".join(load(n)["title"] for n in order))
    text = [heading, "",
            f"Written by `scripts/reproduce.sh` (`scripts/results_page.py`) on {now}, from the runs "
            f"under `{args.out}/`: every number here comes from those runs; a point that has not "
            f"finished says \"not run yet\". Do not edit by hand: run the script again.", "",
            f"- **Machine**: {machine()}.",
            f"- **Code**: git commit {commit()}; the runs were made by `{args.loco}`.",
            f"- **Runs**: {len(done)} of {len(numbers)} points finished"
            + (f", started between {starts[0]} and {starts[-1]} on {', '.join(hosts)}" if starts else "")
            + ".",
            f"- **Scale**: step counts × {args.scale:g}"
            + (" (a --quick smoke run: not the results)" if args.scale != 1 else "")
            + ". The tiny model (configs/tiny.yaml's shape, 5.2M parameters) on the default corpus "
              "(data/nlp-corpus); one thread per process, all of a point's processes on this machine.",
            "",
            *(["Reproduce with `scripts/reproduce.sh` (all experiments, resumable; see "
               "docs/compare.md, \"Reproduction\"). Bytes are the method's own traffic, all workers, "
               "whole run, as `loco compare` counts them (docs/compare.md): serialized gRPC messages "
               "for DiLoCo and demo (demo's consensus pushes for evaluation are not counted), the "
               "ring all-reduce for DDP. *Time to … final loss* is the first evaluation at or below "
               "that loss, in the run's own wall-clock.", "",
               "## Targets (issue #7)", "", targets(runs)] if not args.experiments else
              [f"Reproduce with `scripts/reproduce.sh {' '.join(order)}` (resumable; see "
               "docs/compare.md, \"Reproduction\").", ""])]
    sections = {}
    for name in order:
        exp = load(name)
        text += [f"## {exp['title']}", "", f"`configs/experiments/{name}.yaml`, runs in `{args.out}/{name}/`.", ""]
        if exp.get("carry") or any("carry" in (own or {}) for own in exp["points"].values()):
            text += ["Carried in from the tuning:", "", carried(runs, name)]
        if exp.get("evaluate"):
            sections[name] = eval_tables(runs, name)
        elif exp.get("curtailment"):
            sections[name] = curtailment_table(runs, name)
        else:
            text += [table(runs, name) + replica_notes(runs, name),
                     plots(runs, name, args.page, args.loco, args.out)]
        if name in sections:
            text += [sections[name]]
    if not args.experiments:
        text += ["## Every method at its own best: the tuning and the bytes-versus-loss frontier", "",
                 f"`configs/experiments/tune_*.yaml` (each method's outer settings, four runs each) "
                 f"and `frontier_*.yaml` (k from 1% to 12% of a chunk, int8 / int4 / int2, at each "
                 f"method's best), runs in `{args.out}/`; `bench/frontier.sh` runs them alone. 4 "
                 f"workers, batch 4, H 25, 8 rounds, equal tokens. *vs fp32 DiLoCo*: against the "
                 f"best fp32 DiLoCo run of the same seed. *Pareto front*: no run of its seed sends "
                 f"as few or fewer bytes and ends as low or lower. docs/dct.md reads it.", "",
                 frontier_section(args.out, args.page)]
    os.makedirs(os.path.dirname(os.path.abspath(args.page)), exist_ok=True)
    with open(args.page, "w") as f:
        f.write("\n".join(text).rstrip("\n") + "\n")
    print(f"wrote {args.page} ({len(done)} of {len(numbers)} points finished)")
    # An experiment with a page of its own also puts its table on the seed claims' page, between
    # markers of its name, so that docs/RESULTS.md has every reproduction's numbers.
    results = "docs/RESULTS.md"
    if args.experiments and args.scale == 1 and os.path.abspath(args.page) != os.path.abspath(results) \
            and os.path.exists(results):
        for name, section in sections.items():
            add_section(results, name, f"### {load(name)['title']}\n\nFrom [{args.page}]"
                        f"({os.path.relpath(args.page, os.path.dirname(results))}), written by "
                        f"`scripts/reproduce.sh {name}` on {now}, code {commit()}:\n\n{section}")
            print(f"updated {results} ({name})")
    if args.readme and not args.experiments:
        rest = "the tuning, the worker sweep, the slow link and the targets are there" + (
            "" if len(done) == len(runs.numbers) else ", a point not finished yet saying so")
        summary = (f"From [{args.page}]({args.page}), written by `scripts/reproduce.sh` on {now} "
                   f"({len(done)} of {len(runs.numbers)} points finished; {rest}):\n\n"
                   + table(runs, "headline"))
        update_readme(args.readme, summary, "reproduce")
        print(f"updated {args.readme}")


if __name__ == "__main__":
    main()
