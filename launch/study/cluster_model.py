#!/usr/bin/env python3
"""Cluster model: decode step time, throughput and per-user speed of N expert-parallel ranks.

Inputs
  profile   one rank's measured decode step time T1(b) at a few batches b (bench-decode on the
            CPU, bench-gpu-decode on a GPU), the model's shape, the bytes of one routed expert
            summed over the MoE layers and the rate at which a rank streams expert weights.
  exchange  either measured dispatch/combine latencies by tokens per rank (bench-a2a at N ranks)
            or a link (bandwidth, latency; NVLink inside a node, the network between nodes).

Model of one decode step on N ranks with B sequences in the batch (data-parallel attention:
each rank holds b = ceil(B/N) of them; expert parallelism: each rank holds E/N experts):

  T_N(B) = s * [ R(b) + g * d(B)/N * I + b * ISL/OSL * t_prefill ]
           + L_moe * (t_dispatch(b) + t_combine(b))

  d(B)  = E (1 - (1 - k/E)^B)       distinct experts a step selects (uniform routing)
  g     = expert bytes (all MoE layers) / expert streaming rate: the time to read one expert
  R(b)  = T1(b) - g d(b)            everything else one rank does for b sequences (attention,
                                    dense layers, shared expert, lm_head, per-token expert
                                    compute), interpolated linearly between measured batches
  I     = max/mean of distinct experts per rank (measured imbalance when given; otherwise the
          binomial estimate 1 + sqrt(2 ln N var)/mean for uniform routing)
  t_prefill = measured prefill time per prompt token (chunked prefill of the requests,
          amortized over their output tokens; 0 for decode-only predictions)
  s     = calibration rank's share of the machine / this rank's share (CPU ranks on one host
          share cores and memory bandwidth, also with other tenants' runnable threads: a rank of
          t threads gets t * min(1, cores / (external load + all ranks' threads)); a GPU rank
          owns its device -> s = 1)
  exchange from a link: per MoE layer 3 collectives (counts, rows, combine), each paying the
          link latency, plus bytes = b * r * hidden * row bytes for dispatch and again for
          combine, r = (N-1)(1 - C(E - E/N, k)/C(E, k)) distinct remote ranks per token; across
          nodes the off-node share of those bytes goes over the network and the rest over NVLink
          at the same time (the slower of the two counts)

Throughput = B / T_N, per-rank throughput = B / N / T_N, per-user speed = 1 / TPOT with
TPOT = T_N minus the request's own prefill share (T_N's prefill term times (B-1)/B).

  cluster_model.py --profile profiles/h200_v3_ud158.json --links profiles/links.json \
      --ranks 1,2,8,16,32 --batch-per-rank 1,4,16,64
"""
import argparse
import bisect
import json
import math
import os


def distinct_experts(E, k, B):
    return E * (1.0 - (1.0 - k / E) ** B) if B > 0 else 0.0


def remote_ranks_per_token(E, k, N):
    """Expected distinct other ranks a token's k experts live on (contiguous placement)."""
    if N <= 1:
        return 0.0
    per = E // N
    p_not = math.comb(E - per, k) / math.comb(E, k)  # a given rank holds none of the k
    return (N - 1) * (1.0 - p_not)


def imbalance_estimate(E, k, N, B):
    """max/mean over ranks of distinct selected experts, uniform routing (normal approx)."""
    if N <= 1 or B <= 0:
        return 1.0
    per = E / N
    p = 1.0 - (1.0 - k / E) ** B
    mean = per * p
    if mean <= 0:
        return 1.0
    sd = math.sqrt(per * p * (1.0 - p))
    return min(N, 1.0 + math.sqrt(2.0 * math.log(N)) * sd / mean)


def _interp(xs, ys, x):
    """Piecewise-linear in x through the points, extended linearly past both ends."""
    if len(xs) == 1:
        return ys[0] * x / xs[0]
    i = bisect.bisect_left(xs, x)
    i = min(max(i, 1), len(xs) - 1)
    x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
    return y0 + (y1 - y0) * (x - x0) / (x1 - x0)


class Profile:
    """One rank's compute, from measured step times (see the module docstring)."""

    def __init__(self, d):
        self.raw = d
        s = d["shape"]
        self.layers, self.moe_layers = s["layers"], s["moe_layers"]
        self.E, self.k, self.hidden = s["experts"], s["top_k"], s["hidden"]
        self.kv_bytes_per_token = s.get("kv_bytes_per_token", 0)
        pts = sorted((int(b), float(ms) / 1e3) for b, ms in d["step_ms_by_batch"].items())
        self.batches = [b for b, _ in pts]
        self.step_s = [t for _, t in pts]
        self.g = d["expert_bytes_all_moe_layers"] / (d["expert_stream_GBps"] * 1e9)
        self.rest_s = [t - self.g * distinct_experts(self.E, self.k, b)
                       for b, t in zip(self.batches, self.step_s)]
        self.calib_share = float(d.get("calib_cpu_share", 1))
        self.replicated_bytes = d.get("replicated_bytes")
        self.expert_bytes_total = d["expert_bytes_all_moe_layers"] * self.E
        self.device_memory = d.get("device_memory_bytes")
        self.prefill_s_per_token = d.get("prefill_ms_per_token", 0.0) / 1e3

    def rest(self, b):
        return max(0.0, _interp(self.batches, self.rest_s, b)) if b > 0 else 0.0

    def assumptions(self):
        return [
            f"compute input: {self.raw.get('source', 'measured step times')}",
            f"g = {self.g * 1e3:.3f} ms to read one routed expert over all {self.moe_layers} MoE "
            f"layers ({self.raw['expert_bytes_all_moe_layers'] / 1e6:.1f} MB at "
            f"{self.raw['expert_stream_GBps']:.4g} GB/s)",
            "R(b) interpolated linearly between the measured batches "
            + ", ".join(map(str, self.batches)) + "; extended linearly beyond them",
        ]


class MeasuredExchange:
    """Dispatch + combine latency per MoE layer from bench-a2a rows at one rank count."""

    def __init__(self, rows):
        rows = sorted(rows, key=lambda r: r["tokens_per_rank"])
        self.tokens = [r["tokens_per_rank"] for r in rows]
        self.us = [r["dispatch_us_p50"] + r["combine_us_p50"] for r in rows]
        self.name = "measured (bench-a2a)"

    def layer_s(self, b):
        if b <= 0:
            return self.us[0] * 1e-6
        if b <= self.tokens[0]:
            return self.us[0] * 1e-6
        return _interp(self.tokens, self.us, b) * 1e-6


class LinkExchange:
    """Dispatch + combine per MoE layer over stated links (one node or several)."""

    def __init__(self, profile, N, intra, inter=None, row_bytes=2, collectives=3):
        self.p, self.N, self.intra, self.inter = profile, N, intra, inter
        self.row_bytes, self.collectives = row_bytes, collectives
        g = intra.get("gpus_per_node", 8)
        self.nodes = max(1, math.ceil(N / g))
        self.per_node = min(N, g)
        self.name = f"{intra['name']}" + (f" + {inter['name']}" if self.nodes > 1 else "")

    def layer_s(self, b):
        N = self.N
        if N <= 1:
            return 0.0
        r = remote_ranks_per_token(self.p.E, self.p.k, N)
        one_way = b * r * self.p.hidden * self.row_bytes  # dispatch; combine the same again
        if self.nodes == 1:
            lat, bw_time = self.intra["latency_us"], one_way / (self.intra["GBps"] * 1e9)
        else:
            off = (N - self.per_node) / (N - 1)
            lat = self.inter["latency_us"]
            bw_time = max(one_way * (1 - off) / (self.intra["GBps"] * 1e9),
                          one_way * off / (self.inter["GBps"] * 1e9))
        return self.collectives * lat * 1e-6 + 2 * bw_time


def predict(profile, N, B, exchange, share=1.0, imbalance=None, prefill_per_output=0.0):
    """One configuration: N ranks, B sequences decoding together.

    share: this rank's share of the machine relative to the calibration rank (1 on a GPU).
    prefill_per_output: prompt tokens per generated token (ISL/OSL); each step then also
    carries b * ISL/OSL prompt tokens per rank (chunked prefill, amortized over the output),
    at the profile's measured prefill time per token.
    """
    b = math.ceil(B / N)
    d = distinct_experts(profile.E, profile.k, B)
    I = imbalance if imbalance is not None else imbalance_estimate(profile.E, profile.k, N, B)
    s = profile.calib_share / share
    t_rest = s * profile.rest(b)
    t_exp = s * profile.g * d / N * I
    t_x = profile.moe_layers * exchange.layer_s(b) if N > 1 else 0.0
    t_pf = s * b * prefill_per_output * profile.prefill_s_per_token
    T = t_rest + t_exp + t_x + t_pf
    # A request's own prefill comes before its first token, so its TPOT carries only the other
    # B - 1 requests' prefill share (lockstep: any rank's prefill stalls every rank).
    tpot = t_rest + t_exp + t_x + t_pf * (B - 1) / B
    mem = None
    if profile.replicated_bytes:
        mem = profile.replicated_bytes + profile.expert_bytes_total / N
    return {"ranks": N, "batch": B, "batch_per_rank": b, "step_s": T, "rest_s": t_rest,
            "experts_s": t_exp, "exchange_s": t_x, "prefill_s": t_pf, "imbalance": I,
            "tpot_s": tpot, "output_tok_s": B / T, "output_tok_s_per_rank": B / N / T,
            "per_user_tok_s": 1.0 / tpot,
            "weights_bytes_per_rank": mem, "exchange": exchange.name if N > 1 else "none"}


def link_configs(links):
    """(label, ranks, intra, inter) of the cluster shapes SCALING.md predicts."""
    nv = dict(links["nvlink_h200"], name="NVLink")
    out = [(f"{n} x H200, NVLink", n, nv, None) for n in (1, 2, 4, 8)]
    for key, label in (("ib_400g", "400 Gb/s"), ("eth_100g", "100 Gb/s")):
        inter = dict(links[key], name=label)
        for nodes in (2, 4):
            out.append((f"{nodes} nodes x 8 H200, {label}", nodes * 8, nv, inter))
    return out


def gpu_predictions(profile, links, batches_per_rank, row_bytes=2):
    rows = []
    for label, N, intra, inter in link_configs(links):
        ex = LinkExchange(profile, N, intra, inter, row_bytes=row_bytes)
        for bpr in batches_per_rank:
            r = predict(profile, N, bpr * N, ex)
            r["config"] = label
            r["fits"] = (r["weights_bytes_per_rank"] is None or profile.device_memory is None or
                         r["weights_bytes_per_rank"] + bpr * 4096 * profile.kv_bytes_per_token
                         <= profile.device_memory)
            rows.append(r)
    return rows


def gpu_assumptions(profile, links, row_bytes=2):
    return profile.assumptions() + [
        f"exchange rows of {row_bytes} bytes per hidden element (BF16 dispatch and combine); "
        "3 collectives per MoE layer, each paying the link latency",
        f"links: NVLink {links['nvlink_h200']['GBps']} GB/s, {links['nvlink_h200']['latency_us']}"
        f" us; 400 Gb/s {links['ib_400g']['GBps']} GB/s; 100 Gb/s {links['eth_100g']['GBps']}"
        f" GB/s; network latency {links['ib_400g']['latency_us']} us (sources in "
        "launch/study/profiles/links.json)",
        "uniform routing, contiguous placement, no expert replication; imbalance from the "
        "binomial estimate",
        "decode only: context 64 tokens as in the calibration (attention grows with context and "
        "is not modelled), no overlap of exchange with compute, no prefill in the batch",
        "memory per GPU = replicated weights + routed experts / N; 'fits' also counts a 4096-token "
        "f16 latent KV cache per sequence against 141 GB",
    ]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--profile", default=os.path.join(here, "profiles", "h200_v3_ud158.json"))
    ap.add_argument("--links", default=os.path.join(here, "profiles", "links.json"))
    ap.add_argument("--batch-per-rank", default="1,4,16,64")
    ap.add_argument("--json-out")
    a = ap.parse_args()
    prof = Profile(json.load(open(a.profile)))
    links = json.load(open(a.links))
    bprs = [int(x) for x in a.batch_per_rank.split(",")]
    rows = gpu_predictions(prof, links, bprs)
    print(f"# cluster model (predictions, not measurements): {prof.raw['name']}")
    for s in gpu_assumptions(prof, links):
        print("# - " + s)
    print(f"{'config':32s} {'N':>3s} {'B/rank':>6s} {'step_ms':>8s} {'rest':>6s} {'exp':>6s} "
          f"{'exch':>6s} {'tok/s':>8s} {'tok/s/GPU':>9s} {'tok/s/user':>10s} {'GB/GPU':>6s} fits")
    for r in rows:
        print(f"{r['config']:32s} {r['ranks']:3d} {r['batch_per_rank']:6d} "
              f"{r['step_s'] * 1e3:8.2f} {r['rest_s'] * 1e3:6.2f} {r['experts_s'] * 1e3:6.2f} "
              f"{r['exchange_s'] * 1e3:6.2f} {r['output_tok_s']:8.1f} "
              f"{r['output_tok_s_per_rank']:9.1f} {r['per_user_tok_s']:10.2f} "
              f"{r['weights_bytes_per_rank'] / 1e9:6.1f} {'yes' if r['fits'] else 'NO'}")
    if a.json_out:
        with open(a.json_out, "w") as f:
            json.dump({"assumptions": gpu_assumptions(prof, links), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
