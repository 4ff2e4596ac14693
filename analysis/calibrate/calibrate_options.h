#pragma once
// The option table of `moefy calibrate` and the studio's Calibrate step.
#include <cstdint>

#include "analysis/calibrate/calibrate.h"
#include "analysis/common/options.h"
#include "analysis/text/corpus.h"

namespace moefy {

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
