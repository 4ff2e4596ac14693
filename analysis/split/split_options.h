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

/// The options given in `values` that the chosen mode does not read, one
/// line each ("--metis-ptype applies to --method coact; ignored with --method
/// kmeans"): a method's options with another --method, the graph options with
/// --compare, --shared-mass without --shared, --layer without
/// --export-graph. The mode is --compare, else --export-graph, else --method.
/// Defaults and options of every mode are never listed. Thread-safe.
std::vector<std::string> ignoredSplitOptions(const OptionValues& values);

/// SplitOptions from validated values of splitOptionTable() (modelPath from
/// --model, empty = the recording's). Throws ParameterError naming the option
/// (--layers, --topk, --shared).
SplitOptions splitOptionsFrom(const OptionValues& values);

}  // namespace moefy
