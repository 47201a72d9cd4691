#!/usr/bin/python3
# Baseline for bench/speed.sh: what a user would otherwise run. Eager PyTorch training of the same
# GPT as loco (the model class of tests/golden/reference_gpt.py), nanochat-style init, AdamW and
# gradient clipping, timed after a warm-up. Prints one JSON line:
#   {"impl": "pytorch", "tokens_per_s": ..., "ms_per_step": ..., "steps": ..., "threads": ..., ...}
# Run with /usr/bin/python3 (Debian's python3-torch).
import argparse
import inspect
import json
import math
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "golden"))
from reference_gpt import GPT  # noqa: E402


def init_weights(model):
    """nanochat's init: Linear ~ N(0, 1/sqrt(fan_in) * min(1, sqrt(fan_out/fan_in))), embedding
    ~ N(0, 1), lm_head and every c_proj zero."""
    for name, p in model.named_parameters():
        if name == "wte.weight":
            torch.nn.init.normal_(p, std=1.0)
        elif name == "lm_head.weight" or name.endswith("c_proj.weight"):
            torch.nn.init.zeros_(p)
        else:
            fan_out, fan_in = p.shape
            torch.nn.init.normal_(p, std=min(1.0, math.sqrt(fan_out / fan_in)) / math.sqrt(fan_in))


def load_tokens(path, vocab_size):
    """Tokens of a loco shard (64-byte header 'LOCOTOK1', version, bytes per token, count, ...)."""
    with open(path, "rb") as f:
        header = f.read(64)
    if len(header) < 64 or header[:8] != b"LOCOTOK1":
        sys.exit(f"{path}: not a loco token shard (magic)")
    version, token_bytes = np.frombuffer(header, "<u4", 2, 8)
    count, vocab = int(np.frombuffer(header, "<u8", 1, 16)[0]), int(np.frombuffer(header, "<u4", 1, 32)[0])
    if version != 1 or token_bytes not in (2, 4):
        sys.exit(f"{path}: unsupported version {version} / bytes per token {token_bytes}")
    if vocab > vocab_size:
        sys.exit(f"{path}: tokenizer vocab {vocab} exceeds --vocab-size {vocab_size}")
    tokens = np.fromfile(path, dtype="<u2" if token_bytes == 2 else "<u4", count=count, offset=64)
    if len(tokens) != count:
        sys.exit(f"{path}: truncated ({len(tokens)} of {count} tokens)")
    return torch.from_numpy(tokens.astype(np.int64))


def main():
    ap = argparse.ArgumentParser(description="Eager PyTorch training baseline for loco")
    ap.add_argument("--n-layer", type=int, default=4)
    ap.add_argument("--n-head", type=int, default=4)
    ap.add_argument("--n-embd", type=int, default=256)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--vocab-size", type=int, default=4096)
    ap.add_argument("--softcap", type=float, default=15.0)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads (0: torch's default)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    ap.add_argument("--steps", type=int, default=20, help="timed steps")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--data", help="loco train.bin shard, read alone (of a sharded corpus: its first shard; default: random tokens)")
    args = ap.parse_args()
    if args.steps < 1 or args.warmup < 0:
        ap.error("--steps must be >= 1 and --warmup >= 0")

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    B, T = args.batch_size, args.seq_len
    if args.data:
        tokens = load_tokens(args.data, args.vocab_size)
        if len(tokens) < T + 1:
            sys.exit(f"{args.data}: {len(tokens)} tokens, need at least seq_len + 1 = {T + 1}")
    else:
        tokens = torch.randint(0, args.vocab_size, (B * (T + 1) * 64,))

    model = GPT(args.n_layer, args.n_head, args.n_embd, T, args.vocab_size, args.softcap)
    init_weights(model)
    model.to(device)
    extra = {"foreach": True} if "foreach" in inspect.signature(torch.optim.AdamW).parameters else {}
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), eps=1e-8,
                            weight_decay=0.1, **extra)

    def step():
        starts = torch.randint(0, len(tokens) - T, (B,))
        batch = torch.stack([tokens[s:s + T + 1] for s in starts.tolist()]).to(device)
        _, loss = model(batch[:, :-1], batch[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(args.warmup):
        step()
    sync()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    sync()
    seconds = time.perf_counter() - t0

    print(json.dumps({
        "impl": "pytorch",
        "tokens_per_s": round(B * T * args.steps / seconds, 1),
        "ms_per_step": round(1000 * seconds / args.steps, 3),
        "steps": args.steps,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "loss": round(loss.item(), 4),
    }))


if __name__ == "__main__":
    main()
