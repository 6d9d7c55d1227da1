#!/usr/bin/env python3
"""Turns bench_matmul / bench_membw JSON output (medians of repetitions) into the docs/PERF.md tables.

  bench_membw  --benchmark_repetitions=5 --benchmark_report_aggregates_only=true \
               --benchmark_out=membw.json --benchmark_out_format=json
  bench_matmul --benchmark_filter='BM_MatMul/.*/avx512' --benchmark_repetitions=5 \
               --benchmark_report_aggregates_only=true --benchmark_out=gemv.json \
               --benchmark_out_format=json
  perf_table.py membw.json gemv.json
"""
import json
import re
import sys
from collections import defaultdict

TYPE_ORDER = ["IQ1_S", "TQ1_0", "TQ2_0", "IQ1_M", "IQ2_XXS", "Q2_K", "Q4_K", "Q6_K", "Q4_0",
              "Q8_0", "BF16", "F16", "F32"]


def medians(path):
  with open(path) as f:
    data = json.load(f)
  out = {}
  for b in data["benchmarks"]:
    if b.get("aggregate_name", "median") != "median":
      continue
    name = re.sub(r"(/min_time:[0-9.]+)?(/real_time)?(_median)?$", "", b["name"])
    out[name] = b
  return out


def main():
  membw = medians(sys.argv[1])
  bw = {}
  for name, b in membw.items():
    m = re.match(r"BM_ReadBandwidth/threads:(\d+)/avx512:1", name)
    if m:
      bw[int(m.group(1))] = b["bytes_per_second"] / 1e9
  print("Read bandwidth (AVX-512 loads, 1 GiB): " +
        ", ".join(f"{t} thread{'s' if t > 1 else ''}: {v:.1f} GB/s" for t, v in sorted(bw.items())))
  print()
  gemv = {}
  for path in sys.argv[2:]:
    gemv.update(medians(path))
  rows = defaultdict(dict)  # (type, shape, isa) -> {(threads, batch): bench}
  for name, b in gemv.items():
    m = re.match(r"BM_MatMul/([^/]+)/(\d+x\d+)/threads:(\d+)/batch:(\d+)/(\w+)", name)
    if m:
      rows[(m.group(1), m.group(2), m.group(5))][(int(m.group(3)), int(m.group(4)))] = b
  shapes = sorted({k[1] for k in rows}, key=lambda s: int(s.split("x")[0]))
  isas = sorted({k[2] for k in rows})
  for isa in isas:
    for shape in shapes:
      r, c = shape.split("x")
      print(f"#### {isa}, {r} rows x {c} columns (GEMV, batch 1 and batched)\n")
      print("| type | 1 thr GB/s | % of 1-thr BW | 2 thr GB/s | % of 2-thr BW | "
            "batch 4, 2 thr: G w·tok/s (× batch 1) | batch 8, 2 thr: G w·tok/s (× batch 1) |")
      print("|---|---:|---:|---:|---:|---:|---:|")
      for t in TYPE_ORDER:
        d = rows.get((t, shape, isa))
        if not d:
          continue
        def gbs(th, ba):
          b = d.get((th, ba))
          return b["bytes_per_second"] / 1e9 if b else None
        def wt(th, ba):
          b = d.get((th, ba))
          return b["weights_x_tokens"] / 1e9 if b else None
        cells = [t]
        for th in (1, 2):
          v = gbs(th, 1)
          cells.append(f"{v:.2f}" if v else "–")
          cells.append(f"{100 * v / bw[th]:.0f}%" if v and th in bw else "–")
        base = wt(2, 1)
        for ba in (4, 8):
          v = wt(2, ba)
          cells.append(f"{v:.1f} ({v / base:.2f}×)" if v and base else "–")
        print("| " + " | ".join(cells) + " |")
      print()


if __name__ == "__main__":
  main()
