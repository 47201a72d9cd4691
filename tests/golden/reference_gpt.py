#!/usr/bin/python3
# Reference implementation of loco's GPT (nanochat's design) in plain PyTorch, for golden tests.
#
# The C++ tests dump parameters, a batch and their own results (loss, gradients, or parameters
# after AdamW steps); this script recomputes them in float64 and compares.
#
#   reference_gpt.py check DUMP.pt [--rtol 1e-4] [--atol 1e-5]   loss and gradients of the model
#   reference_gpt.py adamw DUMP.pt [--rtol 1e-5] [--atol 1e-6]   S AdamW steps with given grads/lrs
#   reference_gpt.py selftest                                    both modes on Python-made dumps
#
# Exit status: 0 pass, 1 fail (a value, name or shape differs), 2 bad usage or unreadable dump.
# Run with /usr/bin/python3 (Debian's python3-torch).
import argparse
import math
import os
import sys
import tempfile

import torch
import torch.nn as nn
import torch.nn.functional as F


def rms_norm(x):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)


def rotary(x, cos, sin):  # x [B,T,H,D]; cos, sin [1,T,1,D/2]
    d = x.size(-1) // 2
    x1, x2 = x[..., :d], x[..., d:]
    return torch.cat([x1 * cos + x2 * sin, -x1 * sin + x2 * cos], dim=-1)


class Attention(nn.Module):
    def __init__(self, n_embd, n_head):
        super().__init__()
        self.n_head = n_head
        self.c_q = nn.Linear(n_embd, n_embd, bias=False)
        self.c_k = nn.Linear(n_embd, n_embd, bias=False)
        self.c_v = nn.Linear(n_embd, n_embd, bias=False)
        self.c_proj = nn.Linear(n_embd, n_embd, bias=False)

    def forward(self, x, cos, sin):
        B, T, C = x.shape
        H, D = self.n_head, C // self.n_head
        q, k, v = (lin(x).view(B, T, H, D) for lin in (self.c_q, self.c_k, self.c_v))
        q, k = rms_norm(rotary(q, cos, sin)), rms_norm(rotary(k, cos, sin))
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B,H,T,D]
        att = (q @ k.transpose(-2, -1)) / math.sqrt(D)
        future = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1)
        att = att.masked_fill(future, float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, C)
        return self.c_proj(y)


class MLP(nn.Module):
    def __init__(self, n_embd):
        super().__init__()
        self.c_fc = nn.Linear(n_embd, 4 * n_embd, bias=False)
        self.c_proj = nn.Linear(4 * n_embd, n_embd, bias=False)

    def forward(self, x):
        return self.c_proj(F.relu(self.c_fc(x)).square())


class Block(nn.Module):
    def __init__(self, n_embd, n_head):
        super().__init__()
        self.attn = Attention(n_embd, n_head)
        self.mlp = MLP(n_embd)

    def forward(self, x, cos, sin):
        x = x + self.attn(rms_norm(x), cos, sin)
        return x + self.mlp(rms_norm(x))


class GPT(nn.Module):
    def __init__(self, n_layer, n_head, n_embd, seq_len, vocab_size, softcap=15.0):
        super().__init__()
        assert n_embd % n_head == 0 and (n_embd // n_head) % 2 == 0, "head dim must be even"
        self.n_head, self.seq_len, self.softcap = n_head, seq_len, softcap
        self.wte = nn.Embedding(vocab_size, n_embd)
        self.blocks = nn.ModuleList([Block(n_embd, n_head) for _ in range(n_layer)])
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)

    @classmethod
    def from_params(cls, config, params, dtype=torch.float32):
        """config: dict of the six model keys; params: name -> tensor (names as in the dump)."""
        model = cls(**config).to(dtype)
        model.load_state_dict({k: v.detach().to(dtype) for k, v in params.items()}, strict=True)
        return model

    def rotary_cos_sin(self, T, dtype, device):
        D = self.wte.weight.size(1) // self.n_head
        inv_freq = 1.0 / (10000 ** (torch.arange(0, D, 2, dtype=dtype, device=device) / D))
        freqs = torch.outer(torch.arange(T, dtype=dtype, device=device), inv_freq)
        return freqs.cos()[None, :, None, :], freqs.sin()[None, :, None, :]

    def forward(self, idx, target=None):
        """idx, target: int64 [B,T]. Returns logits [B,T,V] and the mean loss (or None)."""
        x = rms_norm(self.wte(idx))
        cos, sin = self.rotary_cos_sin(idx.size(1), x.dtype, x.device)
        for block in self.blocks:
            x = block(x, cos, sin)
        logits = self.lm_head(rms_norm(x))
        if self.softcap > 0:
            logits = self.softcap * torch.tanh(logits / self.softcap)
        if target is None:
            return logits, None
        flat = logits if logits.dtype == torch.float64 else logits.float()
        return logits, F.cross_entropy(flat.reshape(-1, flat.size(-1)), target.reshape(-1))


# ---------------------------------------------------------------------------------------------
# Dump checking

MODEL_KEYS = {"n_layer": int, "n_head": int, "n_embd": int, "seq_len": int, "vocab_size": int,
              "softcap": float}


class DumpError(Exception):
    """The dump cannot be read or lacks what a mode needs (exit status 2)."""


def load_dump(path, keys):
    if not os.path.isfile(path):
        raise DumpError(f"{path}: no such file")
    try:
        # weights_only=False: torch >= 2.6 defaults to True and refuses the type tags of
        # torch::pickle_save; the dump is one this test just wrote.
        dump = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise DumpError(f"{path}: not a torch dump ({type(e).__name__}: {e})")
    if not isinstance(dump, dict):
        raise DumpError(f"{path}: expected a dict, got {type(dump).__name__}")
    missing = [k for k in keys if k not in dump]
    if missing:
        raise DumpError(f"{path}: missing keys {missing} (has {sorted(dump)})")
    return dump


def as_tensor_dict(dump, key):
    value = dump[key]
    if not isinstance(value, dict) or not all(torch.is_tensor(v) for v in value.values()):
        raise DumpError(f"'{key}' must be a dict of name -> tensor")
    return {str(k): v.detach() for k, v in value.items()}


def same_names_and_shapes(what, got, expected_shapes, leading=()):
    """Prints and returns problems: names missing or extra in `got`, or shapes that differ."""
    problems = [f"{what}: missing {n}" for n in expected_shapes if n not in got]
    problems += [f"{what}: unexpected {n}" for n in got if n not in expected_shapes]
    for n, shape in expected_shapes.items():
        if n in got and tuple(got[n].shape) != tuple(leading) + tuple(shape):
            problems.append(f"{what}: {n} has shape {list(got[n].shape)}, "
                            f"expected {list(leading) + list(shape)}")
    for p in problems:
        print(p)
    return problems


def compare(name, got, ref, rtol, atol, ref32=None):
    """One line per tensor; returns True when allclose(got, ref) holds."""
    got, ref = got.double(), ref.double()
    diff = (got - ref).abs()
    big = ref.abs() > atol  # relative error only where the reference is not ~0
    rel = (diff[big] / ref.abs()[big]).max().item() if big.any() else 0.0
    ok = bool(torch.allclose(got, ref, rtol=rtol, atol=atol))
    extra = f"  (py fp32 abs {(ref32.double() - ref).abs().max().item():.2e})" if ref32 is not None else ""
    print(f"{'ok  ' if ok else 'FAIL'} {name:40s} max_abs {diff.max().item():.2e}  max_rel {rel:.2e}{extra}")
    return ok


def finish(failures):
    if failures:
        print(f"golden: FAIL ({len(failures)} problem(s): {', '.join(failures[:5])}"
              f"{', ...' if len(failures) > 5 else ''})")
        return 1
    print("golden: PASS")
    return 0


def check(path, rtol=1e-4, atol=1e-5):
    dump = load_dump(path, ["config", "params", "input", "target", "loss", "grads"])
    try:
        config = {k: cast(dump["config"][k]) for k, cast in MODEL_KEYS.items()}
    except (KeyError, TypeError, ValueError) as e:
        raise DumpError(f"'config' must hold {sorted(MODEL_KEYS)} as numbers ({e!r})")
    params, grads = as_tensor_dict(dump, "params"), as_tensor_dict(dump, "grads")
    idx, target = dump["input"], dump["target"]
    for key, t in (("input", idx), ("target", target)):
        if not torch.is_tensor(t) or t.dtype != torch.int64 or t.dim() != 2:
            raise DumpError(f"'{key}' must be an int64 [B,T] tensor")
        if t.numel() and (t.min() < 0 or t.max() >= config["vocab_size"]):
            raise DumpError(f"'{key}' has token ids outside [0, {config['vocab_size']})")
    loss_cpp = torch.as_tensor(dump["loss"]).detach()
    if loss_cpp.numel() != 1:
        raise DumpError(f"'loss' must be a single number, got shape {list(loss_cpp.shape)}")
    if idx.shape != target.shape or idx.size(1) > config["seq_len"]:
        raise DumpError(f"input {list(idx.shape)} / target {list(target.shape)}: "
                        f"need equal shapes with T <= seq_len {config['seq_len']}")

    shapes = {n: p.shape for n, p in GPT(**config).named_parameters()}
    failures = same_names_and_shapes("params", params, shapes)
    failures += same_names_and_shapes("grads", grads, shapes)
    if failures:
        return finish(failures)

    refs = {}
    for dtype in (torch.float64, torch.float32):
        model = GPT.from_params(config, params, dtype)
        logits, loss = model(idx, target)
        loss.backward()
        refs[dtype] = (logits.detach(), loss.detach(), {n: p.grad for n, p in model.named_parameters()})
    (logits64, loss64, grads64), (logits32, loss32, grads32) = refs[torch.float64], refs[torch.float32]

    print(f"loss: dump {loss_cpp.item():.8f}  reference {loss64.item():.8f}")
    checks = [("loss", loss_cpp.reshape(()), loss64, loss32)]
    if "logits" in dump:  # optional
        checks.append(("logits", dump["logits"], logits64, logits32))
    checks += [(f"grad {n}", grads[n], grads64[n], grads32[n]) for n in shapes]
    for name, got, ref, ref32 in checks:
        if tuple(got.shape) != tuple(ref.shape):
            print(f"FAIL {name}: shape {list(got.shape)}, expected {list(ref.shape)}")
            failures.append(name)
        elif not compare(name, got, ref, rtol, atol, ref32):
            failures.append(name)
    return finish(failures)


def adamw_reference(params, grads, lrs, hp, dtype=torch.float64):
    """Applies len(lrs) steps of torch.optim.AdamW; grads[name] is [S, *shape]."""
    ps = {n: nn.Parameter(p.detach().to(dtype).clone()) for n, p in params.items()}
    opt = torch.optim.AdamW(list(ps.values()), lr=float(lrs[0]), betas=(hp["beta1"], hp["beta2"]),
                            eps=hp["eps"], weight_decay=hp["weight_decay"])
    for s, lr in enumerate(lrs.tolist()):
        opt.param_groups[0]["lr"] = lr
        for n, p in ps.items():
            p.grad = grads[n][s].to(dtype)
        opt.step()
    return {n: p.detach() for n, p in ps.items()}


def adamw(path, rtol=1e-5, atol=1e-6):
    dump = load_dump(path, ["params_before", "grads", "lrs", "hp", "params_after"])
    before, after = as_tensor_dict(dump, "params_before"), as_tensor_dict(dump, "params_after")
    grads, lrs = as_tensor_dict(dump, "grads"), dump["lrs"]
    if not torch.is_tensor(lrs) or lrs.dim() != 1 or lrs.numel() == 0:
        raise DumpError("'lrs' must be a non-empty 1-D tensor of per-step learning rates")
    try:
        hp = {k: float(dump["hp"][k]) for k in ("beta1", "beta2", "eps", "weight_decay")}
    except (KeyError, TypeError, ValueError) as e:
        raise DumpError(f"'hp' must hold beta1, beta2, eps, weight_decay as numbers ({e!r})")

    shapes = {n: p.shape for n, p in before.items()}
    failures = same_names_and_shapes("params_after", after, shapes)
    failures += same_names_and_shapes("grads", grads, shapes, leading=(lrs.numel(),))
    if failures:
        return finish(failures)
    print(f"adamw: {lrs.numel()} steps, {len(before)} tensors, hp {hp}")
    ref = adamw_reference(before, grads, lrs, hp)
    failures = [n for n in shapes if not compare(n, after[n], ref[n], rtol, atol)]
    return finish(failures)


# ---------------------------------------------------------------------------------------------
# Self-test: Python (float32) plays the C++ side, then one value is perturbed.

def selftest():
    torch.manual_seed(0)
    config = dict(n_layer=2, n_head=2, n_embd=16, seq_len=8, vocab_size=32, softcap=15.0)
    params = {n: 0.3 * torch.randn(p.shape) for n, p in GPT(**config).named_parameters()}
    model = GPT.from_params(config, params, torch.float32)
    idx, target = torch.randint(0, 32, (2, 8)), torch.randint(0, 32, (2, 8))
    logits, loss = model(idx, target)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    golden = dict(config=config, params=params, input=idx, target=target, loss=loss.detach(),
                  grads=grads, logits=logits.detach())

    S = 3
    opt_params = {n: p.clone() for n, p in list(params.items())[:3]}
    opt_grads = {n: torch.randn(S, *p.shape) for n, p in opt_params.items()}
    lrs = torch.tensor([1e-3, 3e-3, 2e-3])
    hp = dict(beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1)
    after = adamw_reference(opt_params, opt_grads, lrs, hp, torch.float32)
    opt = dict(params_before=opt_params, grads=opt_grads, lrs=lrs, hp=hp, params_after=after)

    def run(title, fn, dump, expect):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "dump.pt")
            torch.save(dump, path)
            print(f"--- {title} (expect exit {expect})")
            try:
                code = fn(path)
            except DumpError as e:
                print(f"invalid dump: {e}")
                code = 2
        return [] if code == expect else [f"{title}: exit {code}, expected {expect}"]

    def tweak(dump, key, name, delta):
        d = dict(dump, **{key: dict(dump[key])})
        d[key][name] = d[key][name].clone()
        d[key][name].view(-1)[0] += delta
        return d

    name = "blocks.1.attn.c_k.weight"
    extra = dict(golden, params=dict(params, **{"blocks.0.attn.bias": torch.zeros(16)}))
    problems = run("check: python float32 dump", check, golden, 0)
    problems += run("check: one grad perturbed by 1e-2", check, tweak(golden, "grads", name, 1e-2), 1)
    problems += run("check: extra param", check, extra, 1)
    problems += run("check: no grads", check, {k: v for k, v in golden.items() if k != "grads"}, 2)
    name = next(iter(opt_params))
    problems += run("adamw: python float32 dump", adamw, opt, 0)
    problems += run("adamw: one param perturbed by 1e-2", adamw, tweak(opt, "params_after", name, 1e-2), 1)
    print("selftest: PASS" if not problems else "selftest: FAIL\n  " + "\n  ".join(problems))
    return 1 if problems else 0


def main(argv):
    parser = argparse.ArgumentParser(prog="reference_gpt.py")
    parser.add_argument("mode", choices=["check", "adamw", "selftest"])
    parser.add_argument("dump", nargs="?")
    parser.add_argument("--rtol", type=float)
    parser.add_argument("--atol", type=float)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return 2 if e.code else 0
    if args.mode == "selftest":
        return selftest()
    if not args.dump:
        print(f"usage: reference_gpt.py {args.mode} DUMP.pt [--rtol R] [--atol A]", file=sys.stderr)
        return 2
    fn = check if args.mode == "check" else adamw
    tol = {k: v for k, v in (("rtol", args.rtol), ("atol", args.atol)) if v is not None}
    try:
        return fn(args.dump, **tol)
    except DumpError as e:
        print(f"golden: invalid dump: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
