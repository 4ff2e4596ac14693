#include "analysis/text/unicode.h"

#include <algorithm>

#include "analysis/text/utf8.h"

namespace moefy::uni {

namespace {
#include "analysis/text/unicode_tables.inc"

constexpr char32_t SBase = 0xAC00, LBase = 0x1100, VBase = 0x1161, TBase = 0x11A7;
constexpr int LCount = 19, VCount = 21, TCount = 28, NCount = VCount * TCount, SCount = LCount * NCount;

const DecompEntry* findDecomp(char32_t c) {
  auto it = std::lower_bound(std::begin(kDecomp), std::end(kDecomp), c,
                             [](const DecompEntry& e, char32_t v) { return e.cp < v; });
  return it != std::end(kDecomp) && it->cp == c ? it : nullptr;
}

void decomposeChar(char32_t c, bool compat, std::u32string& out) {
  if (c >= SBase && c < SBase + SCount) {
    int s = static_cast<int>(c - SBase);
    out.push_back(LBase + s / NCount);
    out.push_back(VBase + (s % NCount) / TCount);
    if (s % TCount) out.push_back(TBase + s % TCount);
    return;
  }
  if (c < 0xC0) {
    // Below U+00C0 only compatibility decompositions exist (U+00A0.. U+00BF).
    if (!compat || c < 0xA0) {
      out.push_back(c);
      return;
    }
  }
  const DecompEntry* e = findDecomp(c);
  if (!e || (e->compat && !compat)) {
    out.push_back(c);
    return;
  }
  for (int k = 0; k < e->len; ++k) decomposeChar(kPool[e->off + k], compat, out);
}

char32_t compose(char32_t a, char32_t b) {
  if (a >= LBase && a < LBase + LCount && b >= VBase && b < VBase + VCount)
    return SBase + ((a - LBase) * VCount + (b - VBase)) * TCount;
  if (a >= SBase && a < SBase + SCount && (a - SBase) % TCount == 0 && b > TBase && b < TBase + TCount) return a + (b - TBase);
  auto it = std::lower_bound(std::begin(kComp), std::end(kComp), std::make_pair(a, b), [](const CompEntry& e, const std::pair<char32_t, char32_t>& v) {
    return e.a != v.first ? e.a < v.first : e.b < v.second;
  });
  if (it != std::end(kComp) && it->a == a && it->b == b) return it->c;
  return 0;
}

}  // namespace

Cat category(char32_t cp) {
  if (cp >= 0x110000) return Cat::Cn;
  uint32_t key = (static_cast<uint32_t>(cp) << 5) | 31u;
  auto it = std::upper_bound(std::begin(kCatRuns), std::end(kCatRuns), key);
  --it;
  return static_cast<Cat>(*it & 31u);
}

bool isWhitespace(char32_t c) {
  if (c < 0x80) return c == ' ' || (c >= 0x09 && c <= 0x0D);
  switch (c) {
    case 0x85: case 0xA0: case 0x1680: case 0x2028: case 0x2029: case 0x202F: case 0x205F: case 0x3000:
      return true;
    default:
      return c >= 0x2000 && c <= 0x200A;
  }
}

bool isAlphanumeric(char32_t c) {
  if (c < 0x80) return (c >= '0' && c <= '9') || ((c | 32) >= 'a' && (c | 32) <= 'z');
  return isLetter(c) || isNumber(c);
}

void appendLower(char32_t c, std::u32string& out) {
  if (c < 0x80) {
    out.push_back(c >= 'A' && c <= 'Z' ? c + 32 : c);
    return;
  }
  auto it = std::lower_bound(std::begin(kLower), std::end(kLower), c, [](const LowerEntry& e, char32_t v) { return e.cp < v; });
  if (it != std::end(kLower) && it->cp == c) {
    for (int k = 0; k < it->len; ++k) out.push_back(kPool[it->off + k]);
  } else {
    out.push_back(c);
  }
}

uint8_t combiningClass(char32_t c) {
  if (c < 0x300) return 0;
  auto it = std::lower_bound(std::begin(kCcc), std::end(kCcc), c, [](const CccEntry& e, char32_t v) { return e.cp < v; });
  return it != std::end(kCcc) && it->cp == c ? it->ccc : 0;
}

void normalize(std::u32string& s, Form form) {
  bool compat = form == Form::NFKC || form == Form::NFKD;
  std::u32string d;
  d.reserve(s.size() + 8);
  for (char32_t c : s) decomposeChar(c, compat, d);
  // Canonical ordering: stable sort runs of non-starters by ccc.
  for (size_t i = 0; i < d.size();) {
    if (combiningClass(d[i]) == 0) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < d.size() && combiningClass(d[j]) != 0) ++j;
    if (j - i > 1)
      std::stable_sort(d.begin() + static_cast<long>(i), d.begin() + static_cast<long>(j),
                       [](char32_t a, char32_t b) { return combiningClass(a) < combiningClass(b); });
    i = j;
  }
  if (form == Form::NFD || form == Form::NFKD) {
    s.swap(d);
    return;
  }
  // Canonical composition.
  std::u32string r;
  r.reserve(d.size());
  long starter = -1;
  int lastCcc = -1;
  for (char32_t c : d) {
    int cc = combiningClass(c);
    if (starter >= 0) {
      bool blocked = lastCcc != -1 && (lastCcc == 0 || lastCcc >= cc);
      // lastCcc == -1 means c is adjacent to the starter.
      if (!blocked) {
        char32_t comp = compose(r[static_cast<size_t>(starter)], c);
        if (comp) {
          r[static_cast<size_t>(starter)] = comp;
          continue;
        }
      }
    }
    if (cc == 0) {
      starter = static_cast<long>(r.size());
      lastCcc = -1;
    } else {
      lastCcc = cc;
    }
    r.push_back(c);
  }
  s.swap(r);
}

std::string normalize(const std::string& s, Form form) {
  bool ascii = true;
  for (char c : s)
    if (static_cast<unsigned char>(c) >= 0x80) {
      ascii = false;
      break;
    }
  if (ascii) return s;
  // Quick check for NFC: text whose characters have no decomposition, ccc 0
  // and no composition partner is unchanged; we simply run the full algorithm.
  std::u32string u;
  u.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) u.push_back(utf8::next(s, i));
  normalize(u, form);
  return utf8::encode(u);
}

}  // namespace moefy::uni
