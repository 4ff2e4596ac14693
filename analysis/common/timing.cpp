#include "analysis/common/timing.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "analysis/common/error.h"

namespace moefy {

std::vector<std::vector<double>> interleavedSeconds(const std::vector<std::function<double()>>& runs, double minSeconds,
                                                    int minRuns) {
  if (runs.empty()) throw ParameterError("interleavedSeconds: nothing to time");
  if (minRuns < 1)
    throw ParameterError("interleavedSeconds: minRuns must be >= 1 (got " + std::to_string(minRuns) + ")");
  if (!std::isfinite(minSeconds) || minSeconds < 0)
    throw ParameterError("interleavedSeconds: minSeconds must be a finite number >= 0");
  const size_t n = runs.size();
  std::vector<std::vector<double>> seconds(n);
  std::vector<double> total(n, 0.0);
  for (int round = 0;; ++round) {
    bool done = round >= minRuns;
    for (double t : total) done = done && t >= minSeconds;
    if (done) break;
    for (size_t j = 0; j < n; ++j) {
      const size_t i = round % 2 ? n - 1 - j : j;
      const double s = runs[i]();
      total[i] += s;
      seconds[i].push_back(s);
    }
  }
  return seconds;
}

double medianOf(std::vector<double> values) {
  if (values.empty()) return 0;
  const auto mid = values.begin() + static_cast<long>(values.size() / 2);
  std::nth_element(values.begin(), mid, values.end());
  return *mid;
}

}  // namespace moefy
