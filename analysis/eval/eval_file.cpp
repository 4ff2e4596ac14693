#include "analysis/eval/eval_file.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <iterator>
#include <sstream>

#include "analysis/common/error.h"
#include "analysis/io/json_input.h"

namespace moefy {

namespace {

std::string num(double v) {
  std::ostringstream s;
  s << v;
  return s.str();
}

// The number at `key` of `obj` if present (null counts as absent); checks it
// is finite and in [lo, hi] (open at lo when `openLo`).
void check(const nlohmann::json& obj, const char* key, const std::string& ctx, double lo, double hi,
           bool openLo = false) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return;
  const std::string what = ctx + "." + key;
  const double v = jsonFinite(*it, what);
  if (v < lo || (openLo && v == lo))
    throw FormatError(what + " = " + num(v) + (openLo ? " must be above " : " is below ") + num(lo));
  if (v > hi) throw FormatError(what + " = " + num(v) + " is above " + num(hi));
}

constexpr double kInf = HUGE_VAL;

void checkQuality(const nlohmann::json& r, const std::string& ctx) {
  check(r, "loss", ctx, 0, kInf);
  check(r, "perplexity", ctx, 1, kInf);
}

// The data block (analysis/eval/eval_data.h reads it): absent keys are
// allowed (evaluations written before them), present ones must make sense.
void checkCorpus(const nlohmann::json& j, const std::string& file) {
  if (j.contains("seed") && !j["seed"].is_null()) jsonInteger(j["seed"], 0, INT64_MAX, file + ": seed");
  if (!j.contains("corpus") || j["corpus"].is_null()) return;
  const auto& c = j["corpus"];
  const std::string ctx = file + ": corpus";
  if (!c.is_object()) throw FormatError(ctx + " must be an object");
  if (c.contains("split") && !c["split"].is_null()) {
    static const char* names[] = {"heldout", "train", "all"};
    const auto& v = c["split"];
    if (!v.is_string() || std::find(std::begin(names), std::end(names), v.get<std::string>()) == std::end(names))
      throw FormatError(ctx + ".split must be \"heldout\", \"train\" or \"all\", got " + inputExcerpt(v.dump()));
  }
  if (c.contains("fingerprint") && !c["fingerprint"].is_null()) {
    const auto& v = c["fingerprint"];
    if (!v.is_string() || v.get<std::string>().size() != 16 ||
        v.get<std::string>().find_first_not_of("0123456789abcdef") != std::string::npos)
      throw FormatError(ctx + ".fingerprint must be 16 lower-case hex digits, got " + inputExcerpt(v.dump()));
  }
  auto integer = [&](const char* key, int64_t lo) {
    if (c.contains(key) && !c[key].is_null()) jsonInteger(c[key], lo, INT64_MAX, ctx + "." + key);
  };
  integer("sequences", 1);
  integer("tokens", 0);
  integer("seq_len", 0);
  integer("split_seed", 0);
  check(c, "held_out_fraction", ctx, 0, 1);
}

// A "generation" block (eval --generate, analysis/eval/translate.h) of the
// reference or a result, and its source-length buckets.
void checkGeneration(const nlohmann::json& parent, const std::string& ctx0) {
  if (!parent.contains("generation") || parent["generation"].is_null()) return;
  const auto& g = parent["generation"];
  const std::string ctx = ctx0 + ".generation";
  if (!g.is_object()) throw FormatError(ctx + " must be an object");
  auto figures = [](const nlohmann::json& o, const std::string& c) {
    for (const char* key : {"sentences", "bleu", "chrf", "identical_to_reference", "seconds_per_sentence"})
      if (!o.contains(key) || o[key].is_null()) throw FormatError(c + " has no " + key);
    jsonInteger(o["sentences"], 1, INT64_MAX, c + ".sentences");
    check(o, "bleu", c, 0, 100);
    check(o, "chrf", c, 0, 100);
    check(o, "identical_to_reference", c, 0, 1);
    check(o, "seconds_per_sentence", c, 0, kInf);
    check(o, "speedup", c, 0, kInf, true);
  };
  figures(g, ctx);
  for (const char* key : {"generated_tokens", "truncated"})
    if (g.contains(key) && !g[key].is_null()) jsonInteger(g[key], 0, INT64_MAX, ctx + "." + key);
  const int64_t sentences = g["sentences"].get<int64_t>();
  if (g.contains("truncated") && g["truncated"].is_number_integer() && g["truncated"].get<int64_t>() > sentences)
    throw FormatError(ctx + ".truncated = " + g["truncated"].dump() +
                      " exceeds sentences = " + std::to_string(sentences));
  if (!g.contains("buckets") || g["buckets"].is_null()) return;
  const auto& buckets = g["buckets"];
  if (!buckets.is_array() || buckets.empty()) throw FormatError(ctx + ".buckets must be a non-empty list");
  int64_t total = 0, previousMax = -1;
  for (size_t k = 0; k < buckets.size(); ++k) {
    const auto& b = buckets[k];
    const std::string bc = ctx + ".buckets[" + std::to_string(k) + "]";
    if (!b.is_object()) throw FormatError(bc + " must be an object");
    figures(b, bc);
    for (const char* key : {"min_source_tokens", "max_source_tokens"})
      if (!b.contains(key)) throw FormatError(bc + " has no " + key);
    const int64_t lo = jsonInteger(b["min_source_tokens"], 1, INT64_MAX, bc + ".min_source_tokens");
    const int64_t hi = jsonInteger(b["max_source_tokens"], lo, INT64_MAX, bc + ".max_source_tokens");
    if (lo <= previousMax)
      throw FormatError(bc + ".min_source_tokens = " + std::to_string(lo) +
                        " overlaps the previous bucket (buckets are disjoint and ascending)");
    previousMax = hi;
    total += b["sentences"].get<int64_t>();
  }
  if (total != sentences)
    throw FormatError(ctx + ".buckets hold " + std::to_string(total) + " sentences, the generation " +
                      std::to_string(sentences));
}

}  // namespace

void validateEvalDocument(const nlohmann::json& j, const std::string& file) {
  if (!j.is_object() || !j.contains("format") || j["format"] != "moefy-eval")
    throw FormatError(file + ": not a moefy-eval file (\"format\" is missing or different)");
  checkCorpus(j, file);
  if (j.contains("reference") && !j["reference"].is_null()) {
    if (!j["reference"].is_object()) throw FormatError(file + ": reference must be an object");
    checkQuality(j["reference"], file + ": reference");
    checkGeneration(j["reference"], file + ": reference");
  }
  if (!j.contains("results")) return;
  const auto& results = j["results"];
  if (!results.is_array()) throw FormatError(file + ": results must be a list");
  for (size_t i = 0; i < results.size(); ++i) {
    const auto& r = results[i];
    const std::string ctx = file + ": results[" + std::to_string(i) + "]";
    if (!r.is_object()) throw FormatError(ctx + " must be an object");
    if (!r.contains("fraction")) throw FormatError(ctx + " has no fraction");
    check(r, "fraction", ctx, 0, 1);
    checkQuality(r, ctx);
    check(r, "loss_delta", ctx, -kInf, kInf);
    check(r, "top1_agreement", ctx, 0, 1);
    check(r, "kl", ctx, -kInf, kInf);
    check(r, "ffn_flops_fraction", ctx, 0, kInf, true);
    for (const char* key : {"layer_rel_error", "layer_ffn_flops_fraction"}) {
      if (!r.contains(key) || r[key].is_null()) continue;
      const auto& le = r[key];
      const bool positive = std::string(key) == "layer_ffn_flops_fraction";
      if (!le.is_array()) throw FormatError(ctx + "." + key + " must be a list");
      for (size_t k = 0; k < le.size(); ++k) {
        if (le[k].is_null()) continue;
        const std::string what = ctx + "." + key + "[" + std::to_string(k) + "]";
        const double v = jsonFinite(le[k], what);
        if (v < 0 || (positive && v == 0))
          throw FormatError(what + " = " + num(v) + (positive ? " must be above 0" : " is below 0"));
      }
    }
    checkGeneration(r, ctx);
    if (r.contains("speed") && !r["speed"].is_null()) {
      const auto& s = r["speed"];
      if (!s.is_object()) throw FormatError(ctx + ".speed must be an object");
      for (const char* key : {"forward_tokens_per_s", "dense_forward_tokens_per_s", "forward_speedup",
                              "generate_tokens_per_s", "dense_generate_tokens_per_s", "generate_speedup"})
        check(s, key, ctx + ".speed", 0, kInf, true);
    }
  }
}

nlohmann::json readEvalFile(const std::filesystem::path& file) {
  nlohmann::json j = readJsonFile(file);
  validateEvalDocument(j, file.string());
  return j;
}

}  // namespace moefy
