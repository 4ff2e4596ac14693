#pragma once
// The options of `moefy analyze` (and of the studio's Experts view when it
// runs an analysis), declared once; defaults from AnalyzeOptions{}.
#include "analysis/analyze/moe_analysis.h"
#include "analysis/common/options.h"

namespace moefy {

/// out, sites, static-only, tokens, seq-len, batch, fire-eps, match-max, router,
/// force, json, quiet. Thread-safe (a function-local static).
const OptionTable& analyzeOptionTable();

/// AnalyzeOptions from validated values of analyzeOptionTable() (everything
/// but the paths). --sites takes canonical single-stack layer sites
/// ("blk.0,blk.3"); throws ParameterError naming --sites for anything else
/// (an expert or shared site, an encoder/decoder site, a bad name, an empty
/// entry).
AnalyzeOptions analyzeOptionsFrom(const OptionValues& values);

}  // namespace moefy
