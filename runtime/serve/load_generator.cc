#include "runtime/serve/load_generator.h"

#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <mutex>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "nlohmann/json.hpp"
#include "runtime/serve/field_error.h"

namespace tritmoe {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

struct RequestSpec {
  std::vector<int32_t> prompt;
  int output_len = 0;
  double arrival_s = 0;  // offset from the start of the run
};

struct RequestMetrics {
  bool ok = false;
  std::string error;
  int64_t output_tokens = 0;
  double ttft_ms = 0, e2el_ms = 0;
  std::vector<double> itl_ms;
};

// One streamed request; parses the SSE events as they arrive.
RequestMetrics Send(httplib::Client& client, const LoadOptions& o, const std::string& model,
                    const RequestSpec& spec) {
  RequestMetrics m;
  json body = {{"model", model},     {"max_tokens", spec.output_len},
               {"ignore_eos", true}, {"temperature", 0},
               {"stream", true},     {"stream_options", {{"include_usage", true}}}};
  if (o.endpoint == "/v1/chat/completions") {
    // Chat takes text: the token ids are sent as their numbers (the length is only approximate).
    std::string text;
    for (int32_t t : spec.prompt) absl::StrAppend(&text, t, " ");
    body["messages"] = json::array({{{"role", "user"}, {"content", text}}});
  } else {
    body["prompt"] = spec.prompt;
  }
  httplib::Request req;
  req.method = "POST";
  req.path = o.endpoint;
  req.body = body.dump();
  req.set_header("Content-Type", "application/json");
  std::string buffer;
  bool first = true, done = false;
  Clock::time_point last;
  const Clock::time_point start = Clock::now();
  req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
    buffer.append(data, n);
    size_t end;
    while ((end = buffer.find("\n\n")) != std::string::npos) {
      const std::string event = buffer.substr(0, end);
      buffer.erase(0, end + 2);
      if (event.rfind("data: ", 0) != 0) continue;
      const std::string payload = event.substr(6);
      if (payload == "[DONE]") {
        done = true;
        continue;
      }
      json j = json::parse(payload, nullptr, /*allow_exceptions=*/false);
      if (j.is_discarded()) {
        m.error = "unparsable SSE event: " + payload.substr(0, 200);
        return false;
      }
      if (j.contains("error")) {
        m.error = j["error"].value("message", std::string("error event"));
        return false;
      }
      if (j.contains("usage") && j["usage"].is_object()) {
        m.output_tokens = j["usage"].value("completion_tokens", int64_t{0});
      }
      const json& choices = j.value("choices", json::array());
      if (choices.empty()) continue;
      const json& c = choices[0];
      bool has_text = c.contains("text") && c["text"].is_string() &&
                      !c["text"].get_ref<const std::string&>().empty();
      if (c.contains("delta") && c["delta"].is_object()) {
        for (const char* key : {"content", "reasoning_content"}) {
          const json& d = c["delta"];
          has_text |= d.contains(key) && d[key].is_string() &&
                      !d[key].get_ref<const std::string&>().empty();
        }
      }
      if (!has_text) continue;
      const Clock::time_point now = Clock::now();
      if (first) {
        m.ttft_ms = Ms(now - start);
        first = false;
      } else {
        m.itl_ms.push_back(Ms(now - last));
      }
      last = now;
    }
    return true;
  };
  httplib::Response res;
  httplib::Error error = httplib::Error::Success;
  const bool sent = client.send(req, res, error);
  m.e2el_ms = Ms(Clock::now() - start);
  if (!m.error.empty()) return m;
  if (!sent) {
    m.error = absl::StrCat("HTTP error: ", httplib::to_string(error));
  } else if (res.status != 200) {
    m.error = absl::StrCat("HTTP ", res.status, ": ", buffer.substr(0, 300));
  } else if (!done) {
    m.error = "the stream ended without [DONE]";
  } else {
    m.ok = true;
  }
  return m;
}

}  // namespace

absl::Status LoadOptions::Validate() const {
  if (port < 1 || port > 65535) return FieldError("port", absl::StrCat("bad port ", port));
  if (endpoint != "/v1/completions" && endpoint != "/v1/chat/completions") {
    return FieldError("endpoint", "expected /v1/completions or /v1/chat/completions");
  }
  if (concurrency < 1) return FieldError("concurrency", "must be >= 1");
  if (num_prompts < 1) return FieldError("num_prompts", "must be >= 1");
  if (input_len < 1 || output_len < 1) return FieldError("input_len", "lengths must be >= 1");
  if (range_ratio < 0 || range_ratio >= 1) return FieldError("range_ratio", "must be in [0, 1)");
  if (request_rate < 0) return FieldError("request_rate", "must be >= 0");
  return absl::OkStatus();
}

Distribution Summarize(std::vector<double> v) {
  Distribution d;
  d.count = static_cast<int64_t>(v.size());
  if (v.empty()) return d;
  std::sort(v.begin(), v.end());
  double sum = 0;
  for (double x : v) sum += x;
  d.mean = sum / v.size();
  auto pct = [&](double p) {
    const double pos = p / 100.0 * (v.size() - 1);
    const size_t lo = static_cast<size_t>(std::floor(pos));
    const size_t hi = std::min(lo + 1, v.size() - 1);
    return v[lo] + (v[hi] - v[lo]) * (pos - lo);
  };
  d.median = pct(50);
  d.p99 = pct(99);
  return d;
}

absl::StatusOr<ServerModelInfo> QueryModel(const std::string& host, int port) {
  httplib::Client client(host, port);
  client.set_connection_timeout(5);
  client.set_read_timeout(10);
  httplib::Result r = client.Get("/v1/models");
  if (!r) {
    return absl::UnavailableError(absl::StrCat("GET http://", host, ":", port,
                                               "/v1/models: ", httplib::to_string(r.error())));
  }
  json j = json::parse(r->body, nullptr, false);
  if (r->status != 200 || j.is_discarded() || !j.contains("data") || !j["data"].is_array() ||
      j["data"].empty()) {
    return absl::UnavailableError(
        absl::StrCat("GET /v1/models: unexpected answer (HTTP ", r->status, ")"));
  }
  ServerModelInfo info;
  const json& m = j["data"][0];
  info.name = m.value("id", std::string());
  info.vocab_size = m.value("vocab_size", 0);
  info.max_model_len = m.value("max_model_len", int64_t{0});
  return info;
}

absl::StatusOr<LoadResult> RunLoad(const LoadOptions& o) {
  RETURN_IF_ERROR(o.Validate());
  std::string model = o.model;
  int vocab = o.vocab_size;
  if (model.empty() || vocab == 0) {
    ASSIGN_OR_RETURN(ServerModelInfo info, QueryModel(o.host, o.port));
    if (model.empty()) model = info.name;
    if (vocab == 0) vocab = info.vocab_size;
  }
  if (vocab <= 8) {
    return absl::InvalidArgumentError("unknown vocabulary size; pass --vocab-size");
  }

  // The requests, drawn up front from the seed so that every level of a sweep sends the same.
  std::mt19937_64 rng(o.seed);
  auto length = [&](int len) {
    const int lo = std::max(1, static_cast<int>(std::floor(len * (1 - o.range_ratio))));
    const int hi = std::max(lo, static_cast<int>(std::ceil(len * (1 + o.range_ratio))));
    return lo + static_cast<int>(rng() % static_cast<uint64_t>(hi - lo + 1));
  };
  std::vector<RequestSpec> specs(o.num_prompts);
  double t = 0;
  for (RequestSpec& s : specs) {
    s.prompt.resize(length(o.input_len));
    // Ids below 3 are BOS/EOS/pad in DeepSeek vocabularies; the top ones are chat markup.
    for (int32_t& id : s.prompt) id = 3 + static_cast<int32_t>(rng() % (vocab - 8));
    s.output_len = length(o.output_len);
    if (o.request_rate > 0) {
      const double u = (static_cast<double>(rng() >> 11) + 0.5) / 9007199254740992.0;
      t += -std::log(u) / o.request_rate;
    }
    s.arrival_s = t;
  }

  std::vector<RequestMetrics> results(specs.size());
  std::atomic<size_t> next{0};
  const Clock::time_point start = Clock::now();
  std::vector<std::thread> workers;
  for (int w = 0; w < std::min<int>(o.concurrency, o.num_prompts); ++w) {
    workers.emplace_back([&] {
      httplib::Client client(o.host, o.port);
      client.set_connection_timeout(10);
      client.set_read_timeout(absl::ToInt64Seconds(o.timeout));
      client.set_keep_alive(true);
      // The request goes out as headers then body: with Nagle the body waits for the server's
      // delayed ACK (~40 ms), which would be counted as time to first token.
      client.set_tcp_nodelay(true);
      for (size_t i; (i = next.fetch_add(1)) < specs.size();) {
        std::this_thread::sleep_until(start +
                                      std::chrono::duration_cast<Clock::duration>(
                                          std::chrono::duration<double>(specs[i].arrival_s)));
        results[i] = Send(client, o, model, specs[i]);
      }
    });
  }
  for (std::thread& w : workers) w.join();
  const double duration = std::chrono::duration<double>(Clock::now() - start).count();

  LoadResult r;
  r.concurrency = o.concurrency;
  r.duration_s = duration;
  std::vector<double> ttft, tpot, itl, e2el;
  for (size_t i = 0; i < specs.size(); ++i) {
    const RequestMetrics& m = results[i];
    if (!m.ok) {
      ++r.failed;
      if (r.first_error.empty()) r.first_error = m.error;
      continue;
    }
    ++r.completed;
    r.input_tokens += static_cast<int64_t>(specs[i].prompt.size());
    r.output_tokens += m.output_tokens;
    ttft.push_back(m.ttft_ms);
    e2el.push_back(m.e2el_ms);
    if (m.output_tokens > 1) tpot.push_back((m.e2el_ms - m.ttft_ms) / (m.output_tokens - 1));
    itl.insert(itl.end(), m.itl_ms.begin(), m.itl_ms.end());
  }
  r.request_throughput = r.completed / duration;
  r.output_throughput = r.output_tokens / duration;
  r.total_throughput = (r.input_tokens + r.output_tokens) / duration;
  r.ttft_ms = Summarize(ttft);
  r.tpot_ms = Summarize(tpot);
  r.itl_ms = Summarize(itl);
  r.e2el_ms = Summarize(e2el);
  return r;
}

}  // namespace tritmoe
