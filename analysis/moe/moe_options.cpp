#include "analysis/moe/moe_options.h"

namespace moefy {

const OptionTable& exportOptionTable() {
  static const OptionTable table = [] {
    const ExportOptions d;
    OptionTable t("export", "write a MoEfied checkpoint that loads like any model folder",
                  "moefy export MODEL_DIR PART_DIR ROUTER_DIR [--top-k K] --out MOE_DIR [--force] [--json]\n",
                  "Writes MOE_DIR atomically: config.json (the original keys plus a 'moefication' block),\n"
                  "model.safetensors (the non-FFN tensors, unchanged), moe.safetensors (expert weights\n"
                  "grouped per expert, router weights, labels) and the tokenizer files. Refuses an\n"
                  "existing MOE_DIR unless --force. An encoder-decoder model (T5) exports every MoEfied\n"
                  "site (enc.blk.L, dec.blk.L), and the folder reloads and evaluates like the source. Native MoE\n"
                  "models cannot be exported yet. See docs/moe.md.\n");
    t.positionals({"MODEL_DIR", "PART_DIR", "ROUTER_DIR"}, 3)
        .integer("top-k", "K", d.topK, 1, 1 << 24, "experts per token (0 = the router's)", {}, true)
        .text("out", "MOE_DIR", std::nullopt, "the checkpoint folder to write (required)")
        .flag("force", "replace an existing MOE_DIR")
        .flag("json", "print the result as JSON")
        .flag("quiet", "no progress lines on stderr");
    return t;
  }();
  return table;
}

ExportOptions exportOptionsFrom(const OptionValues& v) {
  ExportOptions o;
  o.topK = v.int32("top-k");
  o.force = v.flag("force");
  return o;
}

}  // namespace moefy
