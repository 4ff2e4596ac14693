// Quality metrics of a partition.
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <map>

#include "analysis/common/error.h"
#include "analysis/split/split.h"

namespace moefy {

namespace {

void checkLabels(const at::Tensor& coact, const std::vector<int32_t>& labels) {
  if (coact.dim() != 2 || coact.size(0) != static_cast<int64_t>(labels.size()) || coact.size(1) != coact.size(0))
    throw ParameterError("partition has " + std::to_string(labels.size()) + " labels but the co-activation matrix is " +
                         std::to_string(coact.size(0)) + " x " + std::to_string(coact.dim() > 1 ? coact.size(1) : 0));
}

// (inside, total) off-diagonal mass over unordered pairs.
std::pair<double, double> masses(const at::Tensor& coact, const std::vector<int32_t>& labels) {
  checkLabels(coact, labels);
  at::Tensor M = coact.to(at::kDouble).contiguous();
  const double* m = M.data_ptr<double>();
  const int64_t n = M.size(0);
  double inside = 0, total = 0;
#pragma omp parallel for reduction(+ : inside, total) schedule(static)
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = i + 1; j < n; ++j) {
      const double v = m[i * n + j];
      total += v;
      if (labels[static_cast<size_t>(i)] == labels[static_cast<size_t>(j)]) inside += v;
    }
  return {inside, total};
}

}  // namespace

double coactInside(const at::Tensor& coact, const std::vector<int32_t>& labels) {
  auto [in, tot] = masses(coact, labels);
  return tot > 0 ? in / tot : 0.0;
}

double edgeCut(const at::Tensor& coact, const std::vector<int32_t>& labels) {
  auto [in, tot] = masses(coact, labels);
  return tot - in;
}

double sizeBalance(const std::vector<int32_t>& labels, int experts) {
  std::vector<int64_t> size(static_cast<size_t>(experts), 0);
  for (int32_t l : labels) {
    if (l < 0 || l >= experts) throw FormatError("label " + std::to_string(l) + " is outside [0, " + std::to_string(experts) + ")");
    ++size[static_cast<size_t>(l)];
  }
  const double mean = static_cast<double>(labels.size()) / experts;
  return static_cast<double>(*std::max_element(size.begin(), size.end())) / mean;
}

std::vector<double> recallAtK(const at::Tensor& act, const std::vector<int32_t>& labels, int experts) {
  if (act.dim() != 2 || act.size(1) != static_cast<int64_t>(labels.size()))
    throw ParameterError("recall@k: samples have " + std::to_string(act.dim() == 2 ? act.size(1) : 0) +
                         " neurons but the partition has " + std::to_string(labels.size()));
  std::vector<double> out(static_cast<size_t>(experts), 0.0);
  if (act.size(0) == 0) return out;
  at::Tensor lab = at::tensor(std::vector<int64_t>(labels.begin(), labels.end()), at::kLong);
  at::Tensor onehot = at::zeros({act.size(1), experts}, at::kFloat).scatter_(1, lab.unsqueeze(1), 1.0);
  const int64_t S = act.size(0), chunk = 8192;
  at::Tensor acc = at::zeros({experts}, at::kDouble);
  int64_t used = 0;
  for (int64_t s0 = 0; s0 < S; s0 += chunk) {
    at::Tensor a = act.slice(0, s0, std::min(S, s0 + chunk)).to(at::kFloat).abs();  // [s, n]
    at::Tensor mass = at::mm(a, onehot);                                            // [s, E]
    at::Tensor total = mass.sum(1, true);                                           // [s, 1]
    at::Tensor keep = (total.squeeze(1) > 0);
    mass = mass.index({keep});
    total = total.index({keep});
    if (mass.size(0) == 0) continue;
    at::Tensor sorted = std::get<0>(mass.sort(1, true));
    acc += (sorted.cumsum(1) / total).to(at::kDouble).sum(0);
    used += mass.size(0);
  }
  if (used == 0) return out;
  acc = (acc / static_cast<double>(used)).clamp_max(1.0);
  for (int k = 0; k < experts; ++k) out[static_cast<size_t>(k)] = acc[k].item<double>();
  return out;
}

namespace {

/// The contingency table of two labelings: its non-empty cells in (a, b)
/// label order, each with its row and column totals, and the non-empty
/// marginals in label order (the order every sum below runs in, so the
/// dense and the sparse table give the same sums bit for bit).
struct Contingency {
  struct Cell {
    int64_t n, a, b;  ///< n_ij, its row total a_i and column total b_j
  };
  std::vector<Cell> cells;
  std::vector<int64_t> a, b;
  double n = 0;
};

Contingency contingency(const std::vector<int32_t>& x, const std::vector<int32_t>& y) {
  if (x.size() != y.size())
    throw ParameterError("cannot compare partitions of " + std::to_string(x.size()) + " and " +
                         std::to_string(y.size()) + " neurons");
  Contingency c;
  c.n = static_cast<double>(x.size());
  if (x.empty()) return c;
  const auto [x0, x1] = std::minmax_element(x.begin(), x.end());
  const auto [y0, y1] = std::minmax_element(y.begin(), y.end());
  const int64_t ka = int64_t{*x1} - *x0 + 1, kb = int64_t{*y1} - *y0 + 1;
  const int64_t denseCells = std::max<int64_t>(int64_t{1} << 16, 4 * static_cast<int64_t>(x.size()));
  if (ka <= denseCells / kb) {  // ka * kb <= denseCells, without overflow
    // Expert ids are small (0..E): a dense table, O(d + E^2); else a sparse one.
    std::vector<int64_t> nij(static_cast<size_t>(ka * kb), 0), a(static_cast<size_t>(ka), 0),
        b(static_cast<size_t>(kb), 0);
    for (size_t i = 0; i < x.size(); ++i) {
      const int64_t r = int64_t{x[i]} - *x0, col = int64_t{y[i]} - *y0;
      ++nij[static_cast<size_t>(r * kb + col)], ++a[static_cast<size_t>(r)], ++b[static_cast<size_t>(col)];
    }
    for (int64_t r = 0; r < ka; ++r)
      for (int64_t col = 0; col < kb; ++col)
        if (const int64_t v = nij[static_cast<size_t>(r * kb + col)]) c.cells.push_back({v, a[r], b[col]});
    for (int64_t v : a)
      if (v) c.a.push_back(v);
    for (int64_t v : b)
      if (v) c.b.push_back(v);
    return c;
  }
  std::map<std::pair<int32_t, int32_t>, int64_t> nij;
  std::map<int32_t, int64_t> a, b;
  for (size_t i = 0; i < x.size(); ++i) {
    ++nij[{x[i], y[i]}];
    ++a[x[i]];
    ++b[y[i]];
  }
  for (const auto& [k, v] : nij) c.cells.push_back({v, a[k.first], b[k.second]});
  for (const auto& [k, v] : a) c.a.push_back(v);
  for (const auto& [k, v] : b) c.b.push_back(v);
  return c;
}

double comb2(double v) { return v * (v - 1) / 2; }

double ariOf(const Contingency& c) {
  double sij = 0, sa = 0, sb = 0;
  for (const auto& cell : c.cells) sij += comb2(static_cast<double>(cell.n));
  for (int64_t v : c.a) sa += comb2(static_cast<double>(v));
  for (int64_t v : c.b) sb += comb2(static_cast<double>(v));
  const double expected = sa * sb / comb2(c.n);
  const double maxIdx = (sa + sb) / 2;
  if (maxIdx == expected) return 1.0;  // both trivial (one cluster or all singletons)
  return (sij - expected) / (maxIdx - expected);
}

double nmiOf(const Contingency& c) {
  double mi = 0, ha = 0, hb = 0;
  for (const auto& cell : c.cells) {
    const double pij = static_cast<double>(cell.n) / c.n;
    const double pa = static_cast<double>(cell.a) / c.n, pb = static_cast<double>(cell.b) / c.n;
    mi += pij * std::log(pij / (pa * pb));
  }
  for (int64_t v : c.a) ha -= (static_cast<double>(v) / c.n) * std::log(static_cast<double>(v) / c.n);
  for (int64_t v : c.b) hb -= (static_cast<double>(v) / c.n) * std::log(static_cast<double>(v) / c.n);
  const double den = (ha + hb) / 2;
  if (den <= 0) return 1.0;
  return std::max(0.0, mi / den);
}

}  // namespace

double adjustedRandIndex(const std::vector<int32_t>& x, const std::vector<int32_t>& y) {
  return ariOf(contingency(x, y));
}

double normalizedMutualInfo(const std::vector<int32_t>& x, const std::vector<int32_t>& y) {
  return nmiOf(contingency(x, y));
}

LabelAgreement labelAgreement(const std::vector<int32_t>& x, const std::vector<int32_t>& y) {
  const Contingency c = contingency(x, y);
  return {ariOf(c), nmiOf(c)};
}

AgreementMatrix agreementMatrix(const std::vector<std::vector<int32_t>>& labelings) {
  AgreementMatrix m;
  m.n = static_cast<int>(labelings.size());
  const size_t n = labelings.size();
  for (size_t i = 1; i < n; ++i)
    if (labelings[i].size() != labelings[0].size())
      throw ParameterError("partition agreement: labeling " + std::to_string(i) + " has " +
                           std::to_string(labelings[i].size()) + " neurons, labeling 0 has " +
                           std::to_string(labelings[0].size()));
  m.ari.assign(n * n, 1.0);
  m.nmi.assign(n * n, 1.0);
  for (size_t i = 0; i < n; ++i)
    for (size_t j = i + 1; j < n; ++j) {
      const LabelAgreement g = labelAgreement(labelings[i], labelings[j]);
      m.ari[i * n + j] = m.ari[j * n + i] = g.ari;
      m.nmi[i * n + j] = m.nmi[j * n + i] = g.nmi;
    }
  return m;
}

}  // namespace moefy
