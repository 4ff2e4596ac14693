#pragma once
// Small UTF-8 helpers for the tokenizers. Text inside the tokenizers is always
// valid UTF-8: invalid input is first repaired with sanitize(), which replaces
// each maximal invalid subpart by U+FFFD exactly as the WHATWG decoder (and
// Rust's String::from_utf8_lossy, and JS's TextDecoder) does.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace moefy::utf8 {

/// Byte length of the sequence that starts with `lead` (1 for invalid leads).
inline int seqLen(unsigned char lead) {
  if (lead < 0x80) return 1;
  if (lead < 0xE0) return 2;
  if (lead < 0xF0) return 3;
  return 4;
}

/// Decodes the code point at s[i] of VALID UTF-8 and advances i.
inline char32_t next(std::string_view s, size_t& i) {
  unsigned char c = static_cast<unsigned char>(s[i]);
  if (c < 0x80) {
    ++i;
    return c;
  }
  if (c < 0xE0) {
    char32_t cp = ((c & 0x1Fu) << 6) | (static_cast<unsigned char>(s[i + 1]) & 0x3Fu);
    i += 2;
    return cp;
  }
  if (c < 0xF0) {
    char32_t cp = ((c & 0x0Fu) << 12) | ((static_cast<unsigned char>(s[i + 1]) & 0x3Fu) << 6) |
                  (static_cast<unsigned char>(s[i + 2]) & 0x3Fu);
    i += 3;
    return cp;
  }
  char32_t cp = ((c & 0x07u) << 18) | ((static_cast<unsigned char>(s[i + 1]) & 0x3Fu) << 12) |
                ((static_cast<unsigned char>(s[i + 2]) & 0x3Fu) << 6) | (static_cast<unsigned char>(s[i + 3]) & 0x3Fu);
  i += 4;
  return cp;
}

/// Code point that ends at s[end] (exclusive) of valid UTF-8; sets `start`.
inline char32_t prev(std::string_view s, size_t end, size_t& start) {
  size_t i = end - 1;
  while (i > 0 && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) --i;
  start = i;
  size_t j = i;
  return next(s, j);
}

inline void append(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

inline std::string encode(char32_t cp) {
  std::string s;
  append(s, cp);
  return s;
}

/// Length of the longest valid prefix of s (s.size() if all valid).
size_t validPrefix(std::string_view s);
inline bool isValid(std::string_view s) { return validPrefix(s) == s.size(); }

/// Replaces invalid sequences by U+FFFD (one per maximal subpart).
/// Returns the number of replacements made.
size_t sanitize(std::string_view in, std::string& out);
std::string sanitized(std::string_view in);
/// libsentencepiece's policy: one U+FFFD per invalid byte.
size_t sanitizePerByte(std::string_view in, std::string& out);

/// Decodes valid UTF-8 to code points.
std::vector<char32_t> decode(std::string_view s);
std::string encode(const std::u32string& cps);
/// Number of code points of valid UTF-8.
size_t length(std::string_view s);

}  // namespace moefy::utf8
