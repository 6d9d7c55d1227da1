#include "tests/quant/testvector_reader.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace tritmoe::testing {
namespace {

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

enum class Kind { kNone, kFloats, kBytes };

struct Section {
  std::string name;
  Kind kind = Kind::kNone;
  int64_t count = -1;  // stated count, -1 when the header states none
};

// "# input: 2048 float32 values ..." -> {input, kFloats, 2048}.
Section ParseSectionHeader(const std::string& text) {
  Section s;
  size_t i = 0;
  while (i < text.size() && (std::isalnum(static_cast<unsigned char>(text[i])) || text[i] == '_')) {
    ++i;
  }
  s.name = text.substr(0, i);
  const bool floats = text.find("float32 values") != std::string::npos;
  const bool bytes = text.find(" bytes") != std::string::npos;
  if (s.name.empty() || (!floats && !bytes)) return Section{};
  s.kind = floats ? Kind::kFloats : Kind::kBytes;
  const size_t colon = text.find(':');
  if (colon != std::string::npos) {
    const char* p = text.c_str() + colon + 1;
    char* end = nullptr;
    const long long v = std::strtoll(p, &end, 10);
    if (end != p) s.count = v;
  }
  return s;
}

void ParseParams(const std::string& text, std::map<std::string, std::string>* params) {
  std::istringstream in(text);
  std::string tok;
  while (in >> tok) {
    const size_t eq = tok.find('=');
    if (eq == std::string::npos || eq == 0) continue;
    while (!tok.empty() && (tok.back() == ';' || tok.back() == ',')) tok.pop_back();
    (*params)[tok.substr(0, eq)] = tok.substr(eq + 1);
  }
}

}  // namespace

std::vector<float> TestVector::Floats(const std::string& section) const {
  std::vector<float> out;
  auto it = floats.find(section);
  if (it == floats.end()) return out;
  out.resize(it->second.size());
  std::memcpy(out.data(), it->second.data(), out.size() * sizeof(float));
  return out;
}

const std::vector<uint8_t>& TestVector::Bytes(const std::string& section) const {
  static const std::vector<uint8_t>* const kEmpty = new std::vector<uint8_t>();
  auto it = bytes.find(section);
  return it == bytes.end() ? *kEmpty : it->second;
}

int64_t TestVector::IntParam(const std::string& key, int64_t fallback) const {
  auto it = params.find(key);
  if (it == params.end() || it->second.empty()) return fallback;
  char* end = nullptr;
  const long long v = std::strtoll(it->second.c_str(), &end, 10);
  return *end == '\0' ? v : fallback;
}

std::string TestVector::Param(const std::string& key) const {
  auto it = params.find(key);
  return it == params.end() ? std::string() : it->second;
}

absl::StatusOr<TestVector> ReadTestVector(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open test vector ", path));
  TestVector tv;
  tv.path = path;
  Section cur;
  std::vector<Section> sections;
  std::string line;
  int line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    if (line[0] == '#') {
      size_t b = 1;
      while (b < line.size() && line[b] == ' ') ++b;
      const std::string text = line.substr(b);
      ParseParams(text, &tv.params);
      cur = ParseSectionHeader(text);
      if (cur.kind != Kind::kNone) {
        sections.push_back(cur);
        if (cur.kind == Kind::kFloats) tv.floats[cur.name];
        if (cur.kind == Kind::kBytes) {
          tv.bytes[cur.name];
          tv.byte_lines[cur.name];
        }
      }
      continue;
    }
    const std::string where = absl::StrCat(path, ":", line_no);
    if (cur.kind == Kind::kNone) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": data line outside a data section"));
    }
    std::istringstream words(line);
    std::string w;
    if (cur.kind == Kind::kFloats) {
      while (words >> w) {
        if (w.size() != 8) {
          return absl::InvalidArgumentError(absl::StrCat(where, ": bad float word '", w, "'"));
        }
        uint32_t v = 0;
        for (char c : w) {
          const int d = HexDigit(c);
          if (d < 0) return absl::InvalidArgumentError(absl::StrCat(where, ": bad hex '", w, "'"));
          v = (v << 4) | static_cast<uint32_t>(d);
        }
        tv.floats[cur.name].push_back(v);
      }
    } else {
      std::vector<uint8_t> row;
      while (words >> w) {
        if (w.size() % 2 != 0) {
          return absl::InvalidArgumentError(absl::StrCat(where, ": odd number of hex digits"));
        }
        for (size_t i = 0; i < w.size(); i += 2) {
          const int hi = HexDigit(w[i]), lo = HexDigit(w[i + 1]);
          if (hi < 0 || lo < 0) {
            return absl::InvalidArgumentError(absl::StrCat(where, ": bad hex '", w, "'"));
          }
          row.push_back(static_cast<uint8_t>(hi * 16 + lo));
        }
      }
      auto& all = tv.bytes[cur.name];
      all.insert(all.end(), row.begin(), row.end());
      tv.byte_lines[cur.name].push_back(std::move(row));
    }
  }
  for (const Section& s : sections) {
    if (s.count < 0) continue;
    const int64_t got = s.kind == Kind::kFloats ? static_cast<int64_t>(tv.floats[s.name].size())
                                                : static_cast<int64_t>(tv.bytes[s.name].size());
    if (got != s.count) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": section '", s.name, "' has ", got,
                                                     " values, header says ", s.count));
    }
  }
  return tv;
}

std::vector<std::string> ListTestVectors(const std::string& dir, const std::string& prefix) {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind(prefix, 0) == 0 && e.path().extension() == ".txt") names.push_back(name);
  }
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace tritmoe::testing
