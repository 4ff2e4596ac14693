// The components of Hugging Face tokenizer.json pipelines. Each follows the
// Rust `tokenizers` crate (the library that wrote the files); where the JS
// reference (@huggingface/tokenizers) is known to differ, docs/tokenizers.md
// says so.
#include "analysis/text/hf_components.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <cmath>
#include <cstring>
#include <limits>
#include <mutex>
#include <nlohmann/json.hpp>
#include <queue>
#include <shared_mutex>
#include <unordered_map>

#include "analysis/common/error.h"
#include "analysis/common/hash.h"
#include "analysis/io/json_input.h"
#include "analysis/text/charsmap.h"
#include "analysis/text/onig_regex.h"
#include "analysis/text/unicode.h"
#include "analysis/text/utf8.h"

namespace moefy::hf {

using json = nlohmann::json;

namespace {

// ---------------------------------------------------------------------------
// Helpers

struct SvHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const noexcept {
    // FNV-1a, 64 bit: fast on the short strings of a vocabulary.
    return static_cast<size_t>(fnv1a(kFnvOffset, s.data(), s.size()));
  }
};
using VocabMap = std::unordered_map<std::string, int32_t, SvHash, std::equal_to<>>;

// Fast hash of a short byte string (8 bytes at a time).
inline uint64_t hashBytes(std::string_view s) {
  uint64_t h = 0x9E3779B97F4A7C15ull ^ (s.size() * 0xFF51AFD7ED558CCDull);
  size_t i = 0;
  for (; i + 8 <= s.size(); i += 8) {
    uint64_t w;
    std::memcpy(&w, s.data() + i, 8);
    h = (h ^ w) * 0xC2B2AE3D27D4EB4Full;
    h ^= h >> 29;
  }
  uint64_t w = 0;
  std::memcpy(&w, s.data() + i, s.size() - i);
  h = (h ^ w) * 0xC2B2AE3D27D4EB4Full;
  h ^= h >> 32;
  return h;
}

// Open-addressing index over strings owned elsewhere (an id -> string table):
// slots hold (hash, id); a lookup compares the candidate's string.
class FlatIndex {
 public:
  void build(const std::vector<std::string>& byId) {
    size_t n = 0;
    for (const auto& k : byId) n += !k.empty();
    size_t cap = 16;
    while (cap < n * 2 + 16) cap <<= 1;
    mask_ = cap - 1;
    slots_.assign(cap, Slot{0, -1});
    for (size_t id = 0; id < byId.size(); ++id) {
      if (byId[id].empty()) continue;
      uint64_t h = hashBytes(byId[id]);
      size_t i = h & mask_;
      while (slots_[i].id >= 0) i = (i + 1) & mask_;
      slots_[i] = {static_cast<uint32_t>(h >> 32), static_cast<int32_t>(id)};
    }
    keys_ = &byId;
  }
  int32_t find(std::string_view key) const {
    uint64_t h = hashBytes(key);
    auto tag = static_cast<uint32_t>(h >> 32);
    for (size_t i = h & mask_;; i = (i + 1) & mask_) {
      const Slot& sl = slots_[i];
      if (sl.id < 0) return -1;
      if (sl.tag == tag && (*keys_)[sl.id] == key) return sl.id;
    }
  }

 private:
  struct Slot {
    uint32_t tag;
    int32_t id;
  };
  std::vector<Slot> slots_;
  size_t mask_ = 0;
  const std::vector<std::string>* keys_ = nullptr;
};

// Open-addressing map from a (left, right) id pair to (rank, merged id).
class MergeMap {
 public:
  void build(const std::vector<std::pair<uint64_t, std::pair<int32_t, int32_t>>>& items) {
    size_t cap = 16;
    while (cap < items.size() * 2 + 16) cap <<= 1;
    mask_ = cap - 1;
    slots_.assign(cap, Slot{~0ull, 0, 0});
    for (const auto& [k, v] : items) {
      size_t i = mix(k) & mask_;
      while (slots_[i].key != ~0ull && slots_[i].key != k) i = (i + 1) & mask_;
      if (slots_[i].key == k) continue;  // the first (lowest-rank) merge of a pair wins
      slots_[i] = {k, v.first, v.second};
    }
    size_ = items.size();
  }
  // Returns false if the pair has no merge.
  bool find(uint64_t k, int32_t& rank, int32_t& newId) const {
    for (size_t i = mix(k) & mask_;; i = (i + 1) & mask_) {
      const Slot& s = slots_[i];
      if (s.key == k) {
        rank = s.rank;
        newId = s.newId;
        return true;
      }
      if (s.key == ~0ull) return false;
    }
  }
  bool empty() const { return size_ == 0; }

 private:
  static uint64_t mix(uint64_t k) {
    k ^= k >> 33;
    k *= 0xFF51AFD7ED558CCDull;
    k ^= k >> 33;
    return k;
  }
  struct Slot {
    uint64_t key;
    int32_t rank, newId;
  };
  std::vector<Slot> slots_;
  size_t mask_ = 0, size_ = 0;
};

std::string typeOf(const json& j) { return j.is_object() && j.contains("type") && j["type"].is_string() ? j["type"].get<std::string>() : ""; }

bool getBool(const json& j, const char* key, bool fallback) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  return it->get<bool>();
}

std::string getStr(const json& j, const char* key, const std::string& fallback) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  return it->get<std::string>();
}

bool isWs(char32_t c) { return uni::isWhitespace(c); }

// Splits of a string: [start, end) with a "is match" flag.
struct Span {
  uint32_t a, b;
  bool match;
};

enum class Behavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };

Behavior parseBehavior(const std::string& s, const std::string& where) {
  if (s == "Removed") return Behavior::Removed;
  if (s == "Isolated") return Behavior::Isolated;
  if (s == "MergedWithPrevious") return Behavior::MergedWithPrevious;
  if (s == "MergedWithNext") return Behavior::MergedWithNext;
  if (s == "Contiguous") return Behavior::Contiguous;
  throw FormatError(where + ": unknown split behavior '" + s + "'");
}

// Turns matches into spans covering the whole string (Rust Pattern::find_matches).
void matchesToSpans(const std::vector<std::pair<uint32_t, uint32_t>>& m, uint32_t n, std::vector<Span>& out) {
  out.clear();
  if (n == 0) {
    out.push_back({0, 0, false});
    return;
  }
  uint32_t prev = 0;
  for (auto [a, b] : m) {
    if (prev != a) out.push_back({prev, a, false});
    out.push_back({a, b, true});
    prev = b;
  }
  if (prev != n) out.push_back({prev, n, false});
}

// Applies a split behaviour (Rust NormalizedString::split): returns kept spans.
void applyBehavior(std::vector<Span>& spans, Behavior behavior) {
  std::vector<Span> out;
  out.reserve(spans.size());
  switch (behavior) {
    case Behavior::Isolated:
      for (auto& s : spans) out.push_back({s.a, s.b, false});
      break;
    case Behavior::Removed:
      for (auto& s : spans)
        if (!s.match) out.push_back(s);
      break;
    case Behavior::MergedWithPrevious: {
      bool prevMatch = false;
      for (auto& s : spans) {
        if (s.match && !prevMatch && !out.empty()) {
          out.back().b = s.b;
        } else {
          out.push_back({s.a, s.b, false});
        }
        prevMatch = s.match;
      }
      break;
    }
    case Behavior::MergedWithNext: {
      bool prevMatch = false;
      for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
        if (it->match && !prevMatch && !out.empty()) {
          out.back().a = it->a;
        } else {
          out.push_back({it->a, it->b, false});
        }
        prevMatch = it->match;
      }
      std::reverse(out.begin(), out.end());
      break;
    }
    case Behavior::Contiguous: {
      bool prevMatch = false;
      bool first = true;
      for (auto& s : spans) {
        if (!first && s.match == prevMatch) {
          out.back().b = s.b;
        } else {
          out.push_back({s.a, s.b, false});
        }
        prevMatch = s.match;
        first = false;
      }
      break;
    }
  }
  spans.swap(out);
}

// Cuts pieces by spans, dropping empty ones.
void emitSpans(const Piece& p, const std::vector<Span>& spans, Pieces& out) {
  for (const auto& s : spans) {
    if (s.b <= s.a) continue;
    out.push_back({p.text.substr(s.a, s.b - s.a), p.atStart && s.a == 0});
  }
}

// A pattern: a literal string or an Oniguruma regex.
class Pattern {
 public:
  Pattern(const json& j, const std::string& where) {
    if (j.is_object() && j.contains("String")) {
      literal_ = j["String"].get<std::string>();
      isLiteral_ = true;
    } else if (j.is_object() && j.contains("Regex")) {
      regex_ = std::make_unique<OnigPattern>(j["Regex"].get<std::string>(), where);
    } else {
      throw FormatError(where + ": pattern must be {\"String\": ...} or {\"Regex\": ...}");
    }
  }
  void find(std::string_view s, std::vector<std::pair<uint32_t, uint32_t>>& out) const {
    if (!isLiteral_) {
      regex_->findAll(s, out);
      return;
    }
    out.clear();
    if (literal_.empty()) return;
    size_t pos = 0;
    while ((pos = s.find(literal_, pos)) != std::string_view::npos) {
      out.emplace_back(static_cast<uint32_t>(pos), static_cast<uint32_t>(pos + literal_.size()));
      pos += literal_.size();
    }
  }
  std::string replaceAll(std::string_view s, const std::string& content) const {
    std::vector<std::pair<uint32_t, uint32_t>> m;
    find(s, m);
    if (m.empty()) return std::string(s);
    std::string out;
    out.reserve(s.size());
    uint32_t prev = 0;
    for (auto [a, b] : m) {
      out.append(s.substr(prev, a - prev));
      out += content;
      prev = b;
    }
    out.append(s.substr(prev));
    return out;
  }

 private:
  bool isLiteral_ = false;
  std::string literal_;
  std::unique_ptr<OnigPattern> regex_;
};

// Splits each piece with a per-char predicate (Rust split on a char pattern).
template <typename Pred>
void splitByChar(Pieces& pieces, Pred pred, Behavior behavior) {
  Pieces out;
  out.reserve(pieces.size() * 2);
  std::vector<std::pair<uint32_t, uint32_t>> m;
  std::vector<Span> spans;
  for (const auto& p : pieces) {
    m.clear();
    const std::string& s = p.text;
    size_t i = 0;
    while (i < s.size()) {
      size_t a = i;
      char32_t c = utf8::next(s, i);
      if (pred(c)) m.emplace_back(static_cast<uint32_t>(a), static_cast<uint32_t>(i));
    }
    matchesToSpans(m, static_cast<uint32_t>(s.size()), spans);
    applyBehavior(spans, behavior);
    emitSpans(p, spans, out);
  }
  pieces.swap(out);
}

// ---------------------------------------------------------------------------
// Byte-level table

struct ByteTables {
  std::array<std::string, 256> b2u;
  std::unordered_map<char32_t, int> u2b;
  ByteTables() {
    std::vector<int> bs;
    for (int b = '!'; b <= '~'; ++b) bs.push_back(b);
    for (int b = 0xA1; b <= 0xAC; ++b) bs.push_back(b);
    for (int b = 0xAE; b <= 0xFF; ++b) bs.push_back(b);
    std::vector<int> cs = bs;
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      if (std::find(bs.begin(), bs.end(), b) == bs.end()) {
        bs.push_back(b);
        cs.push_back(256 + n);
        ++n;
      }
    }
    for (size_t i = 0; i < bs.size(); ++i) {
      b2u[bs[i]] = utf8::encode(static_cast<char32_t>(cs[i]));
      u2b[static_cast<char32_t>(cs[i])] = bs[i];
    }
  }
};
const ByteTables& byteTables() {
  static const ByteTables t;
  return t;
}

// ===========================================================================
// Normalizers

class SequenceNormalizer : public Normalizer {
 public:
  std::vector<std::unique_ptr<Normalizer>> items;
  void apply(std::string& s) const override {
    for (const auto& n : items) n->apply(s);
  }
};

class UnicodeNormalizer : public Normalizer {
 public:
  explicit UnicodeNormalizer(uni::Form f) : form_(f) {}
  void apply(std::string& s) const override { s = uni::normalize(s, form_); }

 private:
  uni::Form form_;
};

class LowercaseNormalizer : public Normalizer {
 public:
  void apply(std::string& s) const override {
    std::string out;
    out.reserve(s.size());
    std::u32string tmp;
    size_t i = 0;
    while (i < s.size()) {
      unsigned char c = static_cast<unsigned char>(s[i]);
      if (c < 0x80) {
        out.push_back(static_cast<char>(c >= 'A' && c <= 'Z' ? c + 32 : c));
        ++i;
        continue;
      }
      char32_t cp = utf8::next(s, i);
      tmp.clear();
      uni::appendLower(cp, tmp);
      for (char32_t x : tmp) utf8::append(out, x);
    }
    s.swap(out);
  }
};

// Rewrites s code point by code point: `map(cp)` returns nullptr to keep the
// code point's bytes, "" to drop it, or its replacement.
template <typename Map>
void mapCodepoints(std::string& s, Map map) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    const size_t a = i;
    const char* r = map(utf8::next(s, i));
    if (r) out += r;
    else out.append(s, a, i - a);
  }
  s.swap(out);
}

class StripAccentsNormalizer : public Normalizer {
 public:
  void apply(std::string& s) const override {
    mapCodepoints(s, [](char32_t cp) -> const char* { return cp >= 0x80 && uni::isMark(cp) ? "" : nullptr; });
  }
};

class StripNormalizer : public Normalizer {
 public:
  bool left = true, right = true;
  void apply(std::string& s) const override {
    size_t a = 0, b = s.size();
    if (left) {
      while (a < b) {
        size_t i = a;
        char32_t c = utf8::next(s, i);
        if (!isWs(c)) break;
        a = i;
      }
    }
    if (right) {
      while (b > a) {
        size_t st;
        char32_t c = utf8::prev(s, b, st);
        if (!isWs(c)) break;
        b = st;
      }
    }
    s = s.substr(a, b - a);
  }
};

// Rust normalizers::Nmt: drops some control characters and maps others to a space.
class NmtNormalizer : public Normalizer {
 public:
  void apply(std::string& s) const override {
    mapCodepoints(s, [](char32_t c) -> const char* {
      if ((c >= 0x1 && c <= 0x8) || c == 0xB || (c >= 0xE && c <= 0x1F) || c == 0x7F || c == 0x8F || c == 0x9F) return "";
      if (c == 0x9 || c == 0xA || c == 0xC || c == 0xD || c == 0x1680 || (c >= 0x200B && c <= 0x200F) || c == 0x2028 ||
          c == 0x2029 || c == 0x2581 || c == 0xFEFF || c == 0xFFFD)
        return " ";
      return nullptr;
    });
  }
};

// Rust normalizers::ByteLevel: every byte to GPT-2's printable character.
class ByteLevelNormalizer : public Normalizer {
 public:
  void apply(std::string& s) const override {
    std::string out;
    out.reserve(s.size() * 2);
    for (unsigned char c : s) out += byteTables().b2u[c];
    s.swap(out);
  }
};

class PrependNormalizer : public Normalizer {
 public:
  std::string prepend;
  void apply(std::string& s) const override {
    if (!s.empty()) s.insert(0, prepend);
  }
};

class ReplaceNormalizer : public Normalizer {
 public:
  ReplaceNormalizer(const json& j, const std::string& where) : pattern_(j.at("pattern"), where), content_(getStr(j, "content", "")) {}
  void apply(std::string& s) const override { s = pattern_.replaceAll(s, content_); }

 private:
  Pattern pattern_;
  std::string content_;
};

bool isChineseChar(char32_t cp) {
  return (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x3400 && cp <= 0x4DBF) || (cp >= 0x20000 && cp <= 0x2A6DF) ||
         (cp >= 0x2A700 && cp <= 0x2B73F) || (cp >= 0x2B740 && cp <= 0x2B81F) || (cp >= 0x2B920 && cp <= 0x2CEAF) ||
         (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0x2F800 && cp <= 0x2FA1F);
}

class BertNormalizer : public Normalizer {
 public:
  bool cleanText = true, chinese = true, lowercase = true;
  std::optional<bool> stripAccents;
  void apply(std::string& s) const override {
    std::u32string cps;
    {
      size_t i = 0;
      cps.reserve(s.size());
      while (i < s.size()) cps.push_back(utf8::next(s, i));
    }
    std::u32string t;
    t.reserve(cps.size());
    for (char32_t c : cps) {
      if (cleanText) {
        // Rust: remove \0, U+FFFD and controls (except \t \n \r); whitespace -> ' '.
        // "Control" is the unicode_categories crate's is_other(): Cc, Cf and Co
        // only. Unassigned code points (Cn) are kept (checked against the
        // crate, tokenizers 0.23.2); surrogates cannot occur in UTF-8.
        if (c == 0 || c == 0xFFFD) continue;
        bool isCtl = (c != '\t' && c != '\n' && c != '\r') && [&] {
          uni::Cat k = uni::category(c);
          return k == uni::Cat::Cc || k == uni::Cat::Cf || k == uni::Cat::Co;
        }();
        if (isCtl) continue;
        if (c == '\t' || c == '\n' || c == '\r' || uni::isWhitespace(c)) c = ' ';
      }
      if (chinese && isChineseChar(c)) {
        t.push_back(' ');
        t.push_back(c);
        t.push_back(' ');
        continue;
      }
      t.push_back(c);
    }
    bool strip = stripAccents.value_or(lowercase);
    if (strip) {
      uni::normalize(t, uni::Form::NFD);
      std::u32string u;
      u.reserve(t.size());
      for (char32_t c : t)
        if (uni::category(c) != uni::Cat::Mn) u.push_back(c);  // nonspacing marks only, as BERT
      t.swap(u);
    }
    if (lowercase) {
      std::u32string u;
      u.reserve(t.size());
      for (char32_t c : t) uni::appendLower(c, u);
      t.swap(u);
    }
    s = utf8::encode(t);
  }
};

// SentencePiece's precompiled charsmap, applied as libsentencepiece does: at
// each position the longest known prefix is replaced, else one character is
// copied. (The Rust crate works per grapheme cluster and is meant to agree on
// real text; see docs/tokenizers.md.)
class PrecompiledNormalizer : public Normalizer {
 public:
  PrecompiledNormalizer(const std::string& blob, const std::string& where) { map_.load(blob, where); }
  void apply(std::string& s) const override {
    std::string out;
    out.reserve(s.size());
    size_t i = 0;
    while (i < s.size()) {
      auto [len, rep] = map_.longest(std::string_view(s).substr(i));
      if (len > 0) {
        out += rep;
        i += len;
      } else {
        size_t n = std::min<size_t>(utf8::seqLen(static_cast<unsigned char>(s[i])), s.size() - i);
        out.append(s, i, n);
        i += n;
      }
    }
    s.swap(out);
  }

 private:
  Charsmap map_;
};

// ===========================================================================
// Pre-tokenizers

class SequencePre : public PreTokenizer {
 public:
  std::vector<std::unique_ptr<PreTokenizer>> items;
  void apply(Pieces& p) const override {
    for (const auto& t : items) t->apply(p);
  }
};

const char* kGpt2Regex = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

class ByteLevelPre : public PreTokenizer {
 public:
  ByteLevelPre(const json& j, const std::string& where)
      : addPrefixSpace_(getBool(j, "add_prefix_space", true)), useRegex_(getBool(j, "use_regex", true)) {
    if (useRegex_) regex_ = std::make_unique<OnigPattern>(kGpt2Regex, where + ": ByteLevel");
  }
  void apply(Pieces& pieces) const override {
    const auto& t = byteTables();
    Pieces out;
    out.reserve(pieces.size());
    std::vector<std::pair<uint32_t, uint32_t>> m;
    std::vector<Span> spans;
    for (auto& p : pieces) {
      if (addPrefixSpace_ && (p.text.empty() || p.text[0] != ' ')) p.text.insert(0, " ");
      size_t first = out.size();
      if (useRegex_) {
        regex_->findAll(p.text, m);
        matchesToSpans(m, static_cast<uint32_t>(p.text.size()), spans);
        emitSpans(p, spans, out);
      } else if (!p.text.empty()) {
        out.push_back(std::move(p));
      }
      for (size_t k = first; k < out.size(); ++k) {
        std::string mapped;
        mapped.resize(out[k].text.size() * 2);
        size_t w = 0;
        for (unsigned char c : out[k].text) {
          const std::string& u = t.b2u[c];
          mapped[w++] = u[0];
          if (u.size() > 1) mapped[w++] = u[1];
        }
        mapped.resize(w);
        out[k].text.swap(mapped);
      }
    }
    pieces.swap(out);
  }

 private:
  bool addPrefixSpace_, useRegex_;
  std::unique_ptr<OnigPattern> regex_;
};

class SplitPre : public PreTokenizer {
 public:
  SplitPre(const json& j, const std::string& where)
      : pattern_(j.at("pattern"), where + ": Split"),
        behavior_(parseBehavior(getStr(j, "behavior", "Isolated"), where)),
        invert_(getBool(j, "invert", false)) {}
  void apply(Pieces& pieces) const override {
    Pieces out;
    out.reserve(pieces.size() * 4);
    std::vector<std::pair<uint32_t, uint32_t>> m;
    std::vector<Span> spans;
    for (const auto& p : pieces) {
      pattern_.find(p.text, m);
      matchesToSpans(m, static_cast<uint32_t>(p.text.size()), spans);
      if (invert_)
        for (auto& s : spans) s.match = !s.match;
      applyBehavior(spans, behavior_);
      emitSpans(p, spans, out);
    }
    pieces.swap(out);
  }

 private:
  Pattern pattern_;
  Behavior behavior_;
  bool invert_;
};

class RegexIsolatedPre : public PreTokenizer {
 public:
  // Keeps only the matches (Rust Whitespace: regex split with invert + Removed).
  RegexIsolatedPre(const char* regex, const std::string& where) : re_(regex, where) {}
  void apply(Pieces& pieces) const override {
    Pieces out;
    std::vector<std::pair<uint32_t, uint32_t>> m;
    for (const auto& p : pieces) {
      re_.findAll(p.text, m);
      for (auto [a, b] : m)
        if (b > a) out.push_back({p.text.substr(a, b - a), p.atStart && a == 0});
    }
    pieces.swap(out);
  }

 private:
  OnigPattern re_;
};

class WhitespaceSplitPre : public PreTokenizer {
 public:
  void apply(Pieces& pieces) const override { splitByChar(pieces, isWs, Behavior::Removed); }
};

class PunctuationPre : public PreTokenizer {
 public:
  explicit PunctuationPre(Behavior b) : b_(b) {}
  void apply(Pieces& pieces) const override {
    splitByChar(
        pieces, [](char32_t c) { return (c < 0x80 && std::ispunct(static_cast<int>(c))) || (c >= 0x80 && uni::isPunct(c)); },
        b_);
  }

 private:
  Behavior b_;
};

class DigitsPre : public PreTokenizer {
 public:
  explicit DigitsPre(bool individual) : individual_(individual) {}
  void apply(Pieces& pieces) const override {
    // Rust char::is_numeric: general categories Nd, Nl, No.
    auto pred = [](char32_t c) { return c < 0x80 ? (c >= '0' && c <= '9') : uni::isNumber(c); };
    splitByChar(pieces, pred, individual_ ? Behavior::Isolated : Behavior::Contiguous);
  }

 private:
  bool individual_;
};

class BertPre : public PreTokenizer {
 public:
  void apply(Pieces& pieces) const override {
    splitByChar(pieces, isWs, Behavior::Removed);
    splitByChar(
        pieces, [](char32_t c) { return (c < 0x80 && std::ispunct(static_cast<int>(c))) || (c >= 0x80 && uni::isPunct(c)); },
        Behavior::Isolated);
  }
};

class MetaspacePre : public PreTokenizer {
 public:
  MetaspacePre(const json& j, const std::string& where) {
    replacement_ = getStr(j, "replacement", "\xE2\x96\x81");
    if (utf8::length(replacement_) != 1) throw FormatError(where + ": Metaspace replacement must be one character");
    std::string scheme = getStr(j, "prepend_scheme", "");
    if (scheme.empty()) scheme = getBool(j, "add_prefix_space", true) ? "always" : "never";
    if (scheme == "always") {
      scheme_ = 0;
    } else if (scheme == "first") {
      scheme_ = 1;
    } else if (scheme == "never") {
      scheme_ = 2;
    } else {
      throw FormatError(where + ": Metaspace prepend_scheme '" + scheme + "' is unknown");
    }
    split_ = getBool(j, "split", true);
  }
  void apply(Pieces& pieces) const override {
    Pieces out;
    std::vector<std::pair<uint32_t, uint32_t>> m;
    std::vector<Span> spans;
    for (auto& p : pieces) {
      std::string s;
      s.reserve(p.text.size() + 3);
      for (char c : p.text) {
        if (c == ' ') {
          s += replacement_;
        } else {
          s.push_back(c);
        }
      }
      bool startsWith = s.compare(0, replacement_.size(), replacement_) == 0;
      if (!startsWith && (scheme_ == 0 || (scheme_ == 1 && p.atStart))) s.insert(0, replacement_);
      Piece q{std::move(s), p.atStart};
      if (!split_) {
        if (!q.text.empty()) out.push_back(std::move(q));
        continue;
      }
      m.clear();
      size_t pos = 0;
      while ((pos = q.text.find(replacement_, pos)) != std::string::npos) {
        m.emplace_back(static_cast<uint32_t>(pos), static_cast<uint32_t>(pos + replacement_.size()));
        pos += replacement_.size();
      }
      matchesToSpans(m, static_cast<uint32_t>(q.text.size()), spans);
      applyBehavior(spans, Behavior::MergedWithNext);
      emitSpans(q, spans, out);
    }
    pieces.swap(out);
  }

 private:
  std::string replacement_;
  int scheme_ = 0;
  bool split_ = true;
};

class CharDelimiterPre : public PreTokenizer {
 public:
  explicit CharDelimiterPre(char32_t d) : d_(d) {}
  void apply(Pieces& pieces) const override {
    char32_t d = d_;
    splitByChar(pieces, [d](char32_t c) { return c == d; }, Behavior::Removed);
  }

 private:
  char32_t d_;
};

// ===========================================================================
// Models

// Ids of "<0x00>".."<0xFF>" in a vocabulary (-1 where absent).
template <typename Lookup>
std::array<int32_t, 256> byteFallbackIdsBy(Lookup lookup) {
  std::array<int32_t, 256> ids{};
  static const char* hex = "0123456789ABCDEF";
  for (int b = 0; b < 256; ++b) {
    std::string t = "<0x";
    t += hex[b >> 4];
    t += hex[b & 15];
    t += '>';
    ids[b] = lookup(t);
  }
  return ids;
}
std::array<int32_t, 256> byteFallbackIds(const VocabMap& vocab) {
  return byteFallbackIdsBy([&](const std::string& t) {
    auto it = vocab.find(t);
    return it == vocab.end() ? -1 : it->second;
  });
}

// A bounded word -> ids cache shared by threads (like the Rust crate's).
class WordCache {
 public:
  explicit WordCache(size_t capacity) : capacity_(capacity) {}
  bool get(std::string_view key, std::vector<int32_t>& out) const {
    std::shared_lock lock(mu_);
    auto it = map_.find(key);
    if (it == map_.end()) return false;
    out.insert(out.end(), it->second.begin(), it->second.end());
    return true;
  }
  void put(std::string_view key, const int32_t* ids, size_t n) const {
    std::unique_lock lock(mu_, std::try_to_lock);
    if (!lock.owns_lock() || map_.size() >= capacity_) return;
    map_.emplace(std::string(key), std::vector<int32_t>(ids, ids + n));
  }

 private:
  size_t capacity_;
  mutable std::shared_mutex mu_;
  mutable std::unordered_map<std::string, std::vector<int32_t>, SvHash, std::equal_to<>> map_;
};

class BpeModel : public Model {
 public:
  std::vector<std::string> vocabR;  // id -> token ("" for unused ids)
  FlatIndex fast;                    // token -> id
  int32_t count = 0;
  std::vector<std::pair<uint64_t, std::pair<int32_t, int32_t>>> mergeList;  // (left, right) -> (rank, merged id)
  MergeMap merges;
  std::optional<int32_t> unkId;
  std::optional<std::string> contPrefix, eowSuffix;
  bool fuseUnk = false, byteFallback = false, ignoreMerges = false;
  std::array<int32_t, 256> byteIds{};
  WordCache cache{200000};
  std::string where;

  static uint64_t key(int32_t a, int32_t b) { return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b); }

  void setVocab(std::vector<std::pair<std::string, int32_t>> entries) {
    int32_t maxId = -1;
    for (const auto& [k, v] : entries) {
      if (v < 0) throw FormatError(where + ": BPE vocab id " + std::to_string(v) + " of '" + k + "' is negative");
      maxId = std::max(maxId, v);
    }
    if (maxId > 50000000) throw FormatError(where + ": BPE vocab id " + std::to_string(maxId) + " is implausibly large");
    vocabR.assign(static_cast<size_t>(maxId + 1), std::string());
    for (auto& [k, v] : entries) {
      if (!vocabR[v].empty()) throw FormatError(where + ": BPE vocab id " + std::to_string(v) + " is used twice");
      vocabR[v] = std::move(k);
    }
    count = static_cast<int32_t>(entries.size());
    fast.build(vocabR);
    byteIds = byteFallbackIdsBy([&](const std::string& t) { return fast.find(t); });
  }

  void finish() {
    merges.build(mergeList);
    mergeList.clear();
    mergeList.shrink_to_fit();
  }

  void addMerge(const std::string& a, const std::string& b, int32_t rank) {
    int32_t ia = fast.find(a), ib = fast.find(b);
    if (ia < 0)
      throw FormatError(where + ": BPE merge " + std::to_string(rank) + " uses '" + inputExcerpt(a) +
                        "', which is not in the vocabulary");
    if (ib < 0)
      throw FormatError(where + ": BPE merge " + std::to_string(rank) + " uses '" + inputExcerpt(b) +
                        "', which is not in the vocabulary");
    std::string ab = a + b;
    if (contPrefix && b.compare(0, contPrefix->size(), *contPrefix) == 0) ab = a + b.substr(contPrefix->size());
    int32_t iab = fast.find(ab);
    if (iab < 0)
      throw FormatError(where + ": BPE merge " + std::to_string(rank) + " gives '" + inputExcerpt(ab) +
                        "', which is not in the vocabulary");
    mergeList.emplace_back(key(ia, ib), std::make_pair(rank, iab));
  }

  std::string kind() const override { return "BPE"; }
  // One past the largest id (ids may have gaps: the count of entries would under-report it).
  int32_t size() const override { return static_cast<int32_t>(vocabR.size()); }
  std::optional<int32_t> tokenToId(std::string_view t) const override {
    int32_t id = fast.find(t);
    if (id < 0) return std::nullopt;
    return id;
  }
  const std::string* idToToken(int32_t id) const override {
    if (id < 0 || id >= static_cast<int32_t>(vocabR.size())) return nullptr;
    return &vocabR[id];
  }

  void tokenize(std::string_view piece, std::vector<int32_t>& out) const override {
    if (piece.empty()) return;
    if (ignoreMerges) {
      int32_t id = fast.find(piece);
      if (id >= 0) {
        out.push_back(id);
        return;
      }
    }
    if (cache.get(piece, out)) return;
    size_t before = out.size();
    mergeWord(piece, out);
    if (piece.size() < 256) cache.put(piece, out.data() + before, out.size() - before);
  }

 private:
  struct Sym {
    int32_t id;
    int32_t prev, next;
    bool alive;
  };
  struct Cand {
    int32_t rank, pos, newId;
    bool operator>(const Cand& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };

  void mergeWord(std::string_view w, std::vector<int32_t>& out) const {
    thread_local std::vector<Sym> syms;
    thread_local std::string tmp;
    syms.clear();
    std::optional<std::pair<int32_t, int>> unk;  // pending unk (fused)
    auto add = [&](int32_t id) { syms.push_back({id, static_cast<int32_t>(syms.size()) - 1, -1, true}); };
    size_t i = 0;
    while (i < w.size()) {
      size_t a = i;
      i += utf8::seqLen(static_cast<unsigned char>(w[i]));
      if (i > w.size()) i = w.size();
      bool first = a == 0, last = i >= w.size();
      std::string_view ch = w.substr(a, i - a);
      const std::string_view* lookup = &ch;
      std::string_view sv;
      if ((!first && contPrefix) || (last && eowSuffix)) {
        tmp.clear();
        if (!first && contPrefix) tmp += *contPrefix;
        tmp.append(ch);
        if (last && eowSuffix) tmp += *eowSuffix;
        sv = tmp;
        lookup = &sv;
      }
      int32_t found = fast.find(*lookup);
      if (found >= 0) {
        if (unk) {
          add(unk->first);
          unk.reset();
        }
        add(found);
        continue;
      }
      if (byteFallback) {
        bool all = true;
        for (unsigned char c : *lookup) all = all && byteIds[c] >= 0;
        if (all) {
          if (unk) {
            add(unk->first);
            unk.reset();
          }
          for (unsigned char c : *lookup) add(byteIds[c]);
          continue;
        }
      }
      if (unkId) {
        if (unk && fuseUnk) {
          // fused: keep the pending unk
        } else {
          if (unk) add(unk->first);
          unk = std::make_pair(*unkId, 1);
        }
      }
      // Without an unk token an unknown character is dropped (as the reference does).
    }
    if (unk) add(unk->first);
    const int32_t n = static_cast<int32_t>(syms.size());
    for (int32_t k = 0; k < n; ++k) syms[k].next = k + 1 < n ? k + 1 : -1;
    if (n > 1 && !merges.empty()) {
      thread_local std::vector<Cand> heap;
      heap.clear();
      auto push = [&](int32_t pos) {
        int32_t nx = syms[pos].next;
        if (nx < 0) return;
        int32_t rank, newId;
        if (!merges.find(key(syms[pos].id, syms[nx].id), rank, newId)) return;
        heap.push_back({rank, pos, newId});
        std::push_heap(heap.begin(), heap.end(), std::greater<Cand>());
      };
      for (int32_t k = 0; k + 1 < n; ++k) push(k);
      while (!heap.empty()) {
        std::pop_heap(heap.begin(), heap.end(), std::greater<Cand>());
        Cand top = heap.back();
        heap.pop_back();
        Sym& s = syms[top.pos];
        if (!s.alive || s.next < 0) continue;
        int32_t nx = s.next;
        int32_t rank, newId;
        if (!merges.find(key(s.id, syms[nx].id), rank, newId) || newId != top.newId) continue;
        s.id = top.newId;
        syms[nx].alive = false;
        s.next = syms[nx].next;
        if (s.next >= 0) syms[s.next].prev = top.pos;
        if (s.prev >= 0) push(s.prev);
        push(top.pos);
      }
    }
    for (int32_t k = 0; k >= 0 && k < n; k = syms[k].next) out.push_back(syms[k].id);
  }
};

class WordPieceModel : public Model {
 public:
  VocabMap vocab;
  std::vector<std::string> vocabR;
  std::string unk = "[UNK]";
  std::string prefix = "##";
  size_t maxChars = 100;
  std::string kind() const override { return "WordPiece"; }
  // One past the largest id (ids may have gaps: found by fuzz_tokenizer_json).
  int32_t size() const override { return static_cast<int32_t>(vocabR.size()); }
  std::optional<int32_t> tokenToId(std::string_view t) const override {
    auto it = vocab.find(t);
    if (it == vocab.end()) return std::nullopt;
    return it->second;
  }
  const std::string* idToToken(int32_t id) const override {
    if (id < 0 || id >= static_cast<int32_t>(vocabR.size())) return nullptr;
    return &vocabR[id];
  }
  void tokenize(std::string_view w, std::vector<int32_t>& out) const override {
    if (utf8::length(w) > maxChars) {
      out.push_back(unkId());
      return;
    }
    size_t before = out.size();
    size_t start = 0;
    std::string sub;
    while (start < w.size()) {
      size_t end = w.size();
      int32_t found = -1;
      size_t foundEnd = 0;
      while (start < end) {
        sub.clear();
        if (start > 0) sub += prefix;
        sub.append(w.substr(start, end - start));
        auto it = vocab.find(sub);
        if (it != vocab.end()) {
          found = it->second;
          foundEnd = end;
          break;
        }
        // step back one character
        size_t st;
        utf8::prev(w, end, st);
        end = st;
      }
      if (found < 0) {
        out.resize(before);
        out.push_back(unkId());
        return;
      }
      out.push_back(found);
      start = foundEnd;
    }
  }
  int32_t unkId() const {
    auto it = vocab.find(unk);
    if (it == vocab.end()) throw FormatError("WordPiece: unk token '" + unk + "' is not in the vocabulary");
    return it->second;
  }
};

class UnigramModel : public Model {
 public:
  std::vector<UnigramPiece> pieces;
  VocabMap vocab;
  std::optional<int32_t> unkId;
  bool byteFallback = false;
  double minScore = 0;
  std::array<int32_t, 256> byteIds{};
  std::string source;  // the tokenizer file, for messages
  // Trie over UTF-8 bytes.
  struct Node {
    int32_t value = -1;
    std::vector<std::pair<unsigned char, int32_t>> kids;  // sorted
  };
  std::vector<Node> trie;
  WordCache cache{200000};

  std::string kind() const override { return "Unigram"; }
  int32_t size() const override { return static_cast<int32_t>(pieces.size()); }
  std::optional<int32_t> tokenToId(std::string_view t) const override {
    auto it = vocab.find(t);
    if (it == vocab.end()) return std::nullopt;
    return it->second;
  }
  const std::string* idToToken(int32_t id) const override {
    if (id < 0 || id >= static_cast<int32_t>(pieces.size())) return nullptr;
    return &pieces[id].piece;
  }

  void build(const std::string& where) {
    source = where;
    trie.assign(1, Node{});
    minScore = std::numeric_limits<double>::infinity();
    for (size_t id = 0; id < pieces.size(); ++id) {
      const auto& p = pieces[id];
      // A duplicated piece or a NaN/Inf score makes the Viterbi search pick
      // by accident; libsentencepiece refuses duplicates too.
      auto [at, fresh] = vocab.emplace(p.piece, static_cast<int32_t>(id));
      if (!fresh)
        throw FormatError(where + ": Unigram piece '" + inputExcerpt(p.piece) + "' appears twice (ids " +
                          std::to_string(at->second) + " and " + std::to_string(id) + ")");
      if (!std::isfinite(p.score))
        throw FormatError(where + ": Unigram piece '" + inputExcerpt(p.piece) + "' (id " + std::to_string(id) +
                          ") has a non-finite score");
      minScore = std::min(minScore, p.score);
      int32_t node = 0;
      for (unsigned char c : p.piece) {
        auto& kids = trie[node].kids;
        auto it = std::lower_bound(kids.begin(), kids.end(), std::make_pair(c, int32_t(-1)),
                                   [](const auto& x, const auto& y) { return x.first < y.first; });
        if (it != kids.end() && it->first == c) {
          node = it->second;
        } else {
          int32_t nn = static_cast<int32_t>(trie.size());
          kids.insert(it, {c, nn});
          trie.emplace_back();
          node = nn;
        }
      }
      if (trie[node].value < 0) trie[node].value = static_cast<int32_t>(id);
    }
    if (unkId && (*unkId < 0 || *unkId >= static_cast<int32_t>(pieces.size())))
      throw FormatError(where + ": Unigram unk_id " + std::to_string(*unkId) + " is out of range");
    byteIds = byteFallbackIds(vocab);
  }

  int32_t child(int32_t node, unsigned char c) const {
    const auto& kids = trie[node].kids;
    auto it = std::lower_bound(kids.begin(), kids.end(), std::make_pair(c, int32_t(-1)),
                               [](const auto& x, const auto& y) { return x.first < y.first; });
    return it != kids.end() && it->first == c ? it->second : -1;
  }

  void tokenize(std::string_view s, std::vector<int32_t>& out) const override {
    if (s.empty()) return;
    if (cache.get(s, out)) return;
    size_t before = out.size();
    viterbi(s, out);
    if (s.size() < 256) cache.put(s, out.data() + before, out.size() - before);
  }

 private:
  // Rust Unigram::encode_optimized: best path over the lattice; unknown
  // characters get score (min score - 10) as the unk token.
  void viterbi(std::string_view s, std::vector<int32_t>& out) const {
    const double unkScore = minScore - 10.0;
    const size_t n = s.size();
    struct Best {
      double score = 0;
      int64_t start = -1;
      int32_t id = -1;
      bool set = false;
    };
    std::vector<Best> best(n + 1);
    best[0].set = true;
    size_t pos = 0;
    while (pos < n) {
      size_t mblen = static_cast<size_t>(utf8::seqLen(static_cast<unsigned char>(s[pos])));
      mblen = std::min(mblen, n - pos);
      double base = best[pos].score;
      bool hasSingle = false;
      int32_t node = 0;
      for (size_t k = pos; k < n; ++k) {
        node = child(node, static_cast<unsigned char>(s[k]));
        if (node < 0) break;
        int32_t id = trie[node].value;
        if (id >= 0) {
          // only keep matches ending on a character boundary
          size_t end = k + 1;
          if (end < n && (static_cast<unsigned char>(s[end]) & 0xC0) == 0x80) continue;
          double sc = base + pieces[id].score;
          Best& b = best[end];
          if (!b.set || sc > b.score) {
            b = {sc, static_cast<int64_t>(pos), id, true};
          }
          if (end - pos == mblen) hasSingle = true;
        }
      }
      if (!hasSingle) {
        double sc = base + unkScore;
        Best& b = best[pos + mblen];
        if (!b.set || sc > b.score) b = {sc, static_cast<int64_t>(pos), -1, true};  // -1: unknown
      }
      pos += mblen;
    }
    // Backtrack.
    std::vector<std::pair<size_t, int32_t>> rev;  // (start, id) with id -1 for unk
    size_t endPos = n;
    while (endPos > 0) {
      const Best& b = best[endPos];
      rev.emplace_back(static_cast<size_t>(b.start), b.id);
      endPos = static_cast<size_t>(b.start);
    }
    // Emit in order; consecutive unknown pieces are fused into one (the Rust
    // crate's Unigram always fuses unknowns), then become byte-fallback
    // tokens or the unk token.
    std::vector<std::pair<size_t, size_t>> spans;
    std::vector<int32_t> ids;
    for (auto it = rev.rbegin(); it != rev.rend(); ++it) {
      auto nxt = it + 1;
      size_t en = nxt == rev.rend() ? n : nxt->first;
      if (it->second < 0 && !ids.empty() && ids.back() < 0) {
        spans.back().second = en;
        continue;
      }
      ids.push_back(it->second);
      spans.emplace_back(it->first, en);
    }
    for (size_t k = 0; k < ids.size(); ++k) {
      if (ids[k] >= 0) {
        out.push_back(ids[k]);
        continue;
      }
      if (byteFallback) {
        std::string_view piece = s.substr(spans[k].first, spans[k].second - spans[k].first);
        bool all = true;
        for (unsigned char c : piece) all = all && byteIds[c] >= 0;
        if (all) {
          for (unsigned char c : piece) out.push_back(byteIds[c]);
          continue;
        }
      }
      // Found by fuzz_tokenizer_json: the message named no file.
      if (!unkId)
        throw FormatError(source + ": Unigram: the text has a character with no piece, and the model has no unk token");
      out.push_back(*unkId);
    }
  }
};

// ===========================================================================
// Post-processors

class TemplatePost : public PostProcessor {
 public:
  struct Item {
    bool isSeq = false;
    bool seqA = true;
    std::vector<int32_t> ids;
  };
  std::vector<Item> single;
  void apply(std::vector<int32_t>& ids, bool add) const override {
    if (!add) return;
    std::vector<int32_t> out;
    out.reserve(ids.size() + 4);
    for (const auto& it : single) {
      if (it.isSeq) {
        if (it.seqA) out.insert(out.end(), ids.begin(), ids.end());
      } else {
        out.insert(out.end(), it.ids.begin(), it.ids.end());
      }
    }
    ids.swap(out);
  }
  std::vector<int32_t> prefixIds() const override {
    std::vector<int32_t> r;
    for (const auto& it : single) {
      if (it.isSeq) break;
      r.insert(r.end(), it.ids.begin(), it.ids.end());
    }
    return r;
  }
  std::vector<int32_t> suffixIds() const override {
    std::vector<int32_t> r;
    bool after = false;
    for (const auto& it : single) {
      if (it.isSeq) {
        after = true;
        continue;
      }
      if (after) r.insert(r.end(), it.ids.begin(), it.ids.end());
    }
    return r;
  }
};

class ClsSepPost : public PostProcessor {
 public:
  int32_t cls = 0, sep = 0;
  void apply(std::vector<int32_t>& ids, bool add) const override {
    if (!add) return;
    ids.insert(ids.begin(), cls);
    ids.push_back(sep);
  }
  std::vector<int32_t> prefixIds() const override { return {cls}; }
  std::vector<int32_t> suffixIds() const override { return {sep}; }
};

class NoopPost : public PostProcessor {
 public:
  void apply(std::vector<int32_t>&, bool) const override {}
};

class SequencePost : public PostProcessor {
 public:
  std::vector<std::unique_ptr<PostProcessor>> items;
  void apply(std::vector<int32_t>& ids, bool add) const override {
    for (const auto& p : items) p->apply(ids, add);
  }
  std::vector<int32_t> prefixIds() const override {
    std::vector<int32_t> r;
    for (const auto& p : items) {
      auto x = p->prefixIds();
      r.insert(r.begin(), x.begin(), x.end());
    }
    return r;
  }
  std::vector<int32_t> suffixIds() const override {
    std::vector<int32_t> r;
    for (const auto& p : items) {
      auto x = p->suffixIds();
      r.insert(r.end(), x.begin(), x.end());
    }
    return r;
  }
};

// ===========================================================================
// Decoders

class ByteLevelDec : public Decoder {
 public:
  void apply(std::vector<std::string>& tokens) const override {
    const auto& t = byteTables();
    std::string bytes;
    for (const auto& tok : tokens) {
      size_t mark = bytes.size();
      bool ok = true;
      size_t i = 0;
      while (i < tok.size()) {
        char32_t c = utf8::next(tok, i);
        auto it = t.u2b.find(c);
        if (it == t.u2b.end()) {
          ok = false;
          break;
        }
        bytes.push_back(static_cast<char>(it->second));
      }
      if (!ok) {
        bytes.resize(mark);
        bytes += tok;
      }
    }
    tokens.assign(1, utf8::sanitized(bytes));
  }
};

class ReplaceDec : public Decoder {
 public:
  ReplaceDec(const json& j, const std::string& where) : pattern_(j.at("pattern"), where), content_(getStr(j, "content", "")) {}
  void apply(std::vector<std::string>& tokens) const override {
    for (auto& t : tokens) t = pattern_.replaceAll(t, content_);
  }

 private:
  Pattern pattern_;
  std::string content_;
};

class ByteFallbackDec : public Decoder {
 public:
  static int parseByte(const std::string& t) { return bytePieceValue(t); }
  void apply(std::vector<std::string>& tokens) const override {
    std::vector<std::string> out;
    std::string pending;
    size_t count = 0;
    auto flush = [&] {
      if (count == 0) return;
      if (utf8::isValid(pending)) {
        out.push_back(pending);
      } else {
        for (size_t k = 0; k < count; ++k) out.push_back("\xEF\xBF\xBD");
      }
      pending.clear();
      count = 0;
    };
    for (auto& t : tokens) {
      int b = parseByte(t);
      if (b >= 0) {
        pending.push_back(static_cast<char>(b));
        ++count;
      } else {
        flush();
        out.push_back(std::move(t));
      }
    }
    flush();
    tokens.swap(out);
  }
};

class FuseDec : public Decoder {
 public:
  void apply(std::vector<std::string>& tokens) const override {
    std::string s;
    for (auto& t : tokens) s += t;
    tokens.assign(1, s);
  }
};

class StripDec : public Decoder {
 public:
  char32_t content = ' ';
  size_t start = 0, stop = 0;
  void apply(std::vector<std::string>& tokens) const override {
    for (auto& t : tokens) {
      auto cps = utf8::decode(t);
      size_t a = 0;
      for (size_t k = 0; k < start && k < cps.size(); ++k) {
        if (cps[k] == content) {
          a = k + 1;
        } else {
          break;
        }
      }
      size_t b = cps.size();
      for (size_t k = 0; k < stop && k < cps.size(); ++k) {
        size_t idx = cps.size() - k - 1;
        if (cps[idx] == content) {
          b = idx;
        } else {
          break;
        }
      }
      std::u32string u;
      if (a < b) u.assign(cps.begin() + static_cast<long>(a), cps.begin() + static_cast<long>(b));
      t = utf8::encode(u);
    }
  }
};

std::string cleanup(std::string s) {
  static const std::pair<const char*, const char*> reps[] = {{" .", "."},   {" ?", "?"},     {" !", "!"},     {" ,", ","},
                                                             {" ' ", "'"},  {" n't", "n't"}, {" 'm", "'m"},   {" 's", "'s"},
                                                             {" 've", "'ve"}, {" 're", "'re"}};
  for (auto [a, b] : reps) {
    std::string out;
    std::string_view from(a);
    size_t pos = 0, prev = 0;
    while ((pos = s.find(from, prev)) != std::string::npos) {
      out.append(s, prev, pos - prev);
      out += b;
      prev = pos + from.size();
    }
    out.append(s, prev, std::string::npos);
    s.swap(out);
  }
  return s;
}

class WordPieceDec : public Decoder {
 public:
  std::string prefix = "##";
  bool cleanup_ = true;
  void apply(std::vector<std::string>& tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i) {
      auto& t = tokens[i];
      if (i != 0) {
        if (t.compare(0, prefix.size(), prefix) == 0) {
          t = t.substr(prefix.size());
        } else {
          t.insert(0, " ");
        }
      }
      if (cleanup_) t = cleanup(t);
    }
  }
};

class MetaspaceDec : public Decoder {
 public:
  std::string replacement = "\xE2\x96\x81";
  bool prepend = true;
  void apply(std::vector<std::string>& tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i) {
      std::string out;
      const std::string& t = tokens[i];
      size_t pos = 0;
      while (pos < t.size()) {
        if (t.compare(pos, replacement.size(), replacement) == 0) {
          if (!(i == 0 && prepend)) out.push_back(' ');
          pos += replacement.size();
        } else {
          out.push_back(t[pos++]);
        }
      }
      tokens[i] = out;
    }
  }
};

class BpeDec : public Decoder {
 public:
  std::string suffix = "</w>";
  void apply(std::vector<std::string>& tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i) {
      std::string rep = i + 1 == tokens.size() ? "" : " ";
      std::string& t = tokens[i];
      std::string out;
      size_t pos = 0, prev = 0;
      while (!suffix.empty() && (pos = t.find(suffix, prev)) != std::string::npos) {
        out.append(t, prev, pos - prev);
        out += rep;
        prev = pos + suffix.size();
      }
      out.append(t, prev, std::string::npos);
      t = out;
    }
  }
};

class CtcDec : public Decoder {
 public:
  std::string pad = "<pad>", delim = "|";
  bool cleanup_ = true;
  void apply(std::vector<std::string>& tokens) const override {
    std::vector<std::string> out;
    for (size_t i = 0; i < tokens.size(); ++i) {
      if (i > 0 && tokens[i] == tokens[i - 1]) continue;
      if (tokens[i] == pad) continue;
      std::string t = tokens[i];
      if (cleanup_) {
        t = cleanup(t);
        std::string r;
        size_t pos = 0, prev = 0;
        while (!delim.empty() && (pos = t.find(delim, prev)) != std::string::npos) {
          r.append(t, prev, pos - prev);
          r += ' ';
          prev = pos + delim.size();
        }
        r.append(t, prev, std::string::npos);
        t = r;
      }
      if (!t.empty()) out.push_back(t);
    }
    tokens.swap(out);
  }
};

class SequenceDec : public Decoder {
 public:
  std::vector<std::unique_ptr<Decoder>> items;
  void apply(std::vector<std::string>& tokens) const override {
    for (const auto& d : items) d->apply(tokens);
  }
};

}  // namespace

// ===========================================================================
// Factories

const std::string& byteToUnicode(uint8_t b) { return byteTables().b2u[b]; }
int unicodeToByte(char32_t cp) {
  auto& m = byteTables().u2b;
  auto it = m.find(cp);
  return it == m.end() ? -1 : it->second;
}

std::unique_ptr<Normalizer> makeNormalizer(const json& j, const std::string& where) {
  if (j.is_null()) return nullptr;
  const std::string t = typeOf(j);
  if (t == "Sequence") {
    auto s = std::make_unique<SequenceNormalizer>();
    for (const auto& x : j.at("normalizers"))
      if (auto n = makeNormalizer(x, where)) s->items.push_back(std::move(n));
    return s;
  }
  if (t == "NFC") return std::make_unique<UnicodeNormalizer>(uni::Form::NFC);
  if (t == "NFD") return std::make_unique<UnicodeNormalizer>(uni::Form::NFD);
  if (t == "NFKC") return std::make_unique<UnicodeNormalizer>(uni::Form::NFKC);
  if (t == "NFKD") return std::make_unique<UnicodeNormalizer>(uni::Form::NFKD);
  if (t == "Lowercase") return std::make_unique<LowercaseNormalizer>();
  if (t == "Nmt") return std::make_unique<NmtNormalizer>();
  if (t == "ByteLevel") return std::make_unique<ByteLevelNormalizer>();
  if (t == "StripAccents") return std::make_unique<StripAccentsNormalizer>();
  if (t == "Strip") {
    auto s = std::make_unique<StripNormalizer>();
    s->left = getBool(j, "strip_left", true);
    s->right = getBool(j, "strip_right", true);
    return s;
  }
  if (t == "Prepend") {
    auto s = std::make_unique<PrependNormalizer>();
    s->prepend = getStr(j, "prepend", "");
    return s;
  }
  if (t == "Replace") return std::make_unique<ReplaceNormalizer>(j, where + ": Replace normalizer");
  if (t == "BertNormalizer") {
    auto s = std::make_unique<BertNormalizer>();
    s->cleanText = getBool(j, "clean_text", true);
    s->chinese = getBool(j, "handle_chinese_chars", true);
    s->lowercase = getBool(j, "lowercase", true);
    if (j.contains("strip_accents") && !j["strip_accents"].is_null()) s->stripAccents = j["strip_accents"].get<bool>();
    return s;
  }
  if (t == "Precompiled") {
    const auto& cm = j.at("precompiled_charsmap");
    if (cm.is_null()) return nullptr;
    // base64 in tokenizer.json
    std::string b64 = cm.get<std::string>(), blob;
    int val = 0, bits = -8;
    for (char c : b64) {
      int d;
      if (c >= 'A' && c <= 'Z') d = c - 'A';
      else if (c >= 'a' && c <= 'z') d = c - 'a' + 26;
      else if (c >= '0' && c <= '9') d = c - '0' + 52;
      else if (c == '+') d = 62;
      else if (c == '/') d = 63;
      else continue;
      val = (val << 6) + d;
      bits += 6;
      if (bits >= 0) {
        blob.push_back(static_cast<char>((val >> bits) & 0xFF));
        bits -= 8;
      }
    }
    return std::make_unique<PrecompiledNormalizer>(blob, where + ": Precompiled normalizer");
  }
  throw FormatError(where + ": normalizer type '" + t + "' is not supported");
}


std::unique_ptr<PreTokenizer> makePreTokenizer(const json& j, const std::string& where) {
  if (j.is_null()) return nullptr;
  const std::string t = typeOf(j);
  if (t == "Sequence") {
    auto s = std::make_unique<SequencePre>();
    for (const auto& x : j.at("pretokenizers"))
      if (auto p = makePreTokenizer(x, where)) s->items.push_back(std::move(p));
    return s;
  }
  if (t == "ByteLevel") return std::make_unique<ByteLevelPre>(j, where);
  if (t == "Split") return std::make_unique<SplitPre>(j, where);
  if (t == "Whitespace") return std::make_unique<RegexIsolatedPre>(R"(\w+|[^\w\s]+)", where + ": Whitespace");
  if (t == "WhitespaceSplit") return std::make_unique<WhitespaceSplitPre>();
  if (t == "BertPreTokenizer") return std::make_unique<BertPre>();
  if (t == "Metaspace") return std::make_unique<MetaspacePre>(j, where);
  if (t == "Digits") return std::make_unique<DigitsPre>(getBool(j, "individual_digits", false));
  if (t == "Punctuation") return std::make_unique<PunctuationPre>(parseBehavior(getStr(j, "behavior", "Isolated"), where));
  if (t == "CharDelimiterSplit") {
    auto d = utf8::decode(getStr(j, "delimiter", " "));
    if (d.size() != 1) throw FormatError(where + ": CharDelimiterSplit delimiter must be one character");
    return std::make_unique<CharDelimiterPre>(d[0]);
  }
  throw FormatError(where + ": pre-tokenizer type '" + t + "' is not supported");
}

std::unique_ptr<Model> makeModel(const json& j, const std::string& where) {
  std::string t = typeOf(j);
  if (t.empty()) {
    // Older files omit the type: infer it as the Rust crate does.
    if (j.contains("merges")) {
      t = "BPE";
    } else if (j.contains("vocab") && j["vocab"].is_array()) {
      t = "Unigram";
    } else if (j.contains("vocab")) {
      t = "WordPiece";
    }
  }
  if (t == "BPE") {
    auto m = std::make_unique<BpeModel>();
    m->where = where;
    if (!j.contains("vocab") || !j["vocab"].is_object()) throw FormatError(where + ": BPE model has no vocab object");
    {
      std::vector<std::pair<std::string, int32_t>> entries;
      entries.reserve(j["vocab"].size());
      // Ids are range-checked in 64 bits: an id 2^40 must not become 0.
      for (auto it = j["vocab"].begin(); it != j["vocab"].end(); ++it)
        entries.emplace_back(it.key(), jsonInt(it.value(), 0, std::numeric_limits<int32_t>::max(),
                                               where + ": BPE vocab id of '" + inputExcerpt(it.key()) + "'"));
      m->setVocab(std::move(entries));
    }
    if (j.contains("continuing_subword_prefix") && !j["continuing_subword_prefix"].is_null())
      m->contPrefix = j["continuing_subword_prefix"].get<std::string>();
    if (j.contains("end_of_word_suffix") && !j["end_of_word_suffix"].is_null()) m->eowSuffix = j["end_of_word_suffix"].get<std::string>();
    if (j.contains("unk_token") && !j["unk_token"].is_null()) {
      auto u = j["unk_token"].get<std::string>();
      int32_t id = m->fast.find(u);
      if (id >= 0) m->unkId = id;
    }
    m->fuseUnk = getBool(j, "fuse_unk", false);
    m->byteFallback = getBool(j, "byte_fallback", false);
    m->ignoreMerges = getBool(j, "ignore_merges", false);
    if (j.contains("dropout") && !j["dropout"].is_null() && j["dropout"].get<double>() > 0)
      throw FormatError(where + ": BPE dropout is not supported (encoding must be deterministic)");
    const auto& merges = j.contains("merges") ? j["merges"] : json::array();
    m->mergeList.reserve(merges.size());
    int32_t rank = 0;
    for (const auto& mg : merges) {
      std::string a, b;
      if (mg.is_string()) {
        const std::string s = mg.get<std::string>();
        size_t sp = s.find(' ');
        if (sp == std::string::npos) throw FormatError(where + ": BPE merge " + std::to_string(rank) + " '" + s + "' has no space");
        a = s.substr(0, sp);
        b = s.substr(sp + 1);
      } else if (mg.is_array() && mg.size() == 2) {
        a = mg[0].get<std::string>();
        b = mg[1].get<std::string>();
      } else {
        throw FormatError(where + ": BPE merge " + std::to_string(rank) + " is neither \"a b\" nor [a, b]");
      }
      m->addMerge(a, b, rank);
      ++rank;
    }
    m->finish();
    return m;
  }
  if (t == "WordPiece") {
    auto m = std::make_unique<WordPieceModel>();
    if (!j.contains("vocab") || !j["vocab"].is_object()) throw FormatError(where + ": WordPiece model has no vocab object");
    int32_t maxId = -1;
    for (auto it = j["vocab"].begin(); it != j["vocab"].end(); ++it) {
      const int32_t id =
          jsonInt(it.value(), 0, 50000000, where + ": WordPiece vocab id of '" + inputExcerpt(it.key()) + "'");
      m->vocab.emplace(it.key(), id);
      maxId = std::max(maxId, id);
    }
    m->vocabR.assign(static_cast<size_t>(maxId + 1), "");
    for (auto& [k, v] : m->vocab) {
      // Two tokens with one id: decoding would pick one of them by chance.
      if (!m->vocabR[v].empty())
        throw FormatError(where + ": WordPiece vocab id " + std::to_string(v) + " is used twice");
      m->vocabR[v] = k;
    }
    m->unk = getStr(j, "unk_token", "[UNK]");
    m->prefix = getStr(j, "continuing_subword_prefix", "##");
    if (j.contains("max_input_chars_per_word") && !j["max_input_chars_per_word"].is_null())
      m->maxChars = static_cast<size_t>(
          jsonInteger(j["max_input_chars_per_word"], 0, INT64_MAX, where + ": max_input_chars_per_word"));
    if (!m->vocab.count(m->unk)) throw FormatError(where + ": WordPiece unk_token '" + m->unk + "' is not in the vocabulary");
    return m;
  }
  if (t == "Unigram") {
    std::vector<UnigramPiece> v;
    for (const auto& e : j.at("vocab")) {
      if (!e.is_array() || e.size() != 2) throw FormatError(where + ": Unigram vocab entries must be [piece, score]");
      v.push_back({e[0].get<std::string>(),
                   jsonFinite(e[1], where + ": Unigram score of '" + inputExcerpt(e[0].get<std::string>()) + "'")});
    }
    std::optional<int32_t> unk;
    if (j.contains("unk_id") && !j["unk_id"].is_null())
      unk = jsonInt(j["unk_id"], 0, std::numeric_limits<int32_t>::max(), where + ": unk_id");
    return makeUnigram(std::move(v), unk, getBool(j, "byte_fallback", false), where);
  }
  throw FormatError(where + ": model type '" + t + "' is not supported");
}

std::unique_ptr<Model> makeUnigram(std::vector<UnigramPiece> vocab, std::optional<int32_t> unkId, bool byteFallback,
                                   const std::string& where) {
  auto m = std::make_unique<UnigramModel>();
  m->pieces = std::move(vocab);
  m->unkId = unkId;
  m->byteFallback = byteFallback;
  m->build(where);
  return m;
}

std::unique_ptr<Model> makeBpe(std::vector<std::string> vocab, const std::vector<std::pair<std::string, std::string>>& merges,
                               std::optional<std::string> unk, bool byteFallback, bool fuseUnk, const std::string& where) {
  auto m = std::make_unique<BpeModel>();
  m->where = where;
  std::vector<std::pair<std::string, int32_t>> entries;
  for (size_t i = 0; i < vocab.size(); ++i) entries.emplace_back(vocab[i], static_cast<int32_t>(i));
  m->setVocab(std::move(entries));
  if (unk) {
    int32_t id = m->fast.find(*unk);
    if (id >= 0) m->unkId = id;
  }
  m->byteFallback = byteFallback;
  m->fuseUnk = fuseUnk;
  int32_t rank = 0;
  for (const auto& [a, b] : merges) m->addMerge(a, b, rank++);
  m->finish();
  return m;
}

std::unique_ptr<PostProcessor> makePostProcessor(const json& j, const std::string& where) {
  if (j.is_null()) return nullptr;
  const std::string t = typeOf(j);
  if (t == "TemplateProcessing") {
    auto p = std::make_unique<TemplatePost>();
    const auto& specials = j.contains("special_tokens") ? j["special_tokens"] : json::object();
    for (const auto& item : j.at("single")) {
      TemplatePost::Item it;
      if (item.contains("Sequence")) {
        it.isSeq = true;
        it.seqA = item["Sequence"].value("id", "A") == "A";
      } else if (item.contains("SpecialToken")) {
        std::string name = item["SpecialToken"].at("id").get<std::string>();
        if (!specials.contains(name)) throw FormatError(where + ": TemplateProcessing uses special token '" + name + "', which it does not define");
        for (const auto& id : specials[name].at("ids"))
          it.ids.push_back(
              jsonInt(id, 0, std::numeric_limits<int32_t>::max(), where + ": special token '" + name + "' id"));
      } else {
        throw FormatError(where + ": TemplateProcessing item is neither Sequence nor SpecialToken");
      }
      p->single.push_back(std::move(it));
    }
    return p;
  }
  if (t == "BertProcessing" || t == "RobertaProcessing") {
    auto p = std::make_unique<ClsSepPost>();
    p->sep = jsonInt(j.at("sep").at(1), 0, std::numeric_limits<int32_t>::max(), where + ": post-processor sep id");
    p->cls = jsonInt(j.at("cls").at(1), 0, std::numeric_limits<int32_t>::max(), where + ": post-processor cls id");
    return p;
  }
  if (t == "ByteLevel") return std::make_unique<NoopPost>();
  if (t == "Sequence") {
    auto p = std::make_unique<SequencePost>();
    for (const auto& x : j.at("processors"))
      if (auto q = makePostProcessor(x, where)) p->items.push_back(std::move(q));
    return p;
  }
  throw FormatError(where + ": post-processor type '" + t + "' is not supported");
}

std::unique_ptr<Decoder> makeDecoder(const json& j, const std::string& where) {
  if (j.is_null()) return nullptr;
  const std::string t = typeOf(j);
  if (t == "ByteLevel") return std::make_unique<ByteLevelDec>();
  if (t == "Replace") return std::make_unique<ReplaceDec>(j, where + ": Replace decoder");
  if (t == "ByteFallback") return std::make_unique<ByteFallbackDec>();
  if (t == "Fuse") return std::make_unique<FuseDec>();
  if (t == "Strip") {
    auto d = std::make_unique<StripDec>();
    auto c = utf8::decode(getStr(j, "content", " "));
    d->content = c.empty() ? U' ' : c[0];
    d->start = j.contains("start") ? jsonInt(j["start"], 0, 1 << 20, where + ": Strip decoder start") : 0;
    d->stop = j.contains("stop") ? jsonInt(j["stop"], 0, 1 << 20, where + ": Strip decoder stop") : 0;
    return d;
  }
  if (t == "WordPiece") {
    auto d = std::make_unique<WordPieceDec>();
    d->prefix = getStr(j, "prefix", "##");
    d->cleanup_ = getBool(j, "cleanup", true);
    return d;
  }
  if (t == "Metaspace") {
    auto d = std::make_unique<MetaspaceDec>();
    d->replacement = getStr(j, "replacement", "\xE2\x96\x81");
    std::string scheme = getStr(j, "prepend_scheme", "");
    if (scheme.empty()) scheme = getBool(j, "add_prefix_space", true) ? "always" : "never";
    d->prepend = scheme != "never";
    return d;
  }
  if (t == "BPEDecoder") {
    auto d = std::make_unique<BpeDec>();
    d->suffix = getStr(j, "suffix", "</w>");
    return d;
  }
  if (t == "CTC") {
    auto d = std::make_unique<CtcDec>();
    d->pad = getStr(j, "pad_token", "<pad>");
    d->delim = getStr(j, "word_delimiter_token", "|");
    d->cleanup_ = getBool(j, "cleanup", true);
    return d;
  }
  if (t == "Sequence") {
    auto d = std::make_unique<SequenceDec>();
    for (const auto& x : j.at("decoders"))
      if (auto q = makeDecoder(x, where)) d->items.push_back(std::move(q));
    return d;
  }
  throw FormatError(where + ": decoder type '" + t + "' is not supported");
}

bool configFlag(const json& config, const char* key, bool def, const std::string& where) {
  if (!config.is_object() || !config.contains(key) || config[key].is_null()) return def;
  if (!config[key].is_boolean()) throw FormatError(where + ": " + key + " must be true or false");
  return config[key].get<bool>();
}

int bytePieceValue(const std::string& t) {
  if (t.size() != 6 || t.compare(0, 3, "<0x") != 0 || t[5] != '>') return -1;
  auto hv = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  const int h = hv(t[3]), l = hv(t[4]);
  return h < 0 || l < 0 ? -1 : h * 16 + l;
}

}  // namespace moefy::hf
