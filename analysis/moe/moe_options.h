#pragma once
// The option tables of `moefy export` and `moefy calibrate` and the studio's
// Export and Calibrate steps.
#include <cstdint>

#include "analysis/common/options.h"
#include "analysis/moe/calibrate.h"
#include "analysis/moe/moe_export.h"
#include "analysis/text/corpus.h"

namespace moefy {

/// The options of `moefy export` (defaults from ExportOptions{}): top-k, out,
/// force, json, quiet.
const OptionTable& exportOptionTable();
/// ExportOptions from validated values of exportOptionTable().
ExportOptions exportOptionsFrom(const OptionValues& values);

/// Which sequences calibration reads from its corpus.
struct CalibrateCorpusOptions {
  int seqLen = 64;         ///< window length in tokens
  int64_t tokens = 20000;  ///< corpus tokens read (0 = the whole split)
  Split split = Split::Train;
};

/// The options of `moefy calibrate` (defaults from CalibrateOptions{} and
/// CalibrateCorpusOptions{}): steps, experts, lr, batch, seq-len, tokens,
/// split, seed, out, force, json, quiet.
const OptionTable& calibrateOptionTable();
/// CalibrateOptions and the corpus options from validated values of calibrateOptionTable().
CalibrateOptions calibrateOptionsFrom(const OptionValues& values, CalibrateCorpusOptions* corpus);

}  // namespace moefy
