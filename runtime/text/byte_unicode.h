// The GPT-2 byte-level alphabet: a bijection between the 256 byte values and 256 printable
// codepoints, so that BPE tokens over arbitrary bytes can be stored as readable strings (e.g. a
// space is stored as U+0120 'Ġ'). Bytes 0x21-0x7E, 0xA1-0xAC and 0xAE-0xFF map to the codepoint of
// the same value; the other 68 bytes map, in increasing byte order, to U+0100, U+0101, ...
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace tritmoe {

uint32_t ByteToCodepoint(uint8_t b);

// The byte a codepoint of the alphabet stands for, or -1 for codepoints outside it.
int CodepointToByte(uint32_t cp);

// Maps every byte of `bytes` to its visible character (UTF-8 encoded).
std::string BytesToVisible(std::string_view bytes);

// Inverse of BytesToVisible; nullopt when `visible` is not valid UTF-8 or holds a character
// outside the alphabet.
std::optional<std::string> VisibleToBytes(std::string_view visible);

}  // namespace tritmoe
