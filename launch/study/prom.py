"""Prometheus text exposition: parse a /metrics page and turn two scrapes into a step breakdown.

The server's counters are cumulative, so a load level's share is the difference between the
scrape after it and the scrape before it. Series that the running binary does not export yet
(per-phase step times, per-rank tokens, expert-load imbalance) come back as None, and callers
print "not available" rather than a zero.
"""
import re
import urllib.request

_LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')

PHASES = ("attention", "moe_compute", "dispatch", "combine", "other")


def parse(text):
    """{(name, frozenset(labels.items())): value} of every sample line."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _LINE.match(line)
        if not m:
            continue
        labels = frozenset(_LABEL.findall(m.group(3) or ""))
        try:
            out[(m.group(1), labels)] = float(m.group(4))
        except ValueError:
            continue
    return out


def scrape(port, host="127.0.0.1", timeout=10):
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=timeout) as r:
        return parse(r.read().decode())


def series(samples, name):
    """[(labels dict, value)] of one metric name."""
    return [(dict(k[1]), v) for k, v in samples.items() if k[0] == name]


def total(samples, name):
    """Sum over all label sets, or None when the metric is absent."""
    vals = [v for _, v in series(samples, name)]
    return sum(vals) if vals else None


def _delta(before, after, name):
    """{labels: after - before} of a counter, or None when the metric is absent."""
    a = series(after, name)
    if not a:
        return None
    b = {frozenset(l.items()): v for l, v in series(before, name)}
    return {frozenset(l.items()): v - b.get(frozenset(l.items()), 0.0) for l, v in a}


def level_summary(before, after):
    """What one load level did, from the scrapes around it.

    Returns a dict: steps, mean_step_s, mean_tokens_per_step (from the step-duration and
    iteration-token histograms), phase_s_per_step {phase: mean over ranks of seconds per step},
    phase_s_per_step_max {phase: the slowest rank's}, rank_tokens {rank: tokens}, and
    imbalance {layer: max/mean}; a key is None when the binary does not export its metric.
    """
    out = {"steps": None, "mean_step_s": None, "mean_tokens_per_step": None,
           "phase_s_per_step": None, "phase_s_per_step_max": None, "rank_tokens": None,
           "imbalance": None}
    steps = _delta(before, after, "tritmoe_step_duration_seconds_count")
    step_sum = _delta(before, after, "tritmoe_step_duration_seconds_sum")
    tok_sum = _delta(before, after, "tritmoe_iteration_tokens_total_sum")
    if steps:
        n = sum(steps.values())
        out["steps"] = n
        if n > 0 and step_sum:
            out["mean_step_s"] = sum(step_sum.values()) / n
        if n > 0 and tok_sum:
            out["mean_tokens_per_step"] = sum(tok_sum.values()) / n
    phases = _delta(before, after, "tritmoe_step_phase_seconds_total")
    if phases and out["steps"]:
        per_rank = {}  # rank -> phase -> seconds
        for labels, v in phases.items():
            d = dict(labels)
            per_rank.setdefault(d.get("rank", "0"), {})[d.get("phase", "other")] = v
        n = out["steps"]
        out["phase_s_per_step"] = {
            p: sum(r.get(p, 0.0) for r in per_rank.values()) / len(per_rank) / n for p in PHASES}
        out["phase_s_per_step_max"] = {
            p: max(r.get(p, 0.0) for r in per_rank.values()) / n for p in PHASES}
    rank_tokens = _delta(before, after, "tritmoe_rank_tokens_total")
    if rank_tokens:
        out["rank_tokens"] = {dict(l).get("rank", "?"): v for l, v in rank_tokens.items()}
    imb = series(after, "tritmoe_expert_load_imbalance")
    if imb:
        out["imbalance"] = {int(l.get("layer", -1)): v for l, v in imb}
    return out
