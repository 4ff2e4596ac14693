#pragma once
// Translation quality metrics as sacreBLEU 2.x computes them with its
// defaults: BLEU (Papineni et al., 2002, "BLEU: a method for automatic
// evaluation of machine translation") and chrF (Popović, 2015, "chrF:
// character n-gram F-score for automatic MT evaluation"). The semantics follow
// sacreBLEU (github.com/mjpost/sacrebleu: tokenizers/tokenizer_13a.py,
// tokenizers/tokenizer_re.py, metrics/bleu.py, metrics/chrf.py,
// metrics/helpers.py); scripts/ref/bleu_ref.py is an independent Python
// implementation that tests/numeric/test_bleu.cpp compares against.
//
// One reference per segment. Texts are UTF-8 (FormatError "...: invalid UTF-8"
// otherwise); "whitespace" is Python's str.isspace() set (ASCII blanks,
// U+001C..U+001F, U+0085, U+00A0, U+1680, U+2000..U+200A, U+2028, U+2029,
// U+202F, U+205F, U+3000), as sacreBLEU's str.split() uses it.
//
// BLEU (sacreBLEU defaults: tokenize 13a, mixed case, max n-gram order N = 4):
//   segment: hyp and ref are right-stripped of whitespace and tokenised with
//   tokenize13a(); the statistics are hyp_len, ref_len (token counts), and for
//   n = 1..N matches_n = sum over the hyp's n-grams g of min(count_hyp(g),
//   count_ref(g)) and totals_n = max(0, hyp_len - n + 1).
//   corpus: the statistics summed over segments, then
//     BP  = 1 if hyp_len >= ref_len, else exp(1 - ref_len / hyp_len) (0 if hyp_len = 0)
//     p_n = 100 matches_n / totals_n                                       (percent)
//     BLEU = BP * exp((1/N') sum_{n<=N'} log p_n)                          in [0, 100]
//   with: BLEU = 0 when no n-gram of any order matches; orders from the first
//   with totals_n = 0 on keep p_n = 0; log 0 is taken as -9999999999 (so a
//   zero precision gives BLEU = 0); N' = N, or with effective order the last
//   order with totals_n > 0. Smoothing of a zero matches_n:
//     None: p_n = 0.
//     Exp (sacreBLEU's default, "NIST" / Chen & Cherry 2014 method 3): the
//       k-th order with matches_n = 0 gets p_n = 100 / (2^k totals_n).
//   sacreBLEU's corpus_score/CLI default is smooth_method 'exp' without
//   effective order (corpusBleu's default here too; pass None for unsmoothed
//   BLEU); its sentence_bleu() uses 'exp' with effective order (sentenceBleu).
//
// chrF (sacreBLEU defaults: character order 6, word order 0, beta 2,
// whitespace excluded, no epsilon smoothing):
//   segment: all whitespace is removed from hyp and ref; for n = 1..6 the
//   character (code point) n-grams give hyp_n = number of hyp n-grams (0 when
//   the ref has no n-gram of that order), ref_n = number of ref n-grams, and
//   match_n = sum over hyp n-grams g of min(count_hyp(g), count_ref(g)).
//   corpus: the statistics summed over segments; over the orders with hyp_n > 0
//   and ref_n > 0 (the effective orders), P = mean of match_n / hyp_n and
//   R = mean of match_n / ref_n; chrF = 100 (1 + beta^2) P R / (beta^2 P + R),
//   0 when P + R = 0 or no order is effective.
//
// All functions are pure and thread-safe.
#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace moefy {

/// sacreBLEU's "13a" tokenisation (mteval-v13a.pl): removes "<skipped>",
/// joins "-\n" line breaks, turns "\n" into a space, unescapes &quot; &amp;
/// &lt; &gt; (in that order), puts spaces around ASCII punctuation other than
/// ' , - . , splits '.' and ',' from a non-digit on either side, splits '-'
/// after a digit, and joins the tokens with single spaces (Python whitespace).
/// The input is not stripped (bleuStatistics strips trailing whitespace first,
/// as sacreBLEU does). Throws FormatError for invalid UTF-8.
std::string tokenize13a(std::string_view line);

/// Sufficient statistics of BLEU; they add up over segments.
struct BleuStats {
  static constexpr int kMaxOrder = 4;
  int64_t hypLen = 0;                        ///< hypothesis tokens (13a)
  int64_t refLen = 0;                        ///< reference tokens (13a)
  std::array<int64_t, kMaxOrder> matches{};  ///< clipped n-gram matches, n = 1..4
  std::array<int64_t, kMaxOrder> totals{};   ///< hypothesis n-grams, n = 1..4
  BleuStats& operator+=(const BleuStats& o);
};

enum class BleuSmoothing {
  None,  ///< a zero precision gives BLEU 0
  Exp,   ///< sacreBLEU's default ('exp'): the k-th zero precision becomes 100 / (2^k totals_n)
};

/// BLEU and the breakdown sacreBLEU prints ("p1/p2/p3/p4 (BP = .. ratio = ..
/// hyp_len = .. ref_len = ..)").
struct BleuScore {
  double score = 0;                                       ///< BLEU in [0, 100]
  std::array<double, BleuStats::kMaxOrder> precisions{};  ///< p_n in percent (after smoothing)
  double bp = 0;                                          ///< brevity penalty in [0, 1]
  double ratio = 0;                                       ///< hyp_len / ref_len (0 when ref_len = 0)
  BleuStats stats;
};

/// The statistics of one segment (one reference). Throws FormatError for
/// invalid UTF-8 in either text.
BleuStats bleuStatistics(std::string_view hypothesis, std::string_view reference);

/// BLEU from (summed) statistics: sacreBLEU's BLEU.compute_bleu with the
/// given smoothing and effective-order setting (see the file comment).
BleuScore bleuFromStatistics(const BleuStats& stats, BleuSmoothing smoothing, bool effectiveOrder);

/// Corpus BLEU: statistics summed over the segments, then
/// bleuFromStatistics(sum, smoothing, false). Default smoothing = sacreBLEU's
/// default (Exp). Throws ParameterError when the counts differ, FormatError
/// "hypothesis|reference N: invalid UTF-8" (N 1-based). An empty list gives 0.
BleuScore corpusBleu(const std::vector<std::string>& hypotheses, const std::vector<std::string>& references,
                     BleuSmoothing smoothing = BleuSmoothing::Exp);

/// Sentence BLEU as sacreBLEU's sentence_bleu(): Exp smoothing, effective order.
BleuScore sentenceBleu(std::string_view hypothesis, std::string_view reference);

/// Sufficient statistics of chrF (character orders 1..6); they add up.
struct ChrfStats {
  static constexpr int kCharOrder = 6;
  std::array<int64_t, kCharOrder> hyp{};    ///< hypothesis n-grams (0 when the reference has none of order n)
  std::array<int64_t, kCharOrder> ref{};    ///< reference n-grams
  std::array<int64_t, kCharOrder> match{};  ///< clipped matches
  ChrfStats& operator+=(const ChrfStats& o);
};

/// The chrF statistics of one segment (code points, whitespace removed).
/// Throws FormatError for invalid UTF-8.
ChrfStats chrfStatistics(std::string_view hypothesis, std::string_view reference);

/// chrF (beta = 2) in [0, 100] from (summed) statistics.
double chrfFromStatistics(const ChrfStats& stats);

/// Corpus chrF (statistics summed over segments). Throws as corpusBleu.
double corpusChrf(const std::vector<std::string>& hypotheses, const std::vector<std::string>& references);

/// chrF of one segment.
double sentenceChrf(std::string_view hypothesis, std::string_view reference);

}  // namespace moefy
