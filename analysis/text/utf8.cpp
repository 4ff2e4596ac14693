#include "analysis/text/utf8.h"

namespace moefy::utf8 {

namespace {

// Length of the valid sequence at s[i], or -k where k >= 1 is the length of the
// maximal invalid subpart to replace by one U+FFFD (Unicode 3.9, "best practice").
int check(std::string_view s, size_t i) {
  const size_t n = s.size();
  unsigned char c = static_cast<unsigned char>(s[i]);
  if (c < 0x80) return 1;
  int need;
  unsigned char lo = 0x80, hi = 0xBF;
  if (c >= 0xC2 && c <= 0xDF) {
    need = 1;
  } else if (c >= 0xE0 && c <= 0xEF) {
    need = 2;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    need = 3;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    return -1;
  }
  for (int k = 1; k <= need; ++k) {
    if (i + k >= n) return -k;
    unsigned char b = static_cast<unsigned char>(s[i + k]);
    unsigned char l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xBF;
    if (b < l || b > h) return -k;
  }
  return need + 1;
}

}  // namespace

size_t validPrefix(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    // Fast path over ASCII.
    if (static_cast<unsigned char>(s[i]) < 0x80) {
      ++i;
      continue;
    }
    int r = check(s, i);
    if (r < 0) return i;
    i += r;
  }
  return i;
}

size_t sanitize(std::string_view in, std::string& out) {
  out.clear();
  out.reserve(in.size());
  size_t replaced = 0, i = 0;
  while (i < in.size()) {
    unsigned char c = static_cast<unsigned char>(in[i]);
    if (c < 0x80) {
      out.push_back(static_cast<char>(c));
      ++i;
      continue;
    }
    int r = check(in, i);
    if (r > 0) {
      out.append(in.data() + i, r);
      i += r;
    } else {
      out.append("\xEF\xBF\xBD");
      ++replaced;
      i += -r;
    }
  }
  return replaced;
}

size_t sanitizePerByte(std::string_view in, std::string& out) {
  out.clear();
  out.reserve(in.size());
  size_t replaced = 0, i = 0;
  while (i < in.size()) {
    int r = check(in, i);
    if (r > 0) {
      out.append(in.data() + i, r);
      i += r;
    } else {
      out.append("\xEF\xBF\xBD");
      ++replaced;
      ++i;
    }
  }
  return replaced;
}

std::string sanitized(std::string_view in) {
  std::string out;
  sanitize(in, out);
  return out;
}

std::vector<char32_t> decode(std::string_view s) {
  std::vector<char32_t> out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) out.push_back(next(s, i));
  return out;
}

std::string encode(const std::u32string& cps) {
  std::string s;
  s.reserve(cps.size());
  for (char32_t c : cps) append(s, c);
  return s;
}

size_t length(std::string_view s) {
  size_t n = 0;
  for (char c : s) n += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  return n;
}

}  // namespace moefy::utf8
