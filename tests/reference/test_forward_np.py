#!/usr/bin/python3
"""Internal-consistency tests of the NumPy deepseek2 reference (a few seconds).

    tests/reference/test_forward_np.py [-v]

 (a) naive MLA == absorbed MLA (latent cache, q_nope through k_b, output through v_b), to 1e-6
 (b) legacy attn_kv_b file == split attn_k_b/attn_v_b file built from the same weights
 (c) whole sequence at once == token by token (and in chunks) with a KV cache, both attention forms
 (d) group-limited routing == brute-force enumeration (and plain top-k without group keys)
 plus: gguf-split shards == single file; GGUF reader on golden_small.gguf; YaRN constants of the
 real DeepSeek-V3 config (low 10, high 23, kq_scale 0.13523378); rope depends on relative position
 only; a quantized model (IQ1_S/IQ2_XXS/Q4_K/Q6_K/Q8_0 random blocks) runs and (a)/(c) hold there;
 F16 weights equal the float32 weights rounded to half.
Exits non-zero on failure, printing 'N passed, M failed'.
"""

import itertools
import math
import os
import shutil
import sys
import tempfile
import traceback

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import deepseek2_np as ds  # noqa: E402
import dequant_np  # noqa: E402
import make_tiny_np as mk  # noqa: E402
from gguf_np import GGUFModel, GGUFReader  # noqa: E402

VERBOSE = "-v" in sys.argv
TOKENS = [0, 17, 262, 5, 99, 280, 33, 33, 1, 150, 7]


def log(*a):
    if VERBOSE:
        print("   ", *a)


def maxdiff(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


class Ctx:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="ds2np_")
        self.cache = {}

    def model(self, name, **kw):
        if name not in self.cache:
            path = os.path.join(self.dir, name + ".gguf")
            paths = mk.make_tiny(path, **kw)
            self.cache[name] = paths[0]
        return self.cache[name]


def run_full(path, tokens, attn):
    m = ds.DeepSeek2(path)
    return m.forward(tokens, m.new_cache(attn))


def run_chunks(path, tokens, attn, sizes):
    m = ds.DeepSeek2(path)
    cache = m.new_cache(attn)
    outs, i = [], 0
    for s in itertools.cycle(sizes):
        if i >= len(tokens):
            break
        outs.append(m.forward(tokens[i:i + s], cache))
        i += s
    return np.concatenate(outs, axis=0)


# ---------------------------------------------------------------------------------------------
def test_a_naive_vs_absorbed(ctx):
    for name, kw in [("mla", dict(layout="mla")), ("legacy", dict(layout="legacy")),
                     ("mla_noqlora", dict(layout="mla", q_lora_rank=0, seed=3)),
                     ("mla_noyarn", dict(layout="mla", rope_scaling="none", seed=4))]:
        p = ctx.model(name, **kw)
        a = run_full(p, TOKENS, "naive")
        b = run_full(p, TOKENS, "absorbed")
        d = maxdiff(a, b)
        log(name, "naive vs absorbed max diff %.3g (logit scale %.3g)" % (d, np.abs(a).max()))
        assert d < 1e-6, "%s: naive vs absorbed differ by %g" % (name, d)


def test_b_legacy_vs_split(ctx):
    for seed in (0, 7):
        pm = ctx.model("mla_s%d" % seed, layout="mla", seed=seed)
        pl = ctx.model("legacy_s%d" % seed, layout="legacy", seed=seed)
        gm, gl = GGUFModel(pm), GGUFModel(pl)
        assert gm.has("blk.0.attn_k_b.weight") and not gm.has("blk.0.attn_kv_b.weight")
        assert gl.has("blk.0.attn_kv_b.weight") and not gl.has("blk.0.attn_k_b.weight")
        assert gm.kv["deepseek2.attention.head_count_kv"] == 1
        assert gl.kv["deepseek2.attention.head_count_kv"] == gl.kv["deepseek2.attention.head_count"]
        for attn in ("naive", "absorbed"):
            a = run_full(pm, TOKENS, attn)
            b = run_full(pl, TOKENS, attn)
            d = maxdiff(a, b)
            log("seed", seed, attn, "legacy vs split max diff %.3g" % d)
            assert d < 1e-9, "seed %d %s: legacy vs split differ by %g" % (seed, attn, d)
        # the per-head matrices themselves agree, in the orientation of formats.md §4.3
        mm, ml = ds.DeepSeek2(pm), ds.DeepSeek2(pl)
        for il in range(mm.hp.n_layer):
            Km, Vm = mm.kv_b(il)
            Kl, Vl = ml.kv_b(il)
            assert np.array_equal(Km, Kl) and np.array_equal(Vm, Vl)
        # attn_k_b head h, row j (ne0 contiguous) == column j of that head's k_nope block of kv_b
        kb = gm.tensor("blk.1.attn_k_b.weight")
        kvb = gl.tensor("blk.1.attn_kv_b.weight")
        nope, r, H = kb.ne
        raw_k = np.frombuffer(kb.data, "<f4").reshape(H, r, nope)
        raw_kv = np.frombuffer(kvb.data, "<f4").reshape(H, -1, r)
        h, j = H - 1, r // 3
        assert np.array_equal(raw_k[h, j, :], raw_kv[h, :nope, j])
        vb = gm.tensor("blk.1.attn_v_b.weight")
        raw_v = np.frombuffer(vb.data, "<f4").reshape(H, -1, r)
        assert np.array_equal(raw_v[h], raw_kv[h, nope:, :])


def test_c_incremental(ctx):
    for name, kw in [("mla", dict(layout="mla")), ("legacy", dict(layout="legacy"))]:
        p = ctx.model(name, **kw)
        for attn in ("naive", "absorbed"):
            full = run_full(p, TOKENS, attn)
            for sizes in ([1], [3, 2, 4], [5]):
                inc = run_chunks(p, TOKENS, attn, sizes)
                d = maxdiff(full, inc)
                log(name, attn, sizes, "full vs incremental max diff %.3g" % d)
                assert d < 1e-9, "%s %s %s: full vs incremental differ by %g" % (name, attn, sizes, d)
        # prefix property: logits of a prefix don't depend on later tokens (causality)
        full = run_full(p, TOKENS, "naive")
        pre = run_full(p, TOKENS[:4], "naive")
        assert maxdiff(full[:4], pre) < 1e-12


def brute_force_route(s, n_group, n_group_used, k):
    """Selected expert set by enumeration: best group subset by total group score (score = best
    pair sum in the group), then the best k-subset of the allowed experts by total score."""
    E = s.size
    if n_group > 1:
        gs = E // n_group
        gscore = []
        for g in range(n_group):
            v = s[g * gs:(g + 1) * gs]
            gscore.append(max(v[i] + v[j] for i in range(gs) for j in range(i + 1, gs)))
        best, best_sum = None, -np.inf
        for comb in itertools.combinations(range(n_group), n_group_used):
            t = sum(gscore[g] for g in comb)
            if t > best_sum:
                best, best_sum = comb, t
        allowed = [e for g in best for e in range(g * gs, (g + 1) * gs)]
    else:
        allowed = list(range(E))
    combs = np.array(list(itertools.combinations(allowed, k)))
    tot = s[combs].sum(axis=1)
    return set(combs[int(np.argmax(tot))].tolist())


class _HP:
    pass


def test_d_group_routing(ctx):
    rng = np.random.default_rng(12345)
    configs = [(8, 2, 1, 2), (8, 4, 2, 2), (16, 4, 2, 4), (32, 8, 4, 6), (16, 0, 0, 3), (24, 3, 2, 5)]
    n_checked = 0
    for (E, G, GU, K) in configs:
        hp = _HP()
        hp.expert_gating_func = ds.GATING_SIGMOID
        hp.n_group, hp.n_group_used, hp.n_expert_used = G, GU, K
        hp.expert_weights_norm, hp.expert_weights_scale = True, 2.5
        T = 12
        logits = rng.standard_normal((T, E)) * 2
        bias = rng.standard_normal(E) * 0.3
        sel, w = ds.route(logits, bias, hp)
        p = 1 / (1 + np.exp(-logits))
        for t in range(T):
            want = brute_force_route(p[t] + bias, G, GU, K)
            got = set(sel[t].tolist())
            assert got == want, "E=%d G=%d GU=%d K=%d token %d: got %s want %s" % (E, G, GU, K, t, sorted(got), sorted(want))
            # weights: unbiased sigmoid, normalized, scaled; slots in descending biased score
            pw = p[t, sel[t]]
            assert np.allclose(w[t], pw / pw.sum() * 2.5)
            sb = (p[t] + bias)[sel[t]]
            assert np.all(np.diff(sb) <= 0)
            n_checked += 1
    log("routing: %d token selections match brute force" % n_checked)
    # group limiting really changes the result somewhere (the test is not vacuous)
    hp = _HP()
    hp.expert_gating_func, hp.n_group, hp.n_group_used, hp.n_expert_used = ds.GATING_SIGMOID, 4, 1, 4
    hp.expert_weights_norm, hp.expert_weights_scale = True, 1.0
    lg = rng.standard_normal((200, 16)) * 2
    s1, _ = ds.route(lg, None, hp, group_routing=True)
    s2, _ = ds.route(lg, None, hp, group_routing=False)
    assert np.any(np.sort(s1, axis=1) != np.sort(s2, axis=1))
    # the model's router follows the file: group keys present => grouped; n_group=0 => plain top-k
    p = ctx.model("mla", layout="mla")
    m = ds.DeepSeek2(p)
    m.route_log = []
    m.forward(TOKENS, m.new_cache())
    for il, sel, w in m.route_log:
        gs = m.hp.n_expert // m.hp.n_group
        for t in range(sel.shape[0]):
            groups = set((sel[t] // gs).tolist())
            assert len(groups) <= m.hp.n_group_used
    p0 = ctx.model("mla_nogroup", layout="mla", n_group=0, n_group_used=0)
    assert ds.DeepSeek2(p0).hp.n_group == 0


def test_split_shards(ctx):
    single = ctx.model("mla", layout="mla")
    path = os.path.join(ctx.dir, "shard.gguf")
    paths = mk.make_tiny(path, layout="mla", split=3)
    assert len(paths) == 3 and paths[0].endswith("-00001-of-00003.gguf")
    g = GGUFModel(paths[0])
    assert len(g.shards) == 3 and g.kv["split.tensors.count"] == len(g.tensors)
    r1 = GGUFReader(paths[1])
    assert set(r1.kv) == {"split.no", "split.count", "split.tensors.count"}
    a = run_full(single, TOKENS, "naive")
    b = run_full(paths[0], TOKENS, "naive")
    assert np.array_equal(a, b)
    # naming a later shard also works (the reader finds the set; metadata still from shard 0)
    g2 = GGUFModel(paths[1])
    assert g2.kv is not None and g2.shards[0].path == paths[0] and set(g2.tensors) == set(g.tensors)
    assert "deepseek2.block_count" in g2.kv


def test_gguf_golden(ctx):
    path = os.path.join(HERE, "..", "data", "gguf", "golden_small.gguf")
    r = GGUFReader(path)
    assert r.data_offset == 1184 and r.file_size == 2080
    assert r.kv["test.u8"] == 200 and r.kv["test.i8"] == -5 and r.kv["test.u16"] == 65000
    assert r.kv["test.i16"] == -30000 and r.kv["test.i32"] == -123456
    assert r.kv["test.u64"] == 81985529216486895 and r.kv["test.i64"] == -9000000000
    assert r.kv["test.f64"] == 3.141592653589793 and r.kv["deepseek2.expert_weights_norm"] is True
    assert r.kv["tokenizer.ggml.token_type"] == [3, 3, 1, -1, 0]
    assert r.kv["test.arr_bool"] == [True, False, True]
    assert r.kv["tokenizer.ggml.tokens"][2] == "Ġt" and r.kv["tokenizer.ggml.tokens"][3] == ""
    t = r.tensors
    assert t["blk.3.ffn_gate_exps.weight"].ne == [512, 2, 2] and t["blk.3.ffn_gate_exps.weight"].type == 19
    assert t["token_embd.weight"].ne == [256] and t["output.weight"].offset == 576
    for ti in t.values():
        x = dequant_np.dequantize_tensor(ti)
        assert x.shape == ti.shape
    # expert slice == slice of the whole tensor
    ti = t["blk.3.ffn_gate_exps.weight"]
    assert np.array_equal(dequant_np.dequantize_slice(ti, 1), dequant_np.dequantize_tensor(ti)[1])
    # writer round trip keeps every value type
    w = os.path.join(ctx.dir, "rt.gguf")
    from gguf_np import GGUFWriter
    gw = GGUFWriter(w)
    for k, v in r.kv.items():
        gw.add(k, v, *r.kv_type[k])
    for name in r.tensor_order:
        ti = r.tensors[name]
        gw.add_tensor(name, ti.data, ti.type, ti.ne)
    gw.write()
    assert open(w, "rb").read() == open(path, "rb").read(), "writer round trip is not byte-identical"


def test_yarn_constants(ctx):
    class G:
        kv = {"general.architecture": "deepseek2"}
    P = "deepseek2."
    G.kv.update({P + "embedding_length": 7168, P + "block_count": 61, P + "attention.head_count": 128,
                 P + "attention.layer_norm_rms_epsilon": 1e-6, P + "attention.kv_lora_rank": 512,
                 P + "rope.dimension_count": 64, P + "attention.key_length_mla": 192,
                 P + "attention.value_length_mla": 128, P + "rope.freq_base": 10000.0,
                 P + "rope.scaling.type": "yarn", P + "rope.scaling.factor": 40.0,
                 P + "rope.scaling.original_context_length": 4096,
                 P + "rope.scaling.yarn_log_multiplier": 0.1, P + "leading_dense_block_count": 3,
                 P + "expert_count": 256, P + "expert_used_count": 8,
                 P + "expert_group_count": 8, P + "expert_group_used_count": 4})
    hp = ds.Hparams(G)
    lo, hi = hp.rope_corr_dims()
    assert (lo, hi) == (10.0, 23.0), (lo, hi)
    assert abs(hp.mscale - 1.3688879) < 1e-6
    assert abs(hp.kq_scale - 0.13523378) < 1e-7, hp.kq_scale
    assert hp.qk_nope == 128


def test_rope_relative(ctx):
    p = ctx.model("mla", layout="mla")
    m = ds.DeepSeek2(p)
    rng = np.random.default_rng(5)
    q = rng.standard_normal((1, 16))
    k = rng.standard_normal((1, 16))
    base = float((m.rope(q, np.array([9])) * m.rope(k, np.array([4]))).sum())
    for shift in (1, 30, 200):
        v = float((m.rope(q, np.array([9 + shift])) * m.rope(k, np.array([4 + shift]))).sum())
        assert abs(v - base) < 1e-9
    # rotation keeps the norm (magnitude factor 1.0 under YaRN)
    assert abs(np.linalg.norm(m.rope(q, np.array([77]))) - np.linalg.norm(q)) < 1e-12
    # pair 0 rotates at the original frequency (theta = p), pairs >= high fully interpolated
    x = np.zeros((1, 16)); x[0, 0] = 1.0
    y = m.rope(x, np.array([3]))
    assert abs(y[0, 0] - math.cos(3.0)) < 1e-12 and abs(y[0, 1] - math.sin(3.0)) < 1e-12
    i = 7
    x = np.zeros((1, 16)); x[0, 2 * i] = 1.0
    th = 3.0 * 10000 ** (-2 * i / 16) / 4.0
    y = m.rope(x, np.array([3]))
    assert abs(y[0, 2 * i] - math.cos(th)) < 1e-12 and abs(y[0, 2 * i + 1] - math.sin(th)) < 1e-12


def test_quantized_model(ctx):
    kw = dict(layout="mla", n_embd=256, n_ff_exp=256, n_ff=256, q_lora_rank=256, kv_lora_rank=256,
              n_vocab=300, seed=11,
              types={"expert": "IQ1_S", "dense": "Q6_K", "embd": "Q4_K", "output": "Q8_0"})
    p = ctx.model("quant", **kw)
    g = GGUFModel(p)
    names = {ti.type_name for ti in g.tensors.values()}
    assert {"IQ1_S", "Q6_K", "Q4_K", "Q8_0", "F32"} <= names, names
    a = run_full(p, TOKENS[:6], "naive")
    b = run_chunks(p, TOKENS[:6], "absorbed", [1])
    assert np.all(np.isfinite(a))
    d = maxdiff(a, b)
    log("quantized model naive vs absorbed incremental %.3g, |logits| max %.3g" % (d, np.abs(a).max()))
    assert d < 1e-6
    for et in ("IQ2_XXS", "IQ1_M", "TQ1_0", "TQ2_0", "Q2_K", "Q4_0"):
        p = ctx.model("quant_" + et, layout="legacy", n_embd=256, n_ff_exp=256, n_ff=256, seed=12,
                      types={"expert": et})
        a = run_full(p, TOKENS[:3], "naive")
        assert np.all(np.isfinite(a)) and np.abs(a).max() < 1e3, et


def test_f16_weights(ctx):
    p32 = ctx.model("mla", layout="mla")
    p16 = ctx.model("mla_f16", layout="mla", float_type="F16")
    pbf = ctx.model("mla_bf16", layout="mla", float_type="BF16")
    g32, g16, gbf = GGUFModel(p32), GGUFModel(p16), GGUFModel(pbf)
    for name in ("blk.0.attn_q_a.weight", "blk.1.ffn_gate_exps.weight", "output.weight"):
        a = dequant_np.dequantize_tensor(g32.tensor(name))
        b = dequant_np.dequantize_tensor(g16.tensor(name))
        assert g16.tensor(name).type == 1
        assert np.array_equal(a.astype(np.float16).astype(np.float32), b)
        c = dequant_np.dequantize_tensor(gbf.tensor(name))
        assert gbf.tensor(name).type == 30 and np.max(np.abs(c - a) / (np.abs(a) + 1e-30)) <= 2 ** -8
    assert g16.tensor("blk.1.ffn_gate_inp.weight").type == 0 and g16.tensor("blk.0.attn_norm.weight").type == 0
    d = maxdiff(run_full(p32, TOKENS, "naive"), run_full(p16, TOKENS, "naive"))
    log("F32 vs F16 weights: logits differ by %.3g" % d)
    assert d < 0.05


def test_cli(ctx):
    import subprocess
    p = ctx.model("mla", layout="mla")
    tf = os.path.join(ctx.dir, "toks.txt")
    with open(tf, "w") as fh:
        fh.write("# a comment\n" + ", ".join(str(t) for t in TOKENS[:5]) + "\n")
    out = os.path.join(ctx.dir, "o.bin")
    r = subprocess.run([sys.executable, os.path.join(HERE, "deepseek2_np.py"), "--model", p,
                        "--tokens-file", tf, "--out", out], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    got = np.fromfile(out, dtype="<f4").reshape(5, -1)
    want = ds.forward(p, TOKENS[:5])
    assert got.shape == (5, 300) and np.array_equal(got, want)


TESTS = [test_a_naive_vs_absorbed, test_b_legacy_vs_split, test_c_incremental, test_d_group_routing,
         test_split_shards, test_gguf_golden, test_yarn_constants, test_rope_relative,
         test_quantized_model, test_f16_weights, test_cli]


def main():
    ctx = Ctx()
    passed = failed = 0
    try:
        for t in TESTS:
            try:
                t(ctx)
                passed += 1
                print("ok   %s" % t.__name__)
            except Exception as e:
                failed += 1
                print("FAIL %s: %s" % (t.__name__, e))
                if VERBOSE:
                    traceback.print_exc()
    finally:
        shutil.rmtree(ctx.dir, ignore_errors=True)
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
