#!/usr/bin/python3
"""Writes a tiny random deepseek2 GGUF model (NumPy only) for tests.

Standard llama.cpp key names / types (shared/formats/deepseek_r1_gguf_kv.tsv) and tensor names /
shapes (formats.md §4.3), so the file is what llama.cpp's converter would write for a model of this
size. Both attention layouts: 'mla' (attn_k_b + attn_v_b, *_mla keys, head_count_kv 1) and 'legacy'
(attn_kv_b, head_count_kv = head_count). The float weights depend only on the seed and the config,
not on the layout, so the two layouts of one seed hold the same model.

CLI
    make_tiny_np.py --out tiny.gguf [--layout mla|legacy] [--seed 0] [--split N]
                    [--set key=value ...]        # config overrides, e.g. --set n_group=0
                    [--float-type F32|F16|BF16]  # type of the float matrices (default F32)
                    [--expert-type T] [--dense-type T] [--embd-type T] [--output-type T]
    With --split N the files are <out without .gguf>-0000i-of-0000N.gguf; the first path is printed.
    Quant types (Q8_0, Q4_0, Q2_K, Q4_K, Q6_K, IQ2_XXS, IQ1_S, IQ1_M, TQ1_0, TQ2_0) are filled with
    random blocks whose fp16 scales are set so the decoded weights have the intended RMS (there is
    no quantizer here); rows must then be a multiple of the block size (use --set n_embd=256
    --set n_ff_exp=256 for the 256-element types). Tensors whose rows don't fit stay float.

Python API
    make_tiny(path, layout="mla", seed=0, split=0, float_type="F32", types=None, **config) -> [paths]
    DEFAULT_CONFIG: the tiny configuration (hidden 64, 3 layers = 1 dense + 2 MoE, 8 experts top-2
    in 2 groups keep 1, vocab 300, q_lora 32, kv_lora 32, rope 16, nope 16, v 16, 4 heads).
"""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gguf_np import (GGUFWriter, GGML_TYPES, GGML_TYPE_ID, GGUF_UINT32, GGUF_FLOAT32,  # noqa: E402
                     GGUF_BOOL, GGUF_STRING, GGUF_ARRAY, GGUF_INT32)
import dequant_np  # noqa: E402

DEFAULT_CONFIG = dict(
    n_vocab=300,
    n_embd=64,
    n_layer=3,
    n_dense=1,              # leading_dense_block_count
    n_head=4,
    qk_nope=16,
    qk_rope=16,             # rope.dimension_count
    v_head=16,
    q_lora_rank=32,         # 0 => attn_q.weight (no q low-rank path)
    kv_lora_rank=32,
    n_ff=128,               # dense FFN
    n_ff_exp=32,
    n_expert=8,
    n_expert_used=2,
    n_expert_shared=1,
    n_group=2,              # 0 => no expert_group_* keys (plain top-k)
    n_group_used=1,
    gating_func=2,          # 1 softmax, 2 sigmoid
    weights_scale=2.5,
    weights_norm=True,
    exp_probs_b=True,       # write blk.N.exp_probs_b.bias
    context_length=256,
    rope_freq_base=10000.0,
    rope_scaling="yarn",    # "yarn" or "none"
    rope_factor=4.0,
    rope_orig_ctx=64,
    yarn_log_multiplier=0.1,
    rms_eps=1e-6,
)

# GPT-2 style byte-to-visible-character map (printable Latin-1 bytes map to themselves, the others
# to U+0100 + n in byte order)
def bytes_to_unicode():
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    out = {}
    n = 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + n)
            n += 1
    return out


_MERGE_CANDIDATES = [
    "Ġ t", "Ġ a", "h e", "i n", "r e", "o n", "Ġt h", "e r", "Ġ s", "a t", "e n", "Ġ w", "o r",
    "i s", "e s", "Ġ o", "a n", "i t", "Ġ b", "Ġ c", "Ġth e", "Ġ f", "Ġ m", "Ġ d", "o u", "Ġ p",
    "l l", "e d", "in g", "Ġ h", "a r", "Ġ i", "l e", "s t", "Ġo f", "Ġa n", "Ġan d", "Ġ in",
    "Ġt o", "Ġ l", "Ġ n", "Ġ e", "Ġ g", "o m", "a l", "i c", "Ġ y", "Ġ re", "Ġ u", "a s",
]

SPECIAL_TOKENS = [("<｜begin▁of▁sentence｜>", 3), ("<｜end▁of▁sentence｜>", 3), ("<｜▁pad▁｜>", 3)]
TAIL_TOKENS = [("<｜User｜>", 4), ("<｜Assistant｜>", 4), ("<think>", 4), ("</think>", 4)]


def make_vocab(n_vocab):
    """tokens, token_type, merges for a tiny byte-level BPE vocabulary of exactly n_vocab entries:
    3 control tokens, 256 byte tokens, merges, 4 user-defined chat tokens at the end, [PAD<id>]
    fillers (type 5) in between."""
    base = len(SPECIAL_TOKENS) + 256 + len(TAIL_TOKENS)
    if n_vocab < base:
        raise ValueError("n_vocab must be >= %d" % base)
    b2u = bytes_to_unicode()
    tokens = [t for t, _ in SPECIAL_TOKENS] + [b2u[b] for b in range(256)]
    types = [ty for _, ty in SPECIAL_TOKENS] + [1] * 256
    have = set(tokens)
    merges = []
    room = n_vocab - base
    for m in _MERGE_CANDIDATES:
        if len(merges) >= room:
            break
        left, right = m.split(" ")
        if left in have and right in have and left + right not in have:
            merges.append(m)
            tokens.append(left + right)
            types.append(1)
            have.add(left + right)
    while len(tokens) < n_vocab - len(TAIL_TOKENS):
        tokens.append("[PAD%d]" % len(tokens))
        types.append(5)
    tokens += [t for t, _ in TAIL_TOKENS]
    types += [ty for _, ty in TAIL_TOKENS]
    return tokens, types, merges


def make_weights(cfg, seed):
    """Float32 weights in torch orientation ([out, in]; experts [n_expert, out, in]), keyed by GGUF
    tensor name; attention stored as the combined kv_b (split per layout by the writer)."""
    rng = np.random.default_rng(seed)
    c = cfg
    E, H = c["n_embd"], c["n_head"]
    qk = c["qk_nope"] + c["qk_rope"]

    def mat(out, inp, gain=1.0):
        return (rng.standard_normal((out, inp)) * (gain / np.sqrt(inp))).astype(np.float32)

    def norm(n):
        return (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)

    w = {}
    w["token_embd.weight"] = rng.standard_normal((c["n_vocab"], E)).astype(np.float32)
    for il in range(c["n_layer"]):
        b = "blk.%d." % il
        w[b + "attn_norm.weight"] = norm(E)
        if c["q_lora_rank"]:
            w[b + "attn_q_a.weight"] = mat(c["q_lora_rank"], E)
            w[b + "attn_q_a_norm.weight"] = norm(c["q_lora_rank"])
            w[b + "attn_q_b.weight"] = mat(H * qk, c["q_lora_rank"], 2.0)
        else:
            w[b + "attn_q.weight"] = mat(H * qk, E, 2.0)
        w[b + "attn_kv_a_mqa.weight"] = mat(c["kv_lora_rank"] + c["qk_rope"], E)
        w[b + "attn_kv_a_norm.weight"] = norm(c["kv_lora_rank"])
        w[b + "attn_kv_b.weight"] = mat(H * (c["qk_nope"] + c["v_head"]), c["kv_lora_rank"], 2.0)
        w[b + "attn_output.weight"] = mat(E, H * c["v_head"], 0.5)
        w[b + "ffn_norm.weight"] = norm(E)
        if il < c["n_dense"]:
            w[b + "ffn_gate.weight"] = mat(c["n_ff"], E)
            w[b + "ffn_up.weight"] = mat(c["n_ff"], E)
            w[b + "ffn_down.weight"] = mat(E, c["n_ff"], 0.5)
        else:
            X, F = c["n_expert"], c["n_ff_exp"]
            w[b + "ffn_gate_inp.weight"] = mat(X, E, 2.0)
            if c["exp_probs_b"]:
                w[b + "exp_probs_b.bias"] = (0.1 * rng.standard_normal(X)).astype(np.float32)
            w[b + "ffn_gate_exps.weight"] = np.stack([mat(F, E) for _ in range(X)])
            w[b + "ffn_up_exps.weight"] = np.stack([mat(F, E) for _ in range(X)])
            w[b + "ffn_down_exps.weight"] = np.stack([mat(E, F, 0.5) for _ in range(X)])
            if c["n_expert_shared"]:
                S = F * c["n_expert_shared"]
                w[b + "ffn_gate_shexp.weight"] = mat(S, E)
                w[b + "ffn_up_shexp.weight"] = mat(S, E)
                w[b + "ffn_down_shexp.weight"] = mat(E, S, 0.5)
    w["output_norm.weight"] = norm(E)
    w["output.weight"] = mat(c["n_vocab"], E)
    return w


def split_kv_b(kv_b, cfg):
    """torch kv_b [H*(nope+v), kv_lora] -> (k_b torch [H, kv_lora, nope], v_b torch [H, v, kv_lora])
    as llama.cpp's converter does (formats.md §4.3)."""
    H, n, v, r = cfg["n_head"], cfg["qk_nope"], cfg["v_head"], cfg["kv_lora_rank"]
    t = kv_b.reshape(H, n + v, r)
    k_b = np.ascontiguousarray(np.transpose(t[:, :n, :], (0, 2, 1)))
    v_b = np.ascontiguousarray(t[:, n:, :])
    return k_b, v_b


# fp16 scale fields per block for random-block generation: list of byte offsets (IQ1_M special)
_SCALE_FIELDS = {
    "Q8_0": [0], "Q4_0": [0], "Q2_K": [80, 82], "Q4_K": [0, 2], "Q6_K": [208],
    "IQ2_XXS": [0], "IQ1_S": [0], "TQ1_0": [52], "TQ2_0": [64],
}


def _set_fp16_fields(blocks, name, h16):
    """Write the fp16 bit pattern h16 (uint16) into every block's scale field(s)."""
    lo, hi = np.uint8(h16 & 0xFF), np.uint8(h16 >> 8)
    if name == "IQ1_M":
        sc = np.ascontiguousarray(blocks[:, 48:56]).view("<u2").copy()      # (nb, 4)
        for n in range(4):
            nib = (int(h16) >> (4 * n)) & 0xF
            sc[:, n] = (sc[:, n] & 0x0FFF) | (nib << 12)
        blocks[:, 48:56] = sc.view(np.uint8)
        return
    for off in _SCALE_FIELDS[name]:
        blocks[:, off] = lo
        blocks[:, off + 1] = hi


def random_quant_bytes(shape, type_name, target_rms, rng):
    """Random blocks of type_name for a tensor of numpy shape (.., ne0) whose decoded values have
    roughly target_rms. Returns raw bytes."""
    tid = GGML_TYPE_ID[type_name]
    _, be, bb = GGML_TYPES[tid]
    n = int(np.prod(shape))
    nb = n // be
    blocks = rng.integers(0, 256, size=(nb, bb), dtype=np.uint8)
    if type_name == "TQ2_0":       # the quantizer only emits codes 0..2
        codes = rng.integers(0, 3, size=(nb, 4, 64), dtype=np.uint8)
        blocks[:, :64] = codes[:, 0] | (codes[:, 1] << 2) | (codes[:, 2] << 4) | (codes[:, 3] << 6)
    _set_fp16_fields(blocks, type_name, np.uint16(0x3C00))                  # d = dmin = 1
    rms = float(np.sqrt(np.mean(dequant_np.dequantize(blocks, tid).astype(np.float64) ** 2)))
    scale = np.float16(target_rms / max(rms, 1e-30))
    _set_fp16_fields(blocks, type_name, scale.view(np.uint16))
    return blocks.tobytes()


def _float_bytes(a, type_name):
    if type_name == "F32":
        return a.astype("<f4").tobytes()
    if type_name == "F16":
        return a.astype("<f2").tobytes()                 # round to nearest even, like ggml
    if type_name == "BF16":
        u = a.astype("<f4").view("<u4").astype(np.uint64)
        nan = (u & 0x7FFFFFFF) > 0x7F800000
        r = np.where(nan, (u >> 16) | 0x40, (u + 0x7FFF + ((u >> 16) & 1)) >> 16)
        return r.astype("<u2").tobytes()
    raise ValueError(type_name)


def tensor_class(name):
    if name == "token_embd.weight":
        return "embd"
    if name == "output.weight":
        return "output"
    if name.endswith("_exps.weight"):
        return "expert"
    if name.endswith("_norm.weight") or name.endswith(".bias") or name.endswith("ffn_gate_inp.weight"):
        return "f32"          # norms, router and selection bias always stay F32
    return "dense"


def make_tiny(path, layout="mla", seed=0, split=0, float_type="F32", types=None, **overrides):
    cfg = dict(DEFAULT_CONFIG)
    for k, v in overrides.items():
        if k not in cfg:
            raise KeyError("unknown config key %s" % k)
        cfg[k] = type(DEFAULT_CONFIG[k])(v) if not isinstance(DEFAULT_CONFIG[k], bool) else \
            (v if isinstance(v, bool) else str(v).lower() in ("1", "true", "yes"))
    if layout not in ("mla", "legacy"):
        raise ValueError("layout must be 'mla' or 'legacy'")
    types = dict(types or {})
    c = cfg
    H = c["n_head"]
    qk = c["qk_nope"] + c["qk_rope"]
    w = make_weights(cfg, seed)
    qrng = np.random.default_rng(seed + 1000003)

    ftype = {"F32": 0, "F16": 1, "BF16": 32}[float_type]
    gw = GGUFWriter(path)
    A = "deepseek2."
    gw.add("general.architecture", "deepseek2", GGUF_STRING)
    gw.add("general.type", "model", GGUF_STRING)
    gw.add("general.name", "tiny-deepseek2-%s-seed%d" % (layout, seed), GGUF_STRING)
    gw.add("general.file_type", ftype, GGUF_UINT32)
    gw.add("general.quantization_version", 2, GGUF_UINT32)
    gw.add(A + "block_count", c["n_layer"], GGUF_UINT32)
    gw.add(A + "context_length", c["context_length"], GGUF_UINT32)
    gw.add(A + "embedding_length", c["n_embd"], GGUF_UINT32)
    gw.add(A + "feed_forward_length", c["n_ff"], GGUF_UINT32)
    gw.add(A + "attention.head_count", H, GGUF_UINT32)
    gw.add(A + "attention.head_count_kv", 1 if layout == "mla" else H, GGUF_UINT32)
    gw.add(A + "rope.freq_base", c["rope_freq_base"], GGUF_FLOAT32)
    gw.add(A + "attention.layer_norm_rms_epsilon", c["rms_eps"], GGUF_FLOAT32)
    gw.add(A + "expert_used_count", c["n_expert_used"], GGUF_UINT32)
    if c["n_group"]:
        gw.add(A + "expert_group_count", c["n_group"], GGUF_UINT32)
        gw.add(A + "expert_group_used_count", c["n_group_used"], GGUF_UINT32)
    gw.add(A + "leading_dense_block_count", c["n_dense"], GGUF_UINT32)
    gw.add(A + "vocab_size", c["n_vocab"], GGUF_UINT32)
    if c["q_lora_rank"]:
        gw.add(A + "attention.q_lora_rank", c["q_lora_rank"], GGUF_UINT32)
    gw.add(A + "attention.kv_lora_rank", c["kv_lora_rank"], GGUF_UINT32)
    if layout == "mla":
        gw.add(A + "attention.key_length", c["kv_lora_rank"] + c["qk_rope"], GGUF_UINT32)
        gw.add(A + "attention.value_length", c["kv_lora_rank"], GGUF_UINT32)
        gw.add(A + "attention.key_length_mla", qk, GGUF_UINT32)
        gw.add(A + "attention.value_length_mla", c["v_head"], GGUF_UINT32)
    else:
        gw.add(A + "attention.key_length", qk, GGUF_UINT32)
        gw.add(A + "attention.value_length", c["v_head"], GGUF_UINT32)
    gw.add(A + "expert_feed_forward_length", c["n_ff_exp"], GGUF_UINT32)
    gw.add(A + "expert_count", c["n_expert"], GGUF_UINT32)
    gw.add(A + "expert_shared_count", c["n_expert_shared"], GGUF_UINT32)
    gw.add(A + "expert_weights_scale", c["weights_scale"], GGUF_FLOAT32)
    gw.add(A + "expert_weights_norm", c["weights_norm"], GGUF_BOOL)
    gw.add(A + "expert_gating_func", c["gating_func"], GGUF_UINT32)
    gw.add(A + "rope.dimension_count", c["qk_rope"], GGUF_UINT32)
    if c["rope_scaling"] == "yarn":
        gw.add(A + "rope.scaling.type", "yarn", GGUF_STRING)
        gw.add(A + "rope.scaling.factor", c["rope_factor"], GGUF_FLOAT32)
        gw.add(A + "rope.scaling.original_context_length", c["rope_orig_ctx"], GGUF_UINT32)
        gw.add(A + "rope.scaling.yarn_log_multiplier", c["yarn_log_multiplier"], GGUF_FLOAT32)
    tokens, ttypes, merges = make_vocab(c["n_vocab"])
    gw.add("tokenizer.ggml.model", "gpt2", GGUF_STRING)
    gw.add("tokenizer.ggml.pre", "deepseek-v3", GGUF_STRING)
    gw.add("tokenizer.ggml.tokens", tokens, GGUF_ARRAY, GGUF_STRING)
    gw.add("tokenizer.ggml.token_type", ttypes, GGUF_ARRAY, GGUF_INT32)
    gw.add("tokenizer.ggml.merges", merges, GGUF_ARRAY, GGUF_STRING)
    gw.add("tokenizer.ggml.bos_token_id", 0, GGUF_UINT32)
    gw.add("tokenizer.ggml.eos_token_id", 1, GGUF_UINT32)
    gw.add("tokenizer.ggml.padding_token_id", 2, GGUF_UINT32)
    gw.add("tokenizer.ggml.add_bos_token", True, GGUF_BOOL)
    gw.add("tokenizer.ggml.add_eos_token", False, GGUF_BOOL)

    def emit(name, arr):
        cls = tensor_class(name)
        tname = "F32" if cls == "f32" else types.get(cls, float_type)
        ne = list(reversed(arr.shape))
        tid = GGML_TYPE_ID[tname]
        be = GGML_TYPES[tid][1]
        if tname not in ("F32", "F16", "BF16") and ne[0] % be:
            tname = float_type                  # rows don't fit the block: stay float
            tid = GGML_TYPE_ID[tname]
        if tname in ("F32", "F16", "BF16"):
            raw = _float_bytes(arr, tname)
        else:
            rms = float(np.sqrt(np.mean(arr.astype(np.float64) ** 2)))
            raw = random_quant_bytes(arr.shape, tname, rms, qrng)
        gw.add_tensor(name, raw, tid, ne)

    order = ["token_embd.weight"]
    for il in range(c["n_layer"]):
        b = "blk.%d." % il
        order += [k for k in w if k.startswith(b)]
    order += ["output_norm.weight", "output.weight"]
    for name in order:
        arr = w[name]
        if name.endswith("attn_kv_b.weight") and layout == "mla":
            k_b, v_b = split_kv_b(arr, cfg)
            b = name[:-len("attn_kv_b.weight")]
            emit(b + "attn_k_b.weight", k_b)
            emit(b + "attn_v_b.weight", v_b)
        else:
            emit(name, arr)

    if split and split > 1:
        prefix = path[:-5] if path.endswith(".gguf") else path
        return gw.write_split(prefix, split)
    gw.write(path)
    return [path]


def main(argv=None):
    ap = argparse.ArgumentParser(description="write a tiny random deepseek2 GGUF model")
    ap.add_argument("--out", required=True)
    ap.add_argument("--layout", choices=["mla", "legacy"], default="mla")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--split", type=int, default=0, help="write N gguf-split shards")
    ap.add_argument("--float-type", choices=["F32", "F16", "BF16"], default="F32")
    qt = sorted(list(_SCALE_FIELDS) + ["IQ1_M", "F32", "F16", "BF16"])
    ap.add_argument("--expert-type", choices=qt, help="routed experts ffn_*_exps")
    ap.add_argument("--dense-type", choices=qt, help="attention, dense FFN and shared-expert matrices")
    ap.add_argument("--embd-type", choices=qt, help="token_embd")
    ap.add_argument("--output-type", choices=qt, help="output (lm_head)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a DEFAULT_CONFIG entry: " + ", ".join(DEFAULT_CONFIG))
    args = ap.parse_args(argv)
    over = {}
    for s in args.set:
        k, _, v = s.partition("=")
        over[k.strip()] = v.strip()
    types = {}
    for cls, v in (("expert", args.expert_type), ("dense", args.dense_type), ("embd", args.embd_type),
                   ("output", args.output_type)):
        if v:
            types[cls] = v
    paths = make_tiny(args.out, layout=args.layout, seed=args.seed, split=args.split,
                      float_type=args.float_type, types=types, **over)
    print(paths[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
