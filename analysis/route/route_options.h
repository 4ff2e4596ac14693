#pragma once
// The option table of `moefy route` and the studio's Route step.
#include "analysis/common/options.h"
#include "analysis/route/route_build.h"

namespace moefy {

/// The options of `moefy route` (defaults from RouteOptions{}): router (no
/// default: required), top-k, top-fraction, epochs, batch, lr, tau, min-k,
/// budget, allocate, held-out, seed, out, force, json, quiet.
const OptionTable& routeOptionTable();

/// RouteOptions from validated values of routeOptionTable(). Throws
/// ParameterError for --top-k with --top-fraction, --budget with either,
/// --budget 0, --allocate without --budget, or a missing --router.
RouteOptions routeOptionsFrom(const OptionValues& values);

}  // namespace moefy
