#include "runtime/text/byte_unicode.h"

#include <array>

#include "runtime/text/utf8.h"

namespace tritmoe {
namespace {

constexpr bool MapsToItself(int b) {
  return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

constexpr std::array<uint16_t, 256> MakeByteToCodepoint() {
  std::array<uint16_t, 256> t{};
  int next = 0;
  for (int b = 0; b < 256; ++b) t[b] = static_cast<uint16_t>(MapsToItself(b) ? b : 256 + next++);
  return t;
}

constexpr int kMaxCodepoint = 256 + 68;  // exclusive bound of the alphabet's codepoints

constexpr std::array<int16_t, kMaxCodepoint> MakeCodepointToByte() {
  std::array<int16_t, kMaxCodepoint> t{};
  for (auto& v : t) v = -1;
  const auto fwd = MakeByteToCodepoint();
  for (int b = 0; b < 256; ++b) t[fwd[b]] = static_cast<int16_t>(b);
  return t;
}

constexpr std::array<uint16_t, 256> kByteToCodepoint = MakeByteToCodepoint();
constexpr std::array<int16_t, kMaxCodepoint> kCodepointToByte = MakeCodepointToByte();

}  // namespace

uint32_t ByteToCodepoint(uint8_t b) { return kByteToCodepoint[b]; }

int CodepointToByte(uint32_t cp) { return cp < kMaxCodepoint ? kCodepointToByte[cp] : -1; }

std::string BytesToVisible(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char c : bytes) AppendUtf8(kByteToCodepoint[static_cast<uint8_t>(c)], &out);
  return out;
}

std::optional<std::string> VisibleToBytes(std::string_view visible) {
  std::string out;
  out.reserve(visible.size());
  for (size_t i = 0; i < visible.size();) {
    const Utf8Unit u = ScanUtf8(visible, i);
    if (u.kind != Utf8Unit::kValid) return std::nullopt;
    const int b = CodepointToByte(u.codepoint);
    if (b < 0) return std::nullopt;
    out.push_back(static_cast<char>(b));
    i += u.length;
  }
  return out;
}

}  // namespace tritmoe
