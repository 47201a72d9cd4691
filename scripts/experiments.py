#!/usr/bin/python3
"""The experiments of configs/experiments/*.yaml: their points, their state, and running them.

An experiment file is YAML with these keys (docs/compare.md, "Reproduction"):
  title     one line: the heading of its table in RESULTS.md
  config    the base config every point starts from
  extends   another experiment's name: start from its keys; `set` is merged, the rest replaced
  set       {key.path: value}: overrides for every point, as `loco launch --set`
  carry     {experiment: [key.path, ...]}: take these keys from that experiment's best point (the
            lowest final val loss) once all its points have finished; until then `set` holds.
            A point may have a `carry` of its own (its values override the experiment's)
  baseline  the point the others are measured against: a point here, or EXPERIMENT/POINT
  plots     true: draw `loco compare`'s plots for RESULTS.md
  page      a page of its own for its table (docs/results/NAME.md), instead of RESULTS.md
  points    {name: {key.path: value}}: one run each
  grid      {name: "template with {key.path}", key.path: [values], ...}: a run per combination
  needs     [command, ...]: run (from the project root) before the experiment's points, e.g. to
            prepare a second corpus; each must be idempotent
  evaluate  {data: [corpus dir, ...], tasks: [task file, ...], similarity_to: POINT}: once a point
            is done, `loco eval` of its final checkpoint on those corpora and tasks (and, for a
            point that continues another, per-layer CKA against POINT's), into POINT_DIR/eval.json
A point's own `after: POINT` makes it a second stage: it starts from that point's final
checkpoint (train.init_from: weights only, a fresh optimizer and schedule) and runs once that
point is done; when the first stage is run again, the second stage is too.
Overrides apply in this order: base config < set < carried < the point's own. With --scale S the
step counts (train.max_steps, sync.inner_steps, train.eval_every, warm-up) are multiplied by S,
so a --quick run (S = 0.1) has the same rounds, ten times shorter.

A point runs as `loco launch` into OUT/EXPERIMENT/POINT/ (its log beside it, POINT.log) and
writes point.json there: its overrides, every setting it ran with (`settings`: a point whose
settings equal a finished one's takes that run), what was carried, when and where it ran. A
point is done when its summary.json says complete (the coordinator's; DDP: rank 0's, in the run
directory) and point.json holds the overrides it would get now; otherwise it is run again from the
start, so an interrupted sweep resumes where it stopped.

`keep` copies the finished points' small files (everything but checkpoints and TensorBoard:
point.json, the log, every process's config.yaml, metrics.jsonl and summary.json) from OUT into
results/, which is committed; `restore` copies them back into OUT where a point is not done there.
So the tables and the carried bests survive a fresh machine without rerunning (a restored point is
done, but its checkpoints are gone: a second stage `after` it, or `evaluate`, needs it run again).

usage: experiments.py list|run|keep|restore [EXPERIMENT...] [--out DIR] [--scale S] [--jobs N]
       [--loco PATH] [--kept DIR]
"""
import argparse
import concurrent.futures
import datetime
import glob
import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
import time

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENTS = os.path.join(ROOT, "configs", "experiments")
# The order they run in when none is named: the tuning first, since the headline uses its best
# (each method's outer settings from its tune_*; the frontier_* carry theirs too).
# Others run only when named: dct_sweep (bench/dct_sweep.sh, its table in docs/dct.md).
TUNING = ["tune_diloco", "tune_dct", "tune_sparseloco", "tune_muloco", "tune_demo"]
FRONTIER = ["frontier_seeds", "frontier_muloco", "frontier_dct", "frontier_sparseloco",
            "frontier_demo"]
ORDER = ["h_lr", "batch", *TUNING, "headline", *FRONTIER, "workers", "slow_link",
         "after_pretraining", "curtailment"]
STEP_KEYS = ["train.max_steps", "sync.inner_steps", "train.eval_every",
             "train.schedule.warmup_steps"]
# Keys a DDP point does not use: left out, so that a carried H or lr does not make it "stale".
UNUSED_BY_DDP = ("sync.inner_steps", "sync.outer.", "sync.codec.")


def flatten(tree, prefix=""):
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def load(name):
    """The experiment file's keys, with `extends` resolved and `grid` expanded into `points`."""
    path = os.path.join(EXPERIMENTS, f"{name}.yaml")
    if not os.path.exists(path):
        known = ", ".join(sorted(os.path.basename(p)[:-5] for p in glob.glob(f"{EXPERIMENTS}/*.yaml")))
        sys.exit(f"error: no experiment '{name}' ({path}); known: {known}")
    with open(path) as f:
        exp = yaml.safe_load(f) or {}
    if "extends" in exp:
        parent = load(exp.pop("extends"))
        exp = {**parent, **exp, "set": {**parent.get("set", {}), **exp.get("set", {})}}
    if "grid" in exp:
        grid = dict(exp.pop("grid"))
        template = grid.pop("name")
        exp["points"] = {}
        for values in itertools.product(*grid.values()):
            point = dict(zip(grid, values))
            label = template
            for key, value in point.items():
                label = label.replace("{" + key + "}", str(value))
            exp["points"][label] = point
    for key in ("title", "config", "points"):
        if key not in exp:
            sys.exit(f"error: {path}: no '{key}'")
    exp["name"] = name
    return exp


def as_set(value):
    """A YAML value as `--set` takes it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class Point:
    def __init__(self, exp, name, overrides, carried, out, scale):
        self.exp, self.name, self.carried = exp["name"], name, carried
        overrides = dict(overrides)
        self.after = overrides.pop("after", None)  # the first stage's point, for a second stage
        self.source = None  # that Point, set by resolve()
        self.base_config = exp["config"]
        self.dir = os.path.join(out, self.exp, name)
        self.unscaled = overrides  # what a carry copies: the file's own numbers
        with open(os.path.join(ROOT, exp["config"])) as f:
            base = flatten(yaml.safe_load(f))
        if {**base, **overrides}["sync.mode"] == "ddp":
            overrides = {k: v for k, v in overrides.items() if not k.startswith(UNUSED_BY_DDP)}
        self.settings = {**base, **overrides}
        self.overrides = dict(overrides)
        if scale != 1:
            for key in STEP_KEYS:
                if self.settings.get(key):
                    self.overrides[key] = max(1, round(self.settings[key] * scale))
            self.settings.update(self.overrides)

    @property
    def mode(self):
        return self.settings["sync.mode"]

    def run_settings(self):
        """What decides the run: every setting as `--set` takes it, less the run's name and dir."""
        return {k: as_set(v) for k, v in self.settings.items() if k not in ("run.name", "run.dir")}

    def twin(self, out):
        """A finished point elsewhere under out run with the same settings (its dir), or None."""
        mine = self.run_settings()
        for path in sorted(glob.glob(os.path.join(out, "*", "*", "point.json"))):
            d = os.path.dirname(path)
            if os.path.abspath(d) == os.path.abspath(self.dir):
                continue
            try:
                with open(path) as f:
                    rec = json.load(f)
            except (OSError, ValueError):
                continue
            if "finished" in rec and not rec.get("same_as") and rec.get("settings") == mine:
                return d
        return None

    def check(self):
        s = self.settings
        if self.mode in ("diloco", "demo") and s["train.max_steps"] % s["sync.inner_steps"]:
            sys.exit(f"error: {self.exp}/{self.name}: train.max_steps {s['train.max_steps']} is not"
                     f" a multiple of sync.inner_steps {s['sync.inner_steps']}")

    def record(self):
        try:
            with open(os.path.join(self.dir, "point.json")) as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    def summary(self):
        """The run's summary.json, written at its end by the process that owns it: the
        coordinator, or DDP's rank 0 (include/loco/bytes.h has its byte fields); {} without one."""
        path = os.path.join(self.dir, *(() if self.mode == "ddp" else ("coordinator",)), "summary.json")
        try:
            with open(path) as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    def finished(self):
        """The run completed (whatever settings it had)."""
        return bool(self.summary().get("complete"))

    def state(self):
        if self.source is not None and self.source.state() != "done":
            return "waiting"  # for its first stage
        if not os.path.isdir(self.dir):
            return "not run"
        if not self.finished():
            return "unfinished"
        if self.record().get("overrides") != {k: as_set(v) for k, v in self.overrides.items()}:
            return "stale"  # finished with other settings (a carried best changed)
        if self.source is not None and \
                self.source.record().get("finished", "") > self.record().get("started", ""):
            return "stale"  # its first stage ran again since
        return "done"

    def final_checkpoint(self):
        """The newest checkpoint of the model the run ends with: the coordinator's (the global
        model; the decoupled method's consensus), DDP's rank 0's."""
        where = self.dir if self.mode == "ddp" else os.path.join(self.dir, "coordinator")
        found = sorted(glob.glob(os.path.join(where, "checkpoints", "step_*.pt")))
        return found[-1] if found else None

    def final_val_loss(self):
        return self.summary()["final_val_loss"]


def read_jsonl(path):
    """The complete JSON lines of a metrics file ([] when there is none)."""
    out = []
    try:
        with open(path) as f:
            for line in f:
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass  # a line being written
    except OSError:
        pass
    return out


def best(name, out, scale, memo):
    """(point, how it was chosen): an experiment's lowest final val loss, None until all are done."""
    points = resolve(name, out, scale, memo)
    done = [p for p in points if p.state() == "done"]
    if len(done) < len(points):
        return None, f"{name} has {len(done)} of {len(points)} points done"
    winner = min(done, key=Point.final_val_loss)
    return winner, f"{name}/{winner.name}, the lowest final val loss ({winner.final_val_loss():.4f})"


def carry_from(carry, out, scale, memo):
    """({source: how}, {key: value}): the keys a `carry` takes from each source's best point."""
    carried, values = {}, {}
    for source, keys in (carry or {}).items():
        winner, how = best(source, out, scale, memo)
        carried[source] = {"keys": keys, "from": how, "used": winner is not None}
        if winner is not None:
            values.update({k: winner.unscaled[k] for k in keys if k in winner.unscaled})
            carried[source]["values"] = {k: winner.settings[k] for k in keys}
    return carried, values


def resolve(name, out, scale, memo=None):
    """The points of an experiment as they would run now (carried values from finished sources)."""
    memo = {} if memo is None else memo
    if name in memo:
        return memo[name]
    exp = load(name)
    carried, values = carry_from(exp.get("carry"), out, scale, memo)
    points = []
    for pname, own in exp["points"].items():
        own = dict(own or {})
        own_carried, own_values = carry_from(own.pop("carry", None), out, scale, memo)
        points.append(Point(exp, pname, {**exp.get("set", {}), **values, **own_values, **own},
                            {**carried, **own_carried}, out, scale))
    by_name = {p.name: p for p in points}
    for p in points:
        if p.after is not None:
            if p.after not in by_name or by_name[p.after].after is not None:
                sys.exit(f"error: {name}/{p.name}: after: '{p.after}' is not a first-stage point of "
                         f"{name} ({', '.join(q.name for q in points if q.after is None)})")
            p.source = by_name[p.after]
            ckpt = p.source.final_checkpoint() if p.source.state() == "done" else None
            # until the first stage is done, where its final checkpoint will be
            p.overrides["train.init_from"] = ckpt or os.path.join(p.source.dir, "final")
            p.settings["train.init_from"] = p.overrides["train.init_from"]
        p.check()
    memo[name] = points
    return points


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_point(p, loco, out):
    """Runs one point from the start (or takes a finished twin's run); True when it finished."""
    twin = p.twin(out)
    if twin:
        shutil.rmtree(p.dir, ignore_errors=True)
        shutil.copytree(twin, p.dir, symlinks=True)
        with open(os.path.join(p.dir, "point.json")) as f:
            record = json.load(f)
        record.update(experiment=p.exp, point=p.name, carried=p.carried,
                      same_as=os.path.relpath(twin, out))
        with open(os.path.join(p.dir, "point.json"), "w") as f:
            json.dump(record, f, indent=1)
        if os.path.exists(twin + ".log"):
            shutil.copyfile(twin + ".log", p.dir + ".log")
        print(f"    {p.exp}/{p.name}: the same run as {record['same_as']} (every setting equal):"
              f" its run copied, final val loss {p.final_val_loss():.4f}")
        return True
    shutil.rmtree(p.dir, ignore_errors=True)
    os.makedirs(p.dir)
    record = {"experiment": p.exp, "point": p.name, "config": p.base_config,
              "overrides": {k: as_set(v) for k, v in p.overrides.items()}, "carried": p.carried,
              "settings": p.run_settings(),
              "host": socket.gethostname(), "nproc": len(os.sched_getaffinity(0)),
              "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
    with open(os.path.join(p.dir, "point.json"), "w") as f:
        json.dump(record, f, indent=1)
    args = [loco, "launch", "--config", p.base_config, "--set", f"run.dir={p.dir}",
            "--set", f"run.name={p.exp}-{p.name}",
            "--set", f"sync.coordinator.address=127.0.0.1:{free_port()}"]
    for key, value in p.overrides.items():
        args += ["--set", f"{key}={as_set(value)}"]
    for _ in range(60):  # a binary being relinked is missing for a moment
        if os.path.exists(os.path.join(ROOT, loco)):
            break
        time.sleep(1)
    start = datetime.datetime.now()
    print(f"    {p.exp}/{p.name}: running since {start:%H:%M}, log: {p.dir}.log")
    with open(p.dir + ".log", "w") as log:
        rc = subprocess.run(args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT).returncode
    seconds = (datetime.datetime.now() - start).total_seconds()
    if rc != 0 or not p.finished():
        print(f"    {p.exp}/{p.name}: FAILED (exit {rc}, {seconds:.0f} s); log: {p.dir}.log")
        with open(p.dir + ".log") as log:
            print("      " + "      ".join(log.readlines()[-8:]), end="")
        return False
    record["finished"] = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    record["seconds"] = round(seconds, 1)
    with open(os.path.join(p.dir, "point.json"), "w") as f:
        json.dump(record, f, indent=1)
    # The workers' own checkpoints (~60 MB each) are not needed once the run is over; the
    # coordinator's (DDP: rank 0's) final checkpoint is the model.
    for d in glob.glob(os.path.join(p.dir, "worker-*", "checkpoints")) + \
            glob.glob(os.path.join(p.dir, "rank-*", "checkpoints")):
        shutil.rmtree(d, ignore_errors=True)
    print(f"    {p.exp}/{p.name}: done in {seconds:.0f} s, final val loss {p.final_val_loss():.4f}")
    return True


def run_needs(exp):
    """The experiment's `needs` commands, in order; False when one fails."""
    for command in exp.get("needs") or []:
        print(f"    needs: {command}")
        if subprocess.run(command, shell=True, cwd=ROOT).returncode != 0:
            print(f"    needs: FAILED: {command}")
            return False
    return True


def evaluate(p, exp, points, loco):
    """`loco eval` of a done point's final checkpoint as the experiment's `evaluate` asks, into
    POINT_DIR/eval.json; kept while its arguments and checkpoint are unchanged. False on failure."""
    spec = exp.get("evaluate")
    if not spec or p.state() != "done":
        return True
    args = [loco, "eval", "--checkpoint", p.final_checkpoint()]
    for d in spec.get("data", []):
        args += ["--data", d]
    for t in spec.get("tasks", []):
        args += ["--tasks", t]
    ref = next((q for q in points if q.name == spec.get("similarity_to")), None)
    if ref is not None and p.after is not None:
        if ref.state() != "done":
            return True  # once the reference is done
        args += ["--similarity", ref.final_checkpoint()]
    out = os.path.join(p.dir, "eval.json")
    stamp = {"args": args[1:], "checkpoint_mtime": os.path.getmtime(p.final_checkpoint())}
    if ref is not None and p.after is not None:
        stamp["reference_mtime"] = os.path.getmtime(ref.final_checkpoint())
    record = p.record()
    if os.path.exists(out) and record.get("eval") == stamp:
        return True
    with open(os.path.join(p.dir, "eval.log"), "w") as log:
        rc = subprocess.run(args + ["--json", out], cwd=ROOT, stdout=log,
                            stderr=subprocess.STDOUT).returncode
    if rc != 0:
        print(f"    {p.exp}/{p.name}: loco eval FAILED (exit {rc}); log: {p.dir}/eval.log")
        return False
    record["eval"] = stamp
    with open(os.path.join(p.dir, "point.json"), "w") as f:
        json.dump(record, f, indent=1)
    print(f"    {p.exp}/{p.name}: evaluated into {out}")
    return True


def describe(p):
    s = p.settings
    parts = [f"{s['sync.mode']}", f"W={s['sync.workers']}", f"B={s['train.batch_size']}",
             f"{s['train.max_steps']} steps"]
    if isinstance(s.get("sync.sites"), str):
        parts.append(f"sites {s['sync.sites']}")
    if p.mode != "ddp":
        parts += [f"H={s['sync.round_seconds']} s" if s.get("sync.round_seconds")
                  else f"H={s['sync.inner_steps']}",
                  f"lr={s.get('sync.outer.lr', 'the method default')}"]
        codec = s.get("sync.codec.type", "none")
        if codec == "dct":
            raw = " raw" if s.get("sync.codec.transform") == "none" else ""
            parts.append(f"dct{raw} k{s.get('sync.codec.topk')} {s.get('sync.codec.values')}")
        elif codec != "none":
            parts.append(f"{codec} codec")
        if s.get("train.optimizer.name", "adamw") != "adamw":
            parts.append(f"{s['train.optimizer.name']} inside")
    if s.get("sync.link.mbps"):
        parts.append(f"link {s['sync.link.mbps']} Mbit/s {s.get('sync.link.latency_ms', 0)} ms")
    if p.after:
        corpus = os.path.basename(os.path.dirname(s.get("data.train", "")))
        parts.append((f"on {corpus}, " if corpus else "") + f"from {p.after}'s weights")
    return ", ".join(str(x) for x in parts)


KEPT = "results"
KEPT_SKIPS = ("checkpoints", "tb")  # directories of a run that stay out of the repository


def kept_files(point_dir):
    """A run's small files, relative to its directory: everything but checkpoints and tb/."""
    out = []
    for root, dirs, files in os.walk(point_dir):
        dirs[:] = sorted(d for d in dirs if d not in KEPT_SKIPS)
        out += [os.path.relpath(os.path.join(root, f), point_dir) for f in sorted(files)]
    return out


def copy_point(src_dir, dst_dir, src_log, dst_log):
    """Copies a point's kept files (and its log) from src_dir into a fresh dst_dir."""
    shutil.rmtree(dst_dir, ignore_errors=True)
    for rel in kept_files(src_dir):
        os.makedirs(os.path.dirname(os.path.join(dst_dir, rel)), exist_ok=True)
        shutil.copy2(os.path.join(src_dir, rel), os.path.join(dst_dir, rel))
    if os.path.exists(src_log):
        shutil.copy2(src_log, dst_log)


def keep_or_restore(action, names, out, kept, scale):
    """`keep`: OUT's done points into KEPT; `restore`: KEPT's into OUT where OUT's is not done."""
    count = 0
    for name in names:
        for p in resolve(name, out, scale):
            kept_dir = os.path.join(kept, name, p.name)
            if action == "keep":
                if p.state() != "done":
                    continue
                copy_point(p.dir, kept_dir, p.dir + ".log", kept_dir + ".log")
            else:
                if p.state() == "done" or not os.path.exists(os.path.join(kept_dir, "point.json")):
                    continue
                copy_point(kept_dir, p.dir, kept_dir + ".log", p.dir + ".log")
            count += 1
            print(f"    {name}/{p.name}: {'kept in' if action == 'keep' else 'restored from'} {kept_dir}")
    print(f"{action}: {count} point(s)")
    return 0


def main():
    sys.stdout.reconfigure(line_buffering=True)  # progress shows up in a redirected log too
    ap = argparse.ArgumentParser(description="list or run the points of configs/experiments/")
    ap.add_argument("action", choices=["list", "run", "keep", "restore"])
    ap.add_argument("experiments", nargs="*", help=f"default: all, in this order: {' '.join(ORDER)}")
    ap.add_argument("--out", default="runs/reproduce")
    ap.add_argument("--scale", type=float, default=1.0, help="step counts x this (0.1: --quick)")
    ap.add_argument("--jobs", type=int, default=1, help="points run at once")
    ap.add_argument("--loco", default=os.environ.get("LOCO", "build/loco"))
    ap.add_argument("--kept", default=KEPT, help="keep/restore: the committed copies")
    args = ap.parse_args()
    os.chdir(ROOT)
    names = args.experiments or ORDER
    names = sorted(names, key=lambda n: ORDER.index(n) if n in ORDER else len(ORDER))
    if args.action in ("keep", "restore"):
        return keep_or_restore(args.action, names, args.out, args.kept, args.scale)
    failed = []
    for name in names:
        points = resolve(name, args.out, args.scale)  # anew: a source may have just finished
        exp = load(name)
        print(f"==> {name}: {exp['title']}")
        carried = {s: c for p in points for s, c in p.carried.items()}
        for source, c in carried.items():
            if c["used"]:
                print(f"    carried from {c['from']}: {c['values']}")
            else:
                print(f"    not carried yet ({c['from']}): {', '.join(c['keys'])} as set in the file")
        todo = []
        for p in points:
            state = p.state()
            print(f"    {p.name:14s} {state:10s} {describe(p)}")
            if state != "done":
                todo.append(p)
        if args.action == "list":
            continue
        if todo:
            blocked = [s for s, c in carried.items() if not c["used"] and s in names]
            if blocked:
                print(f"    skipped: {', '.join(blocked)} did not finish, and these points need its best")
                failed.append(name)
                continue
            if not run_needs(exp):
                failed.append(name)
                continue
        while todo:  # first stages, then the second stages they make ready
            ready = [p for p in todo if p.state() != "waiting"]
            if not ready:
                break
            with concurrent.futures.ThreadPoolExecutor(max(1, args.jobs)) as pool:
                ok = list(pool.map(lambda p: run_point(p, args.loco, args.out), ready))
            points = resolve(name, args.out, args.scale, {})  # a second stage's init_from is known now
            todo = [p for p in points if p.state() != "done"]
            if not all(ok):
                break
        if todo:
            failed.append(name)
        if not all([evaluate(p, exp, points, args.loco) for p in points]):
            failed.append(name)
    if failed:
        print(f"error: not finished: {', '.join(failed)} (run again to retry what failed)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
