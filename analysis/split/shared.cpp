// The shared expert's neurons: how many (sharedNeuronCount) and which
// (mostActiveNeurons), from a recording's activation counts.
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "analysis/common/error.h"
#include "analysis/split/split.h"

namespace moefy {

namespace {

// Neuron ids by descending count, ties by ascending id (a stable order, so the
// numpy reference's argsort(-count, kind="stable") gives the same).
std::vector<int64_t> byActivity(const at::Tensor& countIn, std::vector<int64_t>& counts) {
  at::Tensor c = countIn.to(at::kLong).contiguous();
  counts.assign(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
  std::vector<int64_t> order(counts.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return counts[a] > counts[b]; });
  return order;
}

bool validShared(int64_t n, int64_t F, int E) { return n >= 0 && n <= F - E && (F - n) % E == 0; }

}  // namespace

SharedOptions parseShared(const std::string& text) {
  SharedOptions o;
  if (text.empty()) return o;
  if (text == "auto") {
    o.mode = "auto";
    return o;
  }
  size_t used = 0;
  long long v = 0;
  try {
    v = std::stoll(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != text.size() || v < 1 || v > (1LL << 30))
    throw ParameterError("--shared must be 'auto' or a neuron count >= 1, got '" + text + "'");
  o.mode = "count";
  o.neurons = static_cast<int>(v);
  return o;
}

int sharedNeuronCount(const at::Tensor& count, int E, const SharedOptions& o, const std::string& ctx) {
  const int64_t F = count.numel();
  if (E < 1 || E > F)
    throw ParameterError(ctx + ": " + std::to_string(E) + " routed experts for " + std::to_string(F) + " neurons");
  if (!o.enabled()) return 0;
  if (o.mode == "count") {
    const int64_t n = o.neurons;
    if (n >= 1 && validShared(n, F, E)) return static_cast<int>(n);
    // The nearest counts that leave E equal routed experts: N = F - E m.
    std::string near;
    const int64_t below = n > F - E ? F - E : F - E * ((F - n + E - 1) / E);
    const int64_t above = below + E;
    if (below >= 1) near += std::to_string(below);
    if (above <= F - E && above != below) near += (near.empty() ? "" : " or ") + std::to_string(above);
    throw ParameterError(ctx + ": --shared " + std::to_string(n) + " leaves " + std::to_string(F - n) +
                         " neurons, which " + (n > F - E ? "cannot fill " : "do not split into ") + std::to_string(E) +
                         " equal routed experts (d_ff " + std::to_string(F) + ")" +
                         (near.empty() ? std::string() : "; the nearest valid counts are " + near));
  }
  if (o.mode != "auto") throw ParameterError("--shared: unknown mode '" + o.mode + "'");
  if (!(o.mass > 0 && o.mass <= 1)) throw ParameterError("--shared-mass must be in (0, 1]");
  if (!(o.maxFraction >= 0 && o.maxFraction < 1)) throw ParameterError("--shared-max must be in [0, 1)");
  std::vector<int64_t> counts;
  const std::vector<int64_t> order = byActivity(count, counts);
  double total = 0;
  for (int64_t c : counts) total += static_cast<double>(std::max<int64_t>(c, 0));
  if (total <= 0) return 0;
  const int64_t cap =
      std::min<int64_t>(static_cast<int64_t>(std::floor(o.maxFraction * static_cast<double>(F))), F - E);
  // Smallest n with sum of the n largest counts >= mass * total (in doubles:
  // exact for counts below 2^53).
  int64_t n = 0;
  double covered = 0;
  while (n < F && covered < o.mass * total) covered += static_cast<double>(std::max<int64_t>(counts[order[n++]], 0));
  n = std::min(n, cap);
  if (n <= 0) return 0;
  int64_t up = n;
  while (up <= cap && !validShared(up, F, E)) ++up;
  if (up <= cap) return static_cast<int>(up);
  int64_t down = n;
  while (down > 0 && !validShared(down, F, E)) --down;
  return static_cast<int>(std::max<int64_t>(down, 0));
}

std::vector<int32_t> mostActiveNeurons(const at::Tensor& count, int n) {
  std::vector<int64_t> counts;
  const std::vector<int64_t> order = byActivity(count, counts);
  if (n < 0 || n > static_cast<int64_t>(order.size()))
    throw ParameterError("shared expert: " + std::to_string(n) + " neurons of " + std::to_string(order.size()));
  std::vector<int32_t> ids(order.begin(), order.begin() + n);
  std::sort(ids.begin(), ids.end());
  return ids;
}

}  // namespace moefy
