"""The study's plots (PNG, matplotlib), each with the exact series it draws beside it.

  throughput_vs_user.png  output tok/s per rank against per-user tok/s (1000 / TPOT), one
                          curve per rank count (measured solid, cluster model dashed), and
                          llama.cpp's batched-bench on the same model when the study has it
  scaling.png             strong scaling (fixed concurrency: total tok/s against ranks) and
                          weak scaling (concurrency proportional to ranks: tok/s per rank),
                          each against the ideal line from one rank
  step_breakdown.png      step time per rank count split into attention, MoE compute,
                          dispatch, combine, other and idle (from /metrics), or the cluster
                          model's split (rest, experts, exchange) where the binary exports no
                          phase times, with the measured mean step time beside it
  imbalance.png           expert-load imbalance (max/mean routed tokens per rank) per MoE layer,
                          one line per rank count
  gpu_predictions.png     the cluster model's GPU predictions (tok/s per GPU against per-user
                          tok/s, one curve per cluster shape), titled as predictions

Every PNG has NAME.series.json: {"title", "series": [{"label", "x", "y"}...]} with the values
plotted, so a test can hold the picture to the CSV.
"""
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PHASE_ORDER = ["attention", "moe_compute", "dispatch", "combine", "other", "idle"]


def _save(fig, out, name, title, series, extra=None):
    path = os.path.join(out, name + ".png")
    fig.savefig(path, dpi=90)
    plt.close(fig)
    doc = {"title": title, "series": series}
    if extra:
        doc.update(extra)
    with open(os.path.join(out, name + ".series.json"), "w") as f:
        json.dump(doc, f, indent=1)
    return path


def _num(v):
    return None if v in ("", None) else float(v)


def throughput_vs_user(rows, out):
    fig, ax = plt.subplots(figsize=(7, 4.5))
    series = []
    ranks = sorted({r["ranks"] for r in rows if r["kind"] == "serve"})
    for n in ranks:
        pts = sorted(((r["per_user_tok_s"], r["output_tok_s_per_rank"], r["concurrency"])
                      for r in rows if r["kind"] == "serve" and r["ranks"] == n
                      and r.get("per_user_tok_s")), key=lambda p: p[2])
        if not pts:
            continue
        x, y, c = [p[0] for p in pts], [p[1] for p in pts], [p[2] for p in pts]
        line, = ax.plot(x, y, "o-", label=f"np={n} measured")
        for xi, yi, ci in zip(x, y, c):
            ax.annotate(f"c={ci}", (xi, yi), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
        series.append({"label": f"np={n} measured", "ranks": n, "kind": "serve",
                       "concurrency": c, "x": x, "y": y})
        m = sorted(((r["model_per_user_tok_s"], r["model_output_tok_s"] / n, r["concurrency"])
                    for r in rows if r["kind"] == "model" and r["ranks"] == n),
                   key=lambda p: p[2])
        if m:
            ax.plot([p[0] for p in m], [p[1] for p in m], "--", color=line.get_color(),
                    alpha=0.7, label=f"np={n} model")
            series.append({"label": f"np={n} model", "ranks": n, "kind": "model",
                           "concurrency": [p[2] for p in m], "x": [p[0] for p in m],
                           "y": [p[1] for p in m]})
    ll = sorted(((r["per_user_tok_s"], r["output_tok_s"], r["concurrency"]) for r in rows
                 if r["kind"] == "llama" and r["config"] == "llama.cpp batched-bench"),
                key=lambda p: p[2])
    if ll:
        ax.plot([p[0] for p in ll], [p[1] for p in ll], "s:", color="gray",
                label="llama.cpp (1 process)")
        series.append({"label": "llama.cpp batched-bench", "ranks": 1, "kind": "llama",
                       "concurrency": [p[2] for p in ll], "x": [p[0] for p in ll],
                       "y": [p[1] for p in ll]})
    one = [r for r in rows if r["kind"] == "llama" and r.get("per_user_tok_s")
           and r["config"] in ("llama.cpp llama-completion", "llama.cpp llama-bench tg")]
    for r in one:
        ax.plot([r["per_user_tok_s"]], [r["output_tok_s"]], "x", color="black", ms=8,
                label=r["config"] + " (1 stream)")
        series.append({"label": r["config"], "ranks": 1, "kind": "llama", "concurrency": [1],
                       "x": [r["per_user_tok_s"]], "y": [r["output_tok_s"]]})
    ax.set_xlabel("per-user tok/s (1000 / mean TPOT)")
    ax.set_ylabel("output tok/s per rank")
    ax.set_title("Throughput per rank vs interactivity")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, out, "throughput_vs_user", "output tok/s per rank vs per-user tok/s",
                 series)


def scaling(rows, out):
    serve = [r for r in rows if r["kind"] == "serve"]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    series = []
    ranks = sorted({r["ranks"] for r in serve})
    base = min(ranks)
    for c in sorted({r["concurrency"] for r in serve}):
        pts = sorted((r["ranks"], r["output_tok_s"]) for r in serve if r["concurrency"] == c)
        if len(pts) < 2:
            continue
        line, = a1.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=f"c={c}")
        t0 = dict(pts).get(base)
        if t0:
            ideal = [t0 * n / base for n, _ in pts]
            a1.plot([p[0] for p in pts], ideal, ":", color=line.get_color(), alpha=0.6)
            series.append({"label": f"strong c={c} ideal", "kind": "strong_ideal",
                           "concurrency": c, "x": [p[0] for p in pts], "y": ideal})
        series.append({"label": f"strong c={c}", "kind": "strong", "concurrency": c,
                       "x": [p[0] for p in pts], "y": [p[1] for p in pts]})
    a1.set_xscale("log", base=2)
    a1.set_xticks(ranks, [str(n) for n in ranks])
    a1.set_xlabel("ranks")
    a1.set_ylabel("output tok/s (total)")
    a1.set_title("Strong scaling (fixed concurrency; dotted: ideal)")
    a1.grid(alpha=0.3)
    a1.legend(fontsize=8)
    ratios = {}
    for r in serve:
        if r["concurrency"] % r["ranks"] == 0:
            ratios.setdefault(r["concurrency"] // r["ranks"], []).append(r)
    for q in sorted(ratios):
        pts = sorted((r["ranks"], r["output_tok_s_per_rank"]) for r in ratios[q])
        if len(pts) < 2:
            continue
        line, = a2.plot([p[0] for p in pts], [p[1] for p in pts], "o-",
                        label=f"{q} stream(s) per rank")
        t0 = dict(pts).get(base)
        if t0:
            a2.plot([p[0] for p in pts], [t0] * len(pts), ":", color=line.get_color(),
                    alpha=0.6)
            series.append({"label": f"weak {q}/rank ideal", "kind": "weak_ideal",
                           "per_rank": q, "x": [p[0] for p in pts], "y": [t0] * len(pts)})
        series.append({"label": f"weak {q}/rank", "kind": "weak", "per_rank": q,
                       "x": [p[0] for p in pts], "y": [p[1] for p in pts]})
    a2.set_xscale("log", base=2)
    a2.set_xticks(ranks, [str(n) for n in ranks])
    a2.set_xlabel("ranks")
    a2.set_ylabel("output tok/s per rank")
    a2.set_title("Weak scaling (concurrency ~ ranks; dotted: ideal)")
    a2.grid(alpha=0.3)
    a2.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, out, "scaling", "strong and weak scaling", series)


def step_breakdown(rows, out):
    serve = [r for r in rows if r["kind"] == "serve"]
    ranks = sorted({r["ranks"] for r in serve})
    conc = max(set.intersection(*[{r["concurrency"] for r in serve if r["ranks"] == n}
                                  for n in ranks]))
    pick = {r["ranks"]: r for r in serve if r["concurrency"] == conc}
    measured = all(pick[n].get("attention_ms") not in (None, "") for n in ranks)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    series = []
    x = list(range(len(ranks)))
    bottom = [0.0] * len(ranks)
    if measured:
        parts = [(p, [float(pick[n].get(f"{p}_ms") or 0.0) for n in ranks]) for p in PHASE_ORDER]
        source = "measured (/metrics, mean over ranks per step)"
    else:
        model = {r["ranks"]: r for r in rows if r["kind"] == "model" and r["concurrency"] == conc}
        parts = []
        for key, label in (("rest", "rest (attention, dense, shared, per-token)"),
                           ("experts", "routed experts (weights)"),
                           ("exchange", "dispatch + combine"), ("prefill", "prefill share")):
            parts.append((label, [float(model.get(n, {}).get(f"model_{key}_ms") or 0.0)
                                  for n in ranks]))
        source = ("modelled split (the binary exports no per-phase step times); "
                  "dots: measured mean step time")
    for label, vals in parts:
        ax.bar(x, vals, bottom=bottom, label=label)
        series.append({"label": label, "x": ranks, "y": vals})
        bottom = [b + v for b, v in zip(bottom, vals)]
    step = [_num(pick[n].get("mean_step_ms")) for n in ranks]
    if all(s is not None for s in step):
        ax.plot(x, step, "kD", label="measured mean step")
        series.append({"label": "measured mean step", "x": ranks, "y": step})
    ax.set_xticks(x, [f"np={n}" for n in ranks])
    ax.set_ylabel("ms per engine step")
    ax.set_title(f"Step time breakdown at concurrency {conc}")
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, out, "step_breakdown", f"step breakdown, concurrency {conc}", series,
                 {"source": source, "concurrency": conc})


def imbalance(study, out):
    fig, ax = plt.subplots(figsize=(7, 4))
    series = []
    for rc in study["serve"]:
        levels = [i for i in rc["levels"] if i["metrics"]["imbalance"]]
        if not levels or rc["ranks"] == 1:
            continue
        imb = levels[-1]["metrics"]["imbalance"]  # the heaviest load level
        layers = sorted(int(k) for k in imb)
        vals = [imb[k] if k in imb else imb[str(k)] for k in layers]
        ax.plot(layers, vals, "o-", label=f"np={rc['ranks']}")
        series.append({"label": f"np={rc['ranks']}", "ranks": rc["ranks"], "x": layers,
                       "y": vals})
    ax.axhline(1.0, color="gray", ls=":", lw=1)
    if not series:
        ax.text(0.5, 0.5, "expert-load imbalance not available:\nthe binary exports no "
                "tritmoe_expert_load_imbalance", ha="center", va="center",
                transform=ax.transAxes)
    ax.set_xlabel("MoE layer (0 = the first MoE layer)")
    ax.set_ylabel("max / mean routed tokens per rank")
    ax.set_title("Expert-load imbalance per MoE layer (server's last window, heaviest level)")
    ax.grid(alpha=0.3)
    if series:
        ax.legend(fontsize=8)
    return _save(fig, out, "imbalance", "expert-load imbalance per layer", series,
                 {"available": bool(series)})


def gpu_predictions(rows, out):
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    series = []
    configs = []
    for r in rows:
        if r["kind"] == "prediction" and r["config"] not in configs:
            configs.append(r["config"])
    for cfg in configs:
        pts = sorted(((r["model_per_user_tok_s"], r["output_tok_s_per_rank"], r["concurrency"])
                      for r in rows if r["kind"] == "prediction" and r["config"] == cfg),
                     key=lambda p: p[2])
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o--", label=cfg)
        series.append({"label": cfg, "kind": "prediction", "concurrency": [p[2] for p in pts],
                       "x": [p[0] for p in pts], "y": [p[1] for p in pts]})
    ax.set_xlabel("per-user tok/s (predicted)")
    ax.set_ylabel("output tok/s per GPU (predicted)")
    ax.set_title("PREDICTED by the cluster model, not measured: DeepSeek-V3 ud-1.58 on H200s")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, out, "gpu_predictions", "predicted tok/s per GPU vs per-user tok/s", series)


def make_all(study, rows, out):
    # CSV-formatted rows carry strings; work from the typed rows the study built.
    made = [throughput_vs_user(rows, out), scaling(rows, out), step_breakdown(rows, out),
            imbalance(study, out)]
    if any(r["kind"] == "prediction" for r in rows):
        made.append(gpu_predictions(rows, out))
    return made
