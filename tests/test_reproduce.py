#!/usr/bin/python3
"""The reproduction's machinery (scripts/experiments.py, scripts/results_page.py, and the DCT
sweep's table bench/dct_sweep.py) on fake runs.

Experiments are written into a temporary configs/experiments/, and "finished" runs are the files
`loco launch` leaves (point.json; the summary.json and metrics.jsonl of the process that owns the
run: the coordinator's, DDP's rank 0's), so what is checked is how a sweep resolves, carries,
resumes, measures and judges, not training. Run by ctest
(tests/CMakeLists.txt) with Debian's python3 (python3-yaml).
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "scripts"))
sys.path.insert(0, os.path.join(HERE, "..", "bench"))
import dct_sweep  # noqa: E402
import experiments  # noqa: E402
import results_page  # noqa: E402

BASE = """\
train: {max_steps: 100, batch_size: 4, eval_every: 0}
sync:
  mode: diloco
  workers: 4
  inner_steps: 10
  outer: {lr: 0.7, momentum: 0.9}
  codec: {type: none, topk: 32, values: int8}
"""


class Sandbox(unittest.TestCase):
    """A project root of our own: base.yaml and configs/experiments/, runs under out/."""

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.root = self.tmp.name
        os.makedirs(os.path.join(self.root, "configs", "experiments"))
        with open(os.path.join(self.root, "base.yaml"), "w") as f:
            f.write(BASE)
        self.out = os.path.join(self.root, "out")
        self.saved = experiments.ROOT, experiments.EXPERIMENTS
        experiments.ROOT = self.root
        experiments.EXPERIMENTS = os.path.join(self.root, "configs", "experiments")

    def tearDown(self):
        experiments.ROOT, experiments.EXPERIMENTS = self.saved
        self.tmp.cleanup()

    def experiment(self, name, text):
        with open(os.path.join(experiments.EXPERIMENTS, f"{name}.yaml"), "w") as f:
            f.write(text)

    def finish(self, point, val_loss, **summary):
        """Leaves what a finished `loco launch` of this point leaves: point.json, and the last
        metrics line and summary.json of the process that owns the run (the coordinator's; DDP:
        rank 0's, in the run directory), with the byte fields include/loco/bytes.h defines
        (`summary` overrides them)."""
        ddp = point.mode == "ddp"
        run = point.dir if ddp else os.path.join(point.dir, "coordinator")
        os.makedirs(run, exist_ok=True)
        record = {"experiment": point.exp, "point": point.name, "config": point.base_config,
                  "overrides": {k: experiments.as_set(v) for k, v in point.overrides.items()},
                  "settings": point.run_settings(), "finished": "2026-11-26T00:00:00+00:00"}
        with open(os.path.join(point.dir, "point.json"), "w") as f:
            json.dump(record, f)
        steps = point.settings["train.max_steps"]
        with open(os.path.join(run, "metrics.jsonl"), "w") as f:
            f.write(json.dumps({"step": steps, "tokens": 1600, "wall_s": 60.0, "val_loss": val_loss,
                                "val_bpb": 2.0}) + "\n")
        fields = {"complete": True, "final_val_loss": val_loss, "tokens": 6400,
                  "bytes_up": 5e5, "bytes_down": 5e5, "bytes_total": 1e6,
                  "fp32_diloco_bytes": None if ddp else 8e6, "ddp_bytes": 1e6 if ddp else 3e8,
                  "ratio_vs_diloco_fp32": None if ddp else 8.0, "ratio_vs_ddp": 1.0 if ddp else 300.0}
        if not ddp:
            fields.update(rounds=steps // point.settings["sync.inner_steps"], total_rounds=10)
        fields.update(summary)
        with open(os.path.join(run, "summary.json"), "w") as f:
            json.dump(fields, f)


class Experiments(Sandbox):
    def test_grid_expands_into_named_points_and_extends_merges_set(self):
        self.experiment("sweep", "title: t\nconfig: base.yaml\nset: {sync.workers: 2}\n"
                                 "grid: {name: 'H{sync.inner_steps}-lr{sync.outer.lr}',"
                                 " sync.inner_steps: [10, 50], sync.outer.lr: [0.5, 1.0]}\n")
        self.experiment("child", "title: c\nconfig: base.yaml\nextends: sweep\n"
                                 "set: {train.batch_size: 8}\n")
        sweep = experiments.load("sweep")
        self.assertEqual(sorted(sweep["points"]), ["H10-lr0.5", "H10-lr1.0", "H50-lr0.5", "H50-lr1.0"])
        self.assertEqual(sweep["points"]["H50-lr1.0"], {"sync.inner_steps": 50, "sync.outer.lr": 1.0})
        child = experiments.load("child")
        self.assertEqual(child["set"], {"sync.workers": 2, "train.batch_size": 8})
        self.assertEqual(child["title"], "c")
        self.assertEqual(len(child["points"]), 4)

    def test_a_missing_key_or_experiment_is_named(self):
        self.experiment("bad", "title: t\nconfig: base.yaml\n")
        with self.assertRaises(SystemExit) as e:
            experiments.load("bad")
        self.assertIn("no 'points'", str(e.exception.code))
        with self.assertRaises(SystemExit) as e:
            experiments.load("nope")
        self.assertIn("no experiment 'nope'", str(e.exception.code))
        self.assertIn("known: bad", str(e.exception.code))

    def test_steps_not_a_multiple_of_h_are_refused(self):
        self.experiment("odd", "title: t\nconfig: base.yaml\npoints: {p: {train.max_steps: 105}}\n")
        with self.assertRaises(SystemExit) as e:
            experiments.resolve("odd", self.out, 1)
        self.assertIn("not a multiple of sync.inner_steps", str(e.exception.code))

    def test_the_best_point_is_carried_and_a_changed_best_makes_a_run_stale(self):
        self.experiment("tune", "title: t\nconfig: base.yaml\n"
                                "points: {a: {sync.outer.lr: 0.3}, b: {sync.outer.lr: 0.9}}\n")
        self.experiment("head", "title: h\nconfig: base.yaml\ncarry: {tune: [sync.outer.lr]}\n"
                                "points: {p: {sync.workers: 8}}\n")
        (p,) = experiments.resolve("head", self.out, 1)
        self.assertFalse(p.carried["tune"]["used"])  # until every tuning point has finished
        self.assertEqual(p.settings["sync.outer.lr"], 0.7)
        a, b = experiments.resolve("tune", self.out, 1)
        self.finish(a, 5.0)
        self.assertFalse(experiments.resolve("head", self.out, 1)[0].carried["tune"]["used"])
        self.finish(b, 4.0)
        (p,) = experiments.resolve("head", self.out, 1)
        self.assertEqual(p.settings["sync.outer.lr"], 0.9)
        self.assertEqual(p.state(), "not run")
        self.finish(p, 6.0)
        self.assertEqual(experiments.resolve("head", self.out, 1)[0].state(), "done")
        self.finish(a, 3.0)  # a rerun tuning point wins now: the headline ran with the old best
        (p,) = experiments.resolve("head", self.out, 1)
        self.assertEqual(p.settings["sync.outer.lr"], 0.3)
        self.assertEqual(p.state(), "stale")

    def test_a_point_carries_from_its_own_tuning(self):
        for name, lr in (("tune_a", 0.3), ("tune_b", 0.9)):
            self.experiment(name, f"title: t\nconfig: base.yaml\npoints: {{x: {{sync.outer.lr: {lr}}}}}\n")
        self.experiment("head", "title: h\nconfig: base.yaml\ncarry: {tune_a: [sync.outer.lr]}\n"
                                "points: {a: {sync.workers: 2},"
                                " b: {carry: {tune_b: [sync.outer.lr]}, sync.workers: 3}}\n")
        for name in ("tune_a", "tune_b"):
            self.finish(experiments.resolve(name, self.out, 1)[0], 5.0)
        a, b = experiments.resolve("head", self.out, 1)
        self.assertEqual((a.settings["sync.outer.lr"], b.settings["sync.outer.lr"]), (0.3, 0.9))
        self.assertEqual(sorted(b.carried), ["tune_a", "tune_b"])
        self.assertNotIn("carry", b.overrides)

    def test_the_decoupled_methods_reported_model_is_named_with_the_consensus_beside_it(self):
        self.experiment("e", "title: t\nconfig: base.yaml\npoints: {d: {sync.mode: demo}, f: {}}\n")
        d, f = experiments.resolve("e", self.out, 1)
        self.finish(d, 6.1, reported="w0", report_model="replica:0", consensus_final_val_loss=6.9,
                    replicas_final_val_loss={"mean": 6.15, "min": 6.1, "max": 6.2, "count": 4})
        self.finish(f, 5.9)

        class Fake:
            points = {"e": [d, f]}
            numbers = {("e", "d"): {}, ("e", "f"): {}}
        self.assertEqual(results_page.replica_notes(Fake(), "e"),
                         "\n- **d** reports w0 (`sync.report_model: replica:0`): 6.1000; the "
                         "consensus of the replicas 6.9000; its replicas 6.1000–6.2000 (mean "
                         "6.1500).\n")

    def test_an_unfinished_run_is_run_again(self):
        self.experiment("e", "title: t\nconfig: base.yaml\npoints: {p: {}}\n")
        (p,) = experiments.resolve("e", self.out, 1)
        os.makedirs(os.path.join(p.dir, "coordinator"))
        with open(os.path.join(p.dir, "coordinator", "summary.json"), "w") as f:
            f.write('{"complete": fa')  # killed while writing
        self.assertEqual(p.state(), "unfinished")

    def test_a_twin_is_a_finished_run_with_every_setting_equal(self):
        self.experiment("one", "title: t\nconfig: base.yaml\npoints: {x: {sync.outer.lr: 0.5}}\n")
        self.experiment("two", "title: t\nconfig: base.yaml\nset: {sync.outer.lr: 0.5}\n"
                               "points: {same: {}, other: {sync.workers: 2}}\n")
        (x,) = experiments.resolve("one", self.out, 1)
        same, other = experiments.resolve("two", self.out, 1)
        self.assertIsNone(same.twin(self.out))  # x has not run
        self.finish(x, 5.0)
        self.assertEqual(same.twin(self.out), x.dir)
        self.assertIsNone(other.twin(self.out))

    def test_kept_points_come_back_done_without_their_checkpoints(self):
        self.experiment("e", "title: t\nconfig: base.yaml\npoints: {a: {}, b: {sync.outer.lr: 0.5}}\n")
        a, b = experiments.resolve("e", self.out, 1)
        self.finish(a, 5.0)
        os.makedirs(os.path.join(a.dir, "coordinator", "checkpoints"))
        with open(os.path.join(a.dir, "coordinator", "checkpoints", "round-8.pt"), "w") as f:
            f.write("weights")
        with open(a.dir + ".log", "w") as f:
            f.write("launch output\n")
        os.makedirs(b.dir)  # b did not finish: not kept
        kept = os.path.join(self.root, "kept")
        experiments.keep_or_restore("keep", ["e"], self.out, kept, 1)
        self.assertTrue(os.path.exists(os.path.join(kept, "e", "a", "coordinator", "summary.json")))
        self.assertFalse(os.path.exists(os.path.join(kept, "e", "a", "coordinator", "checkpoints")))
        self.assertTrue(os.path.exists(os.path.join(kept, "e", "a.log")))
        self.assertFalse(os.path.exists(os.path.join(kept, "e", "b")))
        # A fresh clone: nothing under OUT; restore makes a done again, and leaves b to run.
        shutil.rmtree(self.out)
        experiments.keep_or_restore("restore", ["e"], self.out, kept, 1)
        a, b = experiments.resolve("e", self.out, 1)
        self.assertEqual((a.state(), b.state()), ("done", "not run"))
        self.assertEqual(a.final_val_loss(), 5.0)
        # A point done in OUT is not overwritten by its kept copy.
        self.finish(a, 4.0)
        experiments.keep_or_restore("restore", ["e"], self.out, kept, 1)
        self.assertEqual(a.final_val_loss(), 4.0)

    def test_a_ddp_point_is_done_when_rank_0_wrote_its_summary(self):
        self.experiment("e", "title: t\nconfig: base.yaml\npoints: {ddp: {sync.mode: ddp}}\n")
        (p,) = experiments.resolve("e", self.out, 1)
        self.finish(p, 5.0)
        self.assertEqual(p.state(), "done")
        self.assertEqual(p.final_val_loss(), 5.0)
        os.remove(os.path.join(p.dir, "summary.json"))  # stopped, or older than the summary
        self.assertEqual(p.state(), "unfinished")

    def test_measure_takes_bytes_and_ratios_from_the_runs_summary(self):
        self.experiment("e", "title: t\nconfig: base.yaml\n"
                             "points: {ddp: {sync.mode: ddp}, diloco: {}}\n")
        points = {p.name: p for p in experiments.resolve("e", self.out, 1)}
        # Numbers no formula gives for these settings: they can only come from the summaries.
        self.finish(points["ddp"], 5.0, tokens=777, bytes_total=1234.0, ratio_vs_ddp=0.5)
        self.finish(points["diloco"], 4.0, tokens=888, bytes_total=4321.0, ratio_vs_ddp=321.0,
                    ratio_vs_diloco_fp32=12.5, rounds=9)
        ddp = results_page.measure(points["ddp"])
        self.assertEqual((ddp["tokens"], ddp["bytes"], ddp["vs_ddp"], ddp["vs_fp32"]),
                         (777, 1234.0, 0.5, None))
        self.assertEqual((ddp["loss"], ddp["wall"]), (5.0, 60.0))
        diloco = results_page.measure(points["diloco"])
        self.assertEqual((diloco["tokens"], diloco["bytes"], diloco["vs_ddp"], diloco["vs_fp32"],
                          diloco["rounds"]), (888, 4321.0, 321.0, 12.5, 9))
        self.assertEqual(diloco["loss"], 4.0)

    def test_scale_shortens_step_counts_only(self):
        self.experiment("e", "title: t\nconfig: base.yaml\npoints: {p: {}}\n")
        (p,) = experiments.resolve("e", self.out, 0.1)
        self.assertEqual((p.settings["train.max_steps"], p.settings["sync.inner_steps"]), (10, 1))
        self.assertEqual(p.settings["train.batch_size"], 4)


def nested(flat):
    """{a.b: 1} -> {a: {b: 1}}: a resolved config as a run directory holds it."""
    out = {}
    for key, value in flat.items():
        *path, last = key.split(".")
        node = out
        for part in path:
            node = node.setdefault(part, {})
        node[last] = value
    return out


class DctSweep(unittest.TestCase):
    """configs/experiments/dct_sweep.yaml (the repository's own) and bench/dct_sweep.py's table."""

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.out = self.tmp.name
        self.points = {p.name: p for p in experiments.resolve("dct_sweep", self.out, 1)}

    def tearDown(self):
        self.tmp.cleanup()

    def test_every_point_sees_the_same_tokens_and_no_two_are_the_same_run(self):
        self.assertEqual(len(self.points), 24)  # the rows of docs/dct.md's table
        self.assertNotIn("dct_sweep", experiments.ORDER)  # a plain reproduction does not run it
        for p in self.points.values():
            s = p.settings
            self.assertEqual((s["sync.workers"], s["train.batch_size"], s["train.max_steps"],
                              s["sync.inner_steps"]), (4, 4, 200, 25), p.name)
        runs = [json.dumps(p.run_settings(), sort_keys=True) for p in self.points.values()]
        self.assertEqual(len(set(runs)), len(runs))

    def test_the_shipped_dct_config_is_a_measured_point(self):
        with open(os.path.join(experiments.ROOT, "configs", "diloco-dct-tiny.yaml")) as f:
            shipped = experiments.flatten(yaml.safe_load(f))
        point = self.points["diloco-dct-k256-d256-int8-lr0.7-m0.5"].settings
        for key in ("sync.mode", "sync.codec.type", "sync.codec.topk", "sync.codec.topk_down",
                    "sync.codec.values", "sync.outer.lr", "sync.outer.momentum"):
            self.assertEqual(point[key], shipped[key], key)
        demo = self.points["demo-k32-int8-resync2-lr0.2"].settings
        self.assertEqual((demo["sync.mode"], demo["sync.outer.lr"], demo["sync.resync_every"]),
                         ("demo", 0.2, 2))

    def finish(self, name, val_loss, codec_s=0.0, complete=True):
        """What `loco launch` leaves of a point: the resolved config, summary.json, metrics."""
        p = self.points[name]
        os.makedirs(os.path.join(p.dir, "coordinator"))
        with open(os.path.join(p.dir, "coordinator", "config.yaml"), "w") as f:
            yaml.safe_dump(nested(p.settings), f)
        with open(os.path.join(p.dir, "coordinator", "summary.json"), "w") as f:
            json.dump({"complete": complete, "bytes_total": 52.9e6, "consensus_bytes_total": 0,
                       "ratio_vs_diloco_fp32": 25.4, "ratio_vs_ddp": 952.0,
                       "final_val_loss": val_loss, "final_val_bpb": val_loss / 2}, f)
        os.makedirs(os.path.join(p.dir, "worker-0"))
        with open(os.path.join(p.dir, "worker-0", "metrics.jsonl"), "w") as f:
            for step in range(1, 26):  # a round of 25 steps of 100 ms, codec_s at its end
                f.write(json.dumps({"step": step, "step_ms": 100.0,
                                    **({"codec_s": codec_s} if step == 25 else {})}) + "\n")

    def test_the_table_reads_the_points_experiments_py_runs(self):
        self.finish("diloco-fp32", 6.1373)
        self.finish("diloco-fp32-lr0.7-m0.5", 5.9627)
        self.finish("diloco-dct-k256-d256-int8-lr0.7-m0.5", 6.1230, codec_s=0.225)
        self.finish("demo-k32-int8-lr0.2", 6.6162, complete=False)  # killed: left out
        rows = dct_sweep.rows_of([os.path.join(self.out, "dct_sweep")])
        self.assertEqual([r["run"] for r in rows],
                         ["dct_sweep/diloco-fp32", "dct_sweep/diloco-fp32-lr0.7-m0.5",
                          "dct_sweep/diloco-dct-k256-d256-int8-lr0.7-m0.5"])
        lines = dct_sweep.table(rows).splitlines()
        self.assertEqual(lines[0].count("|"), 17)
        # against the best fp32 DiLoCo of its seed (momentum 0.5: 5.9627), codec 0.225 s of 2.5 s;
        # the same bytes as that run at a higher loss: not on the front
        self.assertEqual(lines[4], "| diloco+dct | 256 | 256 | int8 | 0.7, 0.5 | – | 1337 | 52.9 | "
                                   "25.4 | 952 | 6.1230 | 3.0615 | +2.7% | – |  | 9.00 |")
        self.assertTrue(lines[3].endswith("| yes | 0.00 |"), lines[3])
        self.assertIn("| diloco | – | – | fp32 | 0.7, 0.9 | – | 1337 |", lines[2])
        self.assertIn("| +2.9% |", lines[2])
        results = os.path.join(self.out, "results")
        run = subprocess.run([sys.executable, os.path.join(HERE, "..", "bench", "dct_sweep.py"),
                              os.path.join(self.out, "dct_sweep"), "--results", results],
                             capture_output=True, text=True)
        self.assertEqual(run.returncode, 0, run.stderr)
        with open(os.path.join(results, "dct_sweep.md")) as f:
            self.assertEqual(f.read(), dct_sweep.table(rows))
        self.assertIn("3 finished runs", run.stdout)


class Frontier(unittest.TestCase):
    """bench/dct_sweep.py's names of the methods and its Pareto front (issue 21's frontier)."""

    def test_each_method_is_named_from_its_resolved_config(self):
        base = {"sync.mode": "diloco", "sync.codec.type": "none", "train.optimizer.name": "adamw"}
        cases = [({}, "diloco"), ({"sync.codec.type": "dct"}, "diloco+dct"),
                 ({"sync.codec.type": "dct", "sync.codec.transform": "none"}, "sparseloco"),
                 ({"sync.codec.type": "int2"}, "diloco+int2"),
                 ({"sync.codec.type": "int2", "train.optimizer.name": "muon"}, "muloco+int2"),
                 ({"train.optimizer.name": "muon"}, "muloco"),
                 ({"sync.mode": "demo", "sync.codec.type": "dct"}, "demo")]
        for extra, name in cases:
            self.assertEqual(dct_sweep.method_of({**base, **extra}), name, extra)

    def fake_run(self, out, path, loss, ratio, seed=1337, **config):
        d = os.path.join(out, path, "coordinator")
        os.makedirs(d)
        c = {"sync.mode": "diloco", "sync.codec.type": "none", "sync.outer.lr": 0.7,
             "sync.outer.momentum": 0.5, "run.seed": seed, "train.max_steps": 200,
             "sync.inner_steps": 25, **config}
        with open(os.path.join(d, "config.yaml"), "w") as f:
            yaml.safe_dump(nested(c), f)
        with open(os.path.join(d, "summary.json"), "w") as f:
            json.dump({"complete": True, "bytes_total": 1e9 / ratio, "consensus_bytes_total": 0,
                       "ratio_vs_diloco_fp32": ratio, "ratio_vs_ddp": 40 * ratio,
                       "final_val_loss": loss, "final_val_bpb": loss / 2}, f)

    def test_the_target_needs_a_setting_within_3_percent_at_100x_on_two_seeds(self):
        with tempfile.TemporaryDirectory() as out:
            page = os.path.join(out, "docs", "RESULTS.md")
            self.assertIn("Not run yet", results_page.frontier_section(out, page))
            dct = {"sync.codec.type": "dct", "sync.codec.topk": 41, "sync.codec.values": "int2"}
            self.fake_run(out, "tune_diloco/a", 6.00, 1.0)
            self.fake_run(out, "tune_diloco/a-seed2", 5.90, 1.0, seed=2)
            self.fake_run(out, "frontier_dct/k41", 6.15, 150.0, **dct)  # +2.5%
            self.fake_run(out, "frontier_dct/k123", 6.05, 50.0, **{**dct, "sync.codec.topk": 123})
            text = results_page.frontier_section(out, page)
            self.assertIn("**one seed only**: frontier_dct/k41 is 150× fewer bytes at +2.5%", text)
            self.fake_run(out, "frontier_dct/k41-seed2", 6.20, 150.0, seed=2, **dct)  # +5.1%
            text = results_page.frontier_section(out, page)
            self.assertIn("**missed**: no setting at ≥ 100× fewer bytes than fp32 DiLoCo within 3% on "
                          "every seed it ran; the closest at ≥ 100×: frontier_dct/k41-seed2, 150× at "
                          "+5.1% (seed 2), +2.5% (seed 1337)", text)
            shutil.rmtree(os.path.join(out, "frontier_dct", "k41-seed2"))
            self.fake_run(out, "frontier_dct/k41-seed2", 6.00, 150.0, seed=2, **dct)  # +1.7%
            text = results_page.frontier_section(out, page)
            self.assertIn("**met**: frontier_dct/k41-seed2: 150× fewer bytes, +1.7% (seed 2), "
                          "+2.5% (seed 1337)", text)
            self.assertIn("| diloco+dct | 41 | 164 (default) | int2 |", text)

    def test_the_front_holds_the_runs_no_other_run_of_their_seed_beats_on_both(self):
        rows = [{"seed": 1, "bytes": 100, "val_loss": 5.0}, {"seed": 1, "bytes": 10, "val_loss": 5.5},
                {"seed": 1, "bytes": 50, "val_loss": 5.6}, {"seed": 1, "bytes": 1, "val_loss": 7.0},
                {"seed": 2, "bytes": 50, "val_loss": 5.6}]
        dct_sweep.pareto(rows)
        self.assertEqual([r["front"] for r in rows], [True, True, False, True, True])


def numbers(loss, wall, curve, **extra):
    return {"loss": loss, "wall": wall, "curve": curve, "bytes": 1e6, "rounds": 8, **extra}


class SecondStages(Sandbox):
    TWO = """title: two stages
config: base.yaml
evaluate: {data: [c1, c2], tasks: [t.jsonl], similarity_to: a.b}
points:
  a: {sync.mode: ddp}
  x: {sync.mode: diloco}
  a.b: {after: a, sync.mode: ddp}
  x.b: {after: x, sync.mode: ddp}
"""

    def points(self):
        return {p.name: p for p in experiments.resolve("two", self.out, 1, {})}

    def checkpoint(self, p):
        where = p.dir if p.mode == "ddp" else os.path.join(p.dir, "coordinator")
        path = os.path.join(where, "checkpoints", "step_00000100.pt")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        open(path, "w").close()
        return path

    def stamp(self, p, **times):
        record = p.record()
        record.update(times)
        with open(os.path.join(p.dir, "point.json"), "w") as f:
            json.dump(record, f)

    def test_a_second_stage_waits_starts_from_the_final_checkpoint_and_reruns_after_it(self):
        self.experiment("two", self.TWO)
        pts = self.points()
        self.assertEqual(pts["a.b"].state(), "waiting")
        self.finish(pts["a"], 3.0)
        ckpt = self.checkpoint(pts["a"])
        pts = self.points()
        self.assertEqual(pts["a.b"].state(), "not run")
        self.assertEqual(pts["a.b"].overrides["train.init_from"], ckpt)
        self.assertEqual(pts["x.b"].state(), "waiting")  # x has not finished
        self.finish(pts["a.b"], 2.0)
        self.stamp(pts["a.b"], started="2026-11-27T00:00:00+00:00")
        self.assertEqual(self.points()["a.b"].state(), "done")
        self.stamp(pts["a"], finished="2026-11-28T00:00:00+00:00")  # the first stage ran again
        self.assertEqual(self.points()["a.b"].state(), "stale")

    def test_after_must_name_a_first_stage_point(self):
        self.experiment("two", self.TWO.replace("after: x,", "after: nope,"))
        with self.assertRaises(SystemExit) as e:
            self.points()
        self.assertIn("after: 'nope' is not a first-stage point of two (a, x)", str(e.exception.code))

    def test_the_eval_table_states_the_gaps_from_the_eval_files(self):
        self.experiment("two", self.TWO)
        for name in ("a", "x"):
            self.finish(self.points()[name], 3.0)
            self.checkpoint(self.points()[name])
        pts = self.points()
        losses = {"a": (3.0, 5.0), "x": (3.3, 5.5), "a.b": (3.2, 4.0), "x.b": (3.2, 4.4)}
        for name, (l1, l2) in losses.items():
            p = pts[name]
            if p.after:
                self.finish(p, l2)
                self.stamp(p, started="2026-11-27T00:00:00+00:00")
            layers = [{"layer": "embedding", "cka": 0.5, "weight_rel_l2": 0.1},
                      {"layer": "head", "cka": None, "weight_rel_l2": 0.2}]
            with open(os.path.join(p.dir, "eval.json"), "w") as f:
                json.dump({"corpora": [{"val_loss": l1}, {"val_loss": l2}],
                           "tasks": [{"accuracy": 0.5, "accuracy_norm": 0.25, "choices": 4}],
                           **({"similarity": {"layers": layers}} if p.after else {})}, f)

        class Runs:
            points = {"two": list(self.points().values())}

            def get(self, ref, exp=None):
                return next(p for p in self.points[exp] if p.name == ref), None

        text = results_page.eval_tables(Runs(), "two")
        self.assertIn("| a.b | 2: after a |", text)
        self.assertIn("0.500 / 0.250 (chance 0.25)", text)
        self.assertIn("| x.b | 0.5000 (0.10) | — (0.20) |", text)
        # x.b against a.b: c1 3.2 vs 3.2, c2 4.4 vs 4.0; after stage 1, x 3.3 vs a 3.0
        self.assertIn("- **x.b** against a.b: val loss +0.0% on c1, +10.0% on c2 "
                      "(after stage 1: +10.0% on c1).", text)


class FakeRuns:
    """results_page.Runs' interface over numbers given by hand."""

    class P:
        settings = {"sync.workers": 4, "sync.inner_steps": 50}

    def __init__(self, numbers_by_ref):
        self.numbers = {tuple(r.split("/")): m for r, m in numbers_by_ref.items()}

    def get(self, ref, exp=None):
        return self.P(), self.numbers.get(tuple(ref.split("/")))


class Targets(unittest.TestCase):
    def test_loss_at_and_time_to_read_the_curve(self):
        m = numbers(5.0, 100, [(10, 6.0), (50, 5.5), (100, 5.0)])
        self.assertEqual(results_page.time_to(m, 5.5), 50)
        self.assertIsNone(results_page.time_to(m, 4.9))
        self.assertEqual(results_page.loss_at(m, 60), 5.5)
        self.assertIsNone(results_page.loss_at(m, 5))

    def test_verdicts_follow_the_numbers(self):
        ddp = numbers(5.0, 900, [(300, 6.0), (600, 5.5), (900, 5.0)])
        fast = numbers(4.9, 400, [(200, 5.6), (290, 5.0), (400, 4.9)], vs_fp32=20.0, vs_ddp=2000.0)
        slow = numbers(4.95, 800, [(400, 5.6), (700, 5.0), (800, 4.95)], vs_fp32=10.0, vs_ddp=500.0)
        never = numbers(5.6, 300, [(300, 5.6)], vs_fp32=20.0, vs_ddp=2000.0)
        text = results_page.targets(FakeRuns({
            "slow_link/ddp": ddp, "slow_link/diloco": fast, "slow_link/diloco-dct": slow,
            "slow_link/demo": never, "headline/ddp": ddp, "headline/diloco": fast,
            "headline/diloco-dct": fast, "headline/demo": slow}))
        rows = [line.split(" | ") for line in text.splitlines()[2:]]
        verdict = {(r[0].lstrip("| "), r[1]): r[2] for r in rows}
        link = "slow link: DDP's final val loss in ≤ 1/3 of DDP's wall-clock"
        self.assertIn("**met**: reached 5.0000 at 290 s = 0.32×", verdict[(link, "diloco")])
        self.assertIn("**missed**: reached 5.0000 at 11.7 min = 0.78×", verdict[(link, "diloco-dct")])
        self.assertIn("**missed**: never reached", verdict[(link, "demo")])
        self.assertIn("DDP at that wall-clock: 6.0000; DDP took 10.0 min to reach this run's 5.6000, "
                      "2.0× its time", verdict[(link, "demo")])
        self.assertIn("**met**", verdict[("≥ 16× fewer bytes than fp32 DiLoCo", "diloco-dct")])
        self.assertIn("**missed**", verdict[("≥ 16× fewer bytes than fp32 DiLoCo", "demo")])
        self.assertIn("**missed**", verdict[("≥ 1000× fewer bytes than DDP", "demo")])
        # fp32 DiLoCo vs DDP from the run's own ratios (500× vs DDP, 10× vs fp32 DiLoCo)
        self.assertIn("fp32 DiLoCo already sends 50.0× less than DDP at H=50, so 1000× needs 20×",
                      verdict[("≥ 1000× fewer bytes than DDP", "demo")])
        within = "val loss within 3% of DDP's at equal tokens"
        self.assertIn("**met**: 4.9000 vs DDP's 5.0000: -2.0%", verdict[(within, "diloco-dct")])
        self.assertIn("**met**", verdict[(within, "demo")])  # +1.0%

    def test_a_point_not_run_says_so(self):
        text = results_page.targets(FakeRuns({}))
        self.assertEqual(text.count("not run yet"), 3 + 2 * 3)
        self.assertNotIn("**met**", text)


if __name__ == "__main__":
    unittest.main()
