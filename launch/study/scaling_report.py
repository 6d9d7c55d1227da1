#!/usr/bin/env python3
"""Write docs/SCALING.md from a study folder (study.json, study.csv and the plots).

  launch/study/scaling_report.py --study /tmp/study-small --out docs/SCALING.md \
      --png-dir docs/scaling [--notes-file docs/scaling/notes.md] [--note "text"]... \
      [--gpu-study /tmp/study-gpu --gpu-command "..." --gpu-notes-file docs/scaling/gpu-notes.md]

--gpu-study adds a section for a study run with --device cuda (its CSV and plots go to
PNG_DIR/gpu/).

The PNGs are copied into --png-dir and linked relative to the page. Every number on the page
comes from the study files; --note / --notes-file add the author's observations under "Reading
the figures".
"""
import argparse
import csv
import json
import os
import re
import shutil
import sys

PLOTS = [("throughput_vs_user", "Output tok/s per rank against per-user tok/s"),
         ("scaling", "Strong and weak scaling against the ideal"),
         ("step_breakdown", "Step time breakdown per rank count"),
         ("imbalance", "Expert-load imbalance per MoE layer"),
         ("gpu_predictions", "GPU clusters, PREDICTED (not measured): tok/s per GPU against "
                             "per-user tok/s")]


def f(v, nd=1):
    if v in (None, ""):
        return "-"
    try:
        return f"{float(v):.{nd}f}"
    except ValueError:
        return str(v)


def table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def copy_study_files(study_dir, png_dir, plots=None):
    """study.csv, study.json and the PNGs (with their series) of `plots` (default: all)."""
    os.makedirs(png_dir, exist_ok=True)
    # study.json too, so that the page can be made again without the study folder
    for name in ("study.csv", "study.json"):
        shutil.copy(os.path.join(study_dir, name), os.path.join(png_dir, name))
    for name, _ in plots or PLOTS:
        for ext in (".png", ".series.json"):
            src = os.path.join(study_dir, name + ext)
            if os.path.exists(src):
                shutil.copy(src, os.path.join(png_dir, name + ext))


def read_notes(path):
    with open(path) as fn:
        return [" ".join(p.split()) for p in fn.read().split("\n\n") if p.strip()]


def gpu_section(gdir, png_dir, rel, command, notes):
    """The measured GPU study: serving points, llama.cpp on the same file and GPU, the model."""
    study = json.load(open(os.path.join(gdir, "study.json")))
    rows = list(csv.DictReader(open(os.path.join(gdir, "study.csv"))))
    copy_study_files(gdir, png_dir, PLOTS[:1])  # one rank: only the throughput plot says much
    m, s, shape = study["machine"], study["settings"], study["model"]["shape"]
    serve = [r for r in rows if r["kind"] == "serve"]
    model = [r for r in rows if r["kind"] == "model"]
    llama = [r for r in rows if r["kind"] == "llama"]
    gpus = ", ".join(g.get("name", "?") for g in m["gpus"]) or "none"
    L = [f"## Measured on GPUs: {len(m['gpus'])} x {gpus.split(',')[0]}\n"]
    L.append(f"`{os.path.basename(study['model']['path'])}`: DeepSeek-V3 shapes (hidden "
             f"{shape['hidden']}, {shape['experts']} experts, top-{shape['top_k']}) cut to "
             f"{shape['layers']} layers ({shape['moe_layers']} MoE), ud-1.58 weights, generated "
             "on the GPU machine; `tritmoe serve --device cuda` at "
             f"{', '.join(str(x['ranks']) for x in study['serve'])} rank(s), bench-serve with "
             f"random prompts of {s['input_len']} tokens and {s['output_len']} generated "
             f"(ignore_eos), {s['repeat']} run(s) per level (median shown). With so few layers "
             "the lm_head and the per-step host work weigh more than in the 61-layer model: "
             "read these as the serving stack's figures, and docs/PERF.md's GPU section for the "
             "61-layer extrapolation.\n")
    L.append("```\n" + (command or " ".join(study.get("argv", []))) + "\n```\n")
    L.append(table(["", ""], [
        ["GPU", f"{gpus} (driver {m['gpus'][0].get('driver', '?') if m['gpus'] else '-'}, "
                f"PCIe gen {m['gpus'][0].get('pcie_gen', '?') if m['gpus'] else '-'})"],
        ["host", f"{m['cpu'].get('model')} ({m['cpu'].get('logical_cpus')} logical CPUs), "
                 f"{m.get('memory_gb')} GB"],
        ["commit", m["git"]["commit"][:12]],
        ["study wall time", f"{f(study['wall_s'], 0)} s"],
    ]))
    L.append("")
    L.append(table(["ranks", "concurrency", "output tok/s", "runs (tok/s)", "per-user tok/s",
                    "TTFT median (ms)", "TPOT mean (ms)", "mean step (ms)", "tokens/step",
                    "failed"],
                   [[r["ranks"], r["concurrency"], f(r["output_tok_s"]),
                     (re.search(r"median of runs at ([\d. /]+) tok/s", r["notes"]) or
                      [None, "-"])[1], f(r["per_user_tok_s"]), f(r["ttft_ms_median"], 1),
                     f(r["tpot_ms_mean"], 2), f(r["mean_step_ms"], 2),
                     f(r["mean_tokens_per_step"]), r["failed"]] for r in serve]))
    L.append("")
    if llama:
        peer = study.get("llama") or {}
        stamp, gpus = peer.get("stamp", ""), peer.get("gpus") or 1
        L.append(f"llama.cpp on the same file and {'GPUs' if gpus > 1 else 'GPU'} (CUDA build "
                 f"of commit {stamp.split('commit=')[-1][:8] or '?'}, sm_90, no flash-attention "
                 f"kernels, every layer on the GPU: -ngl {peer.get('gpu_layers')}"
                 + (f"; one process over {gpus} GPUs, its default layer split" if gpus > 1
                    else "") + "). "
                 "`llama-batched-bench` output tok/s = B x OSL / (prefill + decode time), as "
                 "bench-serve counts it; per-user = OSL / decode time. TritMoE / llama.cpp is "
                 "the ratio of output tok/s at the same concurrency on as many GPUs (and of "
                 "per-user tok/s for llama-bench's one stream):\n")
        ours = {(r["ranks"], r["concurrency"]): r for r in serve}
        def ratio(r):
            o = ours.get((r["ranks"], r["concurrency"]))
            if not o:
                return "-"
            if "llama-bench" in r["config"]:
                return (f"{float(o['per_user_tok_s']) / float(r['per_user_tok_s']):.2f}x "
                        "per user" if r["per_user_tok_s"] else "-")
            return f"{float(o['output_tok_s']) / float(r['output_tok_s']):.2f}x"
        L.append(table(["tool", "GPUs", "concurrency", "ISL/OSL", "output tok/s",
                        "per-user tok/s", "TritMoE / llama.cpp", "notes"],
                       [[r["config"], r["ranks"], r["concurrency"],
                         f"{r['input_len']}/{r['output_len']}",
                         f(r["output_tok_s"]), f(r["per_user_tok_s"]), ratio(r), r["notes"]]
                        for r in llama]))
        L.append("")
    for name, title in PLOTS[:1]:
        if os.path.exists(os.path.join(png_dir, name + ".png")):
            L.append(f"**{title}, GPU** (`gpu/{name}.series.json` beside it holds the values)\n")
            L.append(f"![{title}, GPU]({rel}/{name}.png)\n")
    if model:
        L.append("Cluster model against these points (calibrated on the same GPU's "
                 "`bench-decode --device cuda`; at one rank this checks the serving terms — "
                 "prefill amortization, batch interpolation — not the exchange):\n")
        L.append(table(["ranks", "concurrency", "step ms measured", "step ms model", "error",
                        "out tok/s measured", "out tok/s model", "error"],
                       [[r["ranks"], r["concurrency"], f(r["measured_step_ms"], 2),
                         f(r["model_step_ms"], 2), f(r["error_step_pct"], 0) + "%",
                         f(r["measured_output_tok_s"]), f(r["model_output_tok_s"]),
                         f(r["error_output_pct"], 0) + "%"] for r in model]))
        L.append("")
    L.append("Per-phase step times: the GPU backend reports a step as one phase (no attention / "
             "MoE split inside a CUDA-graph step), so the breakdown is in docs/PERF.md's "
             "per-op profile instead.\n")
    if notes:
        L += ["* " + n for n in notes]
        L.append("")
    return L


def gpu_summary(gpu_study):
    gm = gpu_study["machine"]
    return [
        GPU_SUMMARY_BEGIN,
        f"* **Measured (GPU)**: {len(gm['gpus'])} x {gm['gpus'][0]['name']}, "
        f"`{os.path.basename(gpu_study['model']['path'])}` served on "
        f"{', '.join(str(x['ranks']) for x in gpu_study['serve'])} rank(s)"
        + (", llama.cpp on the same file and "
           + ("GPUs" if (gpu_study["llama"].get("gpus") or 1) > 1 else "GPU") + " beside it"
           if gpu_study.get("llama") else "")
        + " (section \"Measured on GPUs\").",
    ] + ([] if max(x["ranks"] for x in gpu_study["serve"]) > 1 else [
        "* **Not measured: more than one GPU.** This study ran on one GPU. Expert parallelism "
        "over GPU ranks exists (`mpirun -np N tritmoe serve --device cuda`, runtime/gpu/README.md) "
        "but has not been measured on more than one GPU, so the multi-GPU and multi-node rows in "
        "\"GPU predictions\" are the cluster model's, with no measured error."]) + [
        GPU_SUMMARY_END]


GPU_SUMMARY_BEGIN, GPU_SUMMARY_END = "<!-- gpu-summary -->", "<!-- /gpu-summary -->"
GPU_SECTION_BEGIN, GPU_SECTION_END = "<!-- gpu-section -->", "<!-- /gpu-section -->"


GPU_ERROR_UNKNOWN = ("* the model's error on GPUs is unknown until a 2-GPU point is measured (the "
                     "one-GPU points above only check its serving terms); on the CPU its error is "
                     "in the table above")
GPU_ERROR_MEASURED = ("* the model's error on GPUs: against the measured multi-GPU points in "
                      "\"Measured on GPUs\" above (its error table and notes); on the CPU its "
                      "error is in the table above")


def splice_gpu(page, summary, section, multi_gpu=False):
    """Puts a GPU study into an existing page: its summary replaces the "Not measured: GPUs"
    bullet (or the previous summary), its section goes before "## GPU predictions" (or replaces
    the previous one). For pages whose CPU study folder is gone."""
    text = open(page).read()
    def put(text, begin, end, block, fallback):
        if begin in text:
            i, j = text.index(begin), text.index(end) + len(end)
            return text[:i] + block + text[j:]
        return fallback(text, block)
    def after_not_measured(text, block):
        i = text.index("* **Not measured: GPUs.**")
        j = text.index("\n", i)
        return text[:i] + block + text[j:]
    def before_predictions(text, block):
        i = text.index("## GPU predictions")
        return text[:i] + block + "\n\n" + text[i:]
    text = put(text, GPU_SUMMARY_BEGIN, GPU_SUMMARY_END, "\n".join(summary), after_not_measured)
    text = put(text, GPU_SECTION_BEGIN, GPU_SECTION_END,
               "\n".join([GPU_SECTION_BEGIN] + section + [GPU_SECTION_END]), before_predictions)
    text = text.replace("* the model's error on GPUs is unknown until a 2-GPU point is measured; "
                        "on the CPU its error is in the table above", GPU_ERROR_UNKNOWN)
    text = text.replace(GPU_ERROR_MEASURED if not multi_gpu else GPU_ERROR_UNKNOWN,
                        GPU_ERROR_UNKNOWN if not multi_gpu else GPU_ERROR_MEASURED)
    with open(page, "w") as fo:
        fo.write(text.replace("\n\n\n", "\n\n"))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--study", help="the (CPU) study the page is made from")
    ap.add_argument("--splice", action="store_true",
                    help="with --gpu-study and no --study: put the GPU study into the existing "
                         "page --out (when the CPU study folder is gone)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--png-dir", required=True)
    ap.add_argument("--command", default="", help="the study command, shown on the page")
    ap.add_argument("--note", action="append", default=[])
    ap.add_argument("--notes-file", help="observations, one per paragraph (blank-line separated)")
    ap.add_argument("--gpu-study", help="a study run with --device cuda: its own section")
    ap.add_argument("--gpu-command", default="", help="the GPU study's commands, shown on the page")
    ap.add_argument("--gpu-notes-file", help="observations on the GPU study, one per paragraph")
    a = ap.parse_args(argv)
    if a.notes_file:
        a.note += read_notes(a.notes_file)
    if a.splice:
        if not a.gpu_study or a.study:
            ap.error("--splice takes --gpu-study and no --study")
        rel = os.path.relpath(a.png_dir, os.path.dirname(os.path.abspath(a.out)))
        section = gpu_section(a.gpu_study, os.path.join(a.png_dir, "gpu"), rel + "/gpu",
                              a.gpu_command,
                              read_notes(a.gpu_notes_file) if a.gpu_notes_file else [])
        gpu_study = json.load(open(os.path.join(a.gpu_study, "study.json")))
        splice_gpu(a.out, gpu_summary(gpu_study), section,
                   multi_gpu=max(x["ranks"] for x in gpu_study["serve"]) > 1)
        print(f"spliced the GPU study into {a.out}")
        return 0
    if not a.study:
        ap.error("--study is required (or --splice with --gpu-study)")
    study = json.load(open(os.path.join(a.study, "study.json")))
    rows = list(csv.DictReader(open(os.path.join(a.study, "study.csv"))))
    rel = os.path.relpath(a.png_dir, os.path.dirname(os.path.abspath(a.out)))
    copy_study_files(a.study, a.png_dir)
    gpu = None
    if a.gpu_study:
        gpu = gpu_section(a.gpu_study, os.path.join(a.png_dir, "gpu"), rel + "/gpu",
                          a.gpu_command, read_notes(a.gpu_notes_file) if a.gpu_notes_file else [])
        gpu_study = json.load(open(os.path.join(a.gpu_study, "study.json")))

    m = study["machine"]
    s = study["settings"]
    shape = study["model"]["shape"]
    serve = [r for r in rows if r["kind"] == "serve"]
    model = [r for r in rows if r["kind"] == "model"]
    a2a = [r for r in rows if r["kind"] == "a2a"]
    pred = [r for r in rows if r["kind"] == "prediction"]
    llama = [r for r in rows if r["kind"] == "llama"]
    L = []
    L.append("# TritMoE throughput scaling\n")
    L.append("How throughput grows with ranks and load, measured the way the field reports it "
             "(output tok/s per rank against per-user tok/s, strong and weak scaling, per-step "
             "breakdown; ../shared/reference/api-conventions.md §5), with a cluster model that "
             "extrapolates to GPUs and nodes. This page is generated by "
             "`launch/study/scaling_report.py` from one study run by `launch/study/study.py`; "
             "do not edit it by hand.\n")
    L.append("## What was measured, and what was not\n")
    L.append("* **Measured (CPU)**: the study below, on this page's machine: "
             f"`{os.path.basename(study['model']['path'])}` ({shape['layers']} layers, "
             f"{shape['moe_layers']} MoE, {shape['experts']} experts, top-{shape['top_k']}, "
             f"hidden {shape['hidden']}) served on {', '.join(str(x['ranks']) for x in study['serve'])}"
             " rank(s).")
    if gpu:
        L += gpu_summary(gpu_study)
    elif not m["gpus"]:
        L.append("* **Not measured: GPUs.** This study ran on a machine without a GPU, and no "
                 "device time was available to run it on one (`tritmoe serve --device cuda` "
                 "serves from one GPU; more than one GPU per job is not supported yet). So "
                 "there is no measured point on 1, 2 or 4 H200s and no measured error for the "
                 "GPU predictions. The GPU section gives **predictions only**, from the one-GPU "
                 "step times in docs/PERF.md.")
    L.append("")
    L.append("## How to run it\n")
    cmd = a.command or " ".join(study.get("argv", []))
    L.append("```\n" + cmd + "\nlaunch/study/scaling_report.py --study <out> --out docs/SCALING.md "
             "--png-dir docs/scaling\n```\n")
    L.append("The driver starts `tritmoe serve` under `tests/mpi/mpirun.sh` for each rank count, "
             "runs `tritmoe bench-serve` at each concurrency (random prompts of "
             f"{s['input_len']} tokens, {s['output_len']} generated with ignore_eos), scrapes "
             "`/metrics` before and after every level, runs `tritmoe bench-a2a "
             "--dispatch-combine` at the model's shapes and `tritmoe bench-decode` on one rank "
             "(the model's compute input), stops every server with SIGTERM (the process group is "
             "killed if it does not stop), and writes `study.json`, `study.csv` and the plots. "
             "`launch/study/cluster_model.py` prints the GPU predictions on its own.\n")
    L.append(f"The study's CSV is [{rel}/study.csv]({rel}/study.csv) (a row per point; columns "
             "in launch/study/study.py).\n")
    L.append("## Machine\n")
    cpu = m["cpu"]
    L.append(table(["", ""], [
        ["CPU", f"{cpu.get('model')} ({cpu.get('logical_cpus')} logical CPUs, "
                f"{', '.join(cpu.get('flags_of_note', []))})"],
        ["memory", f"{m.get('memory_gb')} GB"],
        ["GPUs", ", ".join(g.get("name", "?") for g in m["gpus"]) or "none"],
        ["links", m["link_topology"].splitlines()[0]],
        ["MPI", m["versions"]["mpirun"]],
        ["commit", f"{m['git']['commit'][:12]}{' (with uncommitted changes)' if m['git']['dirty'] else ''}"],
        ["load average", f"{f(m['load_average_start'][0])} at the start, "
                         f"{f(m['load_average_end'][0])} at the end (1 min)"],
        ["study wall time", f"{f(study['wall_s'], 0)} s"],
    ]))
    L.append("")
    L.append("The machine is a shared 2-core VM: other agents were building and testing while the "
             "study ran (see the load average), so absolute figures move by up to 2x between "
             "runs; compare the columns of one run with each other.\n")

    L.append("## Serving: measured points\n")
    L.append("Per-user tok/s = 1000 / mean TPOT; output tok/s per rank = output tok/s / ranks; "
             "step time and tokens per step from the server's "
             "`tritmoe_step_duration_seconds` and `tritmoe_iteration_tokens_total`.\n")
    def runs(r):
        m = re.search(r"median of runs at ([\d. /]+) tok/s", r["notes"])
        return m.group(1) if m else "-"

    L.append(table(["ranks", "threads/rank", "concurrency", "output tok/s", "runs (tok/s)",
                    "tok/s per rank", "per-user tok/s", "TTFT median (ms)", "TPOT mean (ms)",
                    "mean step (ms)", "tokens/step", "failed"],
                   [[r["ranks"], r["threads_per_rank"], r["concurrency"], f(r["output_tok_s"]),
                     runs(r), f(r["output_tok_s_per_rank"]), f(r["per_user_tok_s"]),
                     f(r["ttft_ms_median"], 0), f(r["tpot_ms_mean"], 1), f(r["mean_step_ms"], 1),
                     f(r["mean_tokens_per_step"]), r["failed"]] for r in serve]))
    L.append("")
    if llama:
        L.append("llama.cpp on the same file, same machine, one process; the output column is "
                 "generated tokens over prompt + decode time, as bench-serve counts it "
                 f"({llama[0]['threads_per_rank']} threads; build "
                 f"{(study['llama'] or {}).get('stamp', '').split('commit=')[-1][:8] or '?'}, "
                 "the reference-numerics configuration of docs/LLAMA_CPP_PEER.md: AVX2, no "
                 "AVX-512, no repack). `llama-batched-bench` output tok/s = B x OSL / (prefill + "
                 "decode time), the same definition as bench-serve's; per-user tok/s = OSL / "
                 "decode time:\n")
        L.append(table(["tool", "concurrency", "ISL/OSL", "output tok/s", "per-user tok/s",
                        "notes"],
                       [[r["config"], r["concurrency"], f"{r['input_len']}/{r['output_len']}",
                         f(r["output_tok_s"]), f(r["per_user_tok_s"]), r["notes"]]
                        for r in llama]))
        L.append("")
    elif study.get("llama") is None:
        L.append("llama.cpp: not run in this study (no --llama-bin).\n")
    if study.get("llama") and study["llama"].get("errors"):
        L.append("llama.cpp errors: " + "; ".join(study["llama"]["errors"]) + "\n")

    L.append("## Plots\n")
    for name, title in PLOTS:
        if os.path.exists(os.path.join(a.png_dir, name + ".png")):
            L.append(f"**{title}** (`{name}.series.json` beside it holds the plotted values)\n")
            L.append(f"![{title}]({rel}/{name}.png)\n")

    L.append("## Step breakdown and imbalance\n")
    have_phases = any(r["attention_ms"] for r in serve)
    if have_phases:
        L.append("Mean over ranks of seconds per engine step in each phase (from "
                 "`tritmoe_step_phase_seconds_total`); idle = step wall time minus the phases.\n")
        L.append(table(["ranks", "concurrency", "attention", "MoE compute", "dispatch",
                        "combine", "other", "idle", "step (ms)"],
                       [[r["ranks"], r["concurrency"], f(r["attention_ms"], 2),
                         f(r["moe_compute_ms"], 2), f(r["dispatch_ms"], 2),
                         f(r["combine_ms"], 2), f(r["other_ms"], 2), f(r["idle_ms"], 2),
                         f(r["mean_step_ms"], 2)] for r in serve]))
    else:
        L.append("Per-phase step times: **not available** from the binary this study ran (it "
                 "exports no `tritmoe_step_phase_seconds_total`); the breakdown plot shows the "
                 "cluster model's split instead, with the measured step time beside it.")
    L.append("")
    imb = [r for r in serve if r["imbalance_max"]]
    if imb:
        L.append("Expert-load imbalance: `tritmoe_expert_load_imbalance` per MoE layer (max over "
                 "mean routed tokens per rank under the placement in use, over the server's last "
                 "window), read at the end of each level:\n")
        L.append(table(["ranks", "concurrency", "max over layers of max/mean tokens per rank"],
                       [[r["ranks"], r["concurrency"], f(r["imbalance_max"], 2)] for r in imb]))
    else:
        L.append("Expert-load imbalance: **not available** from this binary "
                 "(`tritmoe_expert_load_imbalance`).")
    L.append("")

    L.append("## Exchange cost: bench-a2a dispatch + combine\n")
    L.append("p50 over iterations of the slowest rank, at the model's shapes (float32 rows), "
             "MPI shared memory on this host:\n")
    by = {}
    for r in a2a:
        by.setdefault((r["config"], r["ranks"]), []).append(r)
    toks = sorted({int(r["tokens_per_rank"]) for r in a2a})
    hdr = ["shape", "ranks"] + [f"{t} tok/rank (us)" for t in toks]
    trs = []
    for (cfg, n), rs in sorted(by.items()):
        d = {int(r["tokens_per_rank"]): r for r in rs}
        trs.append([cfg, n] + [f"{f(d[t]['dispatch_us'], 0)} + {f(d[t]['combine_us'], 0)}"
                               if t in d else "-" for t in toks])
    L.append(table(hdr, trs) if trs else "(one rank only: no exchange)")
    L.append("")

    L.append("## Cluster model against the measured points (CPU)\n")
    L.append("The model is calibrated on one rank (bench-decode) and the measured exchange; it "
             "predicts every other point. Error = (model - measured) / measured.\n")
    L.append(table(["ranks", "concurrency", "step ms measured", "step ms model", "error",
                    "out tok/s measured", "out tok/s model", "error", "per-user measured",
                    "per-user model", "error"],
                   [[r["ranks"], r["concurrency"], f(r["measured_step_ms"], 2),
                     f(r["model_step_ms"], 2), f(r["error_step_pct"], 0) + "%",
                     f(r["measured_output_tok_s"]), f(r["model_output_tok_s"]),
                     f(r["error_output_pct"], 0) + "%", f(r["measured_per_user_tok_s"]),
                     f(r["model_per_user_tok_s"]), f(r["error_per_user_pct"], 0) + "%"]
                    for r in model]))
    L.append("\nAssumptions (as the model states them):\n")
    L += ["* " + x for x in study["cpu_model"]["assumptions"]]
    L.append("")

    if gpu:
        L += [GPU_SECTION_BEGIN] + gpu + [GPU_SECTION_END, ""]
    L.append("## GPU predictions (not measurements)\n")
    L.append("**Every figure in this section is a prediction of the cluster model; none was "
             "measured.** Compute input: one H200's decode step times from docs/PERF.md (GPU "
             "section, fused small ops; 6-layer model extrapolated to 61 layers). Exchange: "
             "stated link figures from published measurements (launch/study/profiles/links.json). "
             "DeepSeek-V3 shapes: 61 layers, 58 MoE, 256 experts, top-8, hidden 7168; ud-1.58 "
             "weights. Batch per GPU = sequences each GPU holds (data-parallel attention).\n")
    L.append(table(["configuration", "GPUs", "batch/GPU", "step (ms)", "rest", "experts",
                    "exchange", "tok/s", "tok/s per GPU", "tok/s per user", "weights fit"],
                   [[r["config"], r["ranks"], str(int(r["concurrency"]) // int(r["ranks"])),
                     f(r["model_step_ms"], 1), f(r["model_rest_ms"], 1),
                     f(r["model_experts_ms"], 1), f(r["model_exchange_ms"], 1),
                     f(r["model_output_tok_s"], 0), f(r["output_tok_s_per_rank"], 0),
                     f(r["model_per_user_tok_s"], 1),
                     "yes" if r["fits_memory"] == "True" else "**no**"] for r in pred]))
    L.append("\nAssumptions:\n")
    L += ["* " + x for x in study["gpu_model"]["assumptions"]]
    L.append(GPU_ERROR_UNKNOWN)
    L.append("")
    if a.note:
        L.append("## Reading the figures\n")
        L += ["* " + n for n in a.note]
        L.append("")
    with open(a.out, "w") as fo:
        fo.write("\n".join(str(x) for x in L).replace("\n\n\n", "\n\n"))
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
