#pragma once
// Unicode character data for the tokenizers' normalizers and pre-tokenizers:
// general categories, White_Space, lowercase mapping, canonical/compatibility
// decomposition, combining classes and composition. The tables are generated
// by scripts/tokref/gen_unicode_tables.py into unicode_tables.inc.
#include <cstdint>
#include <string>

namespace moefy::uni {

enum class Cat : uint8_t {
  Cn, Lu, Ll, Lt, Lm, Lo, Mn, Mc, Me, Nd, Nl, No, Pc, Pd, Ps, Pe, Pi, Pf, Po, Sm, Sc, Sk, So, Zs, Zl, Zp, Cc, Cf, Cs, Co
};

Cat category(char32_t cp);
inline bool isLetter(char32_t c) { Cat k = category(c); return k >= Cat::Lu && k <= Cat::Lo; }
inline bool isMark(char32_t c) { Cat k = category(c); return k >= Cat::Mn && k <= Cat::Me; }
inline bool isNumber(char32_t c) { Cat k = category(c); return k >= Cat::Nd && k <= Cat::No; }
inline bool isPunct(char32_t c) { Cat k = category(c); return k >= Cat::Pc && k <= Cat::Po; }
inline bool isSymbol(char32_t c) { Cat k = category(c); return k >= Cat::Sm && k <= Cat::So; }
/// Rust char::is_whitespace (the White_Space property).
bool isWhitespace(char32_t c);
/// Rust char::is_alphanumeric (Alphabetic or Numeric); approximated by L*, Nl, Nd, No plus Other_Alphabetic marks.
bool isAlphanumeric(char32_t c);
/// Rust char::is_control (general category Cc).
inline bool isControl(char32_t c) { return category(c) == Cat::Cc; }

/// Full lowercase mapping of one character (Rust char::to_lowercase).
void appendLower(char32_t c, std::u32string& out);

uint8_t combiningClass(char32_t c);

enum class Form { NFC, NFD, NFKC, NFKD };
/// Normalizes a code point string in place.
void normalize(std::u32string& s, Form form);
/// UTF-8 in, UTF-8 out. Fast path: returns the input unchanged when it is ASCII.
std::string normalize(const std::string& s, Form form);

}  // namespace moefy::uni
