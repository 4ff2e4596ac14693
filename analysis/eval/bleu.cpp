// BLEU and chrF as sacreBLEU computes them (see bleu.h for the definitions).
// The 13a tokeniser is written as scans over code points that reproduce
// Python's re.sub semantics (left to right, non-overlapping matches), so no
// regex engine is needed and non-ASCII text is handled per code point.
#include "analysis/eval/bleu.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <unordered_map>

#include "analysis/common/error.h"
#include "analysis/text/utf8.h"

namespace moefy {

namespace {

// Python's str.isspace(), which str.split() and str.rstrip() use.
bool pyIsSpace(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

bool isDigit(char32_t c) { return c >= U'0' && c <= U'9'; }

std::u32string decodeChecked(std::string_view s, const char* what) {
  if (!utf8::isValid(s))
    throw FormatError(std::string(what) + ": invalid UTF-8 at byte " + std::to_string(utf8::validPrefix(s)));
  std::vector<char32_t> cps = utf8::decode(s);
  return std::u32string(cps.begin(), cps.end());
}

void replaceAll(std::u32string& s, std::u32string_view from, std::u32string_view to) {
  std::u32string out;
  size_t i = 0;
  while (true) {
    size_t j = s.find(from, i);
    if (j == std::u32string::npos) break;
    out.append(s, i, j - i);
    out.append(to);
    i = j + from.size();
  }
  if (i == 0) return;
  out.append(s, i, std::u32string::npos);
  s.swap(out);
}

// The punctuation class of tokenizer_re.py's first rule:
// [\{-\~\[-\` -\&\(-\+\:-\@\/], i.e. ASCII punctuation (and the space) except
// the apostrophe, comma, hyphen and full stop.
bool isSplitPunct(char32_t c) {
  return (c >= 0x7B && c <= 0x7E) || (c >= 0x5B && c <= 0x60) || (c >= 0x20 && c <= 0x26) || (c >= 0x28 && c <= 0x2B) ||
         (c >= 0x3A && c <= 0x40) || c == U'/';
}

std::vector<std::u32string> splitPy(const std::u32string& s) {
  std::vector<std::u32string> out;
  size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && pyIsSpace(s[i])) ++i;
    size_t j = i;
    while (j < s.size() && !pyIsSpace(s[j])) ++j;
    if (j > i) out.emplace_back(s, i, j - i);
    i = j;
  }
  return out;
}

std::u32string rstripPy(std::u32string s) {
  while (!s.empty() && pyIsSpace(s.back())) s.pop_back();
  return s;
}

// One re.sub pass of a two-character pattern: matches are found left to
// right and do not overlap (after a match the scan resumes behind it).
template <class Match, class Emit>
std::u32string subPairs(const std::u32string& s, Match&& match, Emit&& emit) {
  std::u32string out;
  out.reserve(s.size() * 2);
  for (size_t i = 0; i < s.size();) {
    if (i + 1 < s.size() && match(s[i], s[i + 1])) {
      emit(out, s[i], s[i + 1]);
      i += 2;
    } else {
      out.push_back(s[i++]);
    }
  }
  return out;
}

// tokenizer_13a.py + tokenizer_re.py on code points; returns the tokens.
std::vector<std::u32string> tokens13a(std::u32string line) {
  replaceAll(line, U"<skipped>", U"");
  replaceAll(line, U"-\n", U"");
  replaceAll(line, U"\n", U" ");
  if (line.find(U'&') != std::u32string::npos) {
    replaceAll(line, U"&quot;", U"\"");
    replaceAll(line, U"&amp;", U"&");
    replaceAll(line, U"&lt;", U"<");
    replaceAll(line, U"&gt;", U">");
  }
  // Rule 1: ' \1 ' around each punctuation character (single-character matches).
  std::u32string a;
  a.reserve(line.size() * 2 + 2);
  a.push_back(U' ');
  for (char32_t c : line) {
    if (isSplitPunct(c)) {
      a.push_back(U' ');
      a.push_back(c);
      a.push_back(U' ');
    } else {
      a.push_back(c);
    }
  }
  a.push_back(U' ');
  // Rule 2: ([^0-9])([\.,]) -> '\1 \2 '.
  const std::u32string b = subPairs(
      a, [](char32_t x, char32_t y) { return !isDigit(x) && (y == U'.' || y == U','); },
      [](std::u32string& out, char32_t x, char32_t y) {
        out.append({x, U' ', y, U' '});
      });
  // Rule 3: ([\.,])([^0-9]) -> ' \1 \2'.
  const std::u32string c = subPairs(
      b, [](char32_t x, char32_t y) { return (x == U'.' || x == U',') && !isDigit(y); },
      [](std::u32string& out, char32_t x, char32_t y) {
        out.append({U' ', x, U' ', y});
      });
  // Rule 4: ([0-9])(-) -> '\1 \2 '.
  const std::u32string d = subPairs(
      c, [](char32_t x, char32_t y) { return isDigit(x) && y == U'-'; },
      [](std::u32string& out, char32_t x, char32_t y) {
        out.append({x, U' ', y, U' '});
      });
  return splitPy(d);
}

// n-gram -> count, one map per order. Word n-grams are keyed by their tokens
// joined with a space (13a tokens contain no whitespace, so the key is
// unambiguous); character n-grams by their code points.
using NgramCounts = std::unordered_map<std::u32string, int64_t>;

std::u32string ngramKey(const std::vector<std::u32string>& toks, size_t start, int n) {
  // Tokens contain no whitespace, so a space separates them unambiguously.
  std::u32string key = toks[start];
  for (int k = 1; k < n; ++k) {
    key.push_back(U' ');
    key += toks[start + static_cast<size_t>(k)];
  }
  return key;
}

std::array<NgramCounts, BleuStats::kMaxOrder> wordNgrams(const std::vector<std::u32string>& toks) {
  std::array<NgramCounts, BleuStats::kMaxOrder> out;
  for (int n = 1; n <= BleuStats::kMaxOrder; ++n)
    for (size_t i = 0; i + static_cast<size_t>(n) <= toks.size(); ++i) ++out[n - 1][ngramKey(toks, i, n)];
  return out;
}

// utils.py my_log: log with log(0) floored to -9999999999.
double flooredLog(double x) { return x == 0.0 ? -9999999999.0 : std::log(x); }

template <class Stats, class Fn>
Stats sumOver(const std::vector<std::string>& hyps, const std::vector<std::string>& refs, Fn&& segment) {
  if (hyps.size() != refs.size())
    throw ParameterError(std::to_string(hyps.size()) + " hypotheses but " + std::to_string(refs.size()) +
                         " references");
  Stats total;
  for (size_t i = 0; i < hyps.size(); ++i) {
    // Name the segment in a format error (the segment functions only know "hypothesis").
    if (!utf8::isValid(hyps[i]))
      throw FormatError("hypothesis " + std::to_string(i + 1) + ": invalid UTF-8 at byte " +
                        std::to_string(utf8::validPrefix(hyps[i])));
    if (!utf8::isValid(refs[i]))
      throw FormatError("reference " + std::to_string(i + 1) + ": invalid UTF-8 at byte " +
                        std::to_string(utf8::validPrefix(refs[i])));
    total += segment(hyps[i], refs[i]);
  }
  return total;
}

}  // namespace

std::string tokenize13a(std::string_view line) {
  std::string out;
  for (const auto& t : tokens13a(decodeChecked(line, "13a tokenizer input"))) {
    if (!out.empty()) out.push_back(' ');
    out += utf8::encode(t);
  }
  return out;
}

BleuStats& BleuStats::operator+=(const BleuStats& o) {
  hypLen += o.hypLen;
  refLen += o.refLen;
  for (int n = 0; n < kMaxOrder; ++n) {
    matches[n] += o.matches[n];
    totals[n] += o.totals[n];
  }
  return *this;
}

BleuStats bleuStatistics(std::string_view hypothesis, std::string_view reference) {
  // sacreBLEU's BLEU._preprocess_segment: tokenizer(sent.rstrip()), for both sides.
  const auto hyp = tokens13a(rstripPy(decodeChecked(hypothesis, "hypothesis")));
  const auto ref = tokens13a(rstripPy(decodeChecked(reference, "reference")));
  const auto hypNg = wordNgrams(hyp);
  const auto refNg = wordNgrams(ref);
  BleuStats s;
  s.hypLen = static_cast<int64_t>(hyp.size());
  s.refLen = static_cast<int64_t>(ref.size());
  for (int n = 0; n < BleuStats::kMaxOrder; ++n) {
    for (const auto& [g, count] : hypNg[n]) {
      s.totals[n] += count;
      auto it = refNg[n].find(g);
      if (it != refNg[n].end()) s.matches[n] += std::min(count, it->second);
    }
  }
  return s;
}

BleuScore bleuFromStatistics(const BleuStats& stats, BleuSmoothing smoothing, bool effectiveOrder) {
  // The order of the floating-point operations follows BLEU.compute_bleu, so
  // the result matches sacreBLEU to the last bits of exp/log.
  BleuScore r;
  r.stats = stats;
  const auto sysLen = static_cast<double>(stats.hypLen);
  const auto refLen = static_cast<double>(stats.refLen);
  r.ratio = stats.refLen ? sysLen / refLen : 0.0;
  r.bp = 1.0;
  if (stats.hypLen < stats.refLen) r.bp = stats.hypLen > 0 ? std::exp(1.0 - refLen / sysLen) : 0.0;
  bool anyMatch = false;
  for (int64_t m : stats.matches) anyMatch = anyMatch || m != 0;
  if (!anyMatch) return r;  // score 0, precisions 0 (sacreBLEU #141)
  double smoothMteval = 1.0;
  int effOrder = BleuStats::kMaxOrder;
  for (int n = 1; n <= BleuStats::kMaxOrder; ++n) {
    const int64_t total = stats.totals[n - 1], correct = stats.matches[n - 1];
    if (total == 0) break;
    if (effectiveOrder) effOrder = n;
    if (correct == 0) {
      if (smoothing == BleuSmoothing::Exp) {
        smoothMteval *= 2;
        r.precisions[n - 1] = 100.0 / (smoothMteval * static_cast<double>(total));
      }
    } else {
      r.precisions[n - 1] = 100.0 * static_cast<double>(correct) / static_cast<double>(total);
    }
  }
  double sumLog = 0.0;
  for (int n = 0; n < effOrder; ++n) sumLog += flooredLog(r.precisions[n]);
  r.score = r.bp * std::exp(sumLog / effOrder);
  return r;
}

BleuScore corpusBleu(const std::vector<std::string>& hypotheses, const std::vector<std::string>& references,
                     BleuSmoothing smoothing) {
  const BleuStats total = sumOver<BleuStats>(
      hypotheses, references, [](const std::string& h, const std::string& r) { return bleuStatistics(h, r); });
  return bleuFromStatistics(total, smoothing, false);
}

BleuScore sentenceBleu(std::string_view hypothesis, std::string_view reference) {
  return bleuFromStatistics(bleuStatistics(hypothesis, reference), BleuSmoothing::Exp, true);
}

ChrfStats& ChrfStats::operator+=(const ChrfStats& o) {
  for (int n = 0; n < kCharOrder; ++n) {
    hyp[n] += o.hyp[n];
    ref[n] += o.ref[n];
    match[n] += o.match[n];
  }
  return *this;
}

namespace {

// helpers.py extract_all_char_ngrams(line, 6, include_whitespace=False):
// ''.join(line.split()), then the code point n-grams.
std::array<NgramCounts, ChrfStats::kCharOrder> charNgrams(const std::u32string& text) {
  std::u32string s;
  s.reserve(text.size());
  for (char32_t c : text)
    if (!pyIsSpace(c)) s.push_back(c);
  std::array<NgramCounts, ChrfStats::kCharOrder> out;
  for (int n = 1; n <= ChrfStats::kCharOrder; ++n)
    for (size_t i = 0; i + static_cast<size_t>(n) <= s.size(); ++i) ++out[n - 1][s.substr(i, static_cast<size_t>(n))];
  return out;
}

}  // namespace

ChrfStats chrfStatistics(std::string_view hypothesis, std::string_view reference) {
  // chrF's _preprocess_segment does nothing with the defaults (no lowercase,
  // no strip): whitespace only disappears in the n-gram extraction.
  const auto hypNg = charNgrams(decodeChecked(hypothesis, "hypothesis"));
  const auto refNg = charNgrams(decodeChecked(reference, "reference"));
  ChrfStats s;
  for (int n = 0; n < ChrfStats::kCharOrder; ++n) {
    int64_t hypCount = 0, refCount = 0, matchCount = 0;
    for (const auto& [g, count] : hypNg[n]) {
      hypCount += count;
      auto it = refNg[n].find(g);
      if (it != refNg[n].end()) matchCount += std::min(count, it->second);
    }
    for (const auto& [g, count] : refNg[n]) refCount += count;
    // CHRF._get_match_statistics: "don't count hits if no reference exists for that n-gram".
    s.hyp[n] = refNg[n].empty() ? 0 : hypCount;
    s.ref[n] = refCount;
    s.match[n] = matchCount;
  }
  return s;
}

double chrfFromStatistics(const ChrfStats& stats) {
  // CHRF._compute_f_score without eps smoothing (effective-order averaging),
  // the operations in sacreBLEU's order.
  const double factor = 4.0;  // beta^2, beta = 2
  double avgPrec = 0.0, avgRec = 0.0;
  int effectiveOrder = 0;
  for (int n = 0; n < ChrfStats::kCharOrder; ++n) {
    if (stats.hyp[n] > 0 && stats.ref[n] > 0) {
      avgPrec += static_cast<double>(stats.match[n]) / static_cast<double>(stats.hyp[n]);
      avgRec += static_cast<double>(stats.match[n]) / static_cast<double>(stats.ref[n]);
      ++effectiveOrder;
    }
  }
  if (effectiveOrder == 0) return 0.0;
  avgPrec /= effectiveOrder;
  avgRec /= effectiveOrder;
  if (avgPrec + avgRec == 0.0) return 0.0;
  double score = (1.0 + factor) * avgPrec * avgRec;
  score /= (factor * avgPrec) + avgRec;
  return 100.0 * score;
}

double corpusChrf(const std::vector<std::string>& hypotheses, const std::vector<std::string>& references) {
  return chrfFromStatistics(sumOver<ChrfStats>(
      hypotheses, references, [](const std::string& h, const std::string& r) { return chrfStatistics(h, r); }));
}

double sentenceChrf(std::string_view hypothesis, std::string_view reference) {
  return chrfFromStatistics(chrfStatistics(hypothesis, reference));
}

}  // namespace moefy
