#pragma once
// The option table of `moefy front` (analysis/eval/front.h).
#include <string>
#include <vector>

#include "analysis/common/options.h"
#include "analysis/eval/front.h"

namespace moefy {

/// The options of `moefy front` (defaults from FrontOptions{}): methods,
/// budgets, experts, split-method, tokens, samples, eval-tokens, seq-len,
/// split, epochs, tau, allocate, recording, batch, seed, out, force, json, quiet.
const OptionTable& frontOptionTable();

/// "0.125,0.25" -> budgets, each an FFN FLOP fraction in (0, 1]. Throws
/// ParameterError naming --budgets and the item (or an empty entry).
std::vector<double> parseBudgets(const std::string& text);

/// FrontOptions from validated values of frontOptionTable(), checked with
/// checkFrontOptions. Throws ParameterError naming the option.
FrontOptions frontOptionsFrom(const OptionValues& values);

}  // namespace moefy
