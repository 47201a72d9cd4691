#!/usr/bin/python3
# Reference of SparseLoCo as loco runs it (docs/codec.md, "SparseLoCo"), in float64, for the
# golden test SparseLoCoGolden in tests/test_codec_lowbit.cpp. From loco's dump of W workers over
# R rounds (each worker's pseudo-gradient delta, its error-feedback residual after the round's
# encode, and the coordinator's global parameters after the round) it recomputes, from the
# definitions and with nothing of loco's:
#   worker w, per tensor:  e = beta e + delta
#                          chunks: the tensor as rows x cols (1-D: 1 x L), blocks n1 x n2 with
#                          n1 (n2) the largest divisor of rows (cols) <= chunk, row-major
#                          kept: the k values of largest |e| in each block
#                          q: SparseLoCo's 2-bit quantiser per block (4 bins of 1.5 sigma around
#                          the kept values' mean, each value its bin's mean)
#                          e = e - q (in place of the kept values)
#   coordinator:           avg = sum_w tokens_w q_w / sum_w tokens_w
#                          theta = theta - eta avg   (outer momentum 0)
# and compares each residual and each round's global parameters.
#
#   reference_sparseloco.py DUMP.pt [--rtol 1e-4] [--atol 1e-5]
#
# Exit status: 0 pass, 1 fail, 2 unreadable dump. Run with /usr/bin/python3 (python3-torch).
import argparse
import math
import sys

import torch


class Failure(Exception):
    pass


def largest_divisor(n, chunk):
    return max(d for d in range(1, min(n, chunk) + 1) if n % d == 0)


def blocks_of(x, shape, chunk):
    """x (flat) as [blocks, n1 * n2] and the function putting such blocks back into x's shape."""
    rows, cols = (1, shape[0]) if len(shape) == 1 else (shape[0], math.prod(shape[1:]))
    n1, n2 = largest_divisor(rows, chunk), largest_divisor(cols, chunk)
    b = x.reshape(rows // n1, n1, cols // n2, n2).permute(0, 2, 1, 3).reshape(-1, n1 * n2)

    def back(blocks):
        return blocks.reshape(rows // n1, cols // n2, n1, n2).permute(0, 2, 1, 3).reshape(-1)
    return b, back


def quantise_2bit(values):
    """Each row's values as the mean of their bin: bins of 6 sigma / 4 around the row's mean."""
    out = torch.empty_like(values)
    for i, v in enumerate(values):
        mu = v.mean()
        centered = v - mu
        step = centered.norm().item() / math.sqrt(v.numel() - 1) * 1.5 if v.numel() > 1 else 0.0
        if not math.isfinite(step) or step <= 0:
            step = 1.0
        bins = torch.clamp(torch.round(centered / step + 2), 0, 3)
        for b in range(4):
            sel = bins == b
            if sel.any():
                out[i][sel] = mu + centered[sel].mean()
    return out


def sent(e, shape, chunk, k):
    """What a worker sends of its accumulator e (one tensor, flat): dense, zero where not kept."""
    blocks, back = blocks_of(e, shape, chunk)
    k = min(k, blocks.shape[1])
    idx = blocks.abs().topk(k, dim=1).indices
    q = torch.zeros_like(blocks)
    q.scatter_(1, idx, quantise_2bit(blocks.gather(1, idx)))
    return back(q)


def close(name, got, want, rtol, atol):
    got, want = got.double(), want.double()
    err = (got - want).abs() - (atol + rtol * want.abs())
    if err.max() > 0:
        i = int(err.argmax())
        raise Failure(f"{name}: element {i} is {got.flatten()[i].item():.8g}, "
                      f"expected {want.flatten()[i].item():.8g}")


def check(dump, rtol, atol):
    workers, eta, beta, chunk, k = dump["settings"].tolist()
    workers, chunk, k = int(workers), int(chunk), int(k)
    shapes = [tuple(s.tolist()) for s in dump["shapes"]]
    sizes = [math.prod(s) for s in shapes]
    tokens = dump["tokens"].double()
    deltas, residuals, globals_ = dump["deltas"].double(), dump["residuals"], dump["globals"]
    rounds = deltas.shape[0]
    theta = dump["theta0"].double().clone()
    e = torch.zeros(workers, theta.numel(), dtype=torch.float64)
    for r in range(rounds):
        avg = torch.zeros_like(theta)
        for w in range(workers):
            parts, offset = [], 0
            e[w] = beta * e[w] + deltas[r, w]
            for shape, size in zip(shapes, sizes):
                parts.append(sent(e[w, offset:offset + size], shape, chunk, k))
                offset += size
            q = torch.cat(parts)
            e[w] -= q
            avg += tokens[w] * q
            close(f"round {r} worker {w} residual", residuals[r, w], e[w], rtol, atol)
        theta -= eta * avg / tokens.sum()
        close(f"round {r} global parameters", globals_[r], theta, rtol, atol)
    return workers, rounds


def main():
    ap = argparse.ArgumentParser(description="Golden check of loco's SparseLoCo")
    ap.add_argument("dump")
    ap.add_argument("--rtol", type=float, default=1e-4)
    ap.add_argument("--atol", type=float, default=1e-5)
    args = ap.parse_args()
    try:
        dump = torch.load(args.dump, weights_only=False)
    except Exception as e:
        print(f"golden: cannot read {args.dump}: {e}", file=sys.stderr)
        return 2
    try:
        workers, rounds = check(dump, args.rtol, args.atol)
    except Failure as e:
        print(f"golden: FAIL: {e}")
        return 1
    except KeyError as e:
        print(f"golden: the dump lacks {e}", file=sys.stderr)
        return 2
    print(f"golden: PASS ({workers} workers, {rounds} rounds, SparseLoCo)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
