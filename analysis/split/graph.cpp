// Co-activation graphs, METIS k-way partitioning and exact balance repair.
#include <metis.h>
#include <omp.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <sstream>

#include "analysis/common/error.h"
#include "analysis/io/fsutil.h"
#include "analysis/split/split.h"

namespace moefy {

static_assert(sizeof(idx_t) == sizeof(int32_t), "libmetis must be built with 32-bit idx_t");

namespace {

// np.percentile(values, p) with linear interpolation; `v` is reordered.
double percentileOf(std::vector<float>& v, double p) {
  const double rank = p / 100.0 * static_cast<double>(v.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(rank));
  std::nth_element(v.begin(), v.begin() + static_cast<long>(lo), v.end());
  const double a = v[lo];
  if (lo + 1 >= v.size() || rank == static_cast<double>(lo)) return a;
  const double b = *std::min_element(v.begin() + static_cast<long>(lo) + 1, v.end());
  return a + (b - a) * (rank - static_cast<double>(lo));
}

}  // namespace

CoactGraph buildCoactGraph(const at::Tensor& coact, const at::Tensor& count, int64_t tokens,
                           const GraphOptions& options) {
  if (coact.dim() != 2 || coact.size(0) != coact.size(1))
    throw ParameterError("co-activation matrix must be square, got " + std::to_string(coact.dim()) + "-D");
  const int64_t n = coact.size(0);
  const std::string& wt = options.weighting;
  if (wt != "raw" && wt != "jaccard" && wt != "ppmi" && wt != "percentile")
    throw ParameterError("--weighting must be raw, jaccard, ppmi or percentile, got '" + wt + "'");
  if (options.topk < 0) throw ParameterError("--topk must be >= 0");
  at::Tensor M = coact.to(at::kDouble).contiguous();  // [n, n] (F64: counts above 2^24 stay exact)
  const double* m = M.data_ptr<double>();
  at::Tensor cntT = count.defined() ? count.to(at::kDouble).contiguous() : at::diagonal(M).to(at::kDouble).contiguous();
  const double* c = cntT.data_ptr<double>();
  const double N = static_cast<double>(std::max<int64_t>(1, tokens));

  double pthr = 0;
  if (wt == "percentile") {
    std::vector<float> all(static_cast<size_t>(n * n));
    for (int64_t k = 0; k < n * n; ++k) all[static_cast<size_t>(k)] = static_cast<float>(m[k]);
    double q = 0;
    for (int p = 10; p <= 100 && q == 0; p += 10) q = percentileOf(all, p);
    if (q == 0) throw ParameterError("--weighting percentile: the co-activation matrix is all zeros");
    pthr = q * 0.99;
  }
  // Dense weight matrix (double), zero = no edge.
  std::vector<double> w(static_cast<size_t>(n * n), 0.0);
#pragma omp parallel for schedule(dynamic, 16)
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = i + 1; j < n; ++j) {
      // The upper triangle defines the (symmetric) graph.
      const double cij = m[i * n + j];
      double v = 0;
      if (cij <= 0) continue;
      if (wt == "raw") {
        v = cij;
      } else if (wt == "jaccard") {
        const double den = c[i] + c[j] - cij;
        v = den > 0 ? std::round(1000.0 * cij / den) : 0;
      } else if (wt == "ppmi") {
        v = (c[i] > 0 && c[j] > 0) ? std::round(100.0 * std::max(0.0, std::log(cij * N / (c[i] * c[j])))) : 0;
      } else {
        v = std::floor(cij / pthr);
      }
      w[static_cast<size_t>(i * n + j)] = v >= 1 ? v : 0;
    }
  }
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < i; ++j) w[static_cast<size_t>(i * n + j)] = w[static_cast<size_t>(j * n + i)];
  if (options.topk > 0 && options.topk < n - 1) {
    const int64_t k = options.topk;
    std::vector<uint8_t> keep(static_cast<size_t>(n * n), 0);
#pragma omp parallel
    {
      std::vector<int64_t> idx(static_cast<size_t>(n));
#pragma omp for schedule(static)
      for (int64_t i = 0; i < n; ++i) {
        const double* row = w.data() + i * n;
        std::iota(idx.begin(), idx.end(), 0);
        std::nth_element(idx.begin(), idx.begin() + (k - 1), idx.end(),
                         [&](int64_t a, int64_t b) { return row[a] > row[b] || (row[a] == row[b] && a < b); });
        for (int64_t q = 0; q < k; ++q)
          if (row[idx[q]] > 0) keep[static_cast<size_t>(i * n + idx[q])] = 1;
      }
    }
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = i + 1; j < n; ++j) {
        const bool kept = keep[static_cast<size_t>(i * n + j)] || keep[static_cast<size_t>(j * n + i)];
        if (!kept) w[static_cast<size_t>(i * n + j)] = w[static_cast<size_t>(j * n + i)] = 0;
      }
  }
  // Integer weights; scale down uniformly if METIS's 32-bit sums could overflow.
  double total = 0;
#pragma omp parallel for reduction(+ : total) schedule(static)
  for (int64_t k = 0; k < n * n; ++k) total += w[static_cast<size_t>(k)];
  const double limit = 1 << 30;
  const double scale = total > limit ? limit / total : 1.0;
  CoactGraph g;
  g.n = n;
  g.xadj.assign(static_cast<size_t>(n + 1), 0);
  std::vector<int64_t> deg(static_cast<size_t>(n), 0);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    int64_t d = 0;
    for (int64_t j = 0; j < n; ++j) d += w[static_cast<size_t>(i * n + j)] > 0;
    deg[static_cast<size_t>(i)] = d;
  }
  int64_t m2 = 0;
  for (int64_t i = 0; i < n; ++i) m2 += deg[static_cast<size_t>(i)];
  if (m2 > static_cast<int64_t>(std::numeric_limits<int32_t>::max()))
    throw ParameterError("co-activation graph has too many edges for METIS; use --topk");
  for (int64_t i = 0; i < n; ++i) g.xadj[static_cast<size_t>(i + 1)] = g.xadj[static_cast<size_t>(i)] +
                                                                       static_cast<int32_t>(deg[static_cast<size_t>(i)]);
  g.adjncy.resize(static_cast<size_t>(m2));
  g.adjwgt.resize(static_cast<size_t>(m2));
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    size_t e = static_cast<size_t>(g.xadj[static_cast<size_t>(i)]);
    for (int64_t j = 0; j < n; ++j) {
      const double v = w[static_cast<size_t>(i * n + j)];
      if (v <= 0) continue;
      g.adjncy[e] = static_cast<int32_t>(j);
      g.adjwgt[e] = static_cast<int32_t>(std::max(1.0, std::round(v * scale)));
      ++e;
    }
  }
  return g;
}

void writeMetisGraph(const CoactGraph& g, const std::filesystem::path& path) {
  writeFileAtomic(path, [&](std::FILE* f) {
    std::string line = std::to_string(g.n) + " " + std::to_string(g.edges()) + " 001\n";
    writeAll(f, line.data(), line.size(), path.string());
    for (int64_t i = 0; i < g.n; ++i) {
      line.clear();
      for (int32_t e = g.xadj[static_cast<size_t>(i)]; e < g.xadj[static_cast<size_t>(i + 1)]; ++e) {
        if (!line.empty()) line += ' ';
        line += std::to_string(g.adjncy[static_cast<size_t>(e)] + 1);
        line += ' ';
        line += std::to_string(g.adjwgt[static_cast<size_t>(e)]);
      }
      line += '\n';
      writeAll(f, line.data(), line.size(), path.string());
    }
  });
}

int64_t repairBalance(const CoactGraph& g, int experts, std::vector<int32_t>& labels) {
  const int64_t n = g.n, E = experts, cap = n / E;
  std::vector<int64_t> size(static_cast<size_t>(E), 0);
  for (int32_t l : labels) ++size[static_cast<size_t>(l)];
  // aff[i * E + k]: summed edge weight from i to the members of part k.
  std::vector<double> aff(static_cast<size_t>(n * E), 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int32_t e = g.xadj[static_cast<size_t>(i)]; e < g.xadj[static_cast<size_t>(i + 1)]; ++e)
      aff[static_cast<size_t>(i * E + labels[static_cast<size_t>(g.adjncy[static_cast<size_t>(e)])])] +=
          g.adjwgt[static_cast<size_t>(e)];
  int64_t moves = 0;
  for (int64_t p = 0; p < E; ++p) {
    while (size[static_cast<size_t>(p)] > cap) {
      // The member of p with the least affinity to p (ties: lowest id).
      int64_t best = -1;
      double bestAff = 0;
      for (int64_t i = 0; i < n; ++i) {
        if (labels[static_cast<size_t>(i)] != p) continue;
        const double a = aff[static_cast<size_t>(i * E + p)];
        if (best < 0 || a < bestAff) best = i, bestAff = a;
      }
      // The under-full part it is most attached to (ties: lowest id).
      int64_t q = -1;
      double qAff = 0;
      for (int64_t k = 0; k < E; ++k) {
        if (size[static_cast<size_t>(k)] >= cap) continue;
        const double a = aff[static_cast<size_t>(best * E + k)];
        if (q < 0 || a > qAff) q = k, qAff = a;
      }
      labels[static_cast<size_t>(best)] = static_cast<int32_t>(q);
      --size[static_cast<size_t>(p)];
      ++size[static_cast<size_t>(q)];
      for (int32_t e = g.xadj[static_cast<size_t>(best)]; e < g.xadj[static_cast<size_t>(best + 1)]; ++e) {
        const int64_t j = g.adjncy[static_cast<size_t>(e)];
        aff[static_cast<size_t>(j * E + p)] -= g.adjwgt[static_cast<size_t>(e)];
        aff[static_cast<size_t>(j * E + q)] += g.adjwgt[static_cast<size_t>(e)];
      }
      ++moves;
    }
  }
  return moves;
}

std::vector<int32_t> partitionCoact(const CoactGraph& g, int experts, uint64_t seed) {
  const int64_t n = g.n;
  if (experts < 1 || n % experts != 0) throw ParameterError("experts must divide d_ff");
  std::vector<int32_t> labels(static_cast<size_t>(n), 0);
  if (experts == 1) return labels;
  if (experts == n) {
    std::iota(labels.begin(), labels.end(), 0);
    return labels;
  }
  if (g.edges() > 0) {
    idx_t nv = static_cast<idx_t>(n), ncon = 1, nparts = experts, objval = 0;
    idx_t opts[METIS_NOPTIONS];
    METIS_SetDefaultOptions(opts);
    opts[METIS_OPTION_SEED] = static_cast<idx_t>(seed & 0x7fffffff);
    opts[METIS_OPTION_NUMBERING] = 0;
    std::vector<idx_t> xadj(g.xadj.begin(), g.xadj.end()), adj(g.adjncy.begin(), g.adjncy.end()),
        wgt(g.adjwgt.begin(), g.adjwgt.end()), part(static_cast<size_t>(n));
    const int rc = METIS_PartGraphKway(&nv, &ncon, xadj.data(), adj.data(), nullptr, nullptr, wgt.data(), &nparts,
                                       nullptr, nullptr, opts, &objval, part.data());
    if (rc != METIS_OK)
      throw Error("METIS_PartGraphKway failed (code " + std::to_string(rc) + ") on a graph of " + std::to_string(n) +
                  " vertices into " + std::to_string(experts) + " parts");
    for (int64_t i = 0; i < n; ++i) labels[static_cast<size_t>(i)] = static_cast<int32_t>(part[static_cast<size_t>(i)]);
  } else {
    // No co-activations at all: nothing to cut; start from contiguous blocks.
    for (int64_t i = 0; i < n; ++i) labels[static_cast<size_t>(i)] = static_cast<int32_t>(i / (n / experts));
  }
  repairBalance(g, experts, labels);
  return labels;
}

std::vector<int32_t> partitionRandom(int64_t n, int experts, uint64_t seed) {
  if (experts < 1 || n % experts != 0) throw ParameterError("experts must divide d_ff");
  std::vector<int32_t> perm(static_cast<size_t>(n));
  std::iota(perm.begin(), perm.end(), 0);
  std::mt19937_64 rng(seed);
  // Fisher-Yates with an explicit draw (std::shuffle's draws are not specified).
  for (int64_t i = n - 1; i > 0; --i) {
    const int64_t j = static_cast<int64_t>(rng() % static_cast<uint64_t>(i + 1));
    std::swap(perm[static_cast<size_t>(i)], perm[static_cast<size_t>(j)]);
  }
  std::vector<int32_t> labels(static_cast<size_t>(n));
  const int64_t cap = n / experts;
  for (int64_t i = 0; i < n; ++i) labels[static_cast<size_t>(perm[static_cast<size_t>(i)])] = static_cast<int32_t>(i / cap);
  return labels;
}

std::vector<int32_t> permutationOf(const std::vector<int32_t>& labels, int experts) {
  std::vector<int32_t> perm(labels.size());
  std::iota(perm.begin(), perm.end(), 0);
  std::stable_sort(perm.begin(), perm.end(),
                   [&](int32_t a, int32_t b) { return labels[static_cast<size_t>(a)] < labels[static_cast<size_t>(b)]; });
  return perm;
}

}  // namespace moefy
