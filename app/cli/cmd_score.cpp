// moefy score: corpus (or per-segment) BLEU and chrF of a hypothesis file
// against a reference file, as sacreBLEU computes them (analysis/eval/bleu.h).
#include <cstdio>
#include <iostream>

#include "analysis/common/error.h"
#include "analysis/eval/bleu.h"
#include "analysis/text/line_reader.h"
#include "app/cli/cli.h"

namespace moefy::cli {

namespace {

// sacreBLEU-style signatures (without its version field: this is not sacreBLEU).
std::string bleuSignature(BleuSmoothing s) {
  return std::string("nrefs:1|case:mixed|eff:no|tok:13a|smooth:") + (s == BleuSmoothing::Exp ? "exp" : "none");
}
const char* kChrfSignature = "nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no";

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

// "22.38 60.1/30.2/17.5/10.3 (BP = 0.943 ratio = 0.944 hyp_len = 17 ref_len = 18)", sacreBLEU's verbose form.
std::string bleuText(const BleuScore& b) {
  std::string s = fmt("%.2f ", b.score);
  for (int n = 0; n < BleuStats::kMaxOrder; ++n) s += (n ? "/" : "") + fmt("%.1f", b.precisions[n]);
  s += " (BP = " + fmt("%.3f", b.bp) + " ratio = " + fmt("%.3f", b.ratio) +
       " hyp_len = " + std::to_string(b.stats.hypLen) + " ref_len = " + std::to_string(b.stats.refLen) + ")";
  return s;
}

nlohmann::json bleuJson(const BleuScore& b) {
  return {{"score", b.score},           {"precisions", b.precisions}, {"bp", b.bp},
          {"ratio", b.ratio},           {"hyp_len", b.stats.hypLen},  {"ref_len", b.stats.refLen},
          {"matches", b.stats.matches}, {"totals", b.stats.totals}};
}

int runScore(const Args& a) {
  bool wantBleu = false, wantChrf = false;
  for (const std::string& m : splitListValue(a.text("metric"), "--metric")) {
    if (m == "bleu")
      wantBleu = true;
    else if (m == "chrf")
      wantChrf = true;
    else
      throw ParameterError("--metric: unknown metric '" + m + "' (bleu, chrf)");
  }
  if (!wantBleu && !wantChrf) throw ParameterError("--metric: empty list (bleu, chrf)");
  const BleuSmoothing smoothing = a.text("smooth") == "none" ? BleuSmoothing::None : BleuSmoothing::Exp;
  const std::string hypPath = a.text("hyp"), refPath = a.text("ref");
  const std::vector<std::string> hyps = readTextLines(hypPath);
  const std::vector<std::string> refs = readTextLines(refPath);
  if (hyps.empty()) throw FormatError(hypPath + ": no segments (empty file)");
  if (hyps.size() != refs.size())
    throw FormatError(hypPath + " has " + std::to_string(hyps.size()) + " lines, " + refPath + " has " +
                      std::to_string(refs.size()) + " lines (one segment per line in both)");

  nlohmann::json j = {{"hyp", hypPath}, {"ref", refPath}, {"segments", hyps.size()}};
  BleuScore bleu;
  double chrf = 0;
  if (wantBleu) {
    bleu = corpusBleu(hyps, refs, smoothing);
    j["bleu"] = bleuJson(bleu);
    j["bleu"]["signature"] = bleuSignature(smoothing);
  }
  if (wantChrf) {
    chrf = corpusChrf(hyps, refs);
    j["chrf"] = {{"score", chrf}, {"signature", kChrfSignature}};
  }
  const bool sentence = a.flag("sentence");
  if (sentence) {
    nlohmann::json rows = nlohmann::json::array();
    for (size_t i = 0; i < hyps.size(); ++i) {
      nlohmann::json r = {{"segment", i + 1}};
      if (wantBleu) r["bleu"] = bleuJson(sentenceBleu(hyps[i], refs[i]));
      if (wantChrf) r["chrf"] = sentenceChrf(hyps[i], refs[i]);
      rows.push_back(std::move(r));
    }
    j["sentences"] = std::move(rows);
  }
  if (a.json()) {
    printJson(j);
    return 0;
  }
  if (sentence) {
    // One line per segment, tab-separated, in input order.
    std::cout << "segment" << (wantBleu ? "\tBLEU" : "") << (wantChrf ? "\tchrF2" : "") << "\n";
    for (const auto& r : j["sentences"]) {
      std::cout << r["segment"].get<size_t>();
      if (wantBleu) std::cout << "\t" << fmt("%.4f", r["bleu"]["score"].get<double>());
      if (wantChrf) std::cout << "\t" << fmt("%.4f", r["chrf"].get<double>());
      std::cout << "\n";
    }
    return 0;
  }
  if (wantBleu) std::cout << "BLEU = " << bleuText(bleu) << "\n  signature " << bleuSignature(smoothing) << "\n";
  if (wantChrf) std::cout << "chrF2 = " << fmt("%.2f", chrf) << "\n  signature " << kChrfSignature << "\n";
  std::cout << "segments " << hyps.size() << "\n";
  return 0;
}

const OptionTable& scoreOptionTable() {
  static const OptionTable table = [] {
    OptionTable t("score", "BLEU and chrF of a hypothesis file against a reference file (sacreBLEU's definitions)",
                  "moefy score --hyp FILE --ref FILE [--metric bleu,chrf] [--smooth exp|none] [--sentence] [--json]\n",
                  "Both files are UTF-8 text with one segment per line (empty lines are empty segments) and must\n"
                  "have the same number of lines. Prints corpus BLEU as sacreBLEU 2.x does by default (13a\n"
                  "tokenisation, 4-grams, brevity penalty, 'exp' smoothing of zero n-gram precisions; --smooth none\n"
                  "gives 0 when an order has no match) with its breakdown (n-gram precisions, BP, length ratio,\n"
                  "hyp_len, ref_len), and corpus chrF (character 6-grams, beta 2, whitespace ignored, statistics\n"
                  "summed over the corpus). --sentence prints one line per segment instead: sentence BLEU (exp\n"
                  "smoothing, effective order, as sacreBLEU's sentence_bleu) and chrF. One reference per segment.\n"
                  "Exit 1 for a missing or unreadable file, an empty file, invalid UTF-8 or different line counts.\n");
    t.text("hyp", "FILE", std::nullopt, "hypotheses (system output), one segment per line")
        .text("ref", "FILE", std::nullopt, "references, one segment per line")
        .text("metric", "LIST", std::string("bleu,chrf"), "comma-separated metrics: bleu, chrf")
        .choice("smooth", {"exp", "none"}, std::string("exp"), "corpus BLEU smoothing of zero n-gram precisions")
        .flag("sentence", "per-segment scores, one line per segment")
        .flag("json", "print the result as JSON (full precision, with the n-gram matches and totals)");
    return t;
  }();
  return table;
}

CommandRegistrar scoreCmd(scoreOptionTable(), runScore);

}  // namespace

}  // namespace moefy::cli
