"""The tritmoe benchmarks a study runs, and parsers of their output.

  bench_serve   `tritmoe bench-serve --json-out` against a running server (one level per call, so
                that /metrics can be scraped around each level)
  bench_a2a     `tritmoe bench-a2a --dispatch-combine` under mpirun: dispatch/combine latency
  bench_decode  `tritmoe bench-decode`: prefill and decode step time at fixed batches (the
                compute input of the cluster model), plus its per-phase lines when it prints them

Every run has a timeout; a failed run raises BenchError with the command and its output tail.
"""
import json
import os
import re
import subprocess


class BenchError(RuntimeError):
    pass


def _run(cmd, timeout, log_path=None):
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                           start_new_session=True)
    except subprocess.TimeoutExpired as e:
        raise BenchError(f"timed out after {timeout} s: {' '.join(cmd)}") from e
    if log_path:
        with open(log_path, "w") as f:
            f.write("$ " + " ".join(cmd) + "\n" + p.stdout + p.stderr)
    if p.returncode != 0:
        raise BenchError(f"exit {p.returncode}: {' '.join(cmd)}\n{(p.stdout + p.stderr)[-3000:]}")
    return p.stdout


def bench_serve(tritmoe, port, concurrency, input_len, output_len, work, num_prompts=0,
                timeout=900, seed=0):
    """One bench-serve level; its JSON level dict (vLLM field meanings, times in ms)."""
    out = os.path.join(work, f"bench_serve_p{port}_c{concurrency}.json")
    cmd = [tritmoe, "bench-serve", "--port", str(port), "-c", str(concurrency),
           "--input-len", str(input_len), "--output-len", str(output_len), "--seed", str(seed),
           "--json-out", out]
    if num_prompts:
        cmd += ["--num-prompts", str(num_prompts)]
    _run(cmd, timeout, out + ".log")
    with open(out) as f:
        j = json.load(f)
    if len(j["levels"]) != 1:
        raise BenchError(f"bench-serve wrote {len(j['levels'])} levels, expected 1")
    return j["levels"][0]


_A2A_ROW = re.compile(r"^\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+"
                      r"([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+(\S+)\s*$")


def parse_a2a(text):
    """Rows of bench-a2a --dispatch-combine: tokens per rank, latencies (us), MB per rank."""
    rows = []
    for line in text.splitlines():
        m = _A2A_ROW.match(line)
        if m:
            g = m.groups()
            rows.append({"tokens_per_rank": int(g[0]), "dispatch_us_mean": float(g[1]),
                         "dispatch_us_p50": float(g[2]), "combine_us_mean": float(g[3]),
                         "combine_us_p50": float(g[4]), "dispatch_mb_per_rank": float(g[5]),
                         "combine_mb_per_rank": float(g[6]), "wrong": g[9]})
    return rows


def bench_a2a(tritmoe, mpirun, ranks, hidden, experts, topk, max_tokens, work, iters=10,
              warmup=3, timeout=600):
    cmd = [mpirun, "-np", str(ranks), tritmoe, "bench-a2a", "--dispatch-combine",
           "--hidden", str(hidden), "--experts", str(experts), "--topk", str(topk),
           "--min-tokens", "1", "--max-tokens", str(max_tokens), "-n", str(iters),
           "-w", str(warmup)]
    text = _run(cmd, timeout, os.path.join(work, f"bench_a2a_np{ranks}_h{hidden}.log"))
    rows = parse_a2a(text)
    if not rows:
        raise BenchError("bench-a2a printed no rows:\n" + text[-2000:])
    bad = [r for r in rows if r["wrong"] not in ("0", "N/A")]
    if bad:
        raise BenchError(f"bench-a2a reported wrong values: {bad}")
    return {"command": " ".join(cmd), "rows": rows}


def parse_exchange_bench(text):
    """ep_exchange_bench's table (bench/ep_exchange_bench.cc): one row per tokens-per-rank with
    the dispatch and combine latencies of the GPU device exchange, in bench-a2a's row shape
    (tokens_per_rank, dispatch_us_p50, combine_us_p50) so the cluster model takes either."""
    rows = []
    for line in text.splitlines():
        f = line.split()
        if len(f) != 9 or not f[0].isdigit():
            continue
        rows.append({"tokens_per_rank": int(f[0]), "dispatch_bytes": int(f[1]),
                     "combine_bytes": int(f[2]), "dispatch_us_p50": float(f[3]),
                     "combine_us_p50": float(f[4]), "a2a_bf16_us": float(f[7]),
                     "wrong": f[8]})
    return rows


def exchange_bench(binary, mpirun, ranks, work, max_tokens=4096, iters=25, timeout=300):
    """The GPU device exchange's dispatch + combine per MoE layer at `ranks` ranks (one per GPU)."""
    cmd = [mpirun, "-np", str(ranks), binary, f"--max_tokens={max_tokens}", f"--iters={iters}"]
    text = _run(cmd, timeout, os.path.join(work, f"ep_exchange_bench_np{ranks}.log"))
    rows = parse_exchange_bench(text)
    if not rows:
        raise BenchError("ep_exchange_bench printed no rows:\n" + text[-2000:])
    bad = [r for r in rows if r["wrong"] != "0"]
    if bad:
        raise BenchError(f"ep_exchange_bench reported wrong values: {bad}")
    return {"command": " ".join(cmd), "ranks": ranks, "rows": rows}


_DECODE_ROW = re.compile(r"^\|\s*(prefill|decode)\s*\|\s*(\d+)\s*\|\s*(\d+)\s*\|\s*([\d.]+)\s*\|"
                         r"\s*([\d.]+)\s*\|")
_WEIGHTS = re.compile(r"weights: ([\d.]+) MB outside routed experts, ([\d.]+) MB per routed "
                      r"expert \(all (\d+) MoE layers\), (\d+) of (\d+) experts")
_PHASE_WORDS = ("attention", "moe_compute", "dispatch", "combine", "other")


def parse_decode(text):
    """bench-decode's table, weight sizes, and per-phase rows when the binary prints them.

    Phase rows are any table row whose header names the phases (attention, moe_compute,
    dispatch, combine, other); they are kept as {header: value} dicts.
    """
    out = {"rows": [], "weights": None, "phase_rows": []}
    header = None
    for line in text.splitlines():
        m = _DECODE_ROW.match(line)
        if m:
            g = m.groups()
            out["rows"].append({"phase": g[0], "batch": int(g[1]), "tokens": int(g[2]),
                                "tok_s": float(g[3]), "weight_mb_per_step": float(g[4])})
            continue
        w = _WEIGHTS.search(line)
        if w:
            out["weights"] = {"dense_mb": float(w.group(1)), "expert_mb_all_layers":
                              float(w.group(2)), "moe_layers": int(w.group(3)),
                              "top_k": int(w.group(4)), "experts": int(w.group(5))}
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if "|" in line else []
        if cells and sum(any(p in c for p in _PHASE_WORDS) for c in cells) >= 3:
            header = cells
        elif header and cells and len(cells) == len(header) and not set(line) <= set("|-: "):
            out["phase_rows"].append(dict(zip(header, cells)))
    return out


def bench_decode(tritmoe, model, batches, work, ranks=1, mpirun=None, threads=0, prompt=64,
                 context=64, tokens=8, reps=3, timeout=900, device="cpu"):
    cmd = [tritmoe, "bench-decode", "-m", model, "--batch", ",".join(map(str, batches)),
           "--prompt", str(prompt), "--context", str(context), "--tokens", str(tokens),
           "--reps", str(reps), "-t", str(threads)]
    if device != "cpu":
        cmd += ["--device", device]
    if ranks > 1:
        cmd = [mpirun, "-np", str(ranks)] + cmd
    else:
        cmd += ["--comm", "local"]
    text = _run(cmd, timeout, os.path.join(work, f"bench_decode_np{ranks}.log"))
    r = parse_decode(text)
    if not r["rows"]:
        raise BenchError("bench-decode printed no table:\n" + text[-2000:])
    r["command"] = " ".join(cmd)
    return r
