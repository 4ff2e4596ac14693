#include "analysis/record/coact.h"

#include <omp.h>

#include <algorithm>
#include <cstring>

namespace moefy {

void BitMatrix::reset(int64_t r, int64_t t) {
  rows = r;
  tokens = t;
  words = (t + 63) / 64;
  bits.assign(static_cast<size_t>(rows * words), 0);
}

void packMask(const uint8_t* mask, int64_t tokens, int64_t rows, BitMatrix& out) {
  out.reset(rows, tokens);
  const int64_t W = out.words;
#pragma omp parallel
  {
    std::vector<uint64_t> acc(static_cast<size_t>(rows));
#pragma omp for schedule(static)
    for (int64_t w = 0; w < W; ++w) {
      std::fill(acc.begin(), acc.end(), 0);
      const int64_t t0 = w * 64, t1 = std::min(tokens, t0 + 64);
      for (int64_t t = t0; t < t1; ++t) {
        const uint8_t* m = mask + t * rows;
        const uint64_t bit = uint64_t{1} << (t - t0);
        for (int64_t i = 0; i < rows; ++i) acc[i] |= m[i] ? bit : 0;
      }
      for (int64_t i = 0; i < rows; ++i) out.bits[static_cast<size_t>(i * W + w)] = acc[i];
    }
  }
}

namespace {

constexpr int64_t kRowBlock = 64;    // rows per cache block
constexpr int64_t kWordBlock = 256;  // words per cache block (2 KiB per row)

// One block pair: rows [i0, i1) x [j0, j1), words [w0, w1), only pairs j >= i.
__attribute__((target_clones("popcnt", "default"))) void blockKernel(const BitMatrix& m, int64_t i0, int64_t i1,
                                                                     int64_t j0, int64_t j1, int64_t w0, int64_t w1,
                                                                     uint64_t* local /* [kRowBlock, kRowBlock] */) {
  const int64_t W = m.words;
  for (int64_t i = i0; i < i1; i += 4) {
    const bool fullI = i + 4 <= i1;
    for (int64_t j = j0; j < j1; j += 4) {
      if (j + 3 < i) continue;  // tile entirely below the diagonal
      const bool fullJ = j + 4 <= j1;
      if (fullI && fullJ) {
        const uint64_t* a0 = m.bits.data() + (i + 0) * W;
        const uint64_t* a1 = a0 + W;
        const uint64_t* a2 = a1 + W;
        const uint64_t* a3 = a2 + W;
        const uint64_t* b0 = m.bits.data() + (j + 0) * W;
        const uint64_t* b1 = b0 + W;
        const uint64_t* b2 = b1 + W;
        const uint64_t* b3 = b2 + W;
        uint64_t c00 = 0, c01 = 0, c02 = 0, c03 = 0, c10 = 0, c11 = 0, c12 = 0, c13 = 0;
        uint64_t c20 = 0, c21 = 0, c22 = 0, c23 = 0, c30 = 0, c31 = 0, c32 = 0, c33 = 0;
        for (int64_t w = w0; w < w1; ++w) {
          const uint64_t x0 = a0[w], x1 = a1[w], x2 = a2[w], x3 = a3[w];
          const uint64_t y0 = b0[w], y1 = b1[w], y2 = b2[w], y3 = b3[w];
          c00 += __builtin_popcountll(x0 & y0);
          c01 += __builtin_popcountll(x0 & y1);
          c02 += __builtin_popcountll(x0 & y2);
          c03 += __builtin_popcountll(x0 & y3);
          c10 += __builtin_popcountll(x1 & y0);
          c11 += __builtin_popcountll(x1 & y1);
          c12 += __builtin_popcountll(x1 & y2);
          c13 += __builtin_popcountll(x1 & y3);
          c20 += __builtin_popcountll(x2 & y0);
          c21 += __builtin_popcountll(x2 & y1);
          c22 += __builtin_popcountll(x2 & y2);
          c23 += __builtin_popcountll(x2 & y3);
          c30 += __builtin_popcountll(x3 & y0);
          c31 += __builtin_popcountll(x3 & y1);
          c32 += __builtin_popcountll(x3 & y2);
          c33 += __builtin_popcountll(x3 & y3);
        }
        uint64_t* l = local + (i - i0) * kRowBlock + (j - j0);
        l[0] += c00, l[1] += c01, l[2] += c02, l[3] += c03;
        l += kRowBlock;
        l[0] += c10, l[1] += c11, l[2] += c12, l[3] += c13;
        l += kRowBlock;
        l[0] += c20, l[1] += c21, l[2] += c22, l[3] += c23;
        l += kRowBlock;
        l[0] += c30, l[1] += c31, l[2] += c32, l[3] += c33;
      } else {
        for (int64_t ii = i; ii < std::min(i + 4, i1); ++ii)
          for (int64_t jj = j; jj < std::min(j + 4, j1); ++jj) {
            if (jj < ii) continue;
            const uint64_t* a = m.bits.data() + ii * W;
            const uint64_t* b = m.bits.data() + jj * W;
            uint64_t c = 0;
            for (int64_t w = w0; w < w1; ++w) c += __builtin_popcountll(a[w] & b[w]);
            local[(ii - i0) * kRowBlock + (jj - j0)] += c;
          }
      }
    }
  }
}

}  // namespace

void accumulateCoact(const BitMatrix& m, int32_t* counts) {
  const int64_t n = m.rows;
  if (n == 0 || m.words == 0) return;
  const int64_t nb = (n + kRowBlock - 1) / kRowBlock;
  std::vector<std::pair<int64_t, int64_t>> pairs;  // (ib, jb) with jb >= ib
  for (int64_t ib = 0; ib < nb; ++ib)
    for (int64_t jb = ib; jb < nb; ++jb) pairs.emplace_back(ib, jb);
  const int64_t np = static_cast<int64_t>(pairs.size());
#pragma omp parallel
  {
    std::vector<uint64_t> local(static_cast<size_t>(kRowBlock * kRowBlock));
#pragma omp for schedule(dynamic, 1)
    for (int64_t p = 0; p < np; ++p) {
      const auto [ib, jb] = pairs[static_cast<size_t>(p)];
      const int64_t i0 = ib * kRowBlock, i1 = std::min(n, i0 + kRowBlock);
      const int64_t j0 = jb * kRowBlock, j1 = std::min(n, j0 + kRowBlock);
      std::fill(local.begin(), local.end(), 0);
      for (int64_t w0 = 0; w0 < m.words; w0 += kWordBlock)
        blockKernel(m, i0, i1, j0, j1, w0, std::min(m.words, w0 + kWordBlock), local.data());
      for (int64_t i = i0; i < i1; ++i)
        for (int64_t j = std::max(i, j0); j < j1; ++j)
          counts[i * n + j] += static_cast<int32_t>(local[(i - i0) * kRowBlock + (j - j0)]);
    }
  }
}

void mirrorUpper(int32_t* counts, int64_t n) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < i; ++j) counts[i * n + j] = counts[j * n + i];
}

}  // namespace moefy
