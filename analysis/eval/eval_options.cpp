#include "analysis/eval/eval_options.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <sstream>

#include "analysis/common/error.h"
#include "analysis/eval/sequences.h"
#include "analysis/model/device.h"

namespace moefy {

const OptionTable& evalOptionTable() {
  static const OptionTable table = [] {
    const EvalCorpusOptions c;
    const EvalOptions e;
    const EvalRunSpec r;
    OptionTable t("eval", "quality and speed of a MoEfied model against the dense one",
                  "moefy eval MODEL_DIR CORPUS [--moe MOE_DIR | --partition PART_DIR --router ROUTER_DIR\n"
                  "                  [--router ROUTER_DIR2 ...]] [--sweep 0.1,0.25,0.5,1.0 | --top-k K]\n"
                  "                  [--bound topk-act] [options]\n",
                  "CORPUS is a text corpus (.txt, .jsonl or a folder, tokenised with the model's tokenizer;\n"
                  "--split picks its documents) or a token-id file (*.ids: one sequence per line,\n"
                  "whitespace-separated ids). Reports, for each router and active-expert fraction: LM loss and\n"
                  "perplexity (masked-LM loss for BERT), top-1 agreement with the dense model, KL(dense || MoE),\n"
                  "the relative error of each layer's FFN output, and the FFN FLOPs per token as a fraction of\n"
                  "the dense FFN's (router included). MODEL_DIR may itself be a MoE export; its reference is\n"
                  "then the MoE with all experts selected. --bound topk-act adds the top-k activation bound at\n"
                  "every budget of the run (each --sweep fraction, else each router's k/E): per token the\n"
                  "round(F d_ff) neurons with the largest |h| of each MoEfied layer (of every layer without a\n"
                  "router; --sweep then required), the others zeroed. --speed adds forward and\n"
                  "greedy-generation tokens/s, dense vs MoE. --out writes EVAL_DIR/eval.json (docs/formats.md).\n"
                  "An encoder-decoder MODEL_DIR (T5) takes a parallel CORPUS (.tsv, .jsonl, or a source file\n"
                  "with --target) and is scored teacher-forced per site group (enc, dec, both); --speed then\n"
                  "times teacher-forced forward passes and KV-cached greedy decoding. --generate N (T5 only)\n"
                  "greedy-translates the pairs (at most N new tokens each, --batch sentences per padded batch)\n"
                  "with the dense model and every MoE, and reports corpus BLEU and chrF against the targets\n"
                  "(sacreBLEU defaults, as moefy score), the share of sentences decoded identically to the dense\n"
                  "model, and the decoding time per sentence in source-length buckets (the quartiles of the\n"
                  "source lengths in tokens), dense vs MoE. --bound covers dense single-stack models only.\n"
                  "On a native MoE model, a partition of its expert sites (split --sites blk.L.exp.E) runs each\n"
                  "such expert as its finer experts (the native routing unchanged); the FFN FLOP fraction then\n"
                  "counts those experts, weighted by the tokens routed to each.\n"
                  "Data-parallel: `mpirun -np N moefy eval ...` scores the batches across N ranks (the quality\n"
                  "figures, equal within summation order; not --speed or --generate; docs/scale.md).\n");
    t.positionals({"MODEL_DIR", "CORPUS"}, 2)
        .text("moe", "MOE_DIR", std::nullopt, "a MoE export of MODEL_DIR to evaluate")
        .text("partition", "PART_DIR", std::nullopt, "the partition of the routers to evaluate")
        .text("router", "ROUTER_DIR", std::nullopt, "a router built on --partition", true)
        .text("sweep", "F,F,..", "", "active-expert fractions in (0, 1] (empty = each router at its own top-k)")
        .integer("top-k", "K", 0, 1, 1 << 24, "experts per token for every MoE layer (0 = the routers')", {}, true)
        .choice("bound", {"topk-act"}, std::nullopt,
                "also evaluate the top-k activation bound (largest |h| per token) at the run's budgets")
        .integer("tokens", "N", c.tokens, 0, int64_t{1} << 50, "evaluation tokens (0 = the whole split)")
        .integer("seq-len", "S", c.seqLen, 2, 1 << 20, "window length in tokens")
        .choice("split", {"heldout", "train", "all"}, "heldout", "which documents of a text corpus to read")
        .text("target", "FILE", "",
              "encoder-decoder models: the line-aligned target file of CORPUS (the source file); a .tsv or "
              ".jsonl CORPUS is parallel by itself")
        .text("source-field", "NAME", c.sourceField, "parallel .jsonl: field (or dotted path) of the source text")
        .text("target-field", "NAME", c.targetField, "parallel .jsonl: field (or dotted path) of the target text")
        .integer("batch", "B", e.batch, 1, 1 << 16, "sequences per forward pass")
        .integer("seed", "N", static_cast<int64_t>(e.seed), 0, std::numeric_limits<int64_t>::max(),
                 "seed (masked-LM masking)")
        .flag("speed", "also time forward passes and greedy generation, dense vs MoE")
        .integerNoDefault("generate", "N", 1, 1 << 16,
                          "encoder-decoder models: greedy-translate the pairs (at most N new tokens each) and report "
                          "BLEU, chrF and decoding time per source-length bucket, dense vs MoE",
                          "64")
        .real("speed-seconds", "SECS", r.speedSeconds, 0, 3600, "minimum seconds per timing", true)
        .text("out", "EVAL_DIR", std::nullopt, "write EVAL_DIR/eval.json")
        .flag("force", "replace an existing EVAL_DIR")
        .flag("json", "print the result as JSON")
        .flag("quiet", "no progress lines on stderr");
    addDeviceOption(t);
    return t;
  }();
  return table;
}

std::vector<double> parseSweep(const std::string& text) {
  std::vector<double> out;
  for (const std::string& item : splitListValue(text, "--sweep")) {
    errno = 0;
    char* end = nullptr;
    const double f = std::strtod(item.c_str(), &end);
    if (end != item.c_str() + item.size() || errno == ERANGE || !std::isfinite(f) || !(f > 0 && f <= 1))
      throw ParameterError("--sweep: '" + item + "' is not a fraction in (0, 1]");
    out.push_back(f);
  }
  checkSweep(out);
  return out;
}

EvalCorpusOptions applyEvalOptions(const OptionValues& v, EvalRunSpec& spec) {
  if (v.has("top-k") && v.has("sweep")) throw ParameterError("give --top-k or --sweep, not both");
  spec.sweep = parseSweep(v.text("sweep"));
  spec.activationBound = v.has("bound");
  spec.options.batch = v.int32("batch");
  spec.options.seed = v.seed("seed");
  spec.speed = v.flag("speed");
  spec.speedSeconds = v.real("speed-seconds");
  spec.generate = v.has("generate") ? v.int32("generate") : 0;
  spec.device = deviceOption(v);
  if (!spec.device.is_cpu() && spec.speed)
    throw ParameterError("--speed times the CPU kernels (the sparse MoE FFN is CPU code): give --device cpu");
  if (!spec.device.is_cpu() && spec.activationBound)
    throw ParameterError("--bound runs on the CPU only: give --device cpu");
  EvalCorpusOptions c;
  c.seqLen = v.int32("seq-len");
  c.tokens = v.integer("tokens");
  c.split = parseSplitName(v.text("split"));
  c.targetFile = v.text("target");
  c.sourceField = v.text("source-field");
  c.targetField = v.text("target-field");
  spec.seqLen = c.seqLen;
  spec.split = c.split;  // recorded in eval.json's corpus block
  return c;
}

}  // namespace moefy
