// Balanced k-means with exact equal sizes (auction assignment).
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <deque>
#include <exception>
#include <limits>
#include <random>

#include "analysis/common/error.h"
#include "analysis/jobs/job.h"
#include "analysis/split/split.h"

namespace moefy {

namespace {

// The bid's scan: over the clusters k, v[k] = row[k] - minP[k]; returns the
// best cluster (the first of equal ones) in *k1, its value in *v1 and the
// best of the others in *v2 (-inf for E = 1). Branch-free max reductions
// (vectorised) in place of a compare chain, whose branches mispredicted.
// scratch holds E doubles.
template <typename T>
[[gnu::always_inline]] inline void top2Impl(const T* row, const double* minP, int64_t E, double* scratch, int64_t* k1,
                                            double* v1, double* v2) {
  double m = -std::numeric_limits<double>::infinity();
#pragma omp simd reduction(max : m)
  for (int64_t k = 0; k < E; ++k) {
    const double v = static_cast<double>(row[k]) - minP[k];
    scratch[k] = v;
    m = v > m ? v : m;
  }
  int64_t b = 0;
  while (b + 1 < E && scratch[b] != m) ++b;  // bounded: a NaN never equals m
  scratch[b] = -std::numeric_limits<double>::infinity();
  double m2 = -std::numeric_limits<double>::infinity();
#pragma omp simd reduction(max : m2)
  for (int64_t k = 0; k < E; ++k) m2 = scratch[k] > m2 ? scratch[k] : m2;
  *k1 = b, *v1 = m, *v2 = m2;
}
[[gnu::target_clones("avx2", "default")]] void top2(const float* row, const double* minP, int64_t E, double* scratch,
                                                    int64_t* k1, double* v1, double* v2) {
  top2Impl(row, minP, E, scratch, k1, v1, v2);
}
[[gnu::target_clones("avx2", "default")]] void top2(const double* row, const double* minP, int64_t E, double* scratch,
                                                    int64_t* k1, double* v1, double* v2) {
  top2Impl(row, minP, E, scratch, k1, v1, v2);
}

// balancedAssign on a row-major benefit a [n, E] (float or double; the
// prices and values are computed in double either way), with the final eps of
// a total benefit within range / divisor of the optimum (balancedAssign: 256).
template <typename T>
std::vector<int32_t> auctionAssign(const T* a, int64_t n, int experts, AuctionState* warm, int64_t* bidCount,
                                   double divisor) {
  const int64_t E = experts;
  if (E < 1 || n % E != 0) throw ParameterError("balancedAssign: E must divide n");
  const int64_t cap = n / E;
  double lo = std::numeric_limits<double>::infinity(), hi = -lo;
  for (int64_t i = 0; i < n * E; ++i) {
    if (!std::isfinite(a[i])) throw ParameterError("balancedAssign: the benefit matrix has a non-finite entry");
    lo = std::min(lo, static_cast<double>(a[i])), hi = std::max(hi, static_cast<double>(a[i]));
  }
  const double range = std::max(hi - lo, 1e-12);

  // Slots k * cap + s; the cheapest two of each cluster come from its heap below.
  const bool isWarm = warm && static_cast<int64_t>(warm->price.size()) == n;
  std::vector<double> price = isWarm ? warm->price : std::vector<double>(static_cast<size_t>(n), 0.0);
  int64_t bids = 0;
  std::vector<int64_t> owner(static_cast<size_t>(n), -1), slotOf(static_cast<size_t>(n), -1);
  // A warm start also keeps the previous assignment; the eps-CS check below
  // releases the points whose benefits moved enough to violate it.
  if (isWarm && static_cast<int64_t>(warm->slot.size()) == n) {
    for (int64_t i = 0; i < n; ++i) {
      const int64_t s = warm->slot[static_cast<size_t>(i)];
      if (s < 0 || s >= n || owner[s] >= 0) continue;  // not a valid assignment: the point bids again
      owner[s] = i, slotOf[i] = s;
    }
  }
  // Per cluster k, its slots k * cap .. (k + 1) * cap - 1 as a binary
  // min-heap on (price, slot) in heap[k * cap ..]: the cheapest slot is the
  // root, the second cheapest one of the root's two children. minP[k] and
  // secP[k] hold their prices contiguously for the bid's scan over clusters.
  std::vector<int64_t> heap(static_cast<size_t>(n));
  std::vector<double> minP(static_cast<size_t>(E)), secP(static_cast<size_t>(E)), scratch(static_cast<size_t>(E));
  const double inf = std::numeric_limits<double>::infinity();
  auto less = [&](int64_t x, int64_t y) { return price[x] < price[y] || (price[x] == price[y] && x < y); };
  auto siftDown = [&](int64_t k, int64_t q) {
    int64_t* h = heap.data() + k * cap;
    const int64_t v = h[q];
    for (;;) {
      int64_t c = 2 * q + 1;
      if (c >= cap) break;
      if (c + 1 < cap && less(h[c + 1], h[c])) ++c;
      if (!less(h[c], v)) break;
      h[q] = h[c], q = c;
    }
    h[q] = v;
  };
  auto tops = [&](int64_t k) {
    const int64_t* h = heap.data() + k * cap;
    minP[k] = price[h[0]];
    secP[k] = cap < 2 ? inf : cap < 3 ? price[h[1]] : std::min(price[h[1]], price[h[2]]);
  };
  for (int64_t k = 0; k < E; ++k) {
    for (int64_t q = 0; q < cap; ++q) heap[k * cap + q] = k * cap + q;
    for (int64_t q = cap / 2 - 1; q >= 0; --q) siftDown(k, q);
    tops(k);
  }

  // Final eps: the assignment's total benefit is within n * eps = range / 256 of the optimum.
  const double epsFinal = range / (divisor * static_cast<double>(n));
  // A warm start begins at the eps of its largest eps-CS violation (how far
  // the benefits moved against the kept prices), so that the points the change
  // displaced rebid with increments of its size rather than in a long price
  // war of tiny ones; the coarse phases below that are skipped.
  // How far assigned point i's value falls below its best value at the
  // current prices (the cheapest slot of each cluster): it satisfies eps-CS
  // while this is at most eps.
  auto slack = [&](int64_t i) {
    const T* row = a + i * E;
    double best = -std::numeric_limits<double>::infinity();
    for (int64_t k = 0; k < E; ++k) best = std::max(best, row[k] - minP[k]);
    const int64_t s = slotOf[i];
    return best - (row[s / cap] - price[s]);
  };
  double eps = range / 4.0;
  if (isWarm) {
    double worst = 0;
    for (int64_t i = 0; i < n; ++i)
      if (slotOf[i] >= 0) worst = std::max(worst, slack(i));
    eps = std::clamp(worst, epsFinal, range / 4.0);
  }
  std::deque<int64_t> queue;
  for (;;) {
    // Each phase keeps the assignment of the last one (Bertsekas's eps-scaling
    // restarts from scratch; keeping it is also correct, since the auction only
    // needs eps-complementary slackness of the assigned points when it starts):
    // a point whose value a[i, k] - price[s] is more than eps below its best
    // (the cheapest slot of any cluster) gives up its slot and bids again. Most
    // points keep theirs, so a phase costs bids for the few that move instead
    // of n.
    for (int64_t i = 0; i < n; ++i) {
      const int64_t s = slotOf[i];
      if (s >= 0) {
        if (slack(i) <= eps) continue;
        owner[s] = -1, slotOf[i] = -1;
      }
      queue.push_back(i);
    }
    while (!queue.empty()) {
      const int64_t i = queue.front();
      queue.pop_front();
      const T* row = a + i * E;
      int64_t k1;
      double v1, v2;
      top2(row, minP.data(), E, scratch.data(), &k1, &v1, &v2);
      v2 = std::max(v2, row[k1] - secP[k1]);
      const double inc = std::isfinite(v2) ? (v1 - v2) + eps : eps;
      const int64_t s = heap[k1 * cap];
      price[s] += inc;
      ++bids;
      if (owner[s] >= 0) {
        slotOf[owner[s]] = -1;
        queue.push_back(owner[s]);
      }
      owner[s] = i;
      slotOf[i] = s;
      siftDown(k1, 0);
      tops(k1);
    }
    if (eps <= epsFinal) break;
    eps = std::max(epsFinal, eps / 5.0);
  }
  std::vector<int32_t> labels(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) labels[static_cast<size_t>(i)] = static_cast<int32_t>(slotOf[i] / cap);
  if (warm) {
    warm->price = std::move(price);
    warm->slot = std::move(slotOf);
  }
  if (bidCount) *bidCount = bids;
  return labels;
}

// The warm-up assignment of balancedKmeans: points in decreasing order of
// regret (best minus second-best benefit), each to its best expert with room
// left. Exactly balanced, not optimal; O(n E + n log n).
std::vector<int32_t> greedyAssign(const float* a, int64_t n, int experts) {
  const int64_t E = experts, cap = n / E;
  // (regret, point), sorted by decreasing regret, ties by point: the order of
  // a stable sort, without its indirect compares and merge buffer. first[i]
  // is point i's best expert (the first of equal ones).
  std::vector<std::pair<float, int64_t>> order(static_cast<size_t>(n));
  std::vector<int32_t> first(static_cast<size_t>(n));
  const std::vector<double> zero(static_cast<size_t>(E), 0.0);
  std::vector<double> scratch(static_cast<size_t>(E));
  for (int64_t i = 0; i < n; ++i) {
    int64_t k1;
    double b1, b2;
    top2(a + i * E, zero.data(), E, scratch.data(), &k1, &b1, &b2);
    // b1 - b2 of two floats is exact in double, so this is the float difference.
    order[static_cast<size_t>(i)] = {E > 1 ? static_cast<float>(b1 - b2) : 0.0f, i};
    first[static_cast<size_t>(i)] = static_cast<int32_t>(k1);
  }
  std::sort(order.begin(), order.end(), [](const auto& x, const auto& y) {
    return x.first > y.first || (x.first == y.first && x.second < y.second);
  });
  std::vector<int64_t> room(static_cast<size_t>(E), cap);
  std::vector<int32_t> labels(static_cast<size_t>(n));
  for (const auto& [regret, i] : order) {
    int64_t best = first[static_cast<size_t>(i)];
    if (room[best] == 0) {  // the best expert is full: the best with room left
      best = -1;
      for (int64_t k = 0; k < E; ++k)
        if (room[k] > 0 && (best < 0 || a[i * E + k] > a[i * E + best])) best = k;
    }
    labels[static_cast<size_t>(i)] = static_cast<int32_t>(best);
    --room[best];
  }
  return labels;
}

// x . y over d floats (the reduction may be reordered: omp simd).
[[gnu::target_clones("avx2", "default")]] float dot(const float* x, const float* y, int64_t d) {
  float s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t j = 0; j < d; ++j) s += x[j] * y[j];
  return s;
}

// c[labels[i]] += x[i] for the n rows x [n, d] (c [E, d], accumulated).
[[gnu::target_clones("avx2", "default")]] void addRows(const float* x, const int32_t* labels, int64_t n, int64_t d,
                                                       float* c) {
  for (int64_t i = 0; i < n; ++i) {
    float* __restrict ce = c + static_cast<int64_t>(labels[i]) * d;
    const float* __restrict xi = x + i * d;
#pragma omp simd
    for (int64_t j = 0; j < d; ++j) ce[j] += xi[j];
  }
}

// p[0..n) += sign * g[0..n) (double accumulators of float rows).
[[gnu::target_clones("avx2", "default")]] void addRowTo(double* __restrict p, const float* __restrict g, int64_t n,
                                                        double sign) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) p[i] += sign * static_cast<double>(g[i]);
}

// balancedKmeans' centres through the Gram matrix G = X X^T [n, n]
// (KmeansDots::Gram). Per expert e with members M_e: P[e][i] = sum over j in
// M_e of G[j][i] = |M_e| x_i . c_e, and Q[e] = sum over j in M_e of P[e][j] =
// |M_e|^2 |c_e|^2, in double (sums of floats of magnitude <= 1, so the
// incremental updates drift by about 1e-16 relative). Not thread-safe; one per
// restart, G shared read-only.
struct GramCentres {
  const float* G = nullptr;
  int64_t n = 0, E = 0;
  std::vector<double> P, Q;   // [E][n], [E]
  std::vector<int64_t> size;  // |M_e|
  std::vector<int32_t> held;  // the labels P holds; empty while it holds the seeds

  // The k-means++ seeds: M_e = {picks[e]}.
  void seeds(const std::vector<int64_t>& picks) {
    P.assign(static_cast<size_t>(E * n), 0.0);
    Q.assign(static_cast<size_t>(E), 0.0);
    size.assign(static_cast<size_t>(E), 1);
    for (int64_t e = 0; e < E; ++e) {
      const int64_t j = picks[static_cast<size_t>(e)];
      addRowTo(P.data() + e * n, G + j * n, n, 1.0);
      Q[static_cast<size_t>(e)] = G[j * n + j];
    }
    held.clear();
  }
  // M_e = {i : labels[i] = e}: a changed label moves row i of G between two
  // rows of P; when most labels changed (or P holds the seeds), P is rebuilt.
  void moveTo(const std::vector<int32_t>& labels) {
    int64_t changed = held.empty() ? n : 0;
    for (size_t i = 0; i < held.size(); ++i) changed += held[i] != labels[i];
    if (changed > n / 4) {
      std::fill(P.begin(), P.end(), 0.0);
      std::fill(size.begin(), size.end(), 0);
      for (int64_t j = 0; j < n; ++j) {
        addRowTo(P.data() + labels[static_cast<size_t>(j)] * n, G + j * n, n, 1.0);
        ++size[static_cast<size_t>(labels[static_cast<size_t>(j)])];
      }
    } else {
      for (int64_t j = 0; j < n; ++j) {
        const int32_t a = held[static_cast<size_t>(j)], b = labels[static_cast<size_t>(j)];
        if (a == b) continue;
        addRowTo(P.data() + a * n, G + j * n, n, -1.0);
        addRowTo(P.data() + b * n, G + j * n, n, 1.0);
        --size[static_cast<size_t>(a)], ++size[static_cast<size_t>(b)];
      }
    }
    std::fill(Q.begin(), Q.end(), 0.0);
    for (int64_t j = 0; j < n; ++j) {
      const int64_t e = labels[static_cast<size_t>(j)];
      Q[static_cast<size_t>(e)] += P[static_cast<size_t>(e * n + j)];
    }
    held = labels;
  }
  // b[i][e] = 2 x_i . c_e - |c_e|^2 [n, E], the GEMM path's benefit.
  void benefit(float* b) const {
    std::vector<double> scale(static_cast<size_t>(E)), offset(static_cast<size_t>(E));
    for (int64_t e = 0; e < E; ++e) {
      const double inv = 1.0 / static_cast<double>(std::max<int64_t>(1, size[static_cast<size_t>(e)]));
      scale[static_cast<size_t>(e)] = 2.0 * inv;
      offset[static_cast<size_t>(e)] = Q[static_cast<size_t>(e)] * inv * inv;
    }
    // In blocks of 64 points (64 E floats of b stay in L1): walking P's
    // column for each point instead read E rows n doubles apart, which share
    // L1 sets when n is a power of two, and took 10 % of a fit.
    for (int64_t i0 = 0; i0 < n; i0 += 64) {
      const int64_t i1 = std::min(n, i0 + 64);
      for (int64_t e = 0; e < E; ++e) {
        const double* p = P.data() + e * n;
        const double sc = scale[static_cast<size_t>(e)], off = offset[static_cast<size_t>(e)];
        for (int64_t i = i0; i < i1; ++i) b[i * E + e] = static_cast<float>(sc * p[i] - off);
      }
    }
  }
};

}  // namespace

bool kmeansUsesGram(int64_t n, int experts, int restarts) {
  return n <= 16 * static_cast<int64_t>(experts) * std::max(1, restarts) && n * n * 4 <= (int64_t{1} << 30);
}

std::vector<int32_t> balancedAssign(const at::Tensor& benefit, int experts, AuctionState* warm, int64_t* bidCount) {
  if (benefit.dim() != 2 || benefit.size(1) != experts) throw ParameterError("balancedAssign: benefit must be [n, E]");
  if (benefit.scalar_type() == at::kFloat) {
    const at::Tensor bt = benefit.contiguous();
    return auctionAssign(bt.data_ptr<float>(), bt.size(0), experts, warm, bidCount, 256.0);
  }
  const at::Tensor bt = benefit.to(at::kDouble).contiguous();
  return auctionAssign(bt.data_ptr<double>(), bt.size(0), experts, warm, bidCount, 256.0);
}

KmeansResult balancedKmeans(const at::Tensor& rows, int experts, int restarts, int maxIter, uint64_t seed,
                            JobContext& job, KmeansDots dots) {
  if (rows.dim() != 2) throw ParameterError("kmeans: rows must be [n, d]");
  const int64_t n = rows.size(0), E = experts;
  if (E < 1 || n % E != 0) throw ParameterError("kmeans: experts must divide d_ff");
  if (restarts < 1) throw ParameterError("--restarts must be >= 1");
  if (maxIter < 1) throw ParameterError("--max-iter must be >= 1");
  // The rows normalised once, shared read-only by the restarts. Each restart
  // works on plain buffers (centres, benefit, labels) made once: at d_ff 1024
  // the ATen calls of the per-iteration updates and of the seeding (about 20
  // small ops per iteration and per seeded centre) cost as much as the
  // arithmetic. Only the benefit GEMM stays in ATen (BLAS).
  at::Tensor X = rows.to(at::kFloat).contiguous();
  // A NaN or infinity would make every distance to its row undefined (and the
  // branch-free scans below assume finite values).
  if (!at::isfinite(X).all().item<bool>()) throw ParameterError("kmeans: the rows have a non-finite value");
  X = X / X.norm(2, 1, true).clamp_min(1e-12);  // [n, d]
  const int64_t d = X.size(1);
  const float* x = X.data_ptr<float>();
  std::vector<float> sq(static_cast<size_t>(n));  // |x_i|^2: 1, or 0 for a zero row
  for (int64_t i = 0; i < n; ++i) sq[static_cast<size_t>(i)] = dot(x + i * d, x + i * d, d);
  // The Gram matrix, once for all restarts (BLAS, on every thread).
  const bool gram = dots == KmeansDots::Gram || (dots == KmeansDots::Auto && kmeansUsesGram(n, experts, restarts));
  const at::Tensor Gt = gram ? at::mm(X, X.t()).contiguous() : at::Tensor();
  const float* G = gram ? Gt.data_ptr<float>() : nullptr;
  // Restarts run in parallel (one per thread; torch ops inside run serially).
  std::vector<KmeansResult> results(static_cast<size_t>(restarts));
  std::vector<std::string> logs(static_cast<size_t>(restarts));
  std::exception_ptr error;
#pragma omp parallel for schedule(dynamic, 1)
  for (int r = 0; r < restarts; ++r) {
    try {
      job.checkCancel();
      std::mt19937_64 rng(seed * 1000003ull + static_cast<uint64_t>(r));
      // k-means++ seeding: each next centre drawn with probability
      // proportional to the squared distance to the nearest centre so far,
      // |x|^2 - 2 x.c + |c|^2.
      at::Tensor Ct = at::empty({E, d}, at::kFloat);  // centres [E, d]
      float* c = Ct.data_ptr<float>();
      std::vector<float> d2(static_cast<size_t>(n));
      std::vector<double> cum(static_cast<size_t>(n));
      std::vector<int64_t> picks;
      int64_t pick = static_cast<int64_t>(rng() % static_cast<uint64_t>(n));
      for (int64_t e = 0;; ++e) {
        std::copy(x + pick * d, x + (pick + 1) * d, c + e * d);
        picks.push_back(pick);
        if (e + 1 == E) break;
        const float* xc = x + pick * d;
        for (int64_t i = 0; i < n; ++i) {
          const float xdot = G ? G[pick * n + i] : dot(x + i * d, xc, d);
          const float v = std::max(0.0f, sq[i] - 2.0f * xdot + sq[pick]);
          d2[i] = e == 0 ? v : std::min(d2[i], v);
        }
        double total = 0;
        for (int64_t i = 0; i < n; ++i) cum[i] = total += d2[i];
        if (total <= 0) {
          pick = static_cast<int64_t>(rng() % static_cast<uint64_t>(n));
        } else {
          const double u = std::uniform_real_distribution<double>(0, total)(rng);
          pick = std::min<int64_t>(n - 1, std::lower_bound(cum.begin(), cum.end(), u) - cum.begin());
        }
      }
      at::Tensor bias = at::empty({1, E}, at::kFloat), benefit = at::empty({n, E}, at::kFloat);
      float* bi = bias.data_ptr<float>();
      std::vector<int32_t> labels, prev;
      GramCentres gc;
      if (G) {
        gc.G = G, gc.n = n, gc.E = E;
        gc.seeds(picks);
      }
      AuctionState auction;  // prices and slots carried across iterations
      int64_t bids = 0;
      int it = 0;
      // Three phases. While the centres move a lot, the greedy balanced
      // assignment (greedyAssign: no prices, O(n E)) until at most 1 % of
      // the labels change or for half the iterations (at most 40); the
      // auction's bids were most of the time there, 20-30 per point per
      // iteration on the bundled model's d_ff 1024. Then the auction, each
      // assignment solved to within range / 16 of its optimum (its last,
      // finest eps phases are most of its bids); once the labels stop
      // changing at that precision, balancedAssign's range / 256 until they
      // stop changing again. The last assignment is always the auction's.
      bool greedy = true;
      const int greedyIters = std::min(40, maxIter / 2);
      const int64_t settled = n / 100;
      double divisor = 16.0;
      const float inv = 1.0f / static_cast<float>(n / E);
      // c = the mean of each expert's n / E rows under `labels`.
      auto meanCentres = [&] {
        std::fill(c, c + E * d, 0.0f);
        addRows(x, labels.data(), n, d, c);
        for (int64_t j = 0; j < E * d; ++j) c[j] *= inv;
      };
      for (; it < maxIter; ++it) {
        job.checkCancel();
        // 2 x.c - |c|^2 (the squared distance up to |x|^2): from the Gram
        // matrix, or one fused GEMM.
        if (G) {
          gc.benefit(benefit.data_ptr<float>());
        } else {
          for (int64_t e = 0; e < E; ++e) bi[e] = -dot(c + e * d, c + e * d, d);
          at::addmm_out(benefit, bias, X, Ct.t(), 1.0, 2.0);  // [n, E]
        }
        const float* bf = benefit.data_ptr<float>();
        greedy = greedy && it < greedyIters;
        int64_t b = 0;
        labels = greedy ? greedyAssign(bf, n, experts) : auctionAssign(bf, n, experts, &auction, &b, divisor);
        bids += b;
        // Centres: the mean of each expert's n / E rows.
        if (G)
          gc.moveTo(labels);
        else
          meanCentres();
        if (greedy) {
          int64_t changed = prev.empty() ? n : 0;
          for (size_t q = 0; q < prev.size(); ++q) changed += labels[q] != prev[q];
          if (changed <= settled) greedy = false;
        } else if (labels == prev) {
          if (divisor >= 256.0) break;
          divisor = 256.0;
        }
        prev = labels;
      }
      if (G) meanCentres();  // the centres of the final labels, for the inertia
      KmeansResult& res = results[static_cast<size_t>(r)];
      double inertia = 0;
      for (int64_t i = 0; i < n; ++i) {
        const float* ce = c + labels[static_cast<size_t>(i)] * d;
        const float* xi = x + i * d;
        float s2 = 0;
#pragma omp simd reduction(+ : s2)
        for (int64_t j = 0; j < d; ++j) s2 += (xi[j] - ce[j]) * (xi[j] - ce[j]);
        inertia += s2;
      }
      res.inertia = inertia;
      res.labels = std::move(labels);
      res.iterations = std::min(it + 1, maxIter);
      logs[static_cast<size_t>(r)] = "kmeans restart " + std::to_string(r) + ": inertia " +
                                     std::to_string(res.inertia) + " after " + std::to_string(res.iterations) +
                                     " iterations, " + std::to_string(bids) + " auction bids";
    } catch (...) {
#pragma omp critical
      if (!error) error = std::current_exception();
    }
  }
  if (error) std::rethrow_exception(error);
  KmeansResult best;
  best.inertia = std::numeric_limits<double>::infinity();
  for (int r = 0; r < restarts; ++r) {
    job.log(logs[static_cast<size_t>(r)]);
    if (results[static_cast<size_t>(r)].inertia < best.inertia) best = results[static_cast<size_t>(r)];
  }
  return best;
}

}  // namespace moefy
