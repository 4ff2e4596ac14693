#pragma once
// The option table of `moefy split` and the studio's Split step.
#include "analysis/common/options.h"
#include "analysis/split/split.h"

namespace moefy {

/// The options of `moefy split` (defaults from SplitOptions{}): method,
/// experts, expert-size, layers, seed, weighting, topk, graph, model, rows,
/// restarts, max-iter, shared, shared-mass, shared-max, no-stability, out, force, compare, export-graph, layer,
/// json, quiet. --experts and --expert-size have no default (give one).
const OptionTable& splitOptionTable();

/// SplitOptions from validated values of splitOptionTable() (modelPath from
/// --model, empty = the recording's). Throws ParameterError naming the option
/// (--layers, --topk, --shared).
SplitOptions splitOptionsFrom(const OptionValues& values);

}  // namespace moefy
