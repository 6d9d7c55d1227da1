#!/usr/bin/python3
"""Independent NumPy reference of the DeepSeek-V3/R1 ("deepseek2") forward pass.

Written from formats.md §4 (not from any C++ in this repository). All arithmetic is float64 on
weights decoded bit-exactly by dequant_np (so the only difference to an engine that dequantizes the
same bytes is floating-point rounding, plus any activation quantization the engine performs).

Python API
    forward(model_path, token_ids, attn="naive") -> np.ndarray float32 [n_tokens, n_vocab]
    m = DeepSeek2(model_path)                 # one GGUF file or any shard of a gguf-split set
    cache = m.new_cache(attn="naive"|"absorbed")
    logits = m.forward(token_ids, cache)      # float64 [n, n_vocab]; appends to the cache, so
                                              # calling it token by token continues the sequence
    m.route(h2, il) -> (experts [T,k], weights [T,k])   # the router on its own (for tests)

CLI
    deepseek2_np.py --model M.gguf --tokens-file T --out O.bin [--attn naive|absorbed]
        T: text file of token ids (decimal, separated by whitespace and/or commas; '#' starts a
           comment), or '-' for stdin.
        O: little-endian float32 [n_tokens][n_vocab], row-major, no header.
    deepseek2_np.py --model M.gguf --tokens 0,5,17 --top 5      # print the top-5 per position
        --routes R.txt: also write the router's choices, one line per (MoE layer, token):
           '<layer> <token index> <expert>:<weight> ...' in selection order (weights after norm/scale)
"""

import argparse
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gguf_np import GGUFModel, GGUFError  # noqa: E402
import dequant_np  # noqa: E402

MOE_WEIGHT_SUM_CLAMP = 6.103515625e-5

GATING_SOFTMAX = 1
GATING_SIGMOID = 2
GATING_SQRT_SOFTPLUS = 4


class Hparams:
    """deepseek2.* keys with the loader defaults of formats.md §4.1."""

    def __init__(self, gm):
        kv = gm.kv
        arch = kv.get("general.architecture")
        if arch != "deepseek2":
            raise GGUFError("general.architecture is %r, expected 'deepseek2'" % (arch,))
        p = arch + "."

        def req(k):
            if p + k not in kv:
                raise GGUFError("missing required key %s%s" % (p, k))
            return kv[p + k]

        def opt(k, d):
            return kv.get(p + k, d)

        self.n_embd = int(req("embedding_length"))
        self.n_layer = int(req("block_count"))
        self.n_head = int(req("attention.head_count"))
        self.n_head_kv = int(opt("attention.head_count_kv", self.n_head))
        self.eps = float(req("attention.layer_norm_rms_epsilon"))
        self.q_lora_rank = int(opt("attention.q_lora_rank", 0))
        self.kv_lora_rank = int(req("attention.kv_lora_rank"))
        self.n_rot = int(req("rope.dimension_count"))
        self.is_mla = (p + "attention.key_length_mla" in kv) and (p + "attention.value_length_mla" in kv)
        if self.is_mla:
            self.n_embd_head_k = int(kv[p + "attention.key_length_mla"])
            self.n_embd_head_v = int(kv[p + "attention.value_length_mla"])
        else:
            self.n_embd_head_k = int(opt("attention.key_length", self.n_embd // self.n_head))
            self.n_embd_head_v = int(opt("attention.value_length", self.n_embd // self.n_head))
        self.qk_nope = self.n_embd_head_k - self.n_rot
        if self.qk_nope <= 0 or self.n_rot % 2:
            raise GGUFError("bad head dims: key length %d, rope dims %d" % (self.n_embd_head_k, self.n_rot))

        self.n_ff = int(opt("feed_forward_length", 0))
        self.n_layer_dense_lead = int(opt("leading_dense_block_count", 0))
        self.n_expert = int(opt("expert_count", 0))
        self.n_expert_used = int(opt("expert_used_count", 0))
        self.n_expert_shared = int(opt("expert_shared_count", 0))
        self.n_ff_exp = int(opt("expert_feed_forward_length", 0))
        self.expert_weights_scale = float(opt("expert_weights_scale", 0.0)) or 1.0   # absent => no scaling
        self.expert_weights_norm = bool(opt("expert_weights_norm", False))
        self.expert_gating_func = int(opt("expert_gating_func", GATING_SOFTMAX))
        self.n_group = int(opt("expert_group_count", 0))
        self.n_group_used = int(opt("expert_group_used_count", 0))
        if self.n_layer_dense_lead < self.n_layer:
            if self.n_expert <= 0 or not 0 < self.n_expert_used <= self.n_expert:
                raise GGUFError("MoE layers present but expert_count=%d expert_used_count=%d"
                                % (self.n_expert, self.n_expert_used))
        if self.n_group > 1:
            if self.n_expert % self.n_group or self.n_expert // self.n_group < 2:
                raise GGUFError("expert_count %d does not split into %d groups of >= 2"
                                % (self.n_expert, self.n_group))
            if not 0 < self.n_group_used <= self.n_group:
                raise GGUFError("expert_group_used_count %d invalid for %d groups"
                                % (self.n_group_used, self.n_group))

        self.freq_base = float(opt("rope.freq_base", 10000.0))
        self.rope_scaling = opt("rope.scaling.type", "none")
        factor = float(opt("rope.scaling.factor", 0.0))
        self.freq_scale = 1.0 / factor if factor > 0 else 1.0
        self.n_ctx_orig = int(opt("rope.scaling.original_context_length", opt("context_length", 0)))
        self.yarn_log_mul = float(opt("rope.scaling.yarn_log_multiplier", 0.0))
        if self.rope_scaling not in ("none", "yarn"):
            raise NotImplementedError("rope.scaling.type %r is not implemented by the reference"
                                      % self.rope_scaling)
        if self.rope_scaling == "none":
            self.freq_scale = 1.0
        # formats.md §4.5: built-in beta_fast/slow (the file's keys are ignored for deepseek2)
        self.beta_fast = 32.0
        self.beta_slow = 1.0
        # attention scale: mscale = 1 + L*ln(1/freq_scale) where L is the stored yarn_log_multiplier
        # (llama.cpp divides the stored 0.1 by 0.1 and multiplies by 0.1 again: same value).
        self.mscale = 1.0 + self.yarn_log_mul * math.log(1.0 / self.freq_scale)
        self.kq_scale = self.mscale * self.mscale / math.sqrt(self.n_embd_head_k)

    def rope_corr_dims(self):
        def corr(n_rot_b):
            return self.n_rot * math.log(self.n_ctx_orig / (n_rot_b * 2.0 * math.pi)) / (2.0 * math.log(self.freq_base))
        low = max(0.0, math.floor(corr(self.beta_fast)))
        high = min(self.n_rot - 1.0, math.ceil(corr(self.beta_slow)))
        return low, high


def rms_norm(x, g, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * g


def silu(z):
    return z / (1.0 + np.exp(-z))


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def softmax(z, axis=-1):
    m = np.max(z, axis=axis, keepdims=True)
    e = np.exp(z - m)
    return e / np.sum(e, axis=axis, keepdims=True)


def topk_desc(scores, k):
    """Indices of the k largest values along the last axis, largest first; ties -> lower index."""
    order = np.argsort(-scores, axis=-1, kind="stable")
    return order[..., :k]


def group_limited_mask(s, n_group, n_group_used):
    """s: [T, n_expert] selection scores -> boolean mask of the experts allowed (in kept groups).
    Group score = sum of the 2 largest s in the group; the n_group_used best groups are kept
    (ties -> lower group index)."""
    T, E = s.shape
    g = s.reshape(T, n_group, E // n_group)
    top2 = -np.sort(-g, axis=-1)[..., :2].sum(axis=-1)            # [T, n_group]
    keep = topk_desc(top2, n_group_used)                          # [T, n_group_used]
    gmask = np.zeros((T, n_group), dtype=bool)
    np.put_along_axis(gmask, keep, True, axis=-1)
    return np.repeat(gmask, E // n_group, axis=-1)


def route(router_logits, bias, hp, group_routing=None):
    """The MoE router of formats.md §4.4.
    router_logits [T, n_expert]; bias [n_expert] or None.
    group_routing: None = as the file says (group-limited iff expert_group_count > 1),
    True/False to force. Returns (experts [T, k] in selection order, weights [T, k])."""
    z = router_logits
    gf = hp.expert_gating_func
    if gf == GATING_SIGMOID:
        p = sigmoid(z)
    elif gf == GATING_SOFTMAX:
        p = softmax(z)
    elif gf == GATING_SQRT_SOFTPLUS:
        p = np.sqrt(np.logaddexp(0.0, z))
    else:
        raise NotImplementedError("expert_gating_func %d" % gf)
    s = p + bias if bias is not None else p.copy()
    use_groups = (hp.n_group > 1) if group_routing is None else group_routing
    if use_groups:
        mask = group_limited_mask(s, hp.n_group, hp.n_group_used)
        s = np.where(mask, s, -np.inf)
    sel = topk_desc(s, hp.n_expert_used)
    w = np.take_along_axis(p, sel, axis=-1)
    if hp.expert_weights_norm:
        w = w / np.maximum(w.sum(axis=-1, keepdims=True), MOE_WEIGHT_SUM_CLAMP)
    w = w * hp.expert_weights_scale
    return sel, w


class KVCache:
    """Per-layer cache. attn='naive': per token the full per-head K [H, qk] and V [H, v];
    attn='absorbed': per token only the normalized latent [kv_lora] and the roped k_pe [n_rot]."""

    def __init__(self, n_layer, attn):
        if attn not in ("naive", "absorbed"):
            raise ValueError("attn must be 'naive' or 'absorbed'")
        self.attn = attn
        self.n_past = 0
        self.layers = [None] * n_layer

    def append(self, il, a, b):
        if self.layers[il] is None:
            self.layers[il] = (a, b)
        else:
            pa, pb = self.layers[il]
            self.layers[il] = (np.concatenate([pa, a], axis=0), np.concatenate([pb, b], axis=0))
        return self.layers[il]


class DeepSeek2:
    def __init__(self, model, group_routing=None):
        self.gm = model if isinstance(model, GGUFModel) else GGUFModel(model)
        self.hp = Hparams(self.gm)
        self.group_routing = group_routing
        self._w = {}
        self._exp = {}
        self._check_tensors()
        lo, hi = self.hp.rope_corr_dims() if self.hp.rope_scaling == "yarn" else (0.0, 0.0)
        self.yarn_low, self.yarn_high = lo, hi
        self.route_log = None      # set to a list to record (layer, experts, weights) per call

    # -- weights ------------------------------------------------------------------------------
    def _ti(self, name):
        return self.gm.tensor(name)

    def _expect(self, name, ne):
        ti = self._ti(name)
        got = list(ti.ne)
        while len(got) > len(ne) and got[-1] == 1:
            got.pop()
        if got != list(ne):
            raise GGUFError("tensor %s has ne=%s, expected %s" % (name, list(ti.ne), list(ne)))

    def _check_tensors(self):
        hp, gm = self.hp, self.gm
        E, H = hp.n_embd, hp.n_head
        self._expect("token_embd.weight", [E, self._ti("token_embd.weight").ne[1]])
        self.n_vocab = self._ti("token_embd.weight").ne[1]
        self._expect("output_norm.weight", [E])
        self.out_name = "output.weight" if gm.has("output.weight") else "token_embd.weight"
        self._expect(self.out_name, [E, self.n_vocab])
        self.layer_kind = []
        for il in range(hp.n_layer):
            b = "blk.%d." % il
            self._expect(b + "attn_norm.weight", [E])
            if gm.has(b + "attn_q_a.weight"):
                r = self._ti(b + "attn_q_a.weight").ne[1]
                if hp.q_lora_rank and r != hp.q_lora_rank:
                    raise GGUFError("%sattn_q_a.weight rank %d != q_lora_rank %d" % (b, r, hp.q_lora_rank))
                self._expect(b + "attn_q_a.weight", [E, r])
                self._expect(b + "attn_q_a_norm.weight", [r])
                self._expect(b + "attn_q_b.weight", [r, H * hp.n_embd_head_k])
            else:
                self._expect(b + "attn_q.weight", [E, H * hp.n_embd_head_k])
            self._expect(b + "attn_kv_a_mqa.weight", [E, hp.kv_lora_rank + hp.n_rot])
            self._expect(b + "attn_kv_a_norm.weight", [hp.kv_lora_rank])
            has_kvb = gm.has(b + "attn_kv_b.weight")
            has_split = gm.has(b + "attn_k_b.weight") and gm.has(b + "attn_v_b.weight")
            if has_split:
                self._expect(b + "attn_k_b.weight", [hp.qk_nope, hp.kv_lora_rank, H])
                self._expect(b + "attn_v_b.weight", [hp.kv_lora_rank, hp.n_embd_head_v, H])
            elif has_kvb:
                if hp.is_mla:
                    raise GGUFError("%s: file has *_mla keys but only attn_kv_b (expected attn_k_b/attn_v_b)" % b)
                self._expect(b + "attn_kv_b.weight", [hp.kv_lora_rank, H * (hp.qk_nope + hp.n_embd_head_v)])
            else:
                raise GGUFError("layer %d has neither attn_kv_b nor attn_k_b/attn_v_b" % il)
            self._expect(b + "attn_output.weight", [H * hp.n_embd_head_v, E])
            self._expect(b + "ffn_norm.weight", [E])
            if il < hp.n_layer_dense_lead:
                ff = self._ti(b + "ffn_gate.weight").ne[1]
                self._expect(b + "ffn_gate.weight", [E, ff])
                self._expect(b + "ffn_up.weight", [E, ff])
                self._expect(b + "ffn_down.weight", [ff, E])
                self.layer_kind.append("dense")
            else:
                X, F = hp.n_expert, hp.n_ff_exp
                self._expect(b + "ffn_gate_inp.weight", [E, X])
                if gm.has(b + "exp_probs_b.bias"):
                    self._expect(b + "exp_probs_b.bias", [X])
                self._expect(b + "ffn_gate_exps.weight", [E, F, X])
                self._expect(b + "ffn_up_exps.weight", [E, F, X])
                self._expect(b + "ffn_down_exps.weight", [F, E, X])
                if gm.has(b + "ffn_gate_shexp.weight"):
                    sf = self._ti(b + "ffn_gate_shexp.weight").ne[1]
                    self._expect(b + "ffn_gate_shexp.weight", [E, sf])
                    self._expect(b + "ffn_up_shexp.weight", [E, sf])
                    self._expect(b + "ffn_down_shexp.weight", [sf, E])
                elif hp.n_expert_shared > 0:
                    raise GGUFError("expert_shared_count=%d but %sffn_gate_shexp.weight is missing"
                                    % (hp.n_expert_shared, b))
                self.layer_kind.append("moe")

    def W(self, name):
        """Whole tensor as float64, numpy shape = reversed ne (a [in, out] matrix -> (out, in))."""
        w = self._w.get(name)
        if w is None:
            w = dequant_np.dequantize_tensor(self._ti(name)).astype(np.float64)
            self._w[name] = w
        return w

    def expert(self, name, e):
        key = (name, e)
        w = self._exp.get(key)
        if w is None:
            w = dequant_np.dequantize_slice(self._ti(name), int(e)).astype(np.float64)
            self._exp[key] = w
        return w

    def kv_b(self, il):
        """(K [H, qk_nope, kv_lora], V [H, v, kv_lora]): k_nope[h] = K[h] @ c, v[h] = V[h] @ c."""
        hp = self.hp
        b = "blk.%d." % il
        if self.gm.has(b + "attn_k_b.weight"):
            kb = self.W(b + "attn_k_b.weight")         # (H, kv_lora, qk_nope): head h = 512 rows of 128
            vb = self.W(b + "attn_v_b.weight")         # (H, v, kv_lora):       head h = 128 rows of 512
            return np.transpose(kb, (0, 2, 1)), vb
        kvb = self.W(b + "attn_kv_b.weight").reshape(hp.n_head, hp.qk_nope + hp.n_embd_head_v, hp.kv_lora_rank)
        return kvb[:, :hp.qk_nope, :], kvb[:, hp.qk_nope:, :]

    # -- pieces -------------------------------------------------------------------------------
    def rope(self, v, pos):
        """YaRN/NORM rope on the last axis of v (pairs (2i, 2i+1)); v [T, ..., n_rot], pos [T]."""
        hp = self.hp
        half = hp.n_rot // 2
        i = np.arange(half, dtype=np.float64)
        theta_extrap = pos.astype(np.float64)[:, None] * hp.freq_base ** (-2.0 * i / hp.n_rot)[None, :]
        if hp.rope_scaling == "yarn":
            theta_interp = hp.freq_scale * theta_extrap
            y = (i - self.yarn_low) / max(0.001, self.yarn_high - self.yarn_low)
            r = 1.0 - np.clip(y, 0.0, 1.0)                 # ext_factor = 1
            theta = theta_interp * (1.0 - r) + theta_extrap * r
            mag = 1.0    # attn_factor 1/(1+0.1 ln(1/fs)) times the kernel's (1+0.1 ln(1/fs))
        else:
            theta = theta_extrap
            mag = 1.0
        shape = (v.shape[0],) + (1,) * (v.ndim - 2) + (half,)
        c = (np.cos(theta) * mag).reshape(shape)
        s = (np.sin(theta) * mag).reshape(shape)
        x0 = v[..., 0::2]
        x1 = v[..., 1::2]
        out = np.empty_like(v)
        out[..., 0::2] = x0 * c - x1 * s
        out[..., 1::2] = x0 * s + x1 * c
        return out

    def embed(self, tokens):
        ti = self._ti("token_embd.weight")
        return dequant_np.dequantize_rows(ti, tokens).astype(np.float64)

    def attention(self, il, h, pos, cache):
        hp = self.hp
        b = "blk.%d." % il
        T, H = h.shape[0], hp.n_head
        if self.gm.has(b + "attn_q_a.weight"):
            cq = rms_norm(h @ self.W(b + "attn_q_a.weight").T, self.W(b + "attn_q_a_norm.weight"), hp.eps)
            q = cq @ self.W(b + "attn_q_b.weight").T
        else:
            q = h @ self.W(b + "attn_q.weight").T
        q = q.reshape(T, H, hp.n_embd_head_k)
        q_nope = q[..., :hp.qk_nope]
        q_pe = self.rope(q[..., hp.qk_nope:], pos)
        kvp = h @ self.W(b + "attn_kv_a_mqa.weight").T
        c_kv = rms_norm(kvp[:, :hp.kv_lora_rank], self.W(b + "attn_kv_a_norm.weight"), hp.eps)
        k_pe = self.rope(kvp[:, hp.kv_lora_rank:], pos)           # [T, n_rot], shared by all heads
        Kb, Vb = self.kv_b(il)

        n_past = cache.n_past
        n_kv = n_past + T
        qpos = n_past + np.arange(T)
        kpos = np.arange(n_kv)
        mask = np.where(kpos[None, :] <= qpos[:, None], 0.0, -np.inf)    # [T, n_kv]

        if cache.attn == "naive":
            k_nope = np.einsum("tc,hnc->thn", c_kv, Kb)
            v = np.einsum("tc,hvc->thv", c_kv, Vb)
            k = np.concatenate([k_nope, np.broadcast_to(k_pe[:, None, :], (T, H, hp.n_rot))], axis=-1)
            K, V = cache.append(il, k, v)                            # [n_kv, H, qk], [n_kv, H, v]
            Q = np.concatenate([q_nope, q_pe], axis=-1)
            sc = np.einsum("thd,shd->hts", Q, K) * hp.kq_scale + mask[None]
            a = softmax(sc, axis=-1)
            o = np.einsum("hts,shv->thv", a, V)
        else:
            C, KPE = cache.append(il, c_kv, k_pe)                    # [n_kv, kv_lora], [n_kv, n_rot]
            q_abs = np.einsum("thn,hnc->thc", q_nope, Kb)            # q_nope absorbed through k_b
            sc = (np.einsum("thc,sc->hts", q_abs, C) + np.einsum("thr,sr->hts", q_pe, KPE)) * hp.kq_scale
            a = softmax(sc + mask[None], axis=-1)
            o_lat = np.einsum("hts,sc->thc", a, C)                   # attention over the latent
            o = np.einsum("thc,hvc->thv", o_lat, Vb)                 # out through v_b
        return o.reshape(T, H * hp.n_embd_head_v) @ self.W(b + "attn_output.weight").T

    def ffn(self, gate, up, down, x):
        return (silu(x @ gate.T) * (x @ up.T)) @ down.T

    def route(self, h2, il):
        b = "blk.%d." % il
        logits = h2 @ self.W(b + "ffn_gate_inp.weight").T
        bias = self.W(b + "exp_probs_b.bias") if self.gm.has(b + "exp_probs_b.bias") else None
        return route(logits, bias, self.hp, self.group_routing)

    def moe(self, il, h2):
        b = "blk.%d." % il
        sel, w = self.route(h2, il)
        if self.route_log is not None:
            self.route_log.append((il, sel.copy(), w.copy()))
        T = h2.shape[0]
        out = np.zeros_like(h2)
        for t in range(T):
            acc = np.zeros(h2.shape[1])
            for slot in range(sel.shape[1]):                     # summed in selection order
                e = sel[t, slot]
                y = self.ffn(self.expert(b + "ffn_gate_exps.weight", e), self.expert(b + "ffn_up_exps.weight", e),
                             self.expert(b + "ffn_down_exps.weight", e), h2[t:t + 1])[0]
                acc = acc + w[t, slot] * y
            out[t] = acc
        if self.gm.has(b + "ffn_gate_shexp.weight"):
            out = out + self.ffn(self.W(b + "ffn_gate_shexp.weight"), self.W(b + "ffn_up_shexp.weight"),
                                 self.W(b + "ffn_down_shexp.weight"), h2)
        return out

    # -- forward ------------------------------------------------------------------------------
    def new_cache(self, attn="naive"):
        return KVCache(self.hp.n_layer, attn)

    def forward(self, tokens, cache=None, attn="naive"):
        """Logits (float64 [T, n_vocab]) for tokens at positions cache.n_past.. ; extends the cache."""
        hp = self.hp
        tokens = np.asarray(tokens, dtype=np.int64).reshape(-1)
        if tokens.size == 0:
            return np.zeros((0, self.n_vocab))
        if tokens.min() < 0 or tokens.max() >= self.n_vocab:
            raise ValueError("token id out of range [0, %d)" % self.n_vocab)
        if cache is None:
            cache = self.new_cache(attn)
        T = tokens.size
        pos = cache.n_past + np.arange(T)
        x = self.embed(tokens)
        for il in range(hp.n_layer):
            b = "blk.%d." % il
            h = rms_norm(x, self.W(b + "attn_norm.weight"), hp.eps)
            x = x + self.attention(il, h, pos, cache)
            h2 = rms_norm(x, self.W(b + "ffn_norm.weight"), hp.eps)
            if self.layer_kind[il] == "dense":
                f = self.ffn(self.W(b + "ffn_gate.weight"), self.W(b + "ffn_up.weight"),
                             self.W(b + "ffn_down.weight"), h2)
            else:
                f = self.moe(il, h2)
            x = x + f
        cache.n_past += T
        out = rms_norm(x, self.W("output_norm.weight"), hp.eps)
        return out @ self.W(self.out_name).T


def forward(model_path, token_ids, attn="naive"):
    """Logits float32 [n_tokens, n_vocab] for the whole sequence (positions 0..n-1)."""
    m = DeepSeek2(model_path)
    return m.forward(token_ids, m.new_cache(attn)).astype(np.float32)


def read_tokens(path):
    text = sys.stdin.read() if path == "-" else open(path).read()
    ids = []
    for line in text.splitlines():
        line = line.split("#", 1)[0]
        for tok in line.replace(",", " ").split():
            ids.append(int(tok))
    return ids


def main(argv=None):
    ap = argparse.ArgumentParser(description="NumPy reference forward pass of a deepseek2 GGUF model")
    ap.add_argument("--model", required=True, help="GGUF file (or the first shard of a split set)")
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--tokens-file", help="token ids, decimal, whitespace/comma separated ('-' = stdin)")
    g.add_argument("--tokens", help="token ids inline, comma separated")
    ap.add_argument("--out", help="write little-endian float32 [n_tokens][n_vocab] here")
    ap.add_argument("--attn", choices=["naive", "absorbed"], default="naive")
    ap.add_argument("--top", type=int, default=0, help="print the top-N tokens per position")
    ap.add_argument("--routes", help="write the router's choice as text lines "
                    "'layer token expert:weight ...' (experts in selection order)")
    args = ap.parse_args(argv)
    ids = read_tokens(args.tokens_file) if args.tokens_file else [int(t) for t in args.tokens.split(",") if t.strip()]
    m = DeepSeek2(args.model)
    if args.routes:
        m.route_log = []
    logits = m.forward(ids, m.new_cache(args.attn)).astype(np.float32)
    if args.routes:
        with open(args.routes, "w") as fh:
            for il, sel, w in m.route_log:
                for t in range(sel.shape[0]):
                    fh.write("%d %d %s\n" % (il, t, " ".join("%d:%.9g" % (e, x) for e, x in zip(sel[t], w[t]))))
    if args.out:
        logits.astype("<f4").tofile(args.out)
    if args.top:
        for t in range(logits.shape[0]):
            top = np.argsort(-logits[t], kind="stable")[:args.top]
            print("pos %d token %d: %s" % (t, ids[t], " ".join("%d:%.4f" % (i, logits[t, i]) for i in top)))
    if not args.out and not args.top:
        print("%d tokens x %d vocab; pass --out or --top" % logits.shape)
    return 0


if __name__ == "__main__":
    sys.exit(main())
