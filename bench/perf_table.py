#!/usr/bin/env python3
"""Turns bench_membw / bench_matmul JSON output (medians of repetitions) into the docs/PERF.md tables.

  bench_membw  --benchmark_repetitions=5 --benchmark_report_aggregates_only=true \\
               --benchmark_out=membw.json --benchmark_out_format=json
  bench_matmul --benchmark_filter='BM_MatMul/.*/avx512' --benchmark_repetitions=5 \\
               --benchmark_report_aggregates_only=true --benchmark_out=gemv.json \\
               --benchmark_out_format=json
  perf_table.py membw.json [membw_after.json] gemv.json [more gemv.json]

Files holding BM_ReadBandwidth results are bandwidth runs (several: their medians are averaged,
e.g. one before and one after the GEMV run); the others are GEMV runs. Percentages are of the
averaged bandwidth at the same thread count. IQ1_S_quads (IQ1_S repacked for the CPU) gets a second
row that counts the IQ1_S bytes of the GGUF file (gguf_bytes_per_second) instead of the bytes read.
"""
import json
import re
import sys
from collections import defaultdict

TYPE_ORDER = ["IQ1_S", "IQ1_S_quads", "TQ1_0", "TQ2_0", "IQ1_M", "IQ2_XXS", "Q2_K", "Q4_K",
              "Q6_K", "Q4_0", "Q8_0", "BF16", "F16", "F32"]


def medians(data):
  out = {}
  for b in data["benchmarks"]:
    if b.get("aggregate_name", "median") != "median":
      continue
    name = re.sub(r"(/min_time:[0-9.]+)?(/real_time)?(_median)?$", "", b["name"])
    out[name] = b
  return out


def main():
  bw_runs = defaultdict(list)  # threads -> GB/s per bandwidth file
  gemv = {}
  for path in sys.argv[1:]:
    with open(path) as f:
      m = medians(json.load(f))
    is_bw = False
    for name, b in m.items():
      r = re.match(r"BM_ReadBandwidth/threads:(\d+)/avx512:1", name)
      if r:
        bw_runs[int(r.group(1))].append(b["bytes_per_second"] / 1e9)
        is_bw = True
    if not is_bw:
      gemv.update(m)
  bw = {t: sum(v) / len(v) for t, v in bw_runs.items()}
  print("Read bandwidth (AVX-512 loads, 1 GiB): " + ", ".join(
      f"{t} thread{'s' if t > 1 else ''}: {bw[t]:.1f} GB/s"
      + (" (runs: " + ", ".join(f"{v:.1f}" for v in bw_runs[t]) + ")" if len(bw_runs[t]) > 1
         else "") for t in sorted(bw)))
  print()
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
        variants = [(t, "bytes_per_second")]
        if any("gguf_bytes_per_second" in b for b in d.values()):
          variants = [(t + " (bytes read)", "bytes_per_second"),
                      (t + " (as IQ1_S bytes)", "gguf_bytes_per_second")]
        for label, counter in variants:
          def gbs(th, ba):
            b = d.get((th, ba))
            return b[counter] / 1e9 if b and counter in b else None

          def wt(th, ba):
            b = d.get((th, ba))
            return b["weights_x_tokens"] / 1e9 if b else None

          cells = [label]
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
