#!/usr/bin/python3
# Eager-PyTorch reference timing for loco's DCT codec (bench/codec_bench.cpp times loco's own).
#
# The transform is the one docs/design.md "DCT, concretely" describes, written the way the public
# reference (bloc97/DeMo, demo.py) writes it: cut into n1 x n2 chunks with a rearrange, DCT-II by
# einsum with the cached bases, top-k of |coefficient| per chunk, int8 values with one scale per
# chunk; then dequantise, scatter into dense chunks, inverse einsum, rearrange back. Tensors have
# the tiny model's shapes.
#
#   codec_bench.py [--chunk 64] [--topk 32] [--repeats 20] [--threads 1]   prints one JSON object
#
# Run with /usr/bin/python3 (Debian's python3-torch).
import argparse
import json
import math
import statistics
import time

import torch


def tiny_shapes(n_layer=4, n_embd=256, vocab=4096):
    shapes = [(vocab, n_embd), (vocab, n_embd)]  # wte, lm_head
    for _ in range(n_layer):
        shapes += [(n_embd, n_embd)] * 4 + [(4 * n_embd, n_embd), (n_embd, 4 * n_embd)]
    return shapes


def largest_divisor(n, chunk):
    return max(d for d in range(1, min(n, chunk) + 1) if n % d == 0)


def dct_basis(n):
    k = torch.arange(n, dtype=torch.float64).unsqueeze(1)
    j = torch.arange(n, dtype=torch.float64).unsqueeze(0)
    d = torch.cos(math.pi * (2 * j + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    d[0] /= math.sqrt(2.0)
    return d.float()


class EagerDct:
    def __init__(self, chunk, topk):
        self.chunk, self.topk, self.bases = chunk, topk, {}

    def basis(self, n):
        if n not in self.bases:
            self.bases[n] = dct_basis(n)
        return self.bases[n]

    def encode(self, x):
        r, c = x.shape
        n1, n2 = largest_divisor(r, self.chunk), largest_divisor(c, self.chunk)
        blocks = x.reshape(r // n1, n1, c // n2, n2)
        coef = torch.einsum("yjxl,kj,dl->yxkd", blocks, self.basis(n1), self.basis(n2))
        flat = coef.reshape(-1, n1 * n2)
        idx = flat.abs().topk(min(self.topk, n1 * n2), dim=-1, sorted=False).indices
        vals = flat.gather(1, idx)
        scale = vals.abs().amax(dim=1, keepdim=True) / 127
        q = (vals / torch.where(scale > 0, scale, torch.ones_like(scale))).round().clamp(-127, 127)
        return (x.shape, n1, n2, idx, q.to(torch.int8), scale)

    def decode(self, enc):
        (r, c), n1, n2, idx, q, scale = enc
        vals = q.float() * scale
        dense = torch.zeros(idx.shape[0], n1 * n2).scatter_(1, idx, vals)
        coef = dense.reshape(r // n1, c // n2, n1, n2)
        x = torch.einsum("yxkd,kj,dl->yjxl", coef, self.basis(n1), self.basis(n2))
        return x.reshape(r, c)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--chunk", type=int, default=64)
    ap.add_argument("--topk", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    tensors = [torch.randn(s) for s in tiny_shapes()]
    codec = EagerDct(args.chunk, args.topk)
    wall, cpu = [], []
    with torch.no_grad():
        for i in range(args.repeats + 2):  # two warm-up passes
            w0, c0 = time.perf_counter(), time.process_time()
            for x in tensors:
                codec.decode(codec.encode(x))
            if i >= 2:
                wall.append(time.perf_counter() - w0)
                cpu.append(time.process_time() - c0)
    print(json.dumps({
        "impl": "pytorch-eager", "torch": torch.__version__, "threads": torch.get_num_threads(),
        "chunk": args.chunk, "topk": args.topk, "tensors": len(tensors),
        "elements": sum(x.numel() for x in tensors),
        "encode_decode_ms": round(1e3 * statistics.median(wall), 3),
        "encode_decode_cpu_ms": round(1e3 * statistics.median(cpu), 3),
    }))


if __name__ == "__main__":
    main()
