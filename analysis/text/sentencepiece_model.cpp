// SentencePiece .model files, read from the protobuf wire format of
// sentencepiece_model.proto (libsentencepiece cannot be linked: its protobuf
// clashes with libtorch's). Encoding follows libsentencepiece 0.1.97:
//   normalizer: precompiled charsmap (longest match), remove_extra_whitespaces,
//               add_dummy_prefix, escape_whitespaces (' ' -> U+2581);
//   Unigram:    Viterbi over the whole normalized text (EncodeOptimized);
//   BPE:        merge the adjacent pair whose concatenation is the
//               highest-scoring piece (ties: leftmost), any piece, not a merge list;
//   unknown characters become the unk id (runs fused) or <0xXX> byte pieces
//   with byte_fallback. User-defined pieces are matched first, verbatim.
#include <algorithm>
#include <array>
#include <functional>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>
#include <unordered_map>

#include "analysis/common/error.h"
#include "analysis/io/input_file.h"
#include "analysis/io/json_input.h"
#include "analysis/text/charsmap.h"
#include "analysis/text/hf_tokenizer.h"
#include "analysis/text/utf8.h"

namespace moefy {

namespace {

// ---------------------------------------------------------------------------
// Protobuf wire format reader (just what ModelProto needs).

class Wire {
 public:
  Wire(const char* p, size_t n, std::string where) : p_(reinterpret_cast<const uint8_t*>(p)), end_(p_ + n), where_(std::move(where)) {}
  bool done() const { return p_ >= end_; }
  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (p_ >= end_) fail("truncated varint");
      uint8_t b = *p_++;
      v |= static_cast<uint64_t>(b & 0x7F) << shift;
      if (!(b & 0x80)) return v;
    }
    fail("varint too long");
    return 0;
  }
  // Reads a tag; returns (field, wire type).
  std::pair<uint32_t, uint32_t> tag() {
    uint64_t t = varint();
    return {static_cast<uint32_t>(t >> 3), static_cast<uint32_t>(t & 7)};
  }
  std::string_view bytes() {
    uint64_t n = varint();
    if (n > static_cast<uint64_t>(end_ - p_)) fail("length-delimited field runs past the end");
    std::string_view s(reinterpret_cast<const char*>(p_), static_cast<size_t>(n));
    p_ += n;
    return s;
  }
  float f32() {
    if (end_ - p_ < 4) fail("truncated float");
    float f;
    std::memcpy(&f, p_, 4);
    p_ += 4;
    return f;
  }
  void skip(uint32_t wt) {
    switch (wt) {
      case 0: varint(); break;
      case 1: advance(8); break;
      case 2: bytes(); break;
      case 5: advance(4); break;
      default: fail("unsupported wire type " + std::to_string(wt));
    }
  }
  [[noreturn]] void fail(const std::string& what) const { throw FormatError(where_ + ": not a SentencePiece model (" + what + ")"); }

 private:
  void advance(size_t n) {
    if (static_cast<size_t>(end_ - p_) < n) fail("truncated field");
    p_ += n;
  }
  const uint8_t* p_;
  const uint8_t* end_;
  std::string where_;
};

enum PieceType { NORMAL = 1, UNKNOWN = 2, CONTROL = 3, USER_DEFINED = 4, UNUSED = 5, BYTE = 6 };

struct SpmPiece {
  std::string piece;
  float score = 0;
  int type = NORMAL;
};

struct SpmModel {
  std::vector<SpmPiece> pieces;
  int modelType = 1;  // 1 unigram, 2 bpe, 3 word, 4 char
  bool byteFallback = false;
  bool treatWsAsSuffix = false;
  int unkId = 0, bosId = 1, eosId = 2, padId = -1;
  std::string normalizerName;
  std::string charsmap;
  bool addDummyPrefix = true, removeExtraWs = true, escapeWs = true;
};

SpmModel parseModel(const std::string& data, const std::string& where) {
  SpmModel m;
  Wire w(data.data(), data.size(), where);
  bool sawPieces = false;
  while (!w.done()) {
    auto [field, wt] = w.tag();
    if (field == 1 && wt == 2) {
      Wire pw = [&] {
        auto s = w.bytes();
        return Wire(s.data(), s.size(), where);
      }();
      SpmPiece p;
      while (!pw.done()) {
        auto [f, t] = pw.tag();
        if (f == 1 && t == 2) p.piece = std::string(pw.bytes());
        else if (f == 2 && t == 5) p.score = pw.f32();
        else if (f == 3 && t == 0) {
          const uint64_t type = pw.varint();  // checked before narrowing
          if (type < NORMAL || type > BYTE)
            pw.fail("piece " + std::to_string(m.pieces.size()) + " has unknown type " + std::to_string(type));
          p.type = static_cast<int>(type);
        } else
          pw.skip(t);
      }
      m.pieces.push_back(std::move(p));
      sawPieces = true;
    } else if (field == 2 && wt == 2) {  // TrainerSpec
      auto s = w.bytes();
      Wire tw(s.data(), s.size(), where);
      while (!tw.done()) {
        auto [f, t] = tw.tag();
        if (t == 0 && (f == 3 || f == 24 || f == 35 || f == 40 || f == 41 || f == 42 || f == 43)) {
          // int32 fields travel as 64-bit varints (negatives sign-extended):
          // check the value in 64 bits before narrowing, so 2^32 + 3 is not read as 3.
          auto v = static_cast<int64_t>(tw.varint());
          if (v < std::numeric_limits<int32_t>::min() || v > std::numeric_limits<int32_t>::max())
            tw.fail("trainer_spec field " + std::to_string(f) + " = " + std::to_string(v) +
                    " is outside the int32 range");
          int iv = static_cast<int>(v);
          if (f == 3) m.modelType = iv;
          if (f == 24) m.treatWsAsSuffix = v != 0;
          if (f == 35) m.byteFallback = v != 0;
          if (f == 40) m.unkId = iv;
          if (f == 41) m.bosId = iv;
          if (f == 42) m.eosId = iv;
          if (f == 43) m.padId = iv;
        } else {
          tw.skip(t);
        }
      }
    } else if (field == 3 && wt == 2) {  // NormalizerSpec
      auto s = w.bytes();
      Wire nw(s.data(), s.size(), where);
      while (!nw.done()) {
        auto [f, t] = nw.tag();
        if (f == 1 && t == 2) m.normalizerName = std::string(nw.bytes());
        else if (f == 2 && t == 2) m.charsmap = std::string(nw.bytes());
        else if (f == 3 && t == 0) m.addDummyPrefix = nw.varint() != 0;
        else if (f == 4 && t == 0) m.removeExtraWs = nw.varint() != 0;
        else if (f == 5 && t == 0) m.escapeWs = nw.varint() != 0;
        else nw.skip(t);
      }
    } else {
      w.skip(wt);
    }
  }
  if (!sawPieces || m.pieces.empty()) throw FormatError(where + ": not a SentencePiece model (no pieces)");
  // libsentencepiece refuses a piece defined twice ("is already defined");
  // a NaN or Inf score would make Viterbi/BPE choices arbitrary.
  std::unordered_map<std::string_view, size_t> seen;
  seen.reserve(m.pieces.size());
  for (size_t i = 0; i < m.pieces.size(); ++i) {
    const auto& p = m.pieces[i];
    auto [at, fresh] = seen.emplace(p.piece, i);
    if (!fresh)
      throw FormatError(where + ": piece '" + inputExcerpt(p.piece) + "' appears twice (ids " +
                        std::to_string(at->second) + " and " + std::to_string(i) + ")");
    if (!std::isfinite(p.score))
      throw FormatError(where + ": piece '" + inputExcerpt(p.piece) + "' (id " + std::to_string(i) +
                        ") has a non-finite score");
  }
  if (m.treatWsAsSuffix) throw FormatError(where + ": SentencePiece treat_whitespace_as_suffix is not supported");
  if (m.modelType != 1 && m.modelType != 2)
    throw FormatError(where + ": SentencePiece model type " + std::to_string(m.modelType) + " (word/char) is not supported");
  return m;
}

// ---------------------------------------------------------------------------
// Shared lookup structures.

struct SvHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>()(s); }
};

// Byte trie with sorted children, for prefix matching.
class Trie {
 public:
  void add(std::string_view key, int32_t value) {
    int32_t node = 0;
    for (unsigned char c : key) {
      int32_t nx = child(node, c);
      if (nx < 0) {
        nx = static_cast<int32_t>(nodes_.size());
        auto& kids = nodes_[node].kids;
        auto it = std::lower_bound(kids.begin(), kids.end(), c, [](const auto& a, unsigned char b) { return a.first < b; });
        kids.insert(it, {c, nx});
        nodes_.emplace_back();
      }
      node = nx;
    }
    if (nodes_[node].value < 0) nodes_[node].value = value;
  }
  int32_t child(int32_t node, unsigned char c) const {
    const auto& kids = nodes_[node].kids;
    auto it = std::lower_bound(kids.begin(), kids.end(), c, [](const auto& a, unsigned char b) { return a.first < b; });
    return it != kids.end() && it->first == c ? it->second : -1;
  }
  int32_t value(int32_t node) const { return nodes_[node].value; }
  bool empty() const { return nodes_.size() == 1; }
  /// Longest key that is a prefix of s: (length, value) or (0, -1).
  std::pair<size_t, int32_t> longest(std::string_view s) const {
    int32_t node = 0;
    std::pair<size_t, int32_t> best{0, -1};
    for (size_t i = 0; i < s.size(); ++i) {
      node = child(node, static_cast<unsigned char>(s[i]));
      if (node < 0) break;
      if (nodes_[node].value >= 0) best = {i + 1, nodes_[node].value};
    }
    return best;
  }

 private:
  struct Node {
    int32_t value = -1;
    std::vector<std::pair<unsigned char, int32_t>> kids;
  };
  std::vector<Node> nodes_{1};
};

const std::string kSpace = "\xE2\x96\x81";  // U+2581

// ---------------------------------------------------------------------------

class SpmNormalizer : public hf::Normalizer {
 public:
  SpmNormalizer(const SpmModel& m, const Trie* userDefined, const std::string& where)
      : addDummyPrefix_(m.addDummyPrefix), removeExtraWs_(m.removeExtraWs), escapeWs_(m.escapeWs), user_(userDefined) {
    charsmap_.load(m.charsmap, where);
  }

  void apply(std::string& s) const override {
    std::string_view in(s);
    std::string out;
    out.reserve(s.size() + 8);
    if (removeExtraWs_) {
      while (!in.empty()) {
        auto [rep, len] = prefix(in);
        if (rep != " ") break;
        in.remove_prefix(len);
      }
    }
    if (in.empty()) {
      s.clear();
      return;
    }
    if (addDummyPrefix_) out += escapeWs_ ? kSpace : " ";
    bool prevSpace = removeExtraWs_;
    while (!in.empty()) {
      auto [rep, len] = prefix(in);
      std::string_view sp = rep;
      while (prevSpace && !sp.empty() && sp.front() == ' ') sp.remove_prefix(1);
      if (!sp.empty()) {
        for (char c : sp) {
          if (escapeWs_ && c == ' ') {
            out += kSpace;
          } else {
            out.push_back(c);
          }
        }
        prevSpace = sp.back() == ' ';
      }
      in.remove_prefix(len);
      if (!removeExtraWs_) prevSpace = false;
    }
    if (removeExtraWs_) {
      const std::string sp = escapeWs_ ? kSpace : " ";
      while (out.size() >= sp.size() && out.compare(out.size() - sp.size(), sp.size(), sp) == 0) out.resize(out.size() - sp.size());
    }
    s.swap(out);
  }

 private:
  // (normalized text, consumed bytes) for the prefix of `in`.
  std::pair<std::string, size_t> prefix(std::string_view in) const {
    if (user_ && !user_->empty()) {
      auto [len, id] = user_->longest(in);
      if (len > 0) return {std::string(in.substr(0, len)), len};
    }
    auto [len, rep] = charsmap_.longest(in);
    if (len > 0) return {std::string(rep), len};
    // Invalid UTF-8: one U+FFFD per byte, not normalized further (libsentencepiece).
    size_t ok = utf8::validPrefix(in.substr(0, std::min<size_t>(4, in.size())));
    size_t n = std::min<size_t>(utf8::seqLen(static_cast<unsigned char>(in[0])), in.size());
    if (ok < n) return {"\xEF\xBF\xBD", 1};
    return {std::string(in.substr(0, n)), n};
  }

  bool addDummyPrefix_, removeExtraWs_, escapeWs_;
  const Trie* user_;
  Charsmap charsmap_;
};

class SpmModelBase : public hf::Model {
 public:
  explicit SpmModelBase(SpmModel m) : m_(std::move(m)) {
    for (size_t i = 0; i < m_.pieces.size(); ++i) {
      const auto& p = m_.pieces[i];
      ids_.emplace(p.piece, static_cast<int32_t>(i));
      if (p.type == USER_DEFINED) user_.add(p.piece, static_cast<int32_t>(i));
    }
    static const char* hex = "0123456789ABCDEF";
    for (int b = 0; b < 256; ++b) {
      std::string t = std::string("<0x") + hex[b >> 4] + hex[b & 15] + ">";
      auto it = ids_.find(t);
      byteIds_[b] = it != ids_.end() && m_.pieces[it->second].type == BYTE ? it->second : -1;
    }
  }
  std::optional<int32_t> tokenToId(std::string_view t) const override {
    auto it = ids_.find(t);
    if (it == ids_.end()) return std::nullopt;
    return it->second;
  }
  const std::string* idToToken(int32_t id) const override {
    if (id < 0 || id >= static_cast<int32_t>(m_.pieces.size())) return nullptr;
    return &m_.pieces[id].piece;
  }
  int32_t size() const override { return static_cast<int32_t>(m_.pieces.size()); }
  const SpmModel& spec() const { return m_; }
  const Trie& userDefined() const { return user_; }

 protected:
  // Appends the id of a segment, or unk / byte pieces for an unknown one.
  void emit(std::string_view seg, int32_t id, std::vector<int32_t>& out, bool& prevUnk) const {
    bool unk = id < 0 || id == m_.unkId;
    if (unk && m_.byteFallback) {
      bool all = true;
      for (unsigned char c : seg) all = all && byteIds_[c] >= 0;
      if (all) {
        for (unsigned char c : seg) out.push_back(byteIds_[c]);
        prevUnk = false;
        return;
      }
    }
    if (unk) {
      if (!prevUnk) out.push_back(m_.unkId);
      prevUnk = true;
      return;
    }
    out.push_back(id);
    prevUnk = false;
  }
  bool usable(int32_t id) const {
    int t = m_.pieces[id].type;
    return t == NORMAL || t == USER_DEFINED || t == UNUSED;
  }

  SpmModel m_;
  std::unordered_map<std::string, int32_t, SvHash, std::equal_to<>> ids_;
  Trie user_;
  std::array<int32_t, 256> byteIds_{};
};

class SpmUnigram : public SpmModelBase {
 public:
  explicit SpmUnigram(SpmModel m) : SpmModelBase(std::move(m)) {
    minScore_ = std::numeric_limits<float>::max();
    maxScore_ = std::numeric_limits<float>::lowest();
    for (size_t i = 0; i < m_.pieces.size(); ++i) {
      const auto& p = m_.pieces[i];
      if (p.type == NORMAL || p.type == USER_DEFINED || p.type == UNUSED) trie_.add(p.piece, static_cast<int32_t>(i));
      if (p.type == NORMAL) {
        minScore_ = std::min(minScore_, p.score);
        maxScore_ = std::max(maxScore_, p.score);
      }
    }
  }
  std::string kind() const override { return "Unigram"; }

  void tokenize(std::string_view s, std::vector<int32_t>& out) const override {
    const size_t n = s.size();
    // libsentencepiece's EncodeOptimized keeps path scores in float: piece
    // candidates are summed in double and stored rounded to float; the unk
    // candidate is summed in float. Emulated exactly (ties depend on it).
    struct Best {
      float score = 0;
      int64_t start = -1;
      int32_t id = -1;
    };
    std::vector<Best> best(n + 1);
    best[0].start = 0;
    const float unkScore = minScore_ - 10.0f;
    size_t pos = 0;
    while (pos < n) {
      size_t mblen = std::min<size_t>(utf8::seqLen(static_cast<unsigned char>(s[pos])), n - pos);
      const float base = best[pos].score;
      bool single = false;
      int32_t node = 0;
      for (size_t k = pos; k < n; ++k) {
        node = trie_.child(node, static_cast<unsigned char>(s[k]));
        if (node < 0) break;
        int32_t id = trie_.value(node);
        if (id < 0) continue;
        size_t end = k + 1;
        if (end < n && (static_cast<unsigned char>(s[end]) & 0xC0) == 0x80) continue;
        if (m_.pieces[id].type == UNUSED) continue;
        double score = m_.pieces[id].type == USER_DEFINED ? static_cast<double>(end - pos) * static_cast<double>(maxScore_) - 0.1
                                                          : static_cast<double>(m_.pieces[id].score);
        double cand = score + static_cast<double>(base);
        if (best[end].start < 0 || cand > static_cast<double>(best[end].score))
          best[end] = {static_cast<float>(cand), static_cast<int64_t>(pos), id};
        if (end - pos == mblen) single = true;
      }
      if (!single) {
        float cand = unkScore + base;
        if (best[pos + mblen].start < 0 || cand > best[pos + mblen].score) best[pos + mblen] = {cand, static_cast<int64_t>(pos), -1};
      }
      pos += mblen;
    }
    std::vector<std::pair<size_t, int32_t>> rev;
    for (size_t end = n; end > 0;) {
      rev.emplace_back(static_cast<size_t>(best[end].start), best[end].id);
      end = static_cast<size_t>(best[end].start);
    }
    bool prevUnk = false;
    for (auto it = rev.rbegin(); it != rev.rend(); ++it) {
      size_t end = (it + 1) == rev.rend() ? n : (it + 1)->first;
      emit(s.substr(it->first, end - it->first), it->second, out, prevUnk);
    }
  }

 private:
  Trie trie_;
  float minScore_, maxScore_;
};

class SpmBpe : public SpmModelBase {
 public:
  explicit SpmBpe(SpmModel m) : SpmModelBase(std::move(m)) {}
  std::string kind() const override { return "BPE"; }

  void tokenize(std::string_view s, std::vector<int32_t>& out) const override {
    struct Sym {
      size_t a, len;
      int32_t prev, next;
      bool freeze;
    };
    std::vector<Sym> syms;
    size_t i = 0;
    while (i < s.size()) {
      auto [ulen, uid] = user_.longest(s.substr(i));
      size_t len = ulen > 0 ? ulen : std::min<size_t>(utf8::seqLen(static_cast<unsigned char>(s[i])), s.size() - i);
      syms.push_back({i, len, static_cast<int32_t>(syms.size()) - 1, static_cast<int32_t>(syms.size()) + 1, ulen > 0});
      i += len;
    }
    if (syms.empty()) return;
    syms.back().next = -1;
    struct Pair {
      float score;
      int32_t left, right;
      size_t size;
    };
    auto cmp = [](const Pair& x, const Pair& y) { return x.score < y.score || (x.score == y.score && x.left > y.left); };
    std::vector<Pair> heap;
    std::unordered_map<std::string, std::pair<std::string, std::string>> revMerge;
    auto addPair = [&](int32_t l, int32_t r) {
      if (l < 0 || r < 0 || syms[l].freeze || syms[r].freeze) return;
      std::string_view piece = s.substr(syms[l].a, syms[l].len + syms[r].len);
      auto it = ids_.find(piece);
      if (it == ids_.end() || !usable(it->second)) return;
      heap.push_back({m_.pieces[it->second].score, l, r, piece.size()});
      std::push_heap(heap.begin(), heap.end(), cmp);
      if (m_.pieces[it->second].type == UNUSED)
        revMerge[std::string(piece)] = {std::string(s.substr(syms[l].a, syms[l].len)), std::string(s.substr(syms[r].a, syms[r].len))};
    };
    for (size_t k = 1; k < syms.size(); ++k) addPair(static_cast<int32_t>(k - 1), static_cast<int32_t>(k));
    while (!heap.empty()) {
      std::pop_heap(heap.begin(), heap.end(), cmp);
      Pair top = heap.back();
      heap.pop_back();
      Sym& l = syms[top.left];
      Sym& r = syms[top.right];
      if (l.len == 0 || r.len == 0 || l.len + r.len != top.size || l.next != top.right) continue;
      l.len += r.len;
      r.len = 0;
      l.next = r.next;
      if (r.next >= 0) syms[r.next].prev = top.left;
      addPair(l.prev, top.left);
      addPair(top.left, l.next);
    }
    bool prevUnk = false;
    std::function<void(std::string_view)> resegment = [&](std::string_view w) {
      auto it = ids_.find(w);
      if (it == ids_.end()) {
        emit(w, -1, out, prevUnk);
        return;
      }
      if (m_.pieces[it->second].type != UNUSED) {
        emit(w, it->second, out, prevUnk);
        return;
      }
      auto rm = revMerge.find(std::string(w));
      if (rm == revMerge.end()) {
        emit(w, it->second, out, prevUnk);
        return;
      }
      resegment(rm->second.first);
      resegment(rm->second.second);
    };
    for (int32_t k = 0; k >= 0; k = syms[k].next) {
      if (syms[k].len == 0) continue;
      resegment(s.substr(syms[k].a, syms[k].len));
    }
  }
};

// Decoder: byte pieces to bytes, U+2581 to ' ', the dummy prefix removed.
class SpmDecoder : public hf::Decoder {
 public:
  SpmDecoder(bool addDummyPrefix) : dummy_(addDummyPrefix) {}
  void apply(std::vector<std::string>& tokens) const override {
    std::string bytes;
    for (const auto& t : tokens) {
      if (const int v = hf::bytePieceValue(t); v >= 0) {  // "<0xZZ>" is not a byte piece: kept as text
        bytes.push_back(static_cast<char>(v));
        continue;
      }
      bytes += t;
    }
    std::string s = utf8::sanitized(bytes), out;
    size_t pos = 0, prev = 0;
    while ((pos = s.find(kSpace, prev)) != std::string::npos) {
      out.append(s, prev, pos - prev);
      out += ' ';
      prev = pos + kSpace.size();
    }
    out.append(s, prev, std::string::npos);
    if (dummy_ && !out.empty() && out[0] == ' ') out.erase(0, 1);
    tokens.assign(1, out);
  }

 private:
  bool dummy_;
};

class BosEosPost : public hf::PostProcessor {
 public:
  std::optional<int32_t> bos, eos;
  void apply(std::vector<int32_t>& ids, bool add) const override {
    if (!add) return;
    if (bos) ids.insert(ids.begin(), *bos);
    if (eos) ids.push_back(*eos);
  }
  std::vector<int32_t> prefixIds() const override { return bos ? std::vector<int32_t>{*bos} : std::vector<int32_t>{}; }
  std::vector<int32_t> suffixIds() const override { return eos ? std::vector<int32_t>{*eos} : std::vector<int32_t>{}; }
};

}  // namespace

std::unique_ptr<Tokenizer> loadSentencePieceModel(const std::filesystem::path& path) {
  const std::string where = path.string();
  SpmModel spec = parseModel(readInputFile(path, 1ull << 30), where);
  const int n = static_cast<int>(spec.pieces.size());
  auto checkId = [&](int id, const char* what) {
    if (id >= n) throw FormatError(where + ": " + what + " " + std::to_string(id) + " is outside the vocabulary of " + std::to_string(n));
  };
  checkId(spec.unkId, "unk_id");
  checkId(spec.bosId, "bos_id");
  checkId(spec.eosId, "eos_id");
  checkId(spec.padId, "pad_id");

  // Which special tokens encode() adds: HF's Llama-style default (BOS only),
  // overridden by add_bos_token / add_eos_token in tokenizer_config.json.
  bool addBos = spec.bosId >= 0, addEos = false;
  auto cfgPath = path.parent_path() / "tokenizer_config.json";
  if (std::filesystem::exists(cfgPath)) {
    auto j = readJsonFile(cfgPath);
    if (!j.is_object()) throw FormatError(cfgPath.string() + ": not a JSON object");
    addBos = hf::configFlag(j, "add_bos_token", addBos, cfgPath.string()) && spec.bosId >= 0;
    addEos = hf::configFlag(j, "add_eos_token", addEos, cfgPath.string()) && spec.eosId >= 0;
  }

  auto t = std::make_unique<HfTokenizer>();
  t->where_ = where;
  t->kindNote_ = "SentencePiece .model";
  t->rawInvalidUtf8_ = true;  // the normalizer replaces invalid bytes itself
  std::unique_ptr<SpmModelBase> model;
  if (spec.modelType == 1) {
    model = std::make_unique<SpmUnigram>(spec);
  } else {
    model = std::make_unique<SpmBpe>(spec);
  }
  t->normalizer_ = std::make_unique<SpmNormalizer>(spec, &model->userDefined(), where);
  t->decoder_ = std::make_unique<SpmDecoder>(spec.addDummyPrefix);
  auto post = std::make_unique<BosEosPost>();
  if (addBos) post->bos = spec.bosId;
  if (addEos) post->eos = spec.eosId;
  t->postProcessor_ = std::move(post);
  // Control and unknown pieces are special for decode(skipSpecialTokens);
  // they are not matched in the input text (as in libsentencepiece).
  for (int i = 0; i < n; ++i) {
    const auto& p = spec.pieces[i];
    if (p.type == CONTROL || p.type == UNKNOWN) t->addSpecialId(i);
  }
  t->model_ = std::move(model);
  t->finish();
  if (spec.bosId >= 0) t->bos_ = spec.bosId;
  if (spec.eosId >= 0) t->eos_ = spec.eosId;
  t->pad_ = spec.padId >= 0 ? std::optional<int32_t>(spec.padId) : std::nullopt;
  return t;
}

}  // namespace moefy
