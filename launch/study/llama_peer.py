"""llama.cpp on the same model file, in the same units as the study.

  llama-bench          -p ISL -n OSL: prompt and generation tok/s of one sequence (mean of -r)
  llama-batched-bench  -npp ISL -ntg OSL -npl <concurrencies>: B sequences decoding together;
                       output tok/s = B x OSL / (prefill + decode time), the same definition as
                       bench-serve's output throughput, and per-user tok/s = OSL / decode time
                       (1000 / TPOT)

Both run on the CPU with the given threads. A missing tool is recorded, not fatal; without
llama-bench, llama-completion's own timing lines give the one-stream figures.

Run alone, it adds the peer to an existing study (study.json, study.csv, plots):

  launch/study/llama_peer.py --study /tmp/study-small --bin /opt/tritmoe-llama.cpp/bin
"""
import argparse
import csv
import json
import os
import re
import subprocess
import sys


def _run(cmd, log_path, timeout):
    env = dict(os.environ, LD_LIBRARY_PATH=os.path.join(os.path.dirname(cmd[0]), "..", "lib"))
    p = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=timeout,
                       env=env)
    with open(log_path, "w") as f:
        f.write("$ " + " ".join(cmd) + "\n" + p.stdout + p.stderr)
    if p.returncode != 0:
        raise RuntimeError(f"exit {p.returncode}: {' '.join(cmd)}\n{(p.stdout + p.stderr)[-2000:]}")
    return p.stdout + "\n" + p.stderr


def parse_batched_jsonl(text):
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{") and '"speed_tg"' in line:
            rows.append(json.loads(line))
    return rows


_TIMING = re.compile(r"(prompt eval|eval) time =\s*([\d.]+) ms /\s*(\d+) (?:tokens|runs)")


def parse_completion_timings(text):
    """llama-completion's perf lines: prompt and decode time and counts."""
    t = {}
    for m in _TIMING.finditer(text):
        key = "prompt" if m.group(1) == "prompt eval" else "decode"
        t[key + "_ms"], t[key + "_tokens"] = float(m.group(2)), int(m.group(3))
    if "decode_ms" not in t or "prompt_ms" not in t:
        return None
    return t


_CUDA_DEVICES = re.compile(r"ggml_cuda_init: found (\d+) CUDA devices")


def parse_cuda_devices(text):
    """The GPUs a CUDA build of llama.cpp saw (it splits the layers over all of them), or None."""
    m = _CUDA_DEVICES.search(text)
    return int(m.group(1)) if m else None


def parse_llama_bench_json(text):
    start = text.find("[")
    end = text.rfind("]")
    if start < 0 or end < 0:
        return []
    return json.loads(text[start:end + 1])


def run(bin_dir, model, threads, concurrency, input_len, output_len, work, reps=3,
        timeout=1200, gpu_layers=0):
    """gpu_layers > 0: offload that many layers (-ngl) to the GPU of a CUDA build."""
    ngl = ["-ngl", str(gpu_layers)] if gpu_layers > 0 else []
    out = {"bin": os.path.abspath(bin_dir), "threads": threads, "bench": None, "batched": None,
           "device": "cuda" if gpu_layers > 0 else "cpu", "gpu_layers": gpu_layers,
           "errors": []}
    stamp = os.path.join(bin_dir, "..", ".tritmoe-llama-stamp")
    if os.path.exists(stamp):
        out["stamp"] = open(stamp).read()
    lb = os.path.join(bin_dir, "llama-bench")
    if os.access(lb, os.X_OK):
        cmd = [lb, "-m", model, "-t", str(threads), "-p", str(input_len), "-n", str(output_len),
               "-r", str(reps), "-o", "json"] + ngl
        try:
            text = _run(cmd, os.path.join(work, "llama_bench.log"), timeout)
            out["gpus"] = parse_cuda_devices(text) if gpu_layers > 0 else None
            rows = parse_llama_bench_json(text)
            out["bench"] = {"command": " ".join(cmd), "rows": [
                {"n_prompt": r.get("n_prompt"), "n_gen": r.get("n_gen"),
                 "avg_ts": r.get("avg_ts"), "stddev_ts": r.get("stddev_ts"),
                 "build_commit": r.get("build_commit"), "cpu_info": r.get("cpu_info")}
                for r in rows]}
        except (RuntimeError, subprocess.TimeoutExpired, ValueError) as e:
            out["errors"].append(f"llama-bench: {e}")
    else:
        out["errors"].append(f"no llama-bench in {bin_dir}")
    lc = os.path.join(bin_dir, "llama-completion")
    if out["bench"] is None and os.access(lc, os.X_OK):
        # Fallback where llama-bench is not built: one stream, its own timing lines.
        # "a a a ..." is one token per word in the synthetic vocabulary, plus BOS.
        prompt = " ".join(["a"] * max(1, input_len - 1))
        cmd = [lc, "-m", model, "-t", str(threads), "-n", str(output_len), "-p", prompt,
               "--temp", "0", "--ignore-eos", "-no-cnv"] + ngl
        try:
            t = parse_completion_timings(_run(cmd, os.path.join(work, "llama_completion.log"),
                                              timeout))
            if t:
                out["completion"] = dict(t, command=" ".join(cmd[:cmd.index("-p")]) + " -p <'a' x " +
                                         str(input_len - 1) + "> --temp 0 --ignore-eos -no-cnv" +
                                         "".join(" " + a for a in ngl))
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            out["errors"].append(f"llama-completion: {e}")
    bb = os.path.join(bin_dir, "llama-batched-bench")
    if os.access(bb, os.X_OK):
        npl = ",".join(map(str, concurrency))
        ctx = max(concurrency) * (input_len + output_len) + 64
        cmd = [bb, "-m", model, "-t", str(threads), "-c", str(ctx), "-b", "2048", "-ub", "512",
               "-npp", str(input_len), "-ntg", str(output_len), "-npl", npl,
               "--output-format", "jsonl"] + ngl
        try:
            text = _run(cmd, os.path.join(work, "llama_batched.log"), timeout)
            if out.get("gpus") is None and gpu_layers > 0:
                out["gpus"] = parse_cuda_devices(text)
            rows = parse_batched_jsonl(text)
            out["batched"] = {"command": " ".join(cmd), "rows": [
                {"concurrency": r["pl"], "pp": r["pp"], "tg": r["tg"],
                 "output_tok_s": r["pl"] * r["tg"] / r["t"],
                 "decode_tok_s": r["speed_tg"],
                 "per_user_tok_s": r["tg"] / r["t_tg"],
                 "prefill_tok_s": r["speed_pp"]} for r in rows]}
        except (RuntimeError, subprocess.TimeoutExpired, ValueError, KeyError) as e:
            out["errors"].append(f"llama-batched-bench: {e}")
    else:
        out["errors"].append(f"no llama-batched-bench in {bin_dir}")
    return out


def csv_rows(peer):
    """CSV rows of the peer; `ranks` is the GPUs a CUDA build spread its layers over (else 1)."""
    rows = []
    device = peer.get("device", "cpu")
    gpus = peer.get("gpus") or 1
    if peer.get("batched"):
        for r in peer["batched"]["rows"]:
            rows.append({"kind": "llama", "device": device, "config": "llama.cpp batched-bench",
                         "ranks": gpus, "threads_per_rank": peer["threads"],
                         "concurrency": r["concurrency"], "input_len": r["pp"],
                         "output_len": r["tg"], "output_tok_s": r["output_tok_s"],
                         "output_tok_s_per_rank": r["output_tok_s"],
                         "per_user_tok_s": r["per_user_tok_s"],
                         "notes": f"decode-only {r['decode_tok_s']:.1f} tok/s, prefill "
                                  f"{r['prefill_tok_s']:.1f} tok/s"})
    c = peer.get("completion")
    if c:
        gen = c["decode_tokens"] + 1  # the first token comes with the prompt
        rows.append({"kind": "llama", "device": device, "config": "llama.cpp llama-completion",
                     "ranks": gpus, "threads_per_rank": peer["threads"], "concurrency": 1,
                     "input_len": c["prompt_tokens"], "output_len": gen,
                     "output_tok_s": gen / ((c["prompt_ms"] + c["decode_ms"]) / 1e3),
                     "output_tok_s_per_rank": gen / ((c["prompt_ms"] + c["decode_ms"]) / 1e3),
                     "per_user_tok_s": c["decode_tokens"] / (c["decode_ms"] / 1e3),
                     "notes": f"prompt {c['prompt_tokens']} tokens in {c['prompt_ms']:.0f} ms, "
                              f"{c['decode_tokens']} decode steps in {c['decode_ms']:.0f} ms"})
    if peer.get("bench"):
        for r in peer["bench"]["rows"]:
            rows.append({"kind": "llama", "device": device, "config": "llama.cpp llama-bench "
                         + ("pp" if r["n_gen"] == 0 else "tg"), "ranks": gpus,
                         "threads_per_rank": peer["threads"], "concurrency": 1,
                         "input_len": r["n_prompt"], "output_len": r["n_gen"],
                         "output_tok_s": r["avg_ts"] if r["n_gen"] else None,
                         "per_user_tok_s": r["avg_ts"] if r["n_gen"] else None,
                         "notes": f"{r['avg_ts']:.2f} +- {r['stddev_ts']:.2f} tok/s"})
    return rows


def _typed(v):
    if v == "":
        return None
    for t in (int, float):
        try:
            return t(v)
        except ValueError:
            pass
    return {"True": True, "False": False}.get(v, v)


def main(argv=None):
    ap = argparse.ArgumentParser(description="Add llama.cpp's figures to an existing study")
    ap.add_argument("--study", required=True)
    ap.add_argument("--bin", required=True, help="llama.cpp bin/ folder")
    ap.add_argument("--threads", type=int, default=0, help="0: the study's cores")
    ap.add_argument("--gpu-layers", type=int, default=0,
                    help="-ngl for a CUDA build of llama.cpp (0: CPU only)")
    ap.add_argument("--no-plots", action="store_true")
    a = ap.parse_args(argv)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import study as study_mod
    jpath, cpath = os.path.join(a.study, "study.json"), os.path.join(a.study, "study.csv")
    with open(jpath) as f:
        st = json.load(f)
    s = st["settings"]
    work = os.path.join(a.study, "logs")
    os.makedirs(work, exist_ok=True)  # a study copied without its logs/
    peer = run(a.bin, st["model"]["path"], a.threads or s["cores"], s["concurrency"],
               s["input_len"], s["output_len"], work, gpu_layers=a.gpu_layers)
    st["llama"] = peer
    with open(cpath, newline="") as f:
        rows = [{k: _typed(v) for k, v in r.items()} for r in csv.DictReader(f)
                if r["kind"] != "llama"]
    rows += csv_rows(peer)
    study_mod.write_csv(cpath, rows)
    with open(jpath, "w") as f:
        json.dump(st, f, indent=1, default=str)
    print(f"llama.cpp: {len(csv_rows(peer))} rows; errors: {peer['errors'] or 'none'}")
    if not a.no_plots:
        import plots
        plots.make_all(st, rows, a.study)
    return 0


if __name__ == "__main__":
    sys.exit(main())
