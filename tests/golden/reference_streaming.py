#!/usr/bin/python3
# Reference implementation of streaming DiLoCo's schedule, fragments, outer step and mix in plain
# PyTorch (float64), for the golden test in tests/test_streaming.cpp (docs/streaming.md).
#
# The test runs W of loco's StreamingWorker and its coordinator's StreamingAggregator in one
# process (codec none), with a synthetic inner step theta <- theta - eta (theta - target_w) on
# every worker, and dumps: the layout (shapes), the start parameters, each worker's target and
# token weight, the settings, loco's fragment ranges, and every worker's parameters after every
# step and the coordinator's after every round. This script recomputes all of it from the
# definitions:
#   fragments  P contiguous ranges; fragment p ends at the first row boundary (a tensor's rows
#              along its first dimension) at or after ceil(N (p + 1) / P)
#   schedule   round r ends at step (r + 1) H / P and syncs fragment r mod P; its result is
#              applied tau steps later (tau = 0: at once)
#   outer      delta = sum_w tokens_w (anchor_w - theta_w) / sum_w tokens_w on the fragment;
#              v_p = mu v_p + delta; global_p -= lr (delta + mu v_p)
#   mix        theta_w,p = alpha theta_w,p + (1 - alpha) global_p; the anchor becomes global_p
# and compares.
#
#   reference_streaming.py check DUMP.pt [--rtol 1e-5] [--atol 1e-6]
#
# Exit status: 0 pass, 1 fail, 2 bad usage or unreadable dump. Run with /usr/bin/python3.
import argparse
import math
import sys

import torch


class Failure(Exception):
    pass


def fragments(shapes, count):
    """[(offset, numel)] of each fragment, from the rule above."""
    total = sum(math.prod(s) for s in shapes)
    bounds = []  # row boundaries: every offset where a row starts, and the end
    offset = 0
    for s in shapes:
        rows = s[0] if s else 1
        row = math.prod(s) // rows
        bounds += [offset + k * row for k in range(rows)]
        offset += math.prod(s)
    bounds.append(total)
    ends = []
    for p in range(count):
        want = -(-total * (p + 1) // count)
        ends.append(min(b for b in bounds if b >= want))
    starts = [0] + ends[:-1]
    return [(a, b - a) for a, b in zip(starts, ends)]


def simulate(d):
    s = d["settings"].to(torch.float64).tolist()
    workers, h, count, tau, alpha, lr, mu, eta, steps = s[:9]
    workers, h, count, tau, steps = int(workers), int(h), int(count), int(tau), int(steps)
    shapes = [[int(x) for x in t.tolist()] for t in d["shapes"]]
    frags = fragments(shapes, count)
    theta0 = d["theta0"].to(torch.float64)
    targets = d["targets"].to(torch.float64)
    tokens = d["tokens"].to(torch.float64)
    params = [theta0.clone() for _ in range(workers)]
    anchor = [theta0.clone() for _ in range(workers)]
    glob = theta0.clone()
    v = torch.zeros_like(theta0)
    every = h // count
    trace, rounds = [], []
    pending, rnd = None, 0

    def apply(r):
        a, n = frags[r % count]
        for w in range(workers):
            anchor[w][a:a + n] = glob[a:a + n]
            params[w][a:a + n] = alpha * params[w][a:a + n] + (1 - alpha) * glob[a:a + n]

    for step in range(1, steps + 1):
        for w in range(workers):
            params[w] -= eta * (params[w] - targets[w])
        if pending is not None and step % every == tau:
            apply(pending)
            pending = None
        if step % every == 0:
            a, n = frags[rnd % count]
            delta = sum(tokens[w] * (anchor[w][a:a + n] - params[w][a:a + n])
                        for w in range(workers)) / tokens.sum()
            v[a:a + n] = mu * v[a:a + n] + delta
            glob[a:a + n] -= lr * (delta + mu * v[a:a + n])
            rounds.append(glob.clone())
            if tau == 0:
                apply(rnd)
            else:
                pending = rnd
            rnd += 1
        trace.append(torch.stack(params))
    return frags, torch.stack(trace), torch.stack(rounds)


def check(path, rtol, atol):
    d = torch.load(path)
    frags, trace, rounds = simulate(d)
    got = [tuple(int(x) for x in f.tolist()) for f in d["fragments"]]
    if got != frags:
        raise Failure(f"fragments: loco {got}, reference {frags}")
    for name, mine, theirs in (("worker parameters", trace, d["trace"]),
                               ("coordinator parameters", rounds, d["rounds"])):
        theirs = theirs.to(torch.float64)
        if mine.shape != theirs.shape:
            raise Failure(f"{name}: shape {tuple(theirs.shape)}, reference {tuple(mine.shape)}")
        if not torch.allclose(theirs, mine, rtol=rtol, atol=atol):
            bad = ((theirs - mine).abs() > atol + rtol * mine.abs()).nonzero()[0].tolist()
            raise Failure(f"{name} differ first at {bad}: loco {theirs[tuple(bad)].item()}, "
                          f"reference {mine[tuple(bad)].item()}")
    print(f"ok: {len(frags)} fragments, {trace.shape[0]} steps, {rounds.shape[0]} rounds, "
          f"{trace.shape[1]} workers")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("command", choices=["check"])
    ap.add_argument("dump")
    ap.add_argument("--rtol", type=float, default=1e-5)
    ap.add_argument("--atol", type=float, default=1e-6)
    a = ap.parse_args()
    try:
        check(a.dump, a.rtol, a.atol)
    except Failure as e:
        print(f"FAIL: {e}")
        return 1
    except (OSError, RuntimeError, KeyError) as e:
        print(f"error: {e}")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
