#include "analysis/eval/front_options.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <limits>

#include "analysis/common/error.h"
#include "analysis/eval/sequences.h"

namespace moefy {

namespace {

std::string joined(const std::vector<std::string>& items) {
  std::string s;
  for (const auto& i : items) s += (s.empty() ? "" : ",") + i;
  return s;
}

std::string joinedReals(const std::vector<double>& items) {
  std::vector<std::string> s;
  for (double v : items) s.push_back(formatReal(v));
  return joined(s);
}

}  // namespace

const OptionTable& frontOptionTable() {
  static const OptionTable table = [] {
    const FrontOptions f;
    OptionTable t("front", "quality against FFN FLOPs for several compute-budget methods at once",
                  "moefy front MODEL_DIR TRAIN_CORPUS HELDOUT_CORPUS --out FRONT_DIR\n"
                  "                  [--methods plain,per-layer,shared,dynamic-k,bound] [--budgets 0.125,0.25,0.5]\n"
                  "                  [--experts E] [--recording REC_DIR] [options]\n",
                  "Measures every method on one axis: held-out quality against the FFN FLOPs per token actually\n"
                  "spent, as a fraction of the dense FFN's (router and shared expert included; docs/moe.md).\n"
                  "Records TRAIN_CORPUS (or reuses --recording, a recording of it), splits it into E experts\n"
                  "(plain) and into a shared expert plus E routed experts (split --shared auto), builds an mlp\n"
                  "router on each and a dynamic-k router (--tau) on the shared split, then evaluates on\n"
                  "HELDOUT_CORPUS each method at its largest top-k whose FFN FLOPs do not exceed each budget\n"
                  "(dynamic-k: that k as its cap; its tokens take k or fewer), per-layer: the plain split with\n"
                  "each budget shared out across layers (route --budget B --allocate, one router per budget),\n"
                  "and the top-k activation bound at each budget's share of neurons (a reference: it needs the\n"
                  "dense hidden). A budget no top-k of a method meets is listed as unreached.\n"
                  "Writes FRONT_DIR atomically: the recording, partitions, routers and one evaluation folder\n"
                  "per method (each as `moefy eval` writes it), front.json (docs/formats.md \"Front\") with the\n"
                  "best method per budget, and front_perplexity / front_top1 figures (.svg, .png). Prints a\n"
                  "table. A separate command, not an eval mode: eval scores routers that exist, the front\n"
                  "builds them from a training corpus first.\n");
    t.positionals({"MODEL_DIR", "TRAIN_CORPUS", "HELDOUT_CORPUS"}, 3)
        .text("out", "FRONT_DIR", std::nullopt, "the front folder to write")
        .text("methods", "M,M,..", joined(f.methods), "methods: plain, per-layer, shared, dynamic-k, bound")
        .text("budgets", "F,F,..", joinedReals(f.budgets), "FFN FLOP fractions in (0, 1]")
        .integer("experts", "E", f.experts, 1, 1 << 24, "routed experts per layer")
        .choice("split-method", {"coact", "kmeans", "random"}, f.splitMethod, "how the experts are split")
        .integer("tokens", "N", f.recordTokens, 1, int64_t{1} << 50, "tokens recorded on TRAIN_CORPUS")
        .integer("samples", "S", f.samples, 1, int64_t{1} << 40, "sampled rows the routers train on")
        .integer("eval-tokens", "N", f.evalTokens, 0, int64_t{1} << 50, "evaluation tokens (0 = the whole split)")
        .integer("seq-len", "S", f.seqLen, 2, 1 << 20, "window length in tokens")
        .choice("split", {"heldout", "train", "all"}, "all", "which documents of HELDOUT_CORPUS to evaluate")
        .integer("epochs", "N", f.epochs, 1, 1 << 20, "router training epochs")
        .real("tau", "T", f.tau, 0, 1, "dynamic-k: share of the predicted output norm to cover", true)
        .choice("allocate", {"activity", "greedy"}, f.allocate, "per-layer: how each budget is shared out")
        .text("recording", "REC_DIR", std::nullopt,
              "a recording of TRAIN_CORPUS to reuse instead of recording (--tokens, --samples then do not apply)")
        .integer("batch", "B", f.batch, 1, 1 << 16, "sequences per forward pass in the evaluation")
        .integer("seed", "N", static_cast<int64_t>(f.seed), 0, std::numeric_limits<int64_t>::max(),
                 "seed of every step")
        .flag("force", "replace an existing FRONT_DIR")
        .flag("json", "print front.json")
        .flag("quiet", "no progress lines on stderr");
    return t;
  }();
  return table;
}

std::vector<double> parseBudgets(const std::string& text) {
  std::vector<double> out;
  for (const std::string& item : splitListValue(text, "--budgets")) {
    errno = 0;
    char* end = nullptr;
    const double f = std::strtod(item.c_str(), &end);
    if (end != item.c_str() + item.size() || errno == ERANGE || !std::isfinite(f) || !(f > 0 && f <= 1))
      throw ParameterError("--budgets: '" + item + "' is not an FFN FLOP fraction in (0, 1]");
    out.push_back(f);
  }
  return out;
}

FrontOptions frontOptionsFrom(const OptionValues& v) {
  FrontOptions o;
  o.methods = splitListValue(v.text("methods"), "--methods");
  o.budgets = parseBudgets(v.text("budgets"));
  o.experts = v.int32("experts");
  o.splitMethod = v.text("split-method");
  o.recordTokens = v.integer("tokens");
  o.samples = v.integer("samples");
  o.evalTokens = v.integer("eval-tokens");
  o.seqLen = v.int32("seq-len");
  o.evalSplit = parseSplitName(v.text("split"));
  o.epochs = v.int32("epochs");
  o.tau = v.real("tau");
  o.allocate = v.text("allocate");
  if (v.has("recording")) {
    o.recording = v.text("recording");
    // The recording's own tokens and samples are used: a value given here would be ignored.
    std::string unused;
    for (const char* name : {"tokens", "samples"})
      if (v.has(name)) unused += std::string(unused.empty() ? "--" : " and --") + name;
    if (!unused.empty())
      throw ParameterError(unused + ": not used with --recording (its recorded tokens and samples are used)");
  }
  o.batch = v.int32("batch");
  o.seed = v.seed("seed");
  checkFrontOptions(o);
  return o;
}

}  // namespace moefy
