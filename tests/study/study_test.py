#!/usr/bin/env python3
"""Tests of the scaling study (launch/study): the driver end to end on a generated tiny model at
np 1, 2, 4 and two concurrencies, and the cluster model's pieces against independent references.

  study_test.py --tritmoe build/tritmoe --mpirun tests/mpi/mpirun.sh --work DIR

End to end: the CSV has the documented columns, one serve row per (ranks, concurrency) point
whose figures follow from bench-serve's own counts (tokens / duration, 1000 / TPOT), a model row
per point with its error computed from its own columns, bench-a2a rows per rank count, GPU
predictions; every PNG is a real PNG of sane size and its plotted series equal the CSV; no
server process is left behind. Bad input (a rank count that does not divide the experts, a
missing model) fails with a message naming it.
"""
import argparse
import csv
import json
import math
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
STUDY = os.path.join(ROOT, "launch", "study")
sys.path.insert(0, STUDY)

import cluster_model  # noqa: E402
import prom  # noqa: E402

ARGS = None
RANKS = [1, 2, 4]
CONC = [1, 2]
try:
    import matplotlib  # noqa: F401
    HAVE_MPL = True
except ImportError:
    HAVE_MPL = False


def load_json(path):
    with open(path) as f:
        return json.load(f)


def tiny_model():
    """The generated tiny model, made once per work folder."""
    path = os.path.join(ARGS.work, "tiny-ud158.gguf")
    if not os.path.exists(path):
        os.makedirs(ARGS.work, exist_ok=True)
        subprocess.run([ARGS.tritmoe, "gen-model", "--config", "tiny", "--recipe", "ud-1.58",
                        "-o", path + ".tmp", "-t", "1"], check=True, capture_output=True,
                       timeout=300)
        os.replace(path + ".tmp", path)
    return path


def close(a, b, rel=1e-3, abs_=1e-6):
    return abs(a - b) <= max(abs_, rel * max(abs(a), abs(b)))


def our_processes(marker):
    """PIDs whose command line mentions marker (the study's work dir), other than us."""
    pids = []
    for p in os.listdir("/proc"):
        if not p.isdigit() or int(p) == os.getpid():
            continue
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                cmd = f.read().decode(errors="replace")
        except OSError:
            continue
        if marker in cmd and "study_test.py" not in cmd:
            pids.append((int(p), cmd.replace("\0", " ")))
    return pids


def png_size(path):
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path}: not a PNG"
    assert head[12:16] == b"IHDR", f"{path}: no IHDR"
    return struct.unpack(">II", head[16:24])


class StudyEndToEnd(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.model = tiny_model()
        cls.out = os.path.join(ARGS.work, "study")
        cmd = [sys.executable, os.path.join(STUDY, "study.py"), "--tritmoe", ARGS.tritmoe,
               "--mpirun", ARGS.mpirun, "--model", cls.model,
               "--ranks", ",".join(map(str, RANKS)), "--concurrency", ",".join(map(str, CONC)),
               "--input-len", "16", "--output-len", "16", "--decode-reps", "2",
               "--a2a-max-tokens", "8", "--out", cls.out]
        if not HAVE_MPL:
            cmd.append("--no-plots")
        cls.proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if cls.proc.returncode != 0:
            raise AssertionError("study failed:\n" + cls.proc.stdout + cls.proc.stderr)
        with open(os.path.join(cls.out, "study.csv"), newline="") as f:
            cls.rows = list(csv.DictReader(f))
        cls.study = load_json(os.path.join(cls.out, "study.json"))

    def kind(self, k):
        return [r for r in self.rows if r["kind"] == k]

    def test_report_splices_a_gpu_study(self):
        # The study above stands in for a GPU study (machine given a GPU); the page is spliced
        # twice: the second run replaces the first's blocks instead of adding more.
        import scaling_report
        gdir = os.path.join(ARGS.work, "gpu-study")
        shutil.rmtree(gdir, ignore_errors=True)
        shutil.copytree(self.out, gdir)
        st = dict(self.study)
        st["machine"] = dict(st["machine"], gpus=[{"name": "Fake GPU", "driver": "1",
                                                    "pcie_gen": "5"}])
        # llama.cpp on 2 GPUs beside it: compared with our 2-rank points.
        import llama_peer
        st["llama"] = {"device": "cuda", "gpus": 2, "gpu_layers": 999, "threads": 4,
                       "stamp": "commit=abcdef1234", "bench": None, "errors": [],
                       "batched": {"rows": [{"concurrency": 1, "pp": 64, "tg": 64,
                                             "output_tok_s": 100.0, "decode_tok_s": 110.0,
                                             "per_user_tok_s": 110.0, "prefill_tok_s": 900.0}]}}
        llama_rows = llama_peer.csv_rows(st["llama"])
        self.assertEqual([r["ranks"] for r in llama_rows], [2])
        with open(os.path.join(gdir, "study.csv"), "a", newline="") as fo:
            w = csv.DictWriter(fo, fieldnames=list(self.rows[0].keys()))
            for r in llama_rows:
                w.writerow({k: r.get(k, "") for k in self.rows[0].keys()})
        with open(os.path.join(gdir, "study.json"), "w") as fo:
            json.dump(st, fo)
        page = os.path.join(ARGS.work, "page.md")
        with open(page, "w") as fo:
            fo.write("# t\n\n* **Not measured: GPUs.** old text\n\n## Machine\n\n"
                     "## GPU predictions (not measurements)\n\n* the model's error on GPUs is "
                     "unknown until a 2-GPU point is measured; on the CPU its error is in the "
                     "table above\n")
        png = os.path.join(ARGS.work, "page-png")
        for _ in range(2):
            self.assertEqual(scaling_report.main(["--splice", "--gpu-study", gdir, "--out", page,
                                                  "--png-dir", png]), 0)
        with open(page) as fi:
            text = fi.read()
        self.assertNotIn("Not measured: GPUs", text)
        self.assertEqual(text.count(scaling_report.GPU_SUMMARY_BEGIN), 1)
        self.assertEqual(text.count(scaling_report.GPU_SECTION_BEGIN), 1)
        self.assertIn("**Measured (GPU)**: 1 x Fake GPU", text)
        self.assertLess(text.index("## Measured on GPUs"), text.index("## GPU predictions"))
        # The "not measured on more than one GPU" bullet only for a study of one rank.
        self.assertEqual("Not measured: more than one GPU" in text,
                         max(x["ranks"] for x in st["serve"]) == 1)
        # The predictions' error bullet points at the measured points when there are several GPUs.
        self.assertEqual("against the measured multi-GPU points" in text,
                         max(x["ranks"] for x in st["serve"]) > 1)
        self.assertNotEqual("unknown until a 2-GPU point" in text,
                            max(x["ranks"] for x in st["serve"]) > 1)
        for r in self.kind("serve"):  # every measured point, with its output tok/s
            self.assertIn(f"| {r['ranks']} | {r['concurrency']} | "
                          f"{float(r['output_tok_s']):.1f} |", text)
        self.assertEqual(sorted(os.listdir(os.path.join(png, "gpu")))[:2],
                         ["study.csv", "study.json"])
        ours = [r for r in self.kind("serve") if r["ranks"] == "2" and r["concurrency"] == "1"]
        self.assertIn("one process over 2 GPUs", text)
        self.assertIn(f"| llama.cpp batched-bench | 2 | 1 | 64/64 | 100.0 | 110.0 | "
                      f"{float(ours[0]['output_tok_s']) / 100.0:.2f}x |", text)

    def test_no_server_left_behind(self):
        self.assertEqual(our_processes(self.out), [])

    def test_columns(self):
        import study
        with open(os.path.join(self.out, "study.csv")) as f:
            header = next(csv.reader(f))
        self.assertEqual(header, study.CSV_COLUMNS)
        for r in self.rows:
            self.assertIn(r["kind"], ("serve", "model", "a2a", "prediction", "llama"))

    def test_one_serve_row_per_point(self):
        pts = sorted((int(r["ranks"]), int(r["concurrency"])) for r in self.kind("serve"))
        self.assertEqual(pts, sorted((n, c) for n in RANKS for c in CONC))

    def test_serve_figures_follow_from_counts(self):
        for r in self.kind("serve"):
            with self.subTest(ranks=r["ranks"], c=r["concurrency"]):
                self.assertEqual(r["failed"], "0")
                self.assertEqual(r["completed"], r["num_prompts"])
                out = float(r["output_tok_s"])
                self.assertGreater(out, 0)
                # ignore_eos: every request generates exactly output_len tokens.
                want = int(r["completed"]) * int(r["output_len"]) / float(r["duration_s"])
                self.assertTrue(close(out, want), (out, want))
                self.assertTrue(close(float(r["output_tok_s_per_rank"]), out / int(r["ranks"])))
                tpot = float(r["tpot_ms_mean"])
                if tpot > 0:
                    self.assertTrue(close(float(r["per_user_tok_s"]), 1000.0 / tpot))
                else:
                    self.assertEqual(r["per_user_tok_s"], "")
                    self.assertIn("TPOT 0", r["notes"])
                # The server stepped during the level, and its steps carried tokens.
                self.assertGreater(float(r["steps"]), 0)
                self.assertGreater(float(r["mean_step_ms"]), 0)
                self.assertGreaterEqual(float(r["mean_tokens_per_step"]), 1.0)
                if r["attention_ms"] == "":
                    self.assertIn("not available", r["notes"])
                else:
                    phases = {p: float(r[p + "_ms"]) for p in
                              ("attention", "moe_compute", "dispatch", "combine", "other")}
                    self.assertTrue(all(v >= 0 for v in phases.values()), phases)
                    self.assertGreater(phases["attention"] + phases["moe_compute"], 0)
                    # A rank's phases split its own step; idle is what the driver's step adds.
                    step = float(r["mean_step_ms"])
                    self.assertTrue(close(float(r["idle_ms"]),
                                          max(0.0, step - sum(phases.values())), 1e-3, 1e-3))
                    self.assertLess(sum(phases.values()), step * 1.1 + 0.05)
                    if r["ranks"] == "1":  # nothing to exchange with
                        self.assertEqual(phases["dispatch"] + phases["combine"], 0.0)
                    else:
                        self.assertGreater(phases["dispatch"] + phases["combine"], 0.0)
                if r["imbalance_max"] != "":
                    imb = float(r["imbalance_max"])
                    if r["ranks"] == "1":
                        self.assertEqual(imb, 1.0)
                    else:
                        self.assertTrue(1.0 <= imb <= int(r["ranks"]), imb)

    def test_model_rows(self):
        serve = {(r["ranks"], r["concurrency"]): r for r in self.kind("serve")}
        model = self.kind("model")
        self.assertEqual(sorted((r["ranks"], r["concurrency"]) for r in model), sorted(serve))
        for r in model:
            with self.subTest(ranks=r["ranks"], c=r["concurrency"]):
                s = serve[(r["ranks"], r["concurrency"])]
                self.assertEqual(r["measured_output_tok_s"], s["output_tok_s"])
                m, x = float(r["model_output_tok_s"]), float(r["measured_output_tok_s"])
                self.assertTrue(m > 0 and math.isfinite(m))
                self.assertTrue(close(float(r["error_output_pct"]), 100 * (m - x) / x, 1e-3, 1e-3))
                parts = sum(float(r[k]) for k in ("model_rest_ms", "model_experts_ms",
                                                  "model_exchange_ms", "model_prefill_ms"))
                self.assertTrue(close(parts, float(r["model_step_ms"]), 1e-3, 1e-3))
                # tok/s = concurrency / step time; per user = 1 / TPOT, where TPOT leaves out
                # the request's own prefill share (1 of the B requests' prefill).
                B = int(r["concurrency"])
                step_s = float(r["model_step_ms"]) / 1e3
                self.assertTrue(close(m, B / step_s, 1e-3))
                tpot_s = step_s - float(r["model_prefill_ms"]) / 1e3 / B
                self.assertTrue(close(float(r["model_per_user_tok_s"]), 1 / tpot_s, 1e-3))
                if r["ranks"] == "1":
                    self.assertEqual(float(r["model_exchange_ms"]), 0.0)
                else:
                    self.assertGreater(float(r["model_exchange_ms"]), 0.0)
        self.assertTrue(self.study["cpu_model"]["assumptions"])

    def test_a2a_rows(self):
        a2a = self.kind("a2a")
        self.assertEqual(sorted({int(r["ranks"]) for r in a2a}), [n for n in RANKS if n > 1])
        for r in a2a:
            self.assertGreater(float(r["dispatch_us"]), 0)
            self.assertGreater(float(r["combine_us"]), 0)
        self.assertEqual(sorted({int(r["tokens_per_rank"]) for r in a2a}), [1, 2, 4, 8])

    def test_gpu_predictions(self):
        pred = self.kind("prediction")
        self.assertTrue(any(r["config"].startswith("8 x H200") for r in pred))
        self.assertTrue(any("nodes" in r["config"] for r in pred))
        for r in pred:
            step = float(r["model_step_ms"]) / 1e3
            self.assertTrue(close(float(r["model_output_tok_s"]), int(r["concurrency"]) / step))
            self.assertTrue(close(float(r["output_tok_s_per_rank"]),
                                  float(r["model_output_tok_s"]) / int(r["ranks"])))

    def test_machine_description(self):
        m = self.study["machine"]
        self.assertTrue(m["cpu"]["model"])
        self.assertGreater(m["cpu"]["logical_cpus"], 0)
        self.assertIn("versions", m)
        self.assertEqual(len(m["git"]["commit"]), 40)

    @unittest.skipUnless(HAVE_MPL, "python3-matplotlib not installed: plots not made")
    def test_pngs_are_real_and_sane(self):
        for name in ("throughput_vs_user", "scaling", "step_breakdown", "imbalance",
                     "gpu_predictions"):
            with self.subTest(plot=name):
                path = os.path.join(self.out, name + ".png")
                w, h = png_size(path)
                self.assertTrue(300 <= w <= 2000 and 200 <= h <= 2000, (w, h))
                self.assertTrue(5_000 < os.path.getsize(path) < 1_000_000)

    @unittest.skipUnless(HAVE_MPL, "python3-matplotlib not installed: plots not made")
    def test_plotted_series_equal_the_csv(self):
        serve = self.kind("serve")
        s = load_json(os.path.join(self.out, "throughput_vs_user.series.json"))
        measured = [x for x in s["series"] if x["kind"] == "serve"]
        self.assertEqual(sorted(x["ranks"] for x in measured), RANKS)
        for x in measured:
            rows = sorted((r for r in serve if int(r["ranks"]) == x["ranks"] and r["per_user_tok_s"]),
                          key=lambda r: int(r["concurrency"]))
            self.assertEqual(x["concurrency"], [int(r["concurrency"]) for r in rows])
            for got, r in zip(zip(x["x"], x["y"]), rows):
                self.assertTrue(close(got[0], float(r["per_user_tok_s"])))
                self.assertTrue(close(got[1], float(r["output_tok_s_per_rank"])))
        s = load_json(os.path.join(self.out, "scaling.series.json"))
        strong = [x for x in s["series"] if x["kind"] == "strong"]
        self.assertEqual(sorted(x["concurrency"] for x in strong), CONC)
        for x in strong:
            self.assertEqual(x["x"], RANKS)
            want = {int(r["ranks"]): float(r["output_tok_s"]) for r in serve
                    if int(r["concurrency"]) == x["concurrency"]}
            for n, y in zip(x["x"], x["y"]):
                self.assertTrue(close(y, want[n]))
        ideal = [x for x in s["series"] if x["kind"] == "strong_ideal"]
        for x in ideal:
            base = {int(r["ranks"]): float(r["output_tok_s"]) for r in serve
                    if int(r["concurrency"]) == x["concurrency"]}[1]
            self.assertTrue(all(close(y, base * n) for n, y in zip(x["x"], x["y"])))
        weak = [x for x in s["series"] if x["kind"] == "weak"]
        self.assertTrue(weak)  # 1 stream per rank: (1, 1), (2, 2)
        for x in weak:
            for n, y in zip(x["x"], x["y"]):
                r = [r for r in serve if int(r["ranks"]) == n and
                     int(r["concurrency"]) == n * x["per_rank"]][0]
                self.assertTrue(close(y, float(r["output_tok_s_per_rank"])))
        s = load_json(os.path.join(self.out, "step_breakdown.series.json"))
        c = s["concurrency"]
        step = [x for x in s["series"] if x["label"] == "measured mean step"][0]
        for n, y in zip(step["x"], step["y"]):
            r = [r for r in serve if int(r["ranks"]) == n and int(r["concurrency"]) == c][0]
            self.assertTrue(close(y, float(r["mean_step_ms"])))
        s = load_json(os.path.join(self.out, "gpu_predictions.series.json"))
        pred = self.kind("prediction")
        self.assertEqual(sorted(x["label"] for x in s["series"]),
                         sorted({r["config"] for r in pred}))
        for x in s["series"]:
            rows = sorted((r for r in pred if r["config"] == x["label"]),
                          key=lambda r: int(r["concurrency"]))
            self.assertEqual(len(rows), len(x["x"]))
            for r, px, py in zip(rows, x["x"], x["y"]):
                self.assertTrue(close(float(r["model_per_user_tok_s"]), px))
                self.assertTrue(close(float(r["output_tok_s_per_rank"]), py))
        s = load_json(os.path.join(self.out, "imbalance.series.json"))
        for x in s["series"]:
            r = [r for r in serve if int(r["ranks"]) == x["ranks"] and
                 int(r["concurrency"]) == max(CONC)][0]
            self.assertTrue(close(max(x["y"]), float(r["imbalance_max"])))


class StudyBadInput(unittest.TestCase):
    def run_study(self, *extra):
        out = os.path.join(ARGS.work, "bad")
        return subprocess.run([sys.executable, os.path.join(STUDY, "study.py"), "--tritmoe",
                               ARGS.tritmoe, "--mpirun", ARGS.mpirun, "--out", out, "--no-plots",
                               *extra], capture_output=True, text=True, timeout=120), out

    def test_ranks_must_divide_experts(self):
        model = tiny_model()
        p, out = self.run_study("--model", model, "--ranks", "3", "--concurrency", "1")
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("3 ranks do not divide the model's 16 experts", p.stdout + p.stderr)
        self.assertEqual(our_processes(out), [])

    def test_sigterm_mid_study_stops_the_server(self):
        out = os.path.join(ARGS.work, "interrupted")
        shutil.rmtree(out, ignore_errors=True)  # a ports file left by an earlier run is not ours
        p = subprocess.Popen([sys.executable, os.path.join(STUDY, "study.py"), "--tritmoe",
                              ARGS.tritmoe, "--mpirun", ARGS.mpirun, "--out", out, "--no-plots",
                              "--model", tiny_model(), "--ranks", "2", "--concurrency", "1",
                              "--repeat", "50", "--input-len", "8", "--output-len", "8",
                              "--decode-reps", "1", "--a2a-max-tokens", "1"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            ports = os.path.join(out, "logs", "ports_np2.json")
            deadline = time.time() + 120
            while not os.path.exists(ports) and p.poll() is None and time.time() < deadline:
                time.sleep(0.1)
            self.assertTrue(os.path.exists(ports), "the server never started")
            self.assertTrue(our_processes(out))  # serving now
            time.sleep(1.0)  # inside a bench-serve level
            p.send_signal(signal.SIGTERM)
            self.assertEqual(p.wait(timeout=90), 128 + signal.SIGTERM, p.stdout.read())
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
            p.stdout.close()
        self.assertEqual(our_processes(out), [])

    def test_missing_model(self):
        p, _ = self.run_study("--model", "/nonexistent.gguf")
        self.assertEqual(p.returncode, 2)
        self.assertIn("--model /nonexistent.gguf: no such file", p.stderr)

    def test_bad_list(self):
        p, _ = self.run_study("--model", "/nonexistent.gguf", "--ranks", "1,0")
        self.assertEqual(p.returncode, 2)
        self.assertIn("'1,0': expected positive integers", p.stderr)


class ClusterModelPieces(unittest.TestCase):
    """The model's closed forms against Monte Carlo of the routing they describe."""

    def sample_topk(self, rng, E, k):
        return rng.sample(range(E), k)

    def test_distinct_experts(self):
        rng = random.Random(1)
        for E, k, B in ((256, 8, 1), (256, 8, 16), (64, 6, 4), (16, 4, 2)):
            trials = 4000
            mc = sum(len({e for _ in range(B) for e in self.sample_topk(rng, E, k)})
                     for _ in range(trials)) / trials
            # Closed form treats each token's picks as independent with p = k/E per expert,
            # exact for B = 1 and within a few percent otherwise.
            self.assertTrue(close(cluster_model.distinct_experts(E, k, B), mc, 0.03),
                            (E, k, B, mc))

    def test_remote_ranks_per_token(self):
        rng = random.Random(2)
        for E, k, N in ((256, 8, 2), (256, 8, 8), (256, 8, 32), (16, 4, 4)):
            per = E // N
            trials = 20000
            mc = sum(len({e // per for e in self.sample_topk(rng, E, k)} - {0})
                     for _ in range(trials)) / trials
            self.assertTrue(close(cluster_model.remote_ranks_per_token(E, k, N), mc, 0.02),
                            (E, k, N, mc))

    def profile(self):
        return cluster_model.Profile({
            "shape": {"layers": 4, "moe_layers": 3, "experts": 64, "top_k": 6, "hidden": 512},
            "step_ms_by_batch": {"1": 10.0, "4": 14.0, "16": 30.0},
            "expert_bytes_all_moe_layers": 1e6, "expert_stream_GBps": 10.0,
            "prefill_ms_per_token": 2.0})

    def test_one_rank_reproduces_calibration(self):
        p = self.profile()
        for b, ms in ((1, 10.0), (4, 14.0), (16, 30.0)):
            r = cluster_model.predict(p, 1, b, None)
            self.assertTrue(close(r["step_s"] * 1e3, ms, 1e-9), (b, r))
            self.assertEqual(r["exchange_s"], 0.0)

    def test_expert_parallel_split(self):
        p = self.profile()

        class Fixed:
            name = "fixed"

            def layer_s(self, b):
                return 1e-4 * b

        r = cluster_model.predict(p, 4, 16, Fixed(), imbalance=1.0)
        # Each rank: the rest of 4 sequences, a quarter of the distinct experts, 3 layers of
        # exchange for 4 tokens.
        d = 64 * (1 - (1 - 6 / 64) ** 16)
        self.assertTrue(close(r["experts_s"], 1e-4 * d / 4))
        self.assertTrue(close(r["rest_s"], 14e-3 - 1e-4 * 64 * (1 - (1 - 6 / 64) ** 4)))
        self.assertTrue(close(r["exchange_s"], 3 * 4e-4))
        # Two ranks sharing one core each where the calibration had two: twice the compute.
        r2 = cluster_model.predict(p, 2, 2, Fixed(), share=1.0, imbalance=1.0)
        p.calib_share = 2.0
        r3 = cluster_model.predict(p, 2, 2, Fixed(), share=1.0, imbalance=1.0)
        self.assertTrue(close(r3["rest_s"], 2 * r2["rest_s"]))
        # Prefill of ISL/OSL = 2 tokens per sequence per step at 2 ms each, 1 sequence/rank.
        r4 = cluster_model.predict(p, 2, 2, Fixed(), share=2.0, imbalance=1.0,
                                   prefill_per_output=2.0)
        self.assertTrue(close(r4["prefill_s"], 1 * 2.0 * 2e-3))

    def test_link_exchange(self):
        p = self.profile()
        intra = {"name": "nv", "GBps": 100.0, "latency_us": 10.0, "gpus_per_node": 8}
        inter = {"name": "net", "GBps": 10.0, "latency_us": 50.0}
        ex = cluster_model.LinkExchange(p, 8, intra, row_bytes=2)
        r = cluster_model.remote_ranks_per_token(64, 6, 8)
        self.assertTrue(close(ex.layer_s(4), 3 * 10e-6 + 2 * 4 * r * 512 * 2 / 100e9))
        ex = cluster_model.LinkExchange(p, 16, intra, inter, row_bytes=2)
        r = cluster_model.remote_ranks_per_token(64, 6, 16)
        off = 8 / 15
        want = 3 * 50e-6 + 2 * max(4 * r * 512 * 2 * (1 - off) / 100e9,
                                   4 * r * 512 * 2 * off / 10e9)
        self.assertTrue(close(ex.layer_s(4), want))


class ExchangeBenchParsing(unittest.TestCase):
    # ep_exchange_bench's table as printed on 2 H200s (bench/ep_exchange_bench.cc).
    TEXT = """#   tokens     dispatch      combine   dispatch    combine        d+c     a2a bf16        a2a   #wrong
#    /rank       B/rank       B/rank       (us)       (us)       (us)       B/rank       (us)
         1        17152        57344       24.8       17.9       35.9       114688       13.8        0
       128      2195456      7340032       34.8       56.9       88.0     14680064       48.0        0
"""

    def test_rows_in_bench_a2a_shape(self):
        import benches
        rows = benches.parse_exchange_bench(self.TEXT)
        self.assertEqual([r["tokens_per_rank"] for r in rows], [1, 128])
        self.assertEqual(rows[1]["dispatch_us_p50"], 34.8)
        self.assertEqual(rows[1]["combine_us_p50"], 56.9)
        self.assertEqual(rows[0]["wrong"], "0")
        # The cluster model takes them as it takes bench-a2a's rows.
        import cluster_model
        ex = cluster_model.MeasuredExchange(rows)
        self.assertAlmostEqual(ex.layer_s(1), 42.7e-6)
        self.assertAlmostEqual(ex.layer_s(128), 91.7e-6)
        self.assertEqual(benches.parse_exchange_bench("no table here\n"), [])


class LlamaPeerParsing(unittest.TestCase):
    def test_cuda_devices(self):
        import llama_peer
        self.assertEqual(llama_peer.parse_cuda_devices(
            "ggml_cuda_init: found 2 CUDA devices (Total VRAM: 286311 MiB):\n"), 2)
        self.assertIsNone(llama_peer.parse_cuda_devices("system_info: n_threads = 2\n"))
        # A CPU peer (no GPU count) is one process: one rank.
        cpu = {"device": "cpu", "threads": 2, "bench": None, "batched": {"rows": [
            {"concurrency": 4, "pp": 8, "tg": 8, "output_tok_s": 10.0, "decode_tok_s": 12.0,
             "per_user_tok_s": 3.0, "prefill_tok_s": 50.0}]}}
        self.assertEqual([r["ranks"] for r in llama_peer.csv_rows(cpu)], [1])


class PromParsing(unittest.TestCase):
    def test_level_summary(self):
        def page(steps, step_sum, tok_sum, phase, imb):
            lines = [f'tritmoe_step_duration_seconds_count{{model_name="m"}} {steps}',
                     f'tritmoe_step_duration_seconds_sum{{model_name="m"}} {step_sum}',
                     f'tritmoe_iteration_tokens_total_sum{{model_name="m"}} {tok_sum}',
                     f'tritmoe_iteration_tokens_total_count{{model_name="m"}} {steps}']
            for rank, vals in phase.items():
                for name, v in vals.items():
                    lines.append(f'tritmoe_step_phase_seconds_total{{model_name="m",rank="{rank}",'
                                 f'phase="{name}"}} {v}')
            for layer, v in imb.items():
                lines.append(f'tritmoe_expert_load_imbalance{{model_name="m",layer="{layer}"}} {v}')
            return prom.parse("# HELP x\n" + "\n".join(lines) + "\n")

        zero = {p: 0.0 for p in prom.PHASES}
        before = page(10, 1.0, 50, {"0": zero, "1": zero}, {})
        after = page(30, 3.0, 150, {"0": dict(zero, attention=0.4, moe_compute=1.0),
                                    "1": dict(zero, attention=0.2, dispatch=0.6)},
                     {1: 1.5, 2: 1.25})
        s = prom.level_summary(before, after)
        self.assertEqual(s["steps"], 20)
        self.assertTrue(close(s["mean_step_s"], 0.1))
        self.assertTrue(close(s["mean_tokens_per_step"], 5.0))
        self.assertTrue(close(s["phase_s_per_step"]["attention"], 0.3 / 20))
        self.assertTrue(close(s["phase_s_per_step_max"]["attention"], 0.4 / 20))
        self.assertTrue(close(s["phase_s_per_step"]["dispatch"], 0.3 / 20))
        self.assertEqual(s["imbalance"], {1: 1.5, 2: 1.25})

    def test_absent_metrics_are_none(self):
        s = prom.level_summary(prom.parse(""), prom.parse("up 1\n"))
        self.assertIsNone(s["steps"])
        self.assertIsNone(s["phase_s_per_step"])
        self.assertIsNone(s["imbalance"])


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--tritmoe", required=True)
    ap.add_argument("--mpirun", required=True)
    ap.add_argument("--work", required=True)
    ARGS, rest = ap.parse_known_args()
    ARGS.tritmoe = os.path.abspath(ARGS.tritmoe)
    ARGS.work = os.path.abspath(ARGS.work)
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)
