#!/usr/bin/env python3
"""Turns bench_membw / bench_matmul JSON output into the docs/PERF.md GEMV tables.

  perf_table.py [--cpu-time] bw.json gemv.json bw.json [gemv.json bw.json ...]

Files holding BM_ReadBandwidth results are bandwidth runs, the others GEMV runs; bench/cpu_gemv_bench.sh
writes them alternately (rounds). Each GEMV run is judged against the bandwidth measured just
before and just after it (their mean, at the same thread count), because the machine's bandwidth
moves from minute to minute while other processes use it; a table cell is the median over rounds
(of the GB/s, and of the per-round percentage). Within one file, a benchmark's value is the median
of its repetitions (Google Benchmark's median aggregate, or the median of the plain runs).

--cpu-time: every rate is taken over the process's CPU time per thread (the cpu_bytes_per_second
counter of both benchmarks) instead of wall-clock time: the speed while the threads run, which is
what to compare when other processes also want the cores.

IQ1_S_quads (IQ1_S repacked for the CPU) and TQ1_0_tq2 (TQ1_0 repacked into TQ2_0 blocks) get a
second row that counts the bytes of the GGUF file's type (gguf_bytes_per_second) instead of the
bytes read.
"""
import json
import re
import statistics
import sys
from collections import defaultdict

TYPE_ORDER = ["IQ1_S", "IQ1_S_quads", "TQ1_0", "TQ1_0_tq2", "TQ2_0", "IQ1_M", "IQ2_XXS", "Q2_K", "Q4_K",
              "Q6_K", "Q4_0", "Q8_0", "BF16", "F16", "F32"]
BATCHES = (4, 8, 16)


def per_benchmark(data, cpu_time):
  """name -> {counter: value}, medians over repetitions, rates over wall or CPU time."""
  runs = defaultdict(list)
  aggregate = {}
  for b in data["benchmarks"]:
    name = re.sub(r"(/min_time:[0-9.]+)?(/real_time)?(_median|_mean|_stddev|_cv)?$", "",
                  b["name"])
    if b.get("run_type") == "aggregate":
      if b.get("aggregate_name") == "median":
        aggregate[name] = b
      continue
    runs[name].append(b)
  out = {}
  for name in set(runs) | set(aggregate):
    samples = [aggregate[name]] if name in aggregate else runs[name]
    values = defaultdict(list)
    for b in samples:
      factor = b["cpu_bytes_per_second"] / b["bytes_per_second"] if cpu_time else 1.0
      for counter in ("bytes_per_second", "gguf_bytes_per_second", "weights_x_tokens"):
        if counter in b:
          values[counter].append(b[counter] * factor)
    out[name] = {k: statistics.median(v) for k, v in values.items()}
  return out


def main():
  args = sys.argv[1:]
  cpu_time = "--cpu-time" in args
  files = [a for a in args if a != "--cpu-time"]
  runs = []  # ("bw", {threads: GB/s}) or ("gemv", {name: counters}), in argument order
  for path in files:
    with open(path) as f:
      m = per_benchmark(json.load(f), cpu_time)
    bw = {}
    for name, b in m.items():
      r = re.match(r"BM_ReadBandwidth/threads:(\d+)/avx512:1$", name)
      if r:
        bw[int(r.group(1))] = b["bytes_per_second"] / 1e9
    runs.append(("bw", bw) if bw else ("gemv", m))

  bw_all = defaultdict(list)
  for kind, v in runs:
    if kind == "bw":
      for t, g in v.items():
        bw_all[t].append(g)
  # cells[(type, shape, isa)][(threads, batch)] = list over rounds of (counters, bandwidth)
  cells = defaultdict(lambda: defaultdict(list))
  for i, (kind, m) in enumerate(runs):
    if kind != "gemv":
      continue
    near = [runs[j][1] for j in (i - 1, i + 1) if 0 <= j < len(runs) and runs[j][0] == "bw"]
    for name, b in m.items():
      r = re.match(r"BM_MatMul/([^/]+)/(\d+x\d+)/threads:(\d+)/batch:(\d+)/(\w+)$", name)
      if not r:
        continue
      threads = int(r.group(3))
      bws = [n[threads] for n in near if threads in n]
      cells[(r.group(1), r.group(2), r.group(5))][(threads, int(r.group(4)))].append(
          (b, statistics.mean(bws) if bws else None))

  rounds = sum(1 for kind, _ in runs if kind == "gemv")
  print(("Rates over CPU time per thread" if cpu_time else "Rates over wall-clock time") +
        f"; medians over {rounds} round{'s' if rounds != 1 else ''}. "
        "Read bandwidth (AVX-512 loads, 1 GiB), median [range] of the runs: " + ", ".join(
            f"{t} thread{'s' if t > 1 else ''}: {statistics.median(v):.1f} GB/s "
            f"[{min(v):.1f}-{max(v):.1f}]" for t, v in sorted(bw_all.items())))
  print()
  shapes = sorted({k[1] for k in cells}, key=lambda s: int(s.split("x")[0]))
  isas = sorted({k[2] for k in cells})
  for isa in isas:
    for shape in shapes:
      r, c = shape.split("x")
      print(f"#### {isa}, {r} rows x {c} columns (GEMV, batch 1 and batched)\n")
      print("| type | 1 thr GB/s | % of 1-thr BW | 2 thr GB/s | % of 2-thr BW | " +
            " | ".join(f"batch {b}, 2 thr: G w·tok/s (× batch 1)" for b in BATCHES) + " |")
      print("|---|" + "---:|" * (4 + len(BATCHES)))
      for t in TYPE_ORDER:
        d = cells.get((t, shape, isa))
        if not d:
          continue
        variants = [(t, "bytes_per_second")]
        if any("gguf_bytes_per_second" in b for v in d.values() for b, _ in v):
          variants = [(t + " (bytes read)", "bytes_per_second"),
                      (t + f" (as {t.rsplit('_', 1)[0]} bytes)", "gguf_bytes_per_second")]
        for label, counter in variants:
          def gbs(th, ba):
            v = [b[counter] / 1e9 for b, _ in d.get((th, ba), []) if counter in b]
            return statistics.median(v) if v else None

          def pct(th, ba):
            v = [100 * b[counter] / 1e9 / g for b, g in d.get((th, ba), []) if g]
            return statistics.median(v) if v else None

          def wt(th, ba):
            v = [b["weights_x_tokens"] / 1e9 for b, _ in d.get((th, ba), [])]
            return statistics.median(v) if v else None

          cells_out = [label]
          for th in (1, 2):
            v, p = gbs(th, 1), pct(th, 1)
            cells_out.append(f"{v:.2f}" if v else "–")
            cells_out.append(f"{p:.0f}%" if p else "–")
          base = wt(2, 1)
          for ba in BATCHES:
            v = wt(2, ba)
            cells_out.append(f"{v:.1f} ({v / base:.2f}×)" if v and base else "–")
          print("| " + " | ".join(cells_out) + " |")
      print()


if __name__ == "__main__":
  main()
