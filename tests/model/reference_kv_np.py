#!/usr/bin/python3
"""The NumPy reference forward pass (tests/reference/deepseek2_np.py) with a stored KV cache.

The engine keeps one latent row per token and layer, [normalized latent (kv_lora) | roped k_pe
(n_rot)], zero-padded to whole 32-element blocks and stored as F32, F16, Q8_0 or Q4_0; attention
then reads the decoded rows. This wrapper makes the reference see the same values: every row
appended to its absorbed-form cache goes through that storage round trip first, using the
quantizers of formats.md §2.1-2.3 written here in NumPy (float32 arithmetic as in C).

CLI: reference_kv_np.py --model M --tokens-file T --out O --kv-type f32|f16|q8_0|q4_0
     (same token-file and output formats as deepseek2_np.py).
"""

import argparse
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "reference"))
import deepseek2_np  # noqa: E402

BLOCK = 32


def fp16_round(x):
    return x.astype(np.float16).astype(np.float32)


def q8_0_roundtrip(blocks):
    """blocks float32 [n, 32] -> decoded Q8_0 values."""
    amax = np.max(np.abs(blocks), axis=1)
    d = (amax / np.float32(127)).astype(np.float32)
    with np.errstate(divide="ignore"):
        inv = np.where(d != 0, np.float32(1) / d, np.float32(0)).astype(np.float32)
    v = (blocks * inv[:, None]).astype(np.float32)
    q = np.where(v >= 0, np.floor(v + np.float32(0.5)), -np.floor(-v + np.float32(0.5)))  # roundf
    return (q.astype(np.float32) * fp16_round(d)[:, None]).astype(np.float32)


def q4_0_roundtrip(blocks):
    """blocks float32 [n, 32] -> decoded Q4_0 values (quantizer without importance matrix)."""
    idx = np.argmax(np.abs(blocks), axis=1)              # first element of largest magnitude
    mx = blocks[np.arange(blocks.shape[0]), idx]
    d = (mx / np.float32(-8)).astype(np.float32)
    with np.errstate(divide="ignore"):
        inv = np.where(d != 0, np.float32(1) / d, np.float32(0)).astype(np.float32)
    v = (blocks * inv[:, None] + np.float32(8.5)).astype(np.float32)
    q = np.minimum(np.float32(15), np.trunc(v))
    return ((q - np.float32(8)) * fp16_round(d)[:, None]).astype(np.float32)


def storage_roundtrip(rows, kv_type):
    """rows float [T, L] -> the values a cache of kv_type gives back (float64)."""
    rows = rows.astype(np.float32)
    if kv_type == "f32":
        return rows.astype(np.float64)
    if kv_type == "f16":
        return fp16_round(rows).astype(np.float64)
    T, L = rows.shape
    padded = (L + BLOCK - 1) // BLOCK * BLOCK
    buf = np.zeros((T, padded), dtype=np.float32)
    buf[:, :L] = rows
    blocks = buf.reshape(-1, BLOCK)
    dec = q8_0_roundtrip(blocks) if kv_type == "q8_0" else q4_0_roundtrip(blocks)
    return dec.reshape(T, padded)[:, :L].astype(np.float64)


class StoredCache(deepseek2_np.KVCache):
    """Absorbed-form cache whose appended latent rows pass through the storage round trip."""

    def __init__(self, n_layer, kv_type):
        super().__init__(n_layer, "absorbed")
        self.kv_type = kv_type

    def append(self, il, c_kv, k_pe):
        r = c_kv.shape[1]
        rows = storage_roundtrip(np.concatenate([c_kv, k_pe], axis=1), self.kv_type)
        return super().append(il, rows[:, :r], rows[:, r:])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--tokens-file", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--kv-type", choices=["f32", "f16", "q8_0", "q4_0"], default="f32")
    args = ap.parse_args(argv)
    ids = deepseek2_np.read_tokens(args.tokens_file)
    m = deepseek2_np.DeepSeek2(args.model)
    logits = m.forward(ids, StoredCache(m.hp.n_layer, args.kv_type))
    logits.astype("<f4").tofile(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
