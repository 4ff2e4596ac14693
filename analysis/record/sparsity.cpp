#include "analysis/record/sparsity.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "analysis/common/error.h"
#include "analysis/record/recording.h"

namespace moefy {

double histQuantile(const std::vector<int64_t>& h, double q) {
  const int64_t total = std::accumulate(h.begin(), h.end(), int64_t{0});
  if (total == 0) return 0;
  const int64_t want = static_cast<int64_t>(std::ceil(q * static_cast<double>(total)));
  int64_t acc = 0;
  for (size_t i = 0; i < h.size(); ++i) {
    acc += h[i];
    if (acc >= want) return static_cast<double>(i);
  }
  return static_cast<double>(h.size() - 1);
}

LayerSparsity layerSparsity(const std::vector<int64_t>& count, const std::vector<int64_t>& hist, int64_t tokens) {
  const int64_t F = static_cast<int64_t>(count.size());
  if (F == 0 || static_cast<int64_t>(hist.size()) != F + 1)
    throw ParameterError("sparsity: active_hist has " + std::to_string(hist.size()) + " bins for d_ff " +
                         std::to_string(F) + " (expected d_ff + 1)");
  if (tokens <= 0) throw ParameterError("sparsity: no recorded tokens");
  LayerSparsity s;
  s.tokens = tokens;
  s.dFF = static_cast<int>(F);
  const double T = static_cast<double>(tokens), Fd = static_cast<double>(F);
  s.meanActiveShare = std::accumulate(count.begin(), count.end(), 0.0) / (T * Fd);
  double n = 0, m1 = 0, m2 = 0;
  for (int64_t k = 0; k <= F; ++k) {
    const double c = static_cast<double>(hist[static_cast<size_t>(k)]);
    n += c;
    m1 += c * static_cast<double>(k);
    m2 += c * static_cast<double>(k) * static_cast<double>(k);
  }
  if (n > 0) {
    m1 /= n;
    m2 /= n;
    s.sdActiveShare = std::sqrt(std::max(0.0, m2 - m1 * m1)) / Fd;
  }
  s.q10ActiveShare = histQuantile(hist, 0.10) / Fd;
  s.q90ActiveShare = histQuantile(hist, 0.90) / Fd;
  for (int64_t c : count) {
    if (c == 0)
      ++s.dead;
    else if (static_cast<double>(c) / T >= 0.99)
      ++s.alwaysOn;
  }
  return s;
}

LayerSparsity layerSparsity(const Recording& rec, int layer) {
  auto vec = [](const at::Tensor& t0) {
    at::Tensor t = t0.to(at::kLong).contiguous();
    return std::vector<int64_t>(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + t.numel());
  };
  // The tokens the site's statistics count: its stream's (T5: the encoder's or
  // the decoder's), an expert site's routed tokens, not the recording's total.
  return layerSparsity(vec(rec.count(layer)), vec(rec.activeHist(layer)), rec.siteTokens(layer));
}

}  // namespace moefy
