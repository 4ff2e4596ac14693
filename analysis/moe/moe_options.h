#pragma once
// The option table of `moefy export` and the studio's Export step.
#include "analysis/common/options.h"
#include "analysis/moe/moe_export.h"

namespace moefy {

/// The options of `moefy export` (defaults from ExportOptions{}): top-k, out,
/// force, json, quiet.
const OptionTable& exportOptionTable();
/// ExportOptions from validated values of exportOptionTable().
ExportOptions exportOptionsFrom(const OptionValues& values);

}  // namespace moefy
