#!/usr/bin/python3
# Reference implementation of loco's chunked DCT codec in plain PyTorch, for golden tests.
#
# tests/test_codec.cpp dumps, for several tensors, the input, loco's chunk plan, DCT coefficients,
# kept indices and values, and decoded tensor, plus one sparse merge; this script recomputes them
# in float64 from the definitions (docs/design.md "DCT, concretely"; docs/codec.md) and compares:
#   plan          n1 = largest divisor of rows <= chunk, n2 likewise for cols
#   coefficients  D1 . B . D2^T of every block, D the orthonormal DCT-II basis; with transform
#                 none the blocks' raw values
#   selection     topk: k distinct indices whose |coefficient| is at least the k-th largest
#                 band: exactly the k largest k1 / n1 + k2 / n2, ties to the larger index
#   values        the coefficients at those indices within the value format's precision; int4
#                 within half its chunk's step max|v| / 7.5; int2 exactly SparseLoCo's 4-level
#                 quantiser recomputed here (mean mu, sigma with n - 1, bins of 1.5 sigma around
#                 mu + [-3, -1.5, 0, 1.5] sigma clamped to 0..3, each value the mean of its bin)
#   decoded       the inverse DCT of loco's kept coefficients; for fp32 top-k also the inverse
#                 of this script's own top-k
#   merge         each coefficient the mean over the payloads that carry it
#
#   reference_dct.py check DUMP.pt [--rtol 1e-4] [--atol 1e-5]
#
# `demo` checks the decoupled DCT momentum method (docs/design.md "Decoupled DCT momentum") on a
# dump of several workers over several rounds: from loco's theta_start and theta_end of each
# worker and round it recomputes, in float64, m = beta m + delta, the top-k of DCT(m) per chunk (fp32 values), the
# error feedback m -= IDCT(kept), the merge (each coefficient the mean over the workers that sent
# it), m += IDCT(merged), theta = theta_start - lr (delta + beta m), and compares m and theta.
#
#   reference_dct.py demo DUMP.pt [--rtol 1e-4] [--atol 1e-5]
#
# Exit status: 0 pass, 1 fail (a value, index or plan differs), 2 bad usage or unreadable dump.
# Run with /usr/bin/python3 (Debian's python3-torch).
import argparse
import math
import sys

import torch


class Failure(Exception):
    pass


def largest_divisor(n, chunk):
    return max(d for d in range(1, min(n, chunk) + 1) if n % d == 0)


def basis(n):
    """D[k][j] = s_k cos(pi (2j + 1) k / 2n), s_0 = sqrt(1/n), s_k = sqrt(2/n); float64."""
    d = torch.empty(n, n, dtype=torch.float64)
    for k in range(n):
        s = math.sqrt(1.0 / n) if k == 0 else math.sqrt(2.0 / n)
        for j in range(n):
            d[k, j] = s * math.cos(math.pi * (2 * j + 1) * k / (2 * n))
    return d


def as_2d(x):
    if x.dim() == 0:
        return x.reshape(1, 1)
    if x.dim() == 1:
        return x.reshape(1, -1)
    return x.reshape(x.shape[0], -1)


def forward(x2, n1, n2):
    """[chunks, n1 * n2] coefficients, chunks row-major over the block grid."""
    r, c = x2.shape
    blocks = x2.double().reshape(r // n1, n1, c // n2, n2)
    coef = torch.einsum("yjxl,kj,dl->yxkd", blocks, basis(n1), basis(n2))
    return coef.reshape(-1, n1 * n2)


def inverse(coef, r, c, n1, n2):
    blocks = coef.double().reshape(r // n1, c // n2, n1, n2)
    x = torch.einsum("yxkd,kj,dl->yjxl", blocks, basis(n1), basis(n2))
    return x.reshape(r, c)


def raw_chunks(x2, n1, n2):
    """transform none: the blocks' own values, [chunks, n1 * n2]."""
    r, c = x2.shape
    blocks = x2.double().reshape(r // n1, n1, c // n2, n2).permute(0, 2, 1, 3)
    return blocks.reshape(-1, n1 * n2)


def raw_inverse(chunks, r, c, n1, n2):
    blocks = chunks.double().reshape(r // n1, c // n2, n1, n2).permute(0, 2, 1, 3)
    return blocks.reshape(r, c)


def int2_levels(values):
    """SparseLoCo's 2-bit quantiser per chunk (row), float64: each value's dequantised level."""
    out = torch.empty_like(values)
    for ch in range(values.shape[0]):
        v = values[ch]
        mu = v.mean()
        centered = v - mu
        n = v.numel()
        step = centered.norm() / math.sqrt(n - 1) * 6 / 4 if n > 1 else torch.tensor(0.0)
        if not math.isfinite(step) or step <= 0:
            step = 1.0
        bins = torch.clamp(torch.round(centered / step + 2), 0, 3).long()
        for b in range(4):
            sel = bins == b
            if sel.any():
                out[ch][sel] = mu + centered[sel].mean()
    return out


def band(n1, n2, k):
    order = sorted(range(n1 * n2), key=lambda i: ((i // n2) * n2 + (i % n2) * n1, i), reverse=True)
    return sorted(order[:k])


def close(name, got, want, rtol, atol):
    got, want = got.double(), want.double()
    if got.shape != want.shape:
        raise Failure(f"{name}: shape {tuple(got.shape)}, expected {tuple(want.shape)}")
    err = (got - want).abs() - (atol + rtol * want.abs())
    if err.numel() and err.max() > 0:
        i = int(err.flatten().argmax())
        raise Failure(f"{name}: element {i} is {got.flatten()[i].item():.8g}, "
                      f"expected {want.flatten()[i].item():.8g}")


def value_tolerance(fmt, ref_values):
    """Per-value absolute error a value format allows (ref_values: [chunks, k])."""
    mag = ref_values.abs()
    if fmt == "fp32":
        return 1e-5 * (1 + mag)
    if fmt == "fp16":
        return mag * 2.0 ** -11 + 1e-7
    if fmt == "bf16":
        return mag * 2.0 ** -8 + 1e-7
    if fmt in ("int8", "int4"):
        scale = mag.amax(dim=1, keepdim=True) / (127 if fmt == "int8" else 7.5)
        return (scale / 2) * (1 + 1e-4) + 1e-6 * (1 + mag)
    raise Failure(f"unknown value format {fmt!r}")


def check_case(case, rtol, atol):
    name = case["name"]
    x, chunk, k = case["x"], case["chunk"], case["k"]
    x2 = as_2d(x)
    r, c = x2.shape
    n1, n2 = largest_divisor(r, chunk), largest_divisor(c, chunk)
    if (case["n1"], case["n2"]) != (n1, n2):
        raise Failure(f"{name}: plan {case['n1']}x{case['n2']}, expected {n1}x{n2}")
    scale = max(1.0, x.abs().max().item())
    dct = case.get("transform", "dct") == "dct"
    coef = forward(x2, n1, n2) if dct else raw_chunks(x2, n1, n2)
    invert = inverse if dct else raw_inverse
    close(f"{name}: coefficients", case["coefficients"], coef, rtol, atol * scale)

    indices, kept = case["indices"], case["kept"]
    if tuple(indices.shape) != (coef.shape[0], k):
        raise Failure(f"{name}: indices {tuple(indices.shape)}, expected ({coef.shape[0]}, {k})")
    mag = coef.abs()
    kth = mag.topk(k, dim=1).values[:, -1:]
    for ch in range(indices.shape[0]):
        idx = indices[ch].tolist()
        if len(set(idx)) != k:
            raise Failure(f"{name}: chunk {ch} repeats an index")
        if case["select"] == "band":
            if sorted(idx) != band(n1, n2, k):
                raise Failure(f"{name}: chunk {ch} keeps {sorted(idx)[:8]}..., not the top band")
        elif (mag[ch, idx] < kth[ch] - atol * scale).any():
            raise Failure(f"{name}: chunk {ch} keeps a coefficient below the {k}-th largest")
    ref_kept = coef.gather(1, indices)
    if case["values"] == "int2":
        close(f"{name}: int2 levels", kept, int2_levels(ref_kept), rtol, atol * scale)
    else:
        err = (kept.double() - ref_kept).abs() - value_tolerance(case["values"], ref_kept)
        if err.max() > 0:
            raise Failure(f"{name}: a kept value is off by more than {case['values']} allows")

    dense = torch.zeros_like(coef).scatter_(1, indices, kept.double())
    mine = invert(dense, r, c, n1, n2).reshape(x.shape)
    close(f"{name}: decoded", case["decoded"], mine, rtol, atol * scale)
    if case["values"] == "fp32" and case["select"] == "topk":
        own = mag.topk(k, dim=1).indices
        ref = invert(torch.zeros_like(coef).scatter_(1, own, coef.gather(1, own)), r, c, n1, n2)
        close(f"{name}: decoded vs own top-k", case["decoded"], ref.reshape(x.shape), rtol,
              atol * scale)


def check_merge(merge, rtol, atol):
    chunks, size = merge["chunks"], merge["chunk_size"]
    total = torch.zeros(chunks, size, dtype=torch.float64)
    count = torch.zeros(chunks, size, dtype=torch.float64)
    for idx, val in zip(merge["payload_indices"], merge["payload_values"]):
        total.scatter_add_(1, idx, val.double())
        count.scatter_add_(1, idx, torch.ones_like(val, dtype=torch.float64))
    mean = torch.where(count > 0, total / count.clamp(min=1), torch.zeros_like(total))
    idx, val = merge["merged_indices"], merge["merged_values"].double()
    want_k = int((count > 0).sum(dim=1).max())
    if tuple(idx.shape) != (chunks, want_k):
        raise Failure(f"merge: indices {tuple(idx.shape)}, expected ({chunks}, {want_k})")
    for ch in range(chunks):
        if len(set(idx[ch].tolist())) != want_k:
            raise Failure(f"merge: chunk {ch} repeats an index")
        carried = set((count[ch] > 0).nonzero().flatten().tolist())
        if not carried <= set(idx[ch].tolist()):
            raise Failure(f"merge: chunk {ch} drops a coefficient a payload carried")
    close("merge: values", val, mean.gather(1, idx), rtol, atol)


def topk_dense(coef, k):
    idx = coef.abs().topk(k, dim=1).indices
    return torch.zeros_like(coef).scatter_(1, idx, coef.gather(1, idx)), idx


def check_demo_case(case, rtol, atol):
    name, beta, lr, chunk, k = case["name"], case["beta"], case["lr"], case["chunk"], case["k"]
    rounds = case["rounds"]
    workers = len(rounds[0]["theta_start"])
    shape = rounds[0]["theta_start"][0].shape
    r, c = as_2d(rounds[0]["theta_start"][0]).shape
    n1, n2 = largest_divisor(r, chunk), largest_divisor(c, chunk)
    m = [torch.zeros(r, c, dtype=torch.float64) for _ in range(workers)]
    for t, rnd in enumerate(rounds):
        deltas, sent = [], []
        for w in range(workers):
            start = as_2d(rnd["theta_start"][w]).double()
            delta = start - as_2d(rnd["theta_end"][w]).double()
            m[w] = beta * m[w] + delta
            kept, idx = topk_dense(forward(m[w], n1, n2), k)
            m[w] = m[w] - inverse(kept, r, c, n1, n2)
            deltas.append(delta)
            sent.append((kept, idx))
        total = torch.zeros_like(sent[0][0])
        count = torch.zeros_like(sent[0][0])
        for kept, idx in sent:
            total += kept
            count.scatter_add_(1, idx, torch.ones_like(idx, dtype=torch.float64))
        merged = torch.where(count > 0, total / count.clamp(min=1), torch.zeros_like(total))
        for w in range(workers):
            m[w] = m[w] + inverse(merged, r, c, n1, n2)
            start = as_2d(rnd["theta_start"][w]).double()
            theta = start - lr * (deltas[w] + beta * m[w])
            scale = max(1.0, theta.abs().max().item())
            close(f"{name}: round {t} worker {w} momentum", rnd["m"][w], m[w].reshape(shape),
                  rtol, atol * scale)
            close(f"{name}: round {t} worker {w} parameters", rnd["theta"][w],
                  theta.reshape(shape), rtol, atol * scale)
        if t + 1 < len(rounds):
            for w in range(workers):
                close(f"{name}: round {t + 1} worker {w} starts where round {t} ended",
                      rounds[t + 1]["theta_start"][w], rnd["theta"][w], 0, 0)


def main():
    ap = argparse.ArgumentParser(description="Golden check of loco's DCT codec")
    ap.add_argument("mode", choices=["check", "demo"])
    ap.add_argument("dump")
    ap.add_argument("--rtol", type=float, default=1e-4)
    ap.add_argument("--atol", type=float, default=1e-5)
    args = ap.parse_args()
    try:
        # weights_only=False: torch >= 2.6 defaults to True and refuses torch::pickle_save type tags.
        dump = torch.load(args.dump, weights_only=False)
        if args.mode == "demo":
            cases = dump["demo"]
        else:
            cases, merge = dump["cases"], dump["merge"]
    except Exception as e:  # unreadable or missing keys: a usage problem, not a mismatch
        print(f"golden: cannot read {args.dump}: {e}", file=sys.stderr)
        return 2
    try:
        if args.mode == "demo":
            for case in cases:
                check_demo_case(case, args.rtol, args.atol)
            print(f"golden: PASS ({len(cases)} tensors, decoupled method)")
            return 0
        for case in cases:
            check_case(case, args.rtol, args.atol)
        check_merge(merge, args.rtol, args.atol)
    except Failure as e:
        print(f"golden: FAIL: {e}")
        return 1
    except KeyError as e:
        print(f"golden: the dump lacks {e}", file=sys.stderr)
        return 2
    print(f"golden: PASS ({len(cases)} tensors and a merge of {len(merge['payload_indices'])})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
