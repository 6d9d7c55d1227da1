#!/usr/bin/env python3
"""Throughput scaling study: sweep rank counts and load, measure, model, plot.

For each rank count it starts `tritmoe serve` (under mpirun), runs `tritmoe bench-serve` at each
concurrency, scrapes /metrics around every level (step time, tokens per step, per-phase step
breakdown, expert-load imbalance where the binary exports them), runs `tritmoe bench-a2a
--dispatch-combine` at the model's shapes, and `tritmoe bench-decode` on one rank as the cluster
model's compute input. It writes one study (study.json with everything, study.csv with one row
per point), the cluster model's figures beside the measured ones with their error, and plots.

  launch/study/study.py --tritmoe build/tritmoe --model small-ud158.gguf --ranks 1,2,4 \
      --concurrency 1,4,16 --out /tmp/study-small
  launch/study/study.py --remodel /tmp/study-small   # model rows, CSV, plots again

CSV rows (column `kind`):
  serve       one measured (ranks, concurrency) point: bench-serve figures, per-user tok/s =
              1000 / mean TPOT, step time and per-phase breakdown from /metrics
  model       the cluster model at the same point, with measured values and the error (%)
  a2a         bench-a2a dispatch/combine latency by tokens per rank at each rank count
  prediction  the cluster model for GPU clusters (from a GPU profile; nothing measured)
  llama       llama.cpp on the same model file (llama-bench / llama-batched-bench), if given
"""
import argparse
import csv
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
ROOT = os.path.dirname(os.path.dirname(HERE))

import benches  # noqa: E402
import cluster_model  # noqa: E402
import llama_peer  # noqa: E402
import machine  # noqa: E402
import prom  # noqa: E402
from server import Server  # noqa: E402

CSV_COLUMNS = [
    "kind", "device", "config", "ranks", "threads_per_rank", "concurrency", "input_len",
    "output_len", "num_prompts", "completed", "failed", "duration_s", "request_throughput",
    "output_tok_s", "output_tok_s_per_rank", "total_tok_s", "ttft_ms_median", "ttft_ms_p99",
    "tpot_ms_mean", "tpot_ms_median", "tpot_ms_p99", "itl_ms_median", "e2el_ms_median",
    "per_user_tok_s", "steps", "mean_step_ms", "mean_tokens_per_step", "attention_ms",
    "moe_compute_ms", "dispatch_ms", "combine_ms", "other_ms", "idle_ms", "imbalance_max",
    "tokens_per_rank", "dispatch_us", "combine_us", "model_step_ms", "model_rest_ms",
    "model_experts_ms", "model_exchange_ms", "model_prefill_ms", "model_output_tok_s",
    "model_per_user_tok_s", "measured_step_ms", "measured_output_tok_s",
    "measured_per_user_tok_s", "error_step_pct", "error_output_pct", "error_per_user_pct",
    "fits_memory", "notes"]


def log(msg):
    print(f"[study {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def int_list(s):
    vals = [int(x) for x in s.split(",") if x.strip()]
    if not vals or any(v < 1 for v in vals):
        raise argparse.ArgumentTypeError(f"'{s}': expected positive integers, comma-separated")
    return vals


def model_shape(tritmoe, model):
    out = subprocess.run([tritmoe, "inspect", model, "--json", "--no-tensors"],
                         capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise SystemExit(f"study: cannot inspect {model}: {out.stderr.strip()}")
    h = json.loads(out.stdout)["hparams"]
    a = "deepseek2."
    layers = h[a + "block_count"]
    lead = h.get(a + "leading_dense_block_count", 1)
    return {"layers": layers, "moe_layers": layers - lead, "experts": h[a + "expert_count"],
            "top_k": h[a + "expert_used_count"], "hidden": h[a + "embedding_length"],
            "kv_bytes_per_token": layers * (h[a + "attention.kv_lora_rank"] +
                                            h[a + "rope.dimension_count"]) * 2}


def pct(model, measured):
    if model is None or measured in (None, 0) or not math.isfinite(measured):
        return None
    return 100.0 * (model - measured) / measured


def serve_row(args, ranks, threads, item):
    lvl, summ = item["level"], item["metrics"]
    tpot = lvl["tpot_ms"]["mean"]
    row = {"kind": "serve", "device": args.device, "config": f"{args.device} np={ranks}",
           "ranks": ranks, "threads_per_rank": threads, "concurrency": lvl["concurrency"],
           "input_len": args.input_len, "output_len": args.output_len,
           "num_prompts": lvl["num_prompts"], "completed": lvl["completed"],
           "failed": lvl["failed"], "duration_s": lvl["duration_s"],
           "request_throughput": lvl["request_throughput"],
           "output_tok_s": lvl["output_throughput"],
           "output_tok_s_per_rank": lvl["output_throughput"] / ranks,
           "total_tok_s": lvl["total_token_throughput"],
           "ttft_ms_median": lvl["ttft_ms"]["median"], "ttft_ms_p99": lvl["ttft_ms"]["p99"],
           "tpot_ms_mean": tpot, "tpot_ms_median": lvl["tpot_ms"]["median"],
           "tpot_ms_p99": lvl["tpot_ms"]["p99"], "itl_ms_median": lvl["itl_ms"]["median"],
           "e2el_ms_median": lvl["e2el_ms"]["median"],
           "per_user_tok_s": 1000.0 / tpot if tpot > 0 else None,
           "steps": summ["steps"],
           "mean_step_ms": summ["mean_step_s"] * 1e3 if summ["mean_step_s"] else None,
           "mean_tokens_per_step": summ["mean_tokens_per_step"], "notes": ""}
    notes = []
    if len(item.get("runs_output_tok_s", [])) > 1:
        notes.append("median of runs at " + " / ".join(f"{v:.1f}" for v in
                                                        item["runs_output_tok_s"]) + " tok/s")
    if tpot <= 0:
        notes.append("TPOT 0: tokens arrived in one burst, per-user tok/s undefined")
    ph = summ["phase_s_per_step"]
    if ph:
        for p in prom.PHASES:
            row[f"{p}_ms"] = ph[p] * 1e3
        if row["mean_step_ms"]:
            busy = sum(ph.values()) * 1e3
            row["idle_ms"] = max(0.0, row["mean_step_ms"] - busy)
    else:
        notes.append("step phase breakdown not available (binary exports no "
                     "tritmoe_step_phase_seconds_total)")
    if summ["imbalance"]:
        row["imbalance_max"] = max(summ["imbalance"].values())
    else:
        notes.append("expert-load imbalance not available")
    row["notes"] = "; ".join(notes)
    return row


def run_rank_count(args, shape, ranks, threads, work):
    """Serve at one rank count; bench-serve levels with /metrics around each."""
    levels = []
    extra = ["--max-model-len", str(args.input_len + args.output_len + 64),
             "--max-num-seqs", str(max(args.concurrency) * 2)]
    if args.device == "cuda":
        extra += ["--device", "cuda"]
    with Server(args.tritmoe, args.model, ranks, work, mpirun=args.mpirun, threads=threads,
                extra=extra) as srv:
        log(f"np={ranks}: serving on port {srv.http_port} ({threads} thread(s) per rank)")
        for c in args.concurrency:
            runs = []
            for rep in range(args.repeat):
                before = prom.scrape(srv.http_port)
                n_req = args.num_prompts or max(4, args.prompts_per_stream * c)
                lvl = benches.bench_serve(args.tritmoe, srv.http_port, c, args.input_len,
                                          args.output_len, work, num_prompts=n_req, seed=rep)
                after = prom.scrape(srv.http_port)
                runs.append({"level": lvl, "metrics": prom.level_summary(before, after)})
                log(f"np={ranks} c={c} run {rep + 1}/{args.repeat}: "
                    f"{lvl['output_throughput']:.1f} out tok/s, TPOT "
                    f"{lvl['tpot_ms']['mean']:.1f} ms, {lvl['failed']} failed")
            # The run with the median output throughput stands for the level (all are kept).
            runs_sorted = sorted(runs, key=lambda r: r["level"]["output_throughput"])
            chosen = dict(runs_sorted[(len(runs) - 1) // 2])
            chosen["runs_output_tok_s"] = [r["level"]["output_throughput"] for r in runs]
            chosen["all_runs"] = runs
            levels.append(chosen)
        command = " ".join(srv.command)
    if srv.exit_code != 0:
        raise SystemExit(f"study: server np={ranks} exited with {srv.exit_code}; log: "
                         f"{srv.log_path}")
    return {"ranks": ranks, "threads_per_rank": threads, "serve_command": command,
            "levels": levels}


def cpu_profile(args, shape, decode, threads1):
    """The cluster model's compute input from bench-decode on one rank."""
    rows = [r for r in decode["rows"] if r["phase"] == "decode"]
    w = decode["weights"]
    b1 = min(rows, key=lambda r: r["batch"])
    step1 = b1["batch"] / b1["tok_s"]
    stream = b1["weight_mb_per_step"] / 1e3 / step1  # GB/s the rank streams weights at, batch 1
    pf = [r for r in decode["rows"] if r["phase"] == "prefill"]
    prefill_ms = 1e3 / pf[0]["tok_s"] if pf else 0.0
    return {
        "name": f"{os.path.basename(args.model)}, one rank x {threads1} thread(s), this machine",
        "device": "cpu",
        "source": f"bench-decode on one rank ({decode['command']})",
        "shape": shape,
        "step_ms_by_batch": {str(r["batch"]): 1e3 * r["batch"] / r["tok_s"] for r in rows},
        "expert_bytes_all_moe_layers": w["expert_mb_all_layers"] * 1e6,
        "expert_stream_GBps": stream,
        "expert_stream_note": "bytes per step / step time at the smallest batch (weight "
                              "streaming assumed to bound a batch-1 step)",
        "calib_cpu_share": cpu_share(threads1, 1, args.cores, args.external_load),
        "prefill_ms_per_token": prefill_ms,
    }


def cpu_share(threads, ranks, cores, external_load):
    """Cores one rank gets: its threads' fair share of a host that also runs others' work."""
    return threads * min(1.0, cores / (external_load + ranks * threads))


def model_rows(args, prof, study):
    """Cluster model at every measured serve point, with the measured figures and the error."""
    rows = []
    a2a = {r["ranks"]: r for r in study["a2a"]}
    # GPU ranks exchange on device buffers (ep_exchange_bench), not through bench-a2a's MPI.
    if args.device == "cuda":
        a2a.update({r["ranks"]: r for r in study.get("device_exchange", [])})
    for rc in study["serve"]:
        n, t = rc["ranks"], rc["threads_per_rank"]
        share = None  # per level: ranks without sequences do not compete for the cores
        if n > 1 and n not in a2a:
            continue
        ex = cluster_model.MeasuredExchange(a2a[n]["rows"]) if n > 1 else None
        for item in rc["levels"]:
            lvl, summ = item["level"], item["metrics"]
            c = lvl["concurrency"]
            # A GPU rank computes on its own GPU: no share of the host's cores to scale by.
            share = (prof.calib_share if args.device == "cuda" else
                     cpu_share(t, min(n, c), args.cores, args.external_load))
            imb = max(summ["imbalance"].values()) if summ["imbalance"] else None
            p = cluster_model.predict(prof, n, c, ex or _NoExchange(), share=share,
                                      imbalance=imb,
                                      prefill_per_output=args.input_len / args.output_len)
            tpot = lvl["tpot_ms"]["mean"]
            m_user = 1000.0 / tpot if tpot > 0 else None
            m_step = summ["mean_step_s"] * 1e3 if summ["mean_step_s"] else None
            p["share"] = share
            rows.append({
                "kind": "model", "device": args.device, "config": f"{args.device} np={n}",
                "ranks": n, "threads_per_rank": t, "concurrency": c,
                "input_len": args.input_len, "output_len": args.output_len,
                "model_step_ms": p["step_s"] * 1e3, "model_output_tok_s": p["output_tok_s"],
                "model_rest_ms": p["rest_s"] * 1e3, "model_experts_ms": p["experts_s"] * 1e3,
                "model_exchange_ms": p["exchange_s"] * 1e3,
                "model_prefill_ms": p["prefill_s"] * 1e3,
                "model_per_user_tok_s": p["per_user_tok_s"],
                "measured_step_ms": m_step, "measured_output_tok_s": lvl["output_throughput"],
                "measured_per_user_tok_s": m_user,
                "error_step_pct": pct(p["step_s"] * 1e3, m_step),
                "error_output_pct": pct(p["output_tok_s"], lvl["output_throughput"]),
                "error_per_user_pct": pct(p["per_user_tok_s"], m_user),
                "imbalance_max": p["imbalance"],
                "notes": f"share {share:.2f} core(s)/rank"})
    return rows


class _NoExchange:
    name = "none"

    def layer_s(self, b):
        return 0.0


def model_assumptions(args, prof, device_exchange=False):
    return prof.assumptions() + [
        ("exchange: ep_exchange_bench's dispatch + combine on device buffers (the GPU ranks' "
         "NCCL exchange) at the same rank count, interpolated at the per-rank tokens of a step"
         if device_exchange else
         "exchange: bench-a2a --dispatch-combine p50 latencies at the same rank count and the "
         "model's shapes (float32 rows), interpolated at the per-rank tokens of a step"),
        f"ranks on one host share {args.cores} cores and the memory bandwidth with other "
        f"tenants (external load {args.external_load:.1f} runnable threads: the 1-minute load "
        "average before the study); a rank of t threads gets t * min(1, cores / (external load "
        "+ the threads of the ranks that hold sequences)) cores, and its compute time scales by the calibration rank's "
        "cores over its own",
        f"a step also carries the chunked prefill of the requests: ISL/OSL = "
        f"{args.input_len / args.output_len:.2f} prompt tokens per decoding sequence, at "
        "bench-decode's prefill time per token",
        "bench-serve's wall time includes ramp-up and tail, the model assumes every stream busy",
    ]


def gpu_rows(args):
    prof = cluster_model.Profile(json.load(open(args.gpu_profile)))
    links = json.load(open(args.links))
    rows = []
    for p in cluster_model.gpu_predictions(prof, links, args.gpu_batch_per_rank):
        rows.append({"kind": "prediction", "device": "cuda", "config": p["config"],
                     "ranks": p["ranks"], "concurrency": p["batch"],
                     "model_step_ms": p["step_s"] * 1e3,
                     "model_rest_ms": p["rest_s"] * 1e3, "model_experts_ms": p["experts_s"] * 1e3,
                     "model_exchange_ms": p["exchange_s"] * 1e3,
                     "model_output_tok_s": p["output_tok_s"],
                     "output_tok_s_per_rank": p["output_tok_s_per_rank"],
                     "model_per_user_tok_s": p["per_user_tok_s"],
                     "imbalance_max": p["imbalance"], "fits_memory": p["fits"],
                     "notes": f"weights {p['weights_bytes_per_rank'] / 1e9:.1f} GB/GPU"})
    return rows, cluster_model.gpu_assumptions(prof, links), prof.raw


def a2a_rows(study):
    rows = []
    for r in study["a2a"]:
        for x in r["rows"]:
            rows.append({"kind": "a2a", "device": "cpu", "config": f"hidden {r['hidden']}",
                         "ranks": r["ranks"], "tokens_per_rank": x["tokens_per_rank"],
                         "dispatch_us": x["dispatch_us_p50"], "combine_us": x["combine_us_p50"]})
    return rows


def write_csv(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="raise")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if v is None else (f"{v:.6g}" if isinstance(v, float) else v))
                        for k, v in r.items()})


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n", 2)[2])
    ap.add_argument("--tritmoe", default=os.path.join(ROOT, "build", "tritmoe"))
    ap.add_argument("--model", required=True, help="GGUF model file")
    ap.add_argument("--ranks", type=int_list, default=[1, 2, 4])
    ap.add_argument("--concurrency", type=int_list, default=[1, 4, 16])
    ap.add_argument("--input-len", type=int, default=64)
    ap.add_argument("--output-len", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=1,
                    help="bench-serve runs per level; the median run (by output tok/s) is "
                         "reported, all are kept in study.json")
    ap.add_argument("--num-prompts", type=int, default=0,
                    help="requests per level (0: --prompts-per-stream x concurrency)")
    ap.add_argument("--prompts-per-stream", type=int, default=4,
                    help="requests per concurrent stream when --num-prompts is 0 (at least 4 "
                         "requests per level)")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--threads", type=int, default=0,
                    help="threads per rank (0: cores / ranks, at least 1)")
    ap.add_argument("--mpirun", default=os.path.join(ROOT, "tests", "mpi", "mpirun.sh"))
    ap.add_argument("--a2a-max-tokens", type=int, default=64)
    ap.add_argument("--exchange-bench",
                    help="bench/ep_exchange_bench: with --device cuda, the GPU ranks' exchange "
                         "cost for the cluster model (else bench-a2a's MPI one)")
    ap.add_argument("--a2a-v3", action="store_true",
                    help="also run bench-a2a at DeepSeek-V3 shapes (hidden 7168, 256 experts)")
    ap.add_argument("--decode-batches", type=int_list, default=None,
                    help="bench-decode batches for the model's compute input "
                         "(default: 1 and every concurrency)")
    ap.add_argument("--decode-reps", type=int, default=3)
    ap.add_argument("--gpu-profile",
                    default=os.path.join(HERE, "profiles", "h200_v3_ud158.json"))
    ap.add_argument("--links", default=os.path.join(HERE, "profiles", "links.json"))
    ap.add_argument("--gpu-batch-per-rank", type=int_list, default=[1, 4, 16, 64])
    ap.add_argument("--llama-bin", help="llama.cpp bin/ with llama-bench and llama-batched-bench")
    ap.add_argument("--llama-threads", type=int, default=0)
    ap.add_argument("--llama-gpu-layers", type=int, default=None,
                    help="llama.cpp -ngl (default: 999 with --device cuda, else CPU only)")
    ap.add_argument("--no-plots", action="store_true")
    ap.add_argument("--out", required=True, help="study folder (created)")
    a = ap.parse_args(argv)
    if not os.path.isfile(a.model):
        ap.error(f"--model {a.model}: no such file")
    if not (os.path.isfile(a.tritmoe) and os.access(a.tritmoe, os.X_OK)):
        ap.error(f"--tritmoe {a.tritmoe}: not an executable file")
    if any(r > 1 for r in a.ranks) and not shutil.which(a.mpirun):
        ap.error(f"--mpirun {a.mpirun}: not found (needed for ranks > 1)")
    if a.repeat < 1:
        ap.error("--repeat must be >= 1")
    if a.input_len < 1 or a.output_len < 2:
        ap.error("--input-len must be >= 1 and --output-len >= 2 (TPOT needs two tokens)")
    return a


def _stop_on_signal(signum, frame):
    # Unwinds through every `with Server(...)`, which stops its server: SIGTERM (or SIGINT when
    # the study runs in the background, where the shell ignores it) leaves no mpirun behind.
    raise SystemExit(128 + signum)


def llama_gpu_layers(args):
    """-ngl for the llama.cpp peer: every layer on the GPU in a GPU study (CUDA build), else 0."""
    if args.llama_gpu_layers is not None:
        return args.llama_gpu_layers
    return 999 if args.device == "cuda" else 0


def remodel(folder, no_plots=False, device_exchange=()):
    """Rebuild the model rows, CSV and plots of an existing study from its measurements.
    device_exchange: (ranks, ep_exchange_bench log) pairs measured apart from the study, added
    to it (study.json keeps them) for GPU studies run without --exchange-bench."""
    with open(os.path.join(folder, "study.json")) as f:
        study = json.load(f)
    for n, path in device_exchange:
        with open(path) as f:
            rows = benches.parse_exchange_bench(f.read())
        if not rows:
            raise SystemExit(f"study: {path}: no ep_exchange_bench rows")
        study["device_exchange"] = [r for r in study.get("device_exchange", []) if r["ranks"] != n]
        study["device_exchange"].append({"command": f"(imported from {os.path.basename(path)})",
                                         "ranks": n, "rows": rows})
    args = argparse.Namespace(**study["settings"])
    args.out, args.no_plots = folder, no_plots
    args.external_load = study["machine"]["load_average_start"][0]
    return finish(args, study)


def main(argv=None):
    signal.signal(signal.SIGTERM, _stop_on_signal)
    signal.signal(signal.SIGINT, _stop_on_signal)
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--remodel"]:
        if len(argv) < 2:
            raise SystemExit("study: --remodel needs the study folder")
        imports = []
        for x in argv[2:]:
            if x.startswith("--device-exchange="):  # --device-exchange=RANKS:LOG
                n, _, path = x.split("=", 1)[1].partition(":")
                imports.append((int(n), path))
        return remodel(argv[1], no_plots="--no-plots" in argv, device_exchange=imports)
    args = parse_args(argv)
    args.cores = len(os.sched_getaffinity(0))
    os.makedirs(args.out, exist_ok=True)
    work = os.path.join(args.out, "logs")
    os.makedirs(work, exist_ok=True)
    if args.device == "cuda":
        # GPU serving exists only where the binary has --device (one GPU per rank; the binary
        # itself refuses rank counts it cannot run, and the study stops with its message).
        help_text = subprocess.run([args.tritmoe, "serve", "--help"], capture_output=True,
                                   text=True).stdout
        if "--device" not in help_text:
            raise SystemExit("study: this tritmoe serve has no --device flag, so it cannot serve "
                             "from GPUs; measure GPU steps with bench-gpu-decode and give them "
                             "as a --gpu-profile instead")
    t0 = time.time()
    shape = model_shape(args.tritmoe, args.model)
    for n in args.ranks:
        if shape["experts"] % n:
            raise SystemExit(f"study: {n} ranks do not divide the model's {shape['experts']} "
                             "experts")
    study = {"study_version": 1, "argv": sys.argv, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                           time.gmtime()),
             "model": {"path": os.path.abspath(args.model), "bytes": os.path.getsize(args.model),
                       "shape": shape},
             "machine": machine.describe(args.tritmoe, args.mpirun, ROOT),
             "settings": {k: v for k, v in vars(args).items() if k not in ("tritmoe",)},
             "serve": [], "a2a": [], "decode": None}
    study["machine"]["load_average_start"] = os.getloadavg()
    args.external_load = study["machine"]["load_average_start"][0]

    # Exchange cost at the model's shapes (and V3's when asked), every rank count > 1.
    for n in args.ranks:
        if n == 1:
            continue
        shapes = [(shape["hidden"], shape["experts"], shape["top_k"])]
        if args.a2a_v3:
            shapes.append((7168, 256, 8))
        for h, e, k in shapes:
            log(f"bench-a2a np={n} hidden {h}, {e} experts, top-{k}")
            r = benches.bench_a2a(args.tritmoe, args.mpirun, n, h, e, k, args.a2a_max_tokens,
                                  work)
            r.update({"ranks": n, "hidden": h, "experts": e, "top_k": k})
            study["a2a"].append(r)
        if args.device == "cuda" and args.exchange_bench:
            log(f"ep_exchange_bench np={n} (the GPU ranks' device exchange)")
            study.setdefault("device_exchange", []).append(
                benches.exchange_bench(args.exchange_bench, args.mpirun, n, work))

    # Compute input of the cluster model: one rank.
    threads1 = args.threads or args.cores
    batches = args.decode_batches or sorted(set([1] + args.concurrency))
    log(f"bench-decode np=1, {threads1} thread(s), batches {batches}")
    study["decode"] = benches.bench_decode(args.tritmoe, args.model, batches, work,
                                           threads=threads1, prompt=args.input_len,
                                           context=args.input_len, reps=args.decode_reps,
                                           device=args.device)

    for n in args.ranks:
        threads = args.threads or max(1, args.cores // n)
        study["serve"].append(run_rank_count(args, shape, n, threads, work))

    study["llama"] = None
    if args.llama_bin:
        log("llama.cpp peer")
        study["llama"] = llama_peer.run(args.llama_bin, args.model, args.llama_threads or
                                        args.cores, args.concurrency, args.input_len,
                                        args.output_len, work, gpu_layers=llama_gpu_layers(args))
    study["machine"]["load_average_end"] = os.getloadavg()
    study["wall_s"] = time.time() - t0
    return finish(args, study)


def finish(args, study):
    """Model rows, the CSV, study.json and the plots from a study's measurements."""
    shape = study["model"]["shape"]
    threads1 = args.threads or args.cores
    # The cluster model beside the measurements, and for GPU clusters.
    prof_dict = cpu_profile(args, shape, study["decode"], threads1)
    prof = cluster_model.Profile(prof_dict)
    model_only = [a for a in study["a2a"] if a["hidden"] == shape["hidden"]]
    mrows = model_rows(args, prof, {"serve": study["serve"], "a2a": model_only,
                                    "device_exchange": study.get("device_exchange", [])})
    device_exchange = args.device == "cuda" and bool(study.get("device_exchange"))
    study["cpu_model"] = {"profile": prof_dict,
                          "assumptions": model_assumptions(args, prof, device_exchange),
                          "rows": mrows}
    grows, gassume, gprof = gpu_rows(args)
    study["gpu_model"] = {"profile": gprof, "assumptions": gassume, "rows": grows,
                          "measured": "none: no GPU serving measurement in this study"}
    rows = []
    for rc in study["serve"]:
        for item in rc["levels"]:
            rows.append(serve_row(args, rc["ranks"], rc["threads_per_rank"], item))
    rows += mrows + a2a_rows(study) + grows
    if study.get("llama"):
        rows += llama_peer.csv_rows(study["llama"])
    write_csv(os.path.join(args.out, "study.csv"), rows)
    with open(os.path.join(args.out, "study.json"), "w") as f:
        json.dump(study, f, indent=1, default=str)
    log(f"wrote {args.out}/study.csv ({len(rows)} rows) and study.json in {study['wall_s']:.0f} s")

    if not args.no_plots:
        import plots
        made = plots.make_all(study, rows, args.out)
        log("plots: " + ", ".join(os.path.basename(p) for p in made))
    print_model_table(mrows)
    return 0


def print_model_table(mrows):
    print("\nmeasured vs modelled (cluster model calibrated on one rank):")
    print(f"{'ranks':>5s} {'conc':>4s} | {'step ms':>16s} | {'out tok/s':>18s} | "
          f"{'tok/s/user':>16s}")
    f = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
    for r in mrows:
        print(f"{r['ranks']:5d} {r['concurrency']:4d} | {f(r['measured_step_ms']):>7s} "
              f"{f(r['model_step_ms']):>8s} | {f(r['measured_output_tok_s']):>8s} "
              f"{f(r['model_output_tok_s']):>9s} | {f(r['measured_per_user_tok_s']):>7s} "
              f"{f(r['model_per_user_tok_s']):>8s}   err out {f(r['error_output_pct'])}%")


if __name__ == "__main__":
    sys.exit(main())
