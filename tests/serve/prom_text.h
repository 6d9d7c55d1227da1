// A small reader of the Prometheus text exposition format for tests: it parses each sample line
// `name{k="v",...} value` on its own (not with prometheus-cpp), so tests assert what a scraper
// would read, whatever order the labels are printed in.
#pragma once

#include <cstdlib>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

namespace tritmoe::testing {

struct PromSample {
  std::string name;
  std::map<std::string, std::string> labels;
  double value = 0;
};

// Sample lines only (# HELP / # TYPE skipped); an unparsable line yields a sample named "!bad".
inline std::vector<PromSample> ParsePromText(const std::string& text) {
  std::vector<PromSample> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    PromSample s;
    size_t i = 0;
    while (i < line.size() && line[i] != '{' && line[i] != ' ') s.name += line[i++];
    if (i < line.size() && line[i] == '{') {
      ++i;
      while (i < line.size() && line[i] != '}') {
        std::string key, value;
        while (i < line.size() && line[i] != '=') key += line[i++];
        if (i + 1 >= line.size() || line[i + 1] != '"') return {{"!bad", {}, 0}};
        i += 2;
        while (i < line.size() && line[i] != '"') {
          if (line[i] == '\\' && i + 1 < line.size()) {
            ++i;
            value += line[i] == 'n' ? '\n' : line[i];
          } else {
            value += line[i];
          }
          ++i;
        }
        ++i;  // closing quote
        if (i < line.size() && line[i] == ',') ++i;
        s.labels[key] = value;
      }
      ++i;  // '}'
    }
    if (i >= line.size() || line[i] != ' ') return {{"!bad", {}, 0}};
    const std::string v = line.substr(i + 1);
    if (v == "+Inf") {
      s.value = HUGE_VAL;
    } else {
      char* end = nullptr;
      s.value = std::strtod(v.c_str(), &end);
      if (end == v.c_str()) return {{"!bad", {}, 0}};
    }
    out.push_back(std::move(s));
  }
  return out;
}

// The value of the one sample with this name and exactly these labels, if present.
inline std::optional<double> PromValue(const std::string& text, const std::string& name,
                                       const std::map<std::string, std::string>& labels) {
  for (const PromSample& s : ParsePromText(text)) {
    if (s.name == name && s.labels == labels) return s.value;
  }
  return std::nullopt;
}

}  // namespace tritmoe::testing
