#!/usr/bin/python3
"""Loads a `loco export` directory without any loco code and checks loco's loss on a batch.

    load_export.py EXPORT_DIR DUMP.pt [--rtol 1e-4]

Reads EXPORT_DIR/model.safetensors by hand from the format's description (an 8-byte
little-endian header length, a JSON header {name: {dtype, shape, data_offsets}, "__metadata__"},
then the raw little-endian tensors), builds the golden PyTorch GPT (reference_gpt.py, beside this
file) from the Hugging-Face-style fields of EXPORT_DIR/config.json, and recomputes the loss of
DUMP.pt's batch ("input", "target": int64 [B, T]) against its "loss" (what loco computed).
Checks too that tokenizer.model is there and non-empty. Prints "export: OK loss=..." or
"export: FAIL <reason>" (exit 1).
"""
import argparse
import json
import os
import struct
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference_gpt import GPT  # noqa: E402

DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64}


def read_safetensors(path):
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        raise ValueError("shorter than the 8-byte header length")
    (n,) = struct.unpack("<Q", blob[:8])
    if 8 + n > len(blob):
        raise ValueError(f"header length {n} runs past the file ({len(blob)} bytes)")
    header = json.loads(blob[8:8 + n].decode("utf-8"))
    data = blob[8 + n:]
    tensors, end = {}, 0
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        a, b = spec["data_offsets"]
        dtype = np.dtype(DTYPES[spec["dtype"]]).newbyteorder("<")
        count = int(np.prod(spec["shape"])) if spec["shape"] else 1
        if b - a != count * dtype.itemsize or b > len(data):
            raise ValueError(f"{name}: offsets {a}..{b} do not fit shape {spec['shape']}")
        array = np.frombuffer(data[a:b], dtype=dtype).reshape(spec["shape"])
        tensors[name] = torch.from_numpy(array.astype(np.float64))
        end = max(end, b)
    if end != len(data):
        raise ValueError(f"{len(data) - end} bytes after the last tensor")
    return tensors, header.get("__metadata__", {})


def main(argv):
    ap = argparse.ArgumentParser()
    ap.add_argument("export_dir")
    ap.add_argument("dump")
    ap.add_argument("--rtol", type=float, default=1e-4)
    args = ap.parse_args(argv)
    try:
        with open(os.path.join(args.export_dir, "config.json")) as f:
            cfg = json.load(f)
        params, _ = read_safetensors(os.path.join(args.export_dir, "model.safetensors"))
        tok = os.path.join(args.export_dir, "tokenizer.model")
        if not os.path.isfile(tok) or os.path.getsize(tok) == 0:
            raise ValueError("tokenizer.model missing or empty")
        if cfg["intermediate_size"] != 4 * cfg["hidden_size"] or cfg["hidden_act"] != "relu2":
            raise ValueError("config.json describes an MLP the golden model does not have")
        model = GPT.from_params(
            {"n_layer": cfg["num_hidden_layers"], "n_head": cfg["num_attention_heads"],
             "n_embd": cfg["hidden_size"], "seq_len": cfg["max_position_embeddings"],
             "vocab_size": cfg["vocab_size"], "softcap": cfg["final_logit_softcapping"]},
            params, dtype=torch.float64)
        # weights_only=False: torch >= 2.6 refuses torch::pickle_save's type tags otherwise
        dump = torch.load(args.dump, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unreadable part is a failure of the export
        print(f"export: FAIL {type(e).__name__}: {e}")
        return 1
    with torch.no_grad():
        _, loss = model(dump["input"], dump["target"])
    want = float(dump["loss"])
    if abs(float(loss) - want) > args.rtol * abs(want):
        print(f"export: FAIL loss {float(loss):.6f} from the export, loco computed {want:.6f}")
        return 1
    print(f"export: OK loss={float(loss):.6f} (loco {want:.6f}), {len(params)} tensors")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
