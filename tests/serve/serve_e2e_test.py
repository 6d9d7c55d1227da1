#!/usr/bin/env python3
"""End-to-end tests of `tritmoe serve` with real clients.

Starts the server (one process, or N ranks under tests/mpi/mpirun.sh) on a generated tiny model,
on free ports, and talks to it with Python grpcio (stubs generated here by protoc, calls made
through grpc's generic API), curl for SSE, raw sockets for a client that walks away, and a
reflection client (the grpcurl way: service list and descriptors from the server, no .proto).

  serve_e2e_test.py --tritmoe build/tritmoe --np 2 --mpirun tests/mpi/mpirun.sh --work DIR

Greedy outputs are compared with `tritmoe generate` run alone (one process) for the same prompt.
Every wait has a timeout; the server is stopped with SIGTERM (and killed if that fails).
"""
import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.request

ARGS = None
SERVER = None  # the running server (module-wide: started once for all tests)
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
MAX_MODEL_LEN = 512


def compile_protos(out):
    """Python messages for our API and the reflection/health protocols (protoc --python_out)."""
    subprocess.run(["protoc", "-I", os.path.join(ROOT, "proto"), "--python_out", out,
                    "tritmoe.proto"], check=True)
    subprocess.run(["protoc", "-I", os.path.join(HERE, "protos"), "--python_out", out,
                    "reflection_min.proto", "health_min.proto"], check=True)
    sys.path.insert(0, out)


class Server:
    def __init__(self, model, work, extra_args=()):
        self.ports_file = os.path.join(work, "ports.json")
        if os.path.exists(self.ports_file):
            os.remove(self.ports_file)
        cmd = [ARGS.tritmoe, "serve", "--model", model, "--host", "127.0.0.1", "--port", "0",
               "--grpc-port", "0", "--ports-file", self.ports_file, "--max-model-len",
               str(MAX_MODEL_LEN), "--max-num-seqs", "48", "--max-num-batched-tokens", "256",
               "--threads", "1"] + list(extra_args)
        if ARGS.np > 1:
            cmd = [ARGS.mpirun, "-np", str(ARGS.np)] + cmd
        self.log_path = os.path.join(work, "serve.log")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.time() + 120
        while not os.path.exists(self.ports_file):
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError("server did not start:\n" + self.read_log())
            time.sleep(0.1)
        ports = json.load(open(self.ports_file))
        self.http = ports["http_port"]
        self.grpc = ports["grpc_port"]
        self.pid = ports["pid"]  # rank 0

    def read_log(self):
        self.log.flush()
        return open(self.log_path).read()

    def stop(self):
        """SIGTERM to rank 0 (which stops every rank); the launcher's exit code, None if it had
        to be killed."""
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                return self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
                return None
        return self.proc.returncode


# ---- HTTP helpers -------------------------------------------------------------------------

def http(method, path, body=None, raw=None, timeout=60, server=None):
    """(status, parsed JSON or text) of one request (to SERVER unless another is given)."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    port = (server or SERVER).http
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data,
                                 method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, text = r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read().decode()
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def parse_metrics(text):
    """{(name, frozenset of (label, value)): value} of a text exposition, label order aside."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r'([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})? (\S+)', line)
        assert m, f"bad exposition line: {line!r}"
        labels = frozenset(re.findall(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"',
                                      m.group(2) or ""))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def metric(name, **labels):
    """One sample of /metrics (0 when absent, as for a counter not yet incremented)."""
    _, text = http("GET", "/metrics")
    return parse_metrics(text).get((name, frozenset(labels.items())), 0.0)


def sse_events(text):
    """The data payloads of an SSE body, in order."""
    out = []
    for block in text.split("\n\n"):
        if block.strip():
            assert block.startswith("data: "), repr(block)
            out.append(block[len("data: "):])
    return out


# ---- gRPC helpers ---------------------------------------------------------------------------

def channel():
    import grpc
    return grpc.insecure_channel(f"127.0.0.1:{SERVER.grpc}")


def generate_call(ch):
    import tritmoe_pb2 as pb
    return ch.unary_stream("/tritmoe.v1.Generation/Generate",
                           request_serializer=pb.GenerateRequest.SerializeToString,
                           response_deserializer=pb.GenerateResponse.FromString)


def greedy_request(prompt, max_tokens, stream=True, request_id=""):
    import tritmoe_pb2 as pb
    req = pb.GenerateRequest(text=prompt, stream=stream, request_id=request_id)
    req.sampling.temperature = 0
    req.stopping.max_tokens = max_tokens
    req.stopping.ignore_eos = True
    return req


def run_stream(req, timeout=120):
    """(token ids, text, responses) of one Generate call."""
    with channel() as ch:
        responses = list(generate_call(ch)(req, timeout=timeout))
    ids, text = [], ""
    for r in responses:
        if r.HasField("chunk"):
            ids += list(r.chunk.token_ids)
            text += r.chunk.text
    if not req.stream:  # everything is in the one Complete
        ids, text = list(responses[-1].complete.output_token_ids), responses[-1].complete.text
    return ids, text, responses


def generate_alone(prompt, n):
    """What `tritmoe generate` prints for the prompt, run as one plain process."""
    out = subprocess.run([ARGS.tritmoe, "generate", "--model", ARGS.model, "--prompt", prompt,
                          "-n", str(n), "--temperature", "0", "--ignore-eos", "--comm", "local",
                          "--threads", "1"],
                         capture_output=True, check=True, timeout=120)
    text = out.stdout.decode()
    assert text.endswith("\n")
    return text[:-1]


PROMPTS = [f"Prompt number {i}: tell me about {w}" for i, w in
           enumerate(("the sky", "rivers", "MoE models", "trits", "GPUs", "bees", "tea", "rain"))]


class ServeTest(unittest.TestCase):
    def assert_still_serving(self):
        status, body = http("POST", "/v1/completions",
                            {"prompt": "still there?", "max_tokens": 3, "ignore_eos": True})
        self.assertEqual(status, 200, body)
        self.assertEqual(body["usage"]["completion_tokens"], 3)

    def assert_http_error(self, status, body, want_status, param=None, code=None):
        self.assertEqual(status, want_status, body)
        self.assertIn("error", body)
        err = body["error"]
        self.assertTrue(err["message"])
        self.assertIn(err["type"], ("invalid_request_error",))
        if param is not None:
            self.assertEqual(err["param"], param, err)
        if code is not None:
            self.assertEqual(err["code"], code, err)
        self.assert_still_serving()

    def assert_grpc_error(self, req, code, field=None):
        import grpc
        with self.assertRaises(grpc.RpcError) as ctx:
            run_stream(req)
        self.assertEqual(ctx.exception.code(), code, ctx.exception.details())
        if field:
            self.assertTrue(ctx.exception.details().startswith(field), ctx.exception.details())
        self.assert_still_serving()

    # -- basics ---------------------------------------------------------------------------

    def test_models_health_metrics(self):
        status, body = http("GET", "/v1/models")
        self.assertEqual(status, 200)
        self.assertEqual(body["data"][0]["id"], "tiny")
        self.assertEqual(body["data"][0]["max_model_len"], MAX_MODEL_LEN)
        self.assertEqual(http("GET", "/health")[0], 200)
        _, text = http("GET", "/metrics")
        for name in ("tritmoe_num_requests_running", "tritmoe_time_to_first_token_seconds_bucket",
                     "tritmoe_generation_tokens_total", "tritmoe_kv_cache_usage_perc"):
            self.assertIn(name, text)
        samples = parse_metrics(text)
        self.assertEqual(samples[("tritmoe_build_info",
                                  frozenset({("version", "0.1.0"), ("world_size", str(ARGS.np))}))],
                         1.0)
        # Per-rank KV usage for every rank.
        for rank in range(ARGS.np):
            self.assertIn(("tritmoe_kv_cache_usage_perc",
                           frozenset({("model_name", "tiny"), ("rank", str(rank))})), samples)
        # No expert cache here, so no cache series (test_expert_cache_metrics has one).
        self.assertNotIn("tritmoe_expert_cache_hits_total{", text)

    def test_expert_cache_metrics(self):
        """A server with an expert cache on every rank (--expert-cache-mb) answers, and /metrics
        then has the cache series of every MoE layer: requests (hits + misses) > 0, bytes
        streamed > 0 (the cache starts cold), a hit rate in [0, 1], slots per layer > 0."""
        work = os.path.join(ARGS.work, "expert_cache")
        os.makedirs(work, exist_ok=True)
        server = Server(ARGS.model, work, ["--expert-cache-mb", "0.25"])
        try:
            status, body = http("POST", "/v1/completions",
                                {"prompt": "expert cache", "max_tokens": 6, "ignore_eos": True},
                                server=server)
            self.assertEqual(status, 200, body)
            self.assertEqual(body["usage"]["completion_tokens"], 6)
            # The first step is collected right after it runs; the rest within ~1 s (idle).
            deadline = time.time() + 30
            while True:
                samples = parse_metrics(http("GET", "/metrics", server=server)[1])
                per_layer = {}
                for (name, labels), v in samples.items():
                    if name.startswith("tritmoe_expert_cache_") and name.endswith("_total"):
                        layer = int(dict(labels)["layer"])
                        per_layer.setdefault(layer, {})[name] = v
                if per_layer or time.time() > deadline:
                    break
                time.sleep(0.1)
            self.assertTrue(per_layer, "no tritmoe_expert_cache_* series:\n" + server.read_log())
            self.assertEqual(sorted(per_layer), list(range(len(per_layer))))
            for layer, v in per_layer.items():
                requests = (v["tritmoe_expert_cache_hits_total"] +
                            v["tritmoe_expert_cache_misses_total"])
                self.assertGreater(requests, 0, (layer, v))
                self.assertGreater(v["tritmoe_expert_cache_bytes_streamed_total"], 0, (layer, v))
            m = frozenset({("model_name", "tiny")})
            rate = samples[("tritmoe_expert_cache_hit_rate", m)]
            self.assertGreaterEqual(rate, 0.0)
            self.assertLessEqual(rate, 1.0)
            self.assertGreater(samples[("tritmoe_expert_cache_bytes_per_token", m)], 0)
            self.assertGreater(samples[("tritmoe_expert_cache_slots_per_layer", m)], 0)
        finally:
            self.assertEqual(server.stop(), 0, server.read_log())

    def test_per_rank_step_metrics(self):
        """Phase times and tokens per rank grow with a request; every rank's own tokens add up
        to at least the request's; the imbalance of each MoE layer lies in [1, np]."""
        def rank_sample(samples, name, rank, **labels):
            key = frozenset({("model_name", "tiny"), ("rank", str(rank)), *labels.items()})
            return samples.get((name, key), 0.0)

        before = parse_metrics(http("GET", "/metrics")[1])
        n = 2 * ARGS.np  # enough sequences that every rank gets one
        results = []

        def one(i):
            results.append(http("POST", "/v1/completions",
                                {"prompt": f"rank metrics {i}", "max_tokens": 8,
                                 "ignore_eos": True}))
        threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        used = 0
        for status, body in results:
            self.assertEqual(status, 200, body)
            used += body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"] - 1
        after = parse_metrics(http("GET", "/metrics")[1])
        tokens = 0.0
        for rank in range(ARGS.np):
            grown = {phase: rank_sample(after, "tritmoe_step_phase_seconds_total", rank,
                                        phase=phase) -
                     rank_sample(before, "tritmoe_step_phase_seconds_total", rank, phase=phase)
                     for phase in ("attention", "moe_compute", "dispatch", "combine", "other")}
            self.assertGreater(grown["moe_compute"], 0, (rank, grown))
            self.assertGreater(grown["other"], 0, (rank, grown))
            if ARGS.np > 1:  # every rank takes part in every all-to-all
                self.assertGreater(grown["dispatch"], 0, (rank, grown))
                self.assertGreater(grown["combine"], 0, (rank, grown))
            else:
                self.assertEqual(grown["dispatch"], 0, grown)
            tokens += (rank_sample(after, "tritmoe_rank_tokens_total", rank) -
                       rank_sample(before, "tritmoe_rank_tokens_total", rank))
        # Other tests' requests may run at the same time; ours are a lower bound.
        self.assertGreaterEqual(tokens, used)
        imbalance = [v for (name, _), v in after.items()
                     if name == "tritmoe_expert_load_imbalance"]
        self.assertTrue(imbalance, "no tritmoe_expert_load_imbalance series")
        for v in imbalance:
            self.assertGreaterEqual(v, 1.0 - 1e-9)
            self.assertLessEqual(v, ARGS.np + 1e-9)

    def test_grpc_health(self):
        import health_min_pb2 as hpb
        with channel() as ch:
            check = ch.unary_unary("/grpc.health.v1.Health/Check",
                                   request_serializer=hpb.HealthCheckRequest.SerializeToString,
                                   response_deserializer=hpb.HealthCheckResponse.FromString)
            for service in ("", "tritmoe.v1.Generation"):
                r = check(hpb.HealthCheckRequest(service=service), timeout=10)
                self.assertEqual(r.status, hpb.HealthCheckResponse.SERVING)

    def test_reflection_lists_and_describes_the_service(self):
        import reflection_min_pb2 as rpb
        from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
        with channel() as ch:
            info = ch.stream_stream(
                "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                request_serializer=rpb.ServerReflectionRequest.SerializeToString,
                response_deserializer=rpb.ServerReflectionResponse.FromString)
            reqs = [rpb.ServerReflectionRequest(list_services="*"),
                    rpb.ServerReflectionRequest(file_containing_symbol="tritmoe.v1.Generation")]
            listed, described = list(info(iter(reqs), timeout=10))
            names = {s.name for s in listed.list_services_response.service}
            self.assertTrue({"tritmoe.v1.Generation", "grpc.health.v1.Health",
                             "grpc.reflection.v1alpha.ServerReflection"} <= names, names)
            # Rebuild the API from the server's own descriptors (no .proto) and call it.
            pool = descriptor_pool.DescriptorPool()
            fds = [descriptor_pb2.FileDescriptorProto.FromString(b)
                   for b in described.file_descriptor_response.file_descriptor_proto]
            for fd in fds:
                pool.Add(fd)
            service = pool.FindServiceByName("tritmoe.v1.Generation")
            methods = {m.name: m for m in service.methods}
            self.assertTrue({"Generate", "Tokenize", "Detokenize", "GetModelInfo",
                             "GetServerInfo", "Abort"} <= set(methods), set(methods))
            factory = message_factory.MessageFactory(pool)
            req_cls = factory.GetPrototype(methods["GetModelInfo"].input_type)
            resp_cls = factory.GetPrototype(methods["GetModelInfo"].output_type)
            call = ch.unary_unary("/tritmoe.v1.Generation/GetModelInfo",
                                  request_serializer=req_cls.SerializeToString,
                                  response_deserializer=resp_cls.FromString)
            r = call(req_cls(), timeout=10)
            self.assertEqual(r.served_model_name, "tiny")
            self.assertEqual(r.max_model_len, MAX_MODEL_LEN)
            self.assertEqual(r.vocab_size, 1024)

    def test_tokenize_detokenize(self):
        status, body = http("POST", "/tokenize", {"prompt": "hello world"})
        self.assertEqual(status, 200, body)
        self.assertEqual(body["count"], len(body["tokens"]))
        status, back = http("POST", "/detokenize", {"tokens": body["tokens"]})
        self.assertEqual(status, 200, back)
        self.assertEqual(back["prompt"], "hello world")

    # -- correctness of the streams ---------------------------------------------------------

    def test_greedy_streams_equal_generate_alone(self):
        for prompt in PROMPTS[:2]:
            want = generate_alone(prompt, 24)
            ids, text, responses = run_stream(greedy_request(prompt, 24))
            self.assertEqual(len(ids), 24)
            self.assertEqual(text, want, prompt)
            done = responses[-1].complete
            self.assertEqual(done.usage.completion_tokens, 24)
            # The same over HTTP, streamed (curl, SSE) and whole.
            body = json.dumps({"prompt": prompt, "max_tokens": 24, "temperature": 0,
                               "ignore_eos": True, "stream": True})
            out = subprocess.run(["curl", "-sN", "--max-time", "60", "-H",
                                  "Content-Type: application/json", "-d", body,
                                  f"http://127.0.0.1:{SERVER.http}/v1/completions"],
                                 capture_output=True, check=True).stdout.decode()
            events = sse_events(out)
            self.assertEqual(events[-1], "[DONE]")
            chunks = [json.loads(e) for e in events[:-1]]
            self.assertEqual("".join(c["choices"][0]["text"] for c in chunks), want)
            self.assertEqual(chunks[-1]["choices"][0]["finish_reason"], "length")
            status, whole = http("POST", "/v1/completions", {"prompt": prompt, "max_tokens": 24,
                                                             "temperature": 0, "ignore_eos": True})
            self.assertEqual(whole["choices"][0]["text"], want)

    def test_chat_sse_with_reasoning_and_usage(self):
        body = json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "Hi"}],
                           "max_tokens": 12, "temperature": 0, "ignore_eos": True,
                           "stream": True, "stream_options": {"include_usage": True}})
        out = subprocess.run(["curl", "-sN", "-i", "--max-time", "60", "-H",
                              "Content-Type: application/json", "-d", body,
                              f"http://127.0.0.1:{SERVER.http}/v1/chat/completions"],
                             capture_output=True, check=True).stdout.decode()
        head, _, payload = out.partition("\r\n\r\n")
        self.assertIn("Content-Type: text/event-stream", head)
        self.assertIn("X-Request-Id: chatcmpl-", head)
        events = sse_events(payload.replace("\r\n", "\n"))
        self.assertEqual(events[-1], "[DONE]")
        chunks = [json.loads(e) for e in events[:-1]]
        self.assertEqual(len({c["id"] for c in chunks}), 1)
        self.assertEqual(chunks[0]["choices"][0]["delta"]["role"], "assistant")
        self.assertEqual(chunks[-1]["choices"], [])
        self.assertEqual(chunks[-1]["usage"]["completion_tokens"], 12)
        self.assertEqual(chunks[-2]["choices"][0]["finish_reason"], "length")
        streamed_reasoning = "".join(c["choices"][0]["delta"].get("reasoning_content", "")
                                     for c in chunks[1:-1])
        streamed_content = "".join(c["choices"][0]["delta"].get("content", "")
                                   for c in chunks[1:-1])
        # The template opens <think>, so the answer starts as reasoning; the same request whole
        # gives the same split.
        status, whole = http("POST", "/v1/chat/completions",
                             {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 12,
                              "temperature": 0, "ignore_eos": True})
        self.assertEqual(status, 200, whole)
        msg = whole["choices"][0]["message"]
        self.assertEqual(msg["reasoning_content"] or "", streamed_reasoning)
        self.assertEqual(msg["content"], streamed_content)
        self.assertTrue(streamed_reasoning)

    def test_32_concurrent_streams_are_exact(self):
        prompts = [f"{PROMPTS[i % len(PROMPTS)]} (variant {i})" for i in range(32)]
        want = []
        for p in prompts:  # each one alone first
            ids, _, _ = run_stream(greedy_request(p, 16, stream=False))
            self.assertEqual(len(ids), 16)
            want.append(ids)
        results = [None] * 32
        errors = []

        def one(i):
            try:
                results[i] = run_stream(greedy_request(prompts[i], 16, request_id=f"c32-{i}"))
            except Exception as e:  # reported below
                errors.append(f"{i}: {e!r}")
        threads = [threading.Thread(target=one, args=(i,)) for i in range(32)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=240)
        self.assertFalse(errors, errors)
        for i, (ids, _, responses) in enumerate(results):
            self.assertEqual(ids, want[i], f"stream {i}")
            count = 0
            for r in responses:
                self.assertEqual(r.request_id, f"c32-{i}")
                if r.HasField("chunk"):
                    count += len(r.chunk.token_ids)
                    self.assertEqual(r.chunk.completion_tokens, count)  # no loss, no repeats
            self.assertTrue(responses[-1].HasField("complete"))
            self.assertEqual(responses[-1].complete.usage.completion_tokens, 16)
            self.assertEqual(responses[-1].complete.finish_reason, 4)  # LENGTH

    # -- bad input: a clear error each, and the server keeps serving -------------------------

    def test_bad_malformed_json(self):
        status, body = http("POST", "/v1/chat/completions", raw=b'{"messages": [')
        self.assert_http_error(status, body, 400)
        self.assertIn("not valid JSON", body["error"]["message"])

    def test_bad_field_types(self):
        status, body = http("POST", "/v1/completions", {"prompt": "x", "max_tokens": "ten"})
        self.assert_http_error(status, body, 400, param="max_tokens")
        status, body = http("POST", "/v1/chat/completions", {"messages": "hello"})
        self.assert_http_error(status, body, 400, param="messages")
        status, body = http("POST", "/v1/completions", {"prompt": "x", "stream": "yes"})
        self.assert_http_error(status, body, 400, param="stream")

    def test_bad_negative_max_tokens(self):
        import grpc
        status, body = http("POST", "/v1/completions", {"prompt": "x", "max_tokens": -5})
        self.assert_http_error(status, body, 400, param="max_tokens")
        req = greedy_request("x", 1)
        req.stopping.max_tokens = -5
        self.assert_grpc_error(req, grpc.StatusCode.INVALID_ARGUMENT, "stopping.max_tokens")

    def test_bad_negative_temperature(self):
        import grpc
        status, body = http("POST", "/v1/chat/completions",
                            {"messages": [{"role": "user", "content": "x"}], "temperature": -1})
        self.assert_http_error(status, body, 400, param="temperature")
        req = greedy_request("x", 4)
        req.sampling.temperature = -0.5
        self.assert_grpc_error(req, grpc.StatusCode.INVALID_ARGUMENT, "sampling.temperature")

    def test_bad_over_long_prompt(self):
        import grpc
        import tritmoe_pb2 as pb
        status, body = http("POST", "/v1/completions", {"prompt": [300] * MAX_MODEL_LEN})
        self.assert_http_error(status, body, 400, param="prompt", code="context_length_exceeded")
        status, body = http("POST", "/v1/completions",
                            {"prompt": [300] * 100, "max_tokens": MAX_MODEL_LEN})
        self.assert_http_error(status, body, 400, param="max_tokens",
                               code="context_length_exceeded")
        req = pb.GenerateRequest(token_ids=pb.TokenIds(ids=[300] * (MAX_MODEL_LEN + 5)))
        self.assert_grpc_error(req, grpc.StatusCode.INVALID_ARGUMENT, "token_ids")

    def test_bad_unknown_model(self):
        import grpc
        status, body = http("POST", "/v1/completions", {"model": "gpt-4", "prompt": "x"})
        self.assert_http_error(status, body, 404, param="model", code="model_not_found")
        req = greedy_request("x", 4)
        req.model = "gpt-4"
        self.assert_grpc_error(req, grpc.StatusCode.NOT_FOUND, "model")

    def wait_idle(self):
        deadline = time.time() + 30
        while time.time() < deadline:
            if metric("tritmoe_num_requests_running", model_name="tiny") == 0:
                return True
            time.sleep(0.05)
        return False

    def test_bad_client_disconnects_mid_stream_http(self):
        before = metric("tritmoe_request_failure_total", model_name="tiny", reason="cancelled")
        body = json.dumps({"prompt": "walk away", "max_tokens": 400, "ignore_eos": True,
                           "stream": True}).encode()
        s = socket.create_connection(("127.0.0.1", SERVER.http), timeout=30)
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                  b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        got = b""
        while got.count(b"data: ") < 3:
            chunk = s.recv(4096)
            self.assertTrue(chunk, "the server closed the stream early")
            got += chunk
        s.close()  # mid-stream
        self.assertTrue(self.wait_idle(), "the abandoned sequence was not freed")
        after = metric("tritmoe_request_failure_total", model_name="tiny", reason="cancelled")
        self.assertEqual(after, before + 1)
        self.assert_still_serving()

    def test_bad_client_cancels_grpc_stream(self):
        before = metric("tritmoe_request_failure_total", model_name="tiny", reason="cancelled")
        with channel() as ch:
            it = generate_call(ch)(greedy_request("cancel me", 400), timeout=60)
            next(it)
            next(it)
            it.cancel()
        self.assertTrue(self.wait_idle(), "the cancelled sequence was not freed")
        after = metric("tritmoe_request_failure_total", model_name="tiny", reason="cancelled")
        self.assertEqual(after, before + 1)
        self.assert_still_serving()

    def test_abort_rpc_ends_the_stream(self):
        import tritmoe_pb2 as pb
        with channel() as ch:
            abort = ch.unary_unary("/tritmoe.v1.Generation/Abort",
                                   request_serializer=pb.AbortRequest.SerializeToString,
                                   response_deserializer=pb.AbortResponse.FromString)
            it = generate_call(ch)(greedy_request("abort me", 400, request_id="abort-me"),
                                   timeout=60)
            first = next(it)
            self.assertEqual(first.request_id, "abort-me")
            self.assertEqual(abort(pb.AbortRequest(request_ids=["abort-me", "nope"]),
                                   timeout=10).aborted, 1)
            rest = list(it)
        self.assertEqual(rest[-1].complete.finish_reason, pb.FINISH_REASON_ABORT)
        self.assertLess(rest[-1].complete.usage.completion_tokens, 400)

    def test_bench_serve_smoke(self):
        out = os.path.join(ARGS.work, "bench.json")
        subprocess.run([ARGS.tritmoe, "bench-serve", "--port", str(SERVER.http), "-c", "1,4",
                        "--input-len", "8", "--output-len", "6", "--min-prompts", "4",
                        "--prompts-per-stream", "1", "--json-out", out],
                       check=True, capture_output=True, timeout=240)
        with open(out) as f:
            levels = json.load(f)["levels"]
        self.assertEqual([l["concurrency"] for l in levels], [1, 4])
        for l in levels:
            self.assertEqual(l["failed"], 0)
            self.assertEqual(l["completed"], 4)
            self.assertEqual(l["output_tokens"], 24)
            self.assertGreater(l["output_throughput"], 0)
            self.assertGreater(l["ttft_ms"]["median"], 0)


def main():
    global ARGS, SERVER
    p = argparse.ArgumentParser()
    p.add_argument("--tritmoe", required=True)
    p.add_argument("--np", type=int, default=1)
    p.add_argument("--mpirun", default=os.path.join(ROOT, "tests", "mpi", "mpirun.sh"))
    p.add_argument("--work", default="")
    ARGS, rest = p.parse_known_args()
    ARGS.work = ARGS.work or tempfile.mkdtemp(prefix="serve_e2e_")
    os.makedirs(ARGS.work, exist_ok=True)
    compile_protos(ARGS.work)
    ARGS.model = os.path.join(ARGS.work, "tiny.gguf")
    subprocess.run([ARGS.tritmoe, "gen-model", "--config", "tiny", "--recipe", "ud-1.58",
                    "--out", ARGS.model], check=True, capture_output=True, timeout=120)
    SERVER = Server(ARGS.model, ARGS.work)
    ok = False
    try:
        prog = unittest.main(argv=[sys.argv[0]] + rest, exit=False, verbosity=2)
        ok = prog.result.wasSuccessful()
    finally:
        code = SERVER.stop()
        log = SERVER.read_log()
    print(f"server exit code after SIGTERM: {code}")
    if code != 0:
        print("FAIL: SIGTERM did not shut the server down cleanly\n" + log)
        ok = False
    if "shutting down" not in log:
        print("FAIL: the server did not log its shutdown\n" + log)
        ok = False
    if not ok:
        print("---- server log ----\n" + log[-5000:])
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
