#include "analysis/calibrate/calibrate_options.h"

#include <limits>

#include "analysis/eval/sequences.h"
#include "analysis/model/device.h"

namespace moefy {

const OptionTable& calibrateOptionTable() {
  static const OptionTable table = [] {
    const CalibrateOptions d;
    const CalibrateCorpusOptions c;
    OptionTable t("calibrate", "fine-tune the routers (and experts) of a MoE export",
                  "moefy calibrate MOE_DIR CORPUS --out MOE_DIR2 [--steps N] [--experts] [options]\n",
                  "MoEfication's parameter calibration with autograd: trains the routers on the oracle\n"
                  "target at the FFN inputs the MoE model sees (BCE), and with --experts also the experts\n"
                  "on the LM loss. Every tenth sequence is held out; the loss before and after is shown.\n"
                  "CORPUS is a text corpus (training split by default) or a token-id file (*.ids).\n");
    t.positionals({"MOE_DIR", "CORPUS"}, 2)
        .integer("steps", "N", d.steps, 1, 1000000000, "optimiser steps")
        .flag("experts", "also train the experts on the LM loss")
        .real("lr", "LR", d.lr, 0, 10, "Adam learning rate", true)
        .integer("batch", "B", d.batch, 1, 1 << 16, "sequences per step")
        .integer("seq-len", "S", c.seqLen, 2, 1 << 20, "window length in tokens")
        .integer("tokens", "N", c.tokens, 0, int64_t{1} << 50, "corpus tokens read (0 = the whole split)")
        .choice("split", {"train", "heldout", "all"}, "train", "which documents of a text corpus to read")
        .integer("seed", "N", static_cast<int64_t>(d.seed), 0, std::numeric_limits<int64_t>::max(), "seed")
        .text("out", "MOE_DIR2", std::nullopt, "the calibrated checkpoint folder to write (required)")
        .flag("force", "replace an existing MOE_DIR2")
        .flag("json", "print the result as JSON")
        .flag("quiet", "no progress lines on stderr");
    addDeviceOption(t);
    return t;
  }();
  return table;
}

CalibrateOptions calibrateOptionsFrom(const OptionValues& v, CalibrateCorpusOptions* corpus) {
  CalibrateOptions o;
  o.steps = v.int32("steps");
  o.experts = v.flag("experts");
  o.lr = v.real("lr");
  o.batch = v.int32("batch");
  o.seed = v.seed("seed");
  o.device = deviceOption(v);
  if (corpus) {
    corpus->seqLen = v.int32("seq-len");
    corpus->tokens = v.integer("tokens");
    corpus->split = parseSplitName(v.text("split"));
  }
  return o;
}

}  // namespace moefy
