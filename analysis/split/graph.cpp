// Co-activation graphs, METIS k-way partitioning and exact balance repair.
#include <metis.h>
#include <omp.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <numeric>
#include <random>
#include <sstream>

#include "analysis/common/error.h"
#include "analysis/io/fsutil.h"
#include "analysis/split/coact_weight.h"
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

int resolveTopk(const GraphOptions& options, int64_t n, int experts) {
  if (options.topk >= 0) return options.topk;
  // auto: a complete graph on a big layer gains METIS nothing but time (its
  // cost grows with the n^2 / 2 edges); keep each neuron's 2S strongest
  // neighbours (S = expert size, at least 64), which holds every partner it
  // could share an expert with, twice over. Layers up to 1536 neurons stay dense.
  if (n <= kAutoTopkDenseLimit) return 0;
  const int64_t s = experts > 0 ? n / experts : 32;
  return static_cast<int>(std::max<int64_t>(64, 2 * s));
}

int parseTopk(const std::string& text) {
  const size_t a = text.find_first_not_of(" \t"), b = text.find_last_not_of(" \t");
  const std::string t = a == std::string::npos ? std::string() : text.substr(a, b - a + 1);
  if (t.empty() || t == "auto") return -1;
  size_t used = 0;
  long long k = -2;
  try {
    k = std::stoll(t, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != t.size() || k < -1 || k > std::numeric_limits<int>::max())
    throw ParameterError("--topk must be auto or a count >= 0, got '" + text + "'");
  return static_cast<int>(k);
}

namespace {

// Edge weights of row i (j != i, 0 = no edge) into `row`, from the
// co-activation matrix of element type T. Symmetric in (i, j) because the
// recorded matrix is mirrored and every formula is.
template <typename T>
struct WeightRow {
  const T* m;
  const double* c;
  int64_t n;
  double N, pthr;
  int kind;  // 0 raw, 1 jaccard, 2 ppmi, 3 percentile
  void operator()(int64_t i, double* row) const {
    const T* mi = m + i * n;
    for (int64_t j = 0; j < n; ++j) {
      const double cij = static_cast<double>(mi[j]);
      double v = 0;
      if (j != i && cij > 0) {
        switch (kind) {
          case 0: v = cij; break;
          // The unscaled values are the heatmap's (coact_weight.h); here scaled to integers.
          case 1:
            v = std::round(kJaccardGraphScale * coactJaccard(cij, c[i], c[j]));
            break;
          case 2:
            v = std::round(kPpmiGraphScale * coactPpmi(cij, c[i], c[j], N));
            break;
          default: v = std::floor(cij / pthr);
        }
      }
      row[j] = v >= 1 ? v : 0;
    }
  }
};

}  // namespace

CoactGraph buildCoactGraph(const at::Tensor& coact, const at::Tensor& count, int64_t tokens,
                           const GraphOptions& options, int experts) {
  if (coact.dim() != 2 || coact.size(0) != coact.size(1))
    throw ParameterError("co-activation matrix must be square, got " + std::to_string(coact.dim()) + "-D");
  const int64_t n = coact.size(0);
  const std::string& wt = options.weighting;
  const int kind = wt == "raw" ? 0 : wt == "jaccard" ? 1 : wt == "ppmi" ? 2 : wt == "percentile" ? 3 : -1;
  if (kind < 0) throw ParameterError("--weighting must be raw, jaccard, ppmi or percentile, got '" + wt + "'");
  if (options.topk < -1) throw ParameterError("--topk must be auto or >= 0");
  const int64_t k = resolveTopk(options, n, experts);
  // Integer matrices are read as they are (no n^2 copy); others as F64 so that
  // soft values and counts above 2^24 stay exact.
  const bool isInt = coact.scalar_type() == at::kInt;
  at::Tensor M = isInt ? coact.contiguous() : coact.to(at::kDouble).contiguous();
  at::Tensor cntT = (count.defined() ? count : at::diagonal(M)).to(at::kDouble).contiguous();
  const double* c = cntT.data_ptr<double>();

  double pthr = 0;
  if (kind == 3) {
    at::Tensor flat = M.to(at::kFloat).reshape({-1}).contiguous();
    std::vector<float> all(flat.data_ptr<float>(), flat.data_ptr<float>() + n * n);
    double q = 0;
    for (int p = 10; p <= 100 && q == 0; p += 10) q = percentileOf(all, p);
    if (q == 0) throw ParameterError("--weighting percentile: the co-activation matrix is all zeros");
    pthr = q * 0.99;
  }
  const double N = static_cast<double>(std::max<int64_t>(1, tokens));
  std::function<void(int64_t, double*)> weightRow;
  if (isInt) weightRow = WeightRow<int32_t>{M.data_ptr<int32_t>(), c, n, N, pthr, kind};
  else weightRow = WeightRow<double>{M.data_ptr<double>(), c, n, N, pthr, kind};

  // Neighbour lists per row: all positive weights, or the row's k strongest
  // (ties: lower id) made symmetric by union.
  std::vector<std::vector<std::pair<int32_t, double>>> nb(static_cast<size_t>(n));
  const bool sparse = k > 0 && k < n - 1;
#pragma omp parallel
  {
    std::vector<double> row(static_cast<size_t>(n));
    std::vector<int32_t> idx;
#pragma omp for schedule(dynamic, 16)
    for (int64_t i = 0; i < n; ++i) {
      weightRow(i, row.data());
      auto& out = nb[static_cast<size_t>(i)];
      if (!sparse) {
        for (int64_t j = 0; j < n; ++j)
          if (row[j] > 0) out.emplace_back(static_cast<int32_t>(j), row[j]);
        continue;
      }
      idx.clear();
      for (int64_t j = 0; j < n; ++j)
        if (row[j] > 0) idx.push_back(static_cast<int32_t>(j));
      if (static_cast<int64_t>(idx.size()) > k) {
        std::nth_element(idx.begin(), idx.begin() + (k - 1), idx.end(), [&](int32_t a, int32_t b) {
          return row[a] > row[b] || (row[a] == row[b] && a < b);
        });
        idx.resize(static_cast<size_t>(k));
      }
      for (int32_t j : idx) out.emplace_back(j, row[j]);
    }
  }
  if (sparse) {
    // Union: add (j, i) wherever only (i, j) was kept. Weights are symmetric.
    std::vector<std::vector<std::pair<int32_t, double>>> extra(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i)
      for (auto [j, v] : nb[static_cast<size_t>(i)]) extra[static_cast<size_t>(j)].emplace_back(static_cast<int32_t>(i), v);
#pragma omp parallel for schedule(dynamic, 64)
    for (int64_t i = 0; i < n; ++i) {
      auto& a = nb[static_cast<size_t>(i)];
      a.insert(a.end(), extra[static_cast<size_t>(i)].begin(), extra[static_cast<size_t>(i)].end());
      std::sort(a.begin(), a.end(), [](const auto& x, const auto& y) { return x.first < y.first; });
      a.erase(std::unique(a.begin(), a.end(), [](const auto& x, const auto& y) { return x.first == y.first; }), a.end());
    }
  }
  // Integer weights; scale down uniformly if METIS's 32-bit sums could overflow.
  double total = 0;
  int64_t m2 = 0;
  for (const auto& a : nb) {
    m2 += static_cast<int64_t>(a.size());
    for (const auto& e : a) total += e.second;
  }
  if (m2 > static_cast<int64_t>(std::numeric_limits<int32_t>::max()))
    throw ParameterError("co-activation graph has too many edges for METIS; use --topk");
  const double limit = 1 << 30;
  const double scale = total > limit ? limit / total : 1.0;
  CoactGraph g;
  g.n = n;
  g.weightScale = scale;
  g.xadj.assign(static_cast<size_t>(n + 1), 0);
  for (int64_t i = 0; i < n; ++i)
    g.xadj[static_cast<size_t>(i + 1)] = g.xadj[static_cast<size_t>(i)] + static_cast<int32_t>(nb[static_cast<size_t>(i)].size());
  g.adjncy.resize(static_cast<size_t>(m2));
  g.adjwgt.resize(static_cast<size_t>(m2));
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    size_t e = static_cast<size_t>(g.xadj[static_cast<size_t>(i)]);
    for (const auto& [j, v] : nb[static_cast<size_t>(i)]) {
      g.adjncy[e] = j;
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

const char* metisPtypeName(MetisPtype ptype) { return ptype == MetisPtype::Kway ? "kway" : "rb"; }

MetisPtype parseMetisPtype(const std::string& text) {
  if (text == "rb") return MetisPtype::Rb;
  if (text == "kway") return MetisPtype::Kway;
  throw ParameterError("--metis-ptype must be rb or kway, got '" + text + "'");
}

std::vector<int32_t> partitionCoact(const CoactGraph& g, int experts, uint64_t seed, MetisPtype ptype) {
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
    // METIS seeds srand()-style, where 0 and 1 give the same stream: hash the
    // seed (splitmix64) so that every --seed, and the seed + 1 stability rerun,
    // gets its own.
    uint64_t z = seed + 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    opts[METIS_OPTION_SEED] = static_cast<idx_t>(z & 0x7fffffff);
    opts[METIS_OPTION_NUMBERING] = 0;
    // The seed alone does not reach every configuration: METIS 5.1's k-way
    // initial partitioning calls METIS_PartGraphRecursive with default options,
    // which reseeds its RNG with a constant, so when the graph barely coarsens
    // (e.g. 32 experts of a 1024-neuron layer) seeds 0 and 7 gave the same
    // partition. Presenting the vertices in a seeded random order makes every
    // tie-break (matching, initial bisection, refinement) depend on the seed.
    std::vector<idx_t> order(static_cast<size_t>(n)), rank(static_cast<size_t>(n));
    std::iota(order.begin(), order.end(), 0);
    std::mt19937_64 rng(z);
    for (int64_t i = n - 1; i > 0; --i)
      std::swap(order[static_cast<size_t>(i)], order[static_cast<size_t>(rng() % static_cast<uint64_t>(i + 1))]);
    for (int64_t k = 0; k < n; ++k) rank[static_cast<size_t>(order[static_cast<size_t>(k)])] = static_cast<idx_t>(k);
    // Vertex k of the permuted graph is vertex order[k] of g.
    std::vector<idx_t> xadj(static_cast<size_t>(n + 1), 0), adj, wgt, part(static_cast<size_t>(n));
    adj.reserve(g.adjncy.size());
    wgt.reserve(g.adjwgt.size());
    for (int64_t k = 0; k < n; ++k) {
      const int64_t v = order[static_cast<size_t>(k)];
      for (int32_t e = g.xadj[static_cast<size_t>(v)]; e < g.xadj[static_cast<size_t>(v + 1)]; ++e) {
        adj.push_back(rank[static_cast<size_t>(g.adjncy[static_cast<size_t>(e)])]);
        wgt.push_back(g.adjwgt[static_cast<size_t>(e)]);
      }
      xadj[static_cast<size_t>(k + 1)] = static_cast<idx_t>(adj.size());
    }
    // Recursive bisection: on a dense co-activation graph (every neuron pair
    // of a small layer co-fires) k-way's coarsening and refinement walk all
    // the edges at every level for 32-96 parts at once, and took 4-5x as long.
    const bool kway = ptype == MetisPtype::Kway;
    const auto metis = kway ? METIS_PartGraphKway : METIS_PartGraphRecursive;
    const int rc = metis(&nv, &ncon, xadj.data(), adj.data(), nullptr, nullptr, wgt.data(), &nparts, nullptr, nullptr,
                         opts, &objval, part.data());
    if (rc != METIS_OK)
      throw Error(std::string(kway ? "METIS_PartGraphKway" : "METIS_PartGraphRecursive") + " failed (code " +
                  std::to_string(rc) + ") on a graph of " + std::to_string(n) + " vertices into " +
                  std::to_string(experts) + " parts");
    for (int64_t k = 0; k < n; ++k)
      labels[static_cast<size_t>(order[static_cast<size_t>(k)])] = static_cast<int32_t>(part[static_cast<size_t>(k)]);
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
