#pragma once
// Interleaved timing of several alternatives of the same work.
#include <functional>
#include <vector>

namespace moefy {

/// Times the alternatives `runs` against each other. Each run does one unit of
/// work and returns the seconds it timed (the caller decides what is inside
/// the timing). The alternatives take turns, one run each per round, in
/// reverse order every other round (A B C C B A ...), until each has at least
/// `minRuns` runs that together last at least `minSeconds`, so that a drift of
/// the machine's speed during the timing (another process, the CPU clock)
/// falls on all of them alike; timing a baseline once before its candidates
/// made a tiny GPT-2's MoE with every expert active look 1.2-1.4x "faster"
/// than dense (CI, 2026-12-02). No warm-up: run one first where needed.
/// Returns the per-run seconds of each alternative, in `runs` order.
/// Throws ParameterError for no alternatives, minRuns < 1 or a negative or
/// non-finite minSeconds; rethrows what a run throws. Not thread-safe (the
/// runs execute on the calling thread, one at a time).
std::vector<std::vector<double>> interleavedSeconds(const std::vector<std::function<double()>>& runs, double minSeconds,
                                                    int minRuns);

/// The median of `values` (the upper one of the middle two for an even count;
/// 0 for none).
double medianOf(std::vector<double> values);

}  // namespace moefy
