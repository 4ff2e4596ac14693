#include "analysis/record/coact.h"

#include "analysis/common/error.h"

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <string>

namespace moefy {

void BitMatrix::reset(int64_t r, int64_t t) {
  rows = r;
  tokens = t;
  words = (t + 63) / 64;
  bits.assign(static_cast<size_t>(rows * words), 0);
}

namespace {

// Bit k of the result is set when byte k of p[0..8) is nonzero (SWAR: the
// high bit of each nonzero byte, gathered into the top byte by one multiply;
// the shifted copies of the eight bits land on distinct positions of it).
inline uint64_t nonzeroBits8(const uint8_t* p) {
  uint64_t x;
  std::memcpy(&x, p, 8);
  constexpr uint64_t kHigh = 0x8080808080808080ull, kLow = 0x7f7f7f7f7f7f7f7full;
  const uint64_t nz = (((x & kLow) + kLow) | x) & kHigh;
  return ((nz >> 7) * 0x0102040810204080ull) >> 56;
}

// In-place transpose of a 64 x 64 bit matrix, a[r] bit c = entry (r, c):
// swap the off-diagonal 32 x 32 blocks, then the 16 x 16 blocks inside each,
// down to single bits (6 rounds of 32 masked swaps).
inline void transpose64(uint64_t a[64]) {
  uint64_t m = 0x00000000FFFFFFFFull;
  for (int j = 32; j != 0; j >>= 1, m ^= m << j)
    for (int k = 0; k < 64; k = ((k | j) + 1) & ~j) {
      const uint64_t t = ((a[k] >> j) ^ a[k | j]) & m;
      a[k] ^= t << j;
      a[k | j] ^= t;
    }
}

// The nonzero bytes of p[0..64) as bits: one VPTESTMB (AVX-512BW) in place of
// eight nonzeroBits8 steps.
__attribute__((target("avx512bw"))) uint64_t nonzeroBits64Avx512(const uint8_t* p) {
  const __m512i v = _mm512_loadu_si512(p);
  return _mm512_test_epi8_mask(v, v);
}

bool cpuHasAvx512Bw() { return __builtin_cpu_supports("avx512bw"); }

}  // namespace

void packMask(const uint8_t* mask, int64_t tokens, int64_t rows, BitMatrix& out) {
  // Token-major bits first (an eighth of the bytes), then packTokenBits.
  const int64_t G = (rows + 63) / 64;
  std::vector<uint64_t> tokenBits(static_cast<size_t>(tokens * G));
  static const bool bw = cpuHasAvx512Bw();
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < tokens; ++t) {
    const uint8_t* m = mask + t * rows;
    for (int64_t g = 0; g < G; ++g) {
      const int64_t r0 = g * 64, nr = std::min<int64_t>(64, rows - r0);
      uint64_t v = 0;
      if (bw && nr == 64) {
        v = nonzeroBits64Avx512(m + r0);
      } else {
        int64_t i = 0;
        for (; i + 8 <= nr; i += 8) v |= nonzeroBits8(m + r0 + i) << i;
        for (; i < nr; ++i) v |= static_cast<uint64_t>(m[r0 + i] != 0) << i;
      }
      tokenBits[static_cast<size_t>(t * G + g)] = v;
    }
  }
  packTokenBits(tokenBits.data(), tokens, rows, out);
}

void packTokenBits(const uint64_t* tokenBits, int64_t tokens, int64_t rows, BitMatrix& out) {
  out.reset(rows, tokens);
  const int64_t W = out.words, G = (rows + 63) / 64;
#pragma omp parallel for schedule(static)
  for (int64_t wg = 0; wg < W * G; ++wg) {
    const int64_t w = wg / G, g = wg % G;
    const int64_t t0 = w * 64, nt = std::min<int64_t>(64, tokens - t0);
    const int64_t r0 = g * 64, nr = std::min<int64_t>(64, rows - r0);
    uint64_t a[64] = {};
    for (int64_t t = 0; t < nt; ++t) a[t] = tokenBits[(t0 + t) * G + g];
    transpose64(a);
    for (int64_t i = 0; i < nr; ++i) out.bits[static_cast<size_t>((r0 + i) * W + w)] = a[i];
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

__attribute__((target("avx2,popcnt"), always_inline)) inline __m256i pop8(__m256i v, __m256i lut, __m256i low) {
  const __m256i lo = _mm256_and_si256(v, low);
  const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
  return _mm256_add_epi8(_mm256_shuffle_epi8(lut, lo), _mm256_shuffle_epi8(lut, hi));
}

__attribute__((target("avx2,popcnt"), always_inline)) inline uint64_t hsum64(__m256i v, __m256i zero) {
  const __m256i s = _mm256_sad_epu8(v, zero);
  return static_cast<uint64_t>(_mm256_extract_epi64(s, 0)) + static_cast<uint64_t>(_mm256_extract_epi64(s, 1)) +
         static_cast<uint64_t>(_mm256_extract_epi64(s, 2)) + static_cast<uint64_t>(_mm256_extract_epi64(s, 3));
}

// AVX2 variant: 2 x 4 row tiles, 4 words per 256-bit vector, popcount by
// nibble lookup (vpshufb) into byte counters that are widened with vpsadbw
// every 31 vectors (8 bits per byte per vector, 31 x 8 < 256).
__attribute__((target("avx2,popcnt"))) void blockKernelAvx2(const BitMatrix& m, int64_t i0, int64_t i1, int64_t j0,
                                                            int64_t j1, int64_t w0, int64_t w1, uint64_t* local) {
  const int64_t W = m.words;
  const __m256i lut =
      _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
  const __m256i low = _mm256_set1_epi8(0x0f);
  const __m256i zero = _mm256_setzero_si256();
  const int64_t wv = w0 + ((w1 - w0) / 4) * 4;
#define pop(v) pop8(v, lut, low)
#define hsum(v) hsum64(v, zero)
  for (int64_t i = i0; i < i1; i += 2) {
    for (int64_t j = j0; j < j1; j += 4) {
      if (j + 3 < i) continue;  // tile entirely below the diagonal
      if (i + 2 > i1 || j + 4 > j1) {
        for (int64_t ii = i; ii < std::min(i + 2, i1); ++ii)
          for (int64_t jj = j; jj < std::min(j + 4, j1); ++jj) {
            const uint64_t* a = m.bits.data() + ii * W;
            const uint64_t* b = m.bits.data() + jj * W;
            uint64_t c = 0;
            for (int64_t w = w0; w < w1; ++w) c += static_cast<uint64_t>(_mm_popcnt_u64(a[w] & b[w]));
            local[(ii - i0) * kRowBlock + (jj - j0)] += c;
          }
        continue;
      }
      const uint64_t* a0 = m.bits.data() + i * W;
      const uint64_t* a1 = a0 + W;
      const uint64_t* b0 = m.bits.data() + j * W;
      const uint64_t* b1 = b0 + W;
      const uint64_t* b2 = b1 + W;
      const uint64_t* b3 = b2 + W;
      uint64_t tot[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      for (int64_t w = w0; w < wv;) {
        const int64_t stop = std::min(wv, w + 31 * 4);
        __m256i c0 = zero, c1 = zero, c2 = zero, c3 = zero, c4 = zero, c5 = zero, c6 = zero, c7 = zero;
        for (; w < stop; w += 4) {
          const __m256i x0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a0 + w));
          const __m256i x1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a1 + w));
          __m256i y = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b0 + w));
          c0 = _mm256_add_epi8(c0, pop(_mm256_and_si256(x0, y)));
          c4 = _mm256_add_epi8(c4, pop(_mm256_and_si256(x1, y)));
          y = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b1 + w));
          c1 = _mm256_add_epi8(c1, pop(_mm256_and_si256(x0, y)));
          c5 = _mm256_add_epi8(c5, pop(_mm256_and_si256(x1, y)));
          y = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b2 + w));
          c2 = _mm256_add_epi8(c2, pop(_mm256_and_si256(x0, y)));
          c6 = _mm256_add_epi8(c6, pop(_mm256_and_si256(x1, y)));
          y = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b3 + w));
          c3 = _mm256_add_epi8(c3, pop(_mm256_and_si256(x0, y)));
          c7 = _mm256_add_epi8(c7, pop(_mm256_and_si256(x1, y)));
        }
        tot[0] += hsum(c0), tot[1] += hsum(c1), tot[2] += hsum(c2), tot[3] += hsum(c3);
        tot[4] += hsum(c4), tot[5] += hsum(c5), tot[6] += hsum(c6), tot[7] += hsum(c7);
      }
      for (int64_t w = wv; w < w1; ++w)
        for (int r = 0; r < 2; ++r)
          for (int c = 0; c < 4; ++c)
            tot[r * 4 + c] += static_cast<uint64_t>(_mm_popcnt_u64((r ? a1 : a0)[w] & (b0 + c * W)[w]));
      for (int r = 0; r < 2; ++r)
        for (int c = 0; c < 4; ++c) local[(i - i0 + r) * kRowBlock + (j - j0 + c)] += tot[r * 4 + c];
    }
  }
}
#undef pop
#undef hsum

// AVX-512 variant: 4 x 4 row tiles, 8 words per 512-bit vector, native
// VPOPCNTQ into 16 uint64 lane accumulators. The word tail of a block is a
// masked load (zeros beyond w1). An edge tile (fewer than 4 rows or columns
// left) reads its last valid row again in place of the missing ones and
// stores only the valid pairs, so every tile runs the same loop.
__attribute__((target("avx512f,avx512vpopcntdq"), always_inline)) inline void popcountStep4x4(__m512i acc[4][4],
                                                                                              const __m512i x[4],
                                                                                              const __m512i y[4]) {
  // Unrolled, so that the 16 accumulators stay in registers: as loops (GCC
  // -O2 does not unroll them) acc lived on the stack, and every step loaded,
  // added and stored it, a store-forwarding chain that made the kernel 3-4x
  // slower.
#pragma GCC unroll 4
  for (int r = 0; r < 4; ++r)
#pragma GCC unroll 4
    for (int c = 0; c < 4; ++c)
      acc[r][c] = _mm512_add_epi64(acc[r][c], _mm512_popcnt_epi64(_mm512_and_si512(x[r], y[c])));
}

__attribute__((target("avx512f,avx512vpopcntdq"))) void blockKernelAvx512(const BitMatrix& m, int64_t i0, int64_t i1,
                                                                          int64_t j0, int64_t j1, int64_t w0,
                                                                          int64_t w1, uint64_t* local) {
  const int64_t W = m.words;
  const uint64_t* base = m.bits.data();
  const int64_t full = w0 + ((w1 - w0) / 8) * 8;
  const __mmask8 tailMask = static_cast<__mmask8>((1u << (w1 - full)) - 1u);
  for (int64_t i = i0; i < i1; i += 4) {
    const uint64_t* a[4];
    for (int r = 0; r < 4; ++r) a[r] = base + std::min(i + r, i1 - 1) * W;
    for (int64_t j = j0; j < j1; j += 4) {
      if (j + 3 < i) continue;  // tile entirely below the diagonal
      const uint64_t* b[4];
      for (int c = 0; c < 4; ++c) b[c] = base + std::min(j + c, j1 - 1) * W;
      __m512i acc[4][4];
#pragma GCC unroll 4
      for (int r = 0; r < 4; ++r)
#pragma GCC unroll 4
        for (int c = 0; c < 4; ++c) acc[r][c] = _mm512_setzero_si512();
      __m512i x[4], y[4];
      for (int64_t w = w0; w < full; w += 8) {
#pragma GCC unroll 4
        for (int r = 0; r < 4; ++r) x[r] = _mm512_loadu_si512(a[r] + w);
#pragma GCC unroll 4
        for (int c = 0; c < 4; ++c) y[c] = _mm512_loadu_si512(b[c] + w);
        popcountStep4x4(acc, x, y);
      }
      if (tailMask) {
#pragma GCC unroll 4
        for (int r = 0; r < 4; ++r) x[r] = _mm512_maskz_loadu_epi64(tailMask, a[r] + full);
#pragma GCC unroll 4
        for (int c = 0; c < 4; ++c) y[c] = _mm512_maskz_loadu_epi64(tailMask, b[c] + full);
        popcountStep4x4(acc, x, y);
      }
      alignas(64) uint64_t lanes[8];
      for (int r = 0; r < 4 && i + r < i1; ++r)
        for (int c = 0; c < 4 && j + c < j1; ++c)
          if (j + c >= i + r) {
            _mm512_store_si512(lanes, acc[r][c]);
            uint64_t sum = 0;
            for (uint64_t v : lanes) sum += v;
            local[(i - i0 + r) * kRowBlock + (j - j0 + c)] += sum;
          }
    }
  }
}

// The fastest kernel `available` allows: Avx512, else Avx2, else Scalar
// (the binary counts and the soft co-activation need different CPU features).
CoactKernel fastestOf(bool (*available)(CoactKernel)) {
  for (CoactKernel k : {CoactKernel::Avx512, CoactKernel::Avx2})
    if (available(k)) return k;
  return CoactKernel::Scalar;
}

bool cpuHasAvx2Popcnt() { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt"); }
bool cpuHasAvx512Popcnt() { return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vpopcntdq"); }

}  // namespace

bool coactKernelAvailable(CoactKernel kernel) {
  switch (kernel) {
    case CoactKernel::Avx2:
      return cpuHasAvx2Popcnt();
    case CoactKernel::Avx512:
      return cpuHasAvx512Popcnt();
    default:
      return true;
  }
}

CoactKernel bestCoactKernel() { return fastestOf(coactKernelAvailable); }

const char* coactKernelName(CoactKernel kernel) {
  switch (kernel) {
    case CoactKernel::Scalar:
      return "scalar";
    case CoactKernel::Avx2:
      return "avx2";
    case CoactKernel::Avx512:
      return "avx512";
    default:
      return "best";
  }
}

void accumulateCoact(const BitMatrix& m, int32_t* counts, CoactKernel kernel) {
  if (kernel == CoactKernel::Best) kernel = bestCoactKernel();
  if (!coactKernelAvailable(kernel))
    throw ParameterError(std::string("co-activation kernel ") + coactKernelName(kernel) + " does not run on this CPU");
  using Kernel = void (*)(const BitMatrix&, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, uint64_t*);
  const Kernel blockFn = kernel == CoactKernel::Avx512 ? blockKernelAvx512
                         : kernel == CoactKernel::Avx2 ? blockKernelAvx2
                                                       : blockKernel;
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
        blockFn(m, i0, i1, j0, j1, w0, std::min(m.words, w0 + kWordBlock), local.data());
      for (int64_t i = i0; i < i1; ++i)
        for (int64_t j = std::max(i, j0); j < j1; ++j)
          counts[i * n + j] += static_cast<int32_t>(local[(i - i0) * kRowBlock + (j - j0)]);
    }
  }
}

void mirrorUpper(int32_t* counts, int64_t n) {
  // 32 x 32 tiles, so that the column-wise reads of the upper triangle touch
  // 32 cache lines per tile instead of one line per element.
  constexpr int64_t kT = 32;
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t ib = 0; ib < n; ib += kT)
    for (int64_t jb = 0; jb <= ib; jb += kT)
      for (int64_t i = ib; i < std::min(n, ib + kT); ++i)
        for (int64_t j = jb; j < std::min(i, jb + kT); ++j) counts[i * n + j] = counts[j * n + i];
}

// ---------------------------------------------------------------- soft co-activation
//
// Per block b the update min(1, R_b^T R_b) is a rank-8 product followed by a
// clamp, so it cannot be folded into one long GEMM: the clamp sits between
// every 8 multiply-adds. The kernel is organised like a GEMM whose K loop is
// cut into pieces of 8: an output tile of kTile x kTile floats (147 KB, in L2)
// is owned by one thread while the blocks stream past; the micro-kernel keeps
// a 6 x 16 product in 12 AVX registers for the 8 tokens of one block, then
// clamps it and adds it into the tile. Only tiles on or above the diagonal
// are computed; the write-back mirrors.
//
// Sparsity: a row i whose 8 values are all zero in a block adds nothing to
// row i of S, so each block's rows are packed compacted (per tile, the rows
// active somewhere in the block, ascending, padded to a multiple of 6 with a
// dummy row). At 10 % density a block keeps about 1 - 0.9^8 = 57 % of the
// rows, and the work shrinks by as much. The column side stays dense
// (strips of 16 contiguous columns) so the flush into the tile stays vector.

namespace {

constexpr int64_t kMr = 6;       // rows of the micro-tile (broadcast side)
constexpr int64_t kNr = 16;      // columns of the micro-tile (two 8-float vectors)
constexpr int64_t kTile = 192;   // tile edge: 32 row strips, 12 column strips
constexpr int64_t kGroup = 16;   // blocks per pass over a column strip (its tile slice stays in L1)
constexpr int64_t kSuper = 512;  // blocks packed at once (4096 tokens), shared by the threads
static_assert(kTile % kMr == 0 && kTile % kNr == 0);

// The packed blocks of one super-group.
struct SoftPanels {
  int64_t nb = 0, nt = 0, cap = 0, stripsB = 0;
  std::vector<float> aval;    // [nb][cap][8]: ReLU values of the compacted rows, k = token in block
  std::vector<int32_t> aidx;  // [nb][cap]: row within its tile, kTile = padding
  std::vector<int32_t> aseg;  // [nb][nt + 1]: slot offset of each tile's segment (multiples of 6)
  std::vector<float> bp;      // [stripsB][nb * 8][16]: ReLU values, dense columns
};

// Packs one super-group (parallel over blocks). SSE only (x86-64 baseline):
// ReLU as max(0, x) (a NaN stays NaN, as in numpy), and the row compaction
// is branch-free (a slot is always written, and kept only if active), since
// on activations whether a row is active is close to a coin toss.
void packPanels(const float* h, int64_t n, const SoftBlock* blocks, SoftPanels& P) {
  const int64_t nb = P.nb, rows = nb * 8;
  const __m128 zero = _mm_setzero_ps();
#pragma omp for schedule(static)
  for (int64_t b = 0; b < nb; ++b) {
    const float* src[8];
    bool real[8];
    const int64_t len = blocks[b].len;
    for (int64_t k = 0; k < 8; ++k) {
      real[k] = k < len;
      src[k] = real[k] ? h + (blocks[b].first + k) * n : nullptr;
    }
    // Columns, dense.
    for (int64_t k = 0; k < 8; ++k) {
      const int64_t row = b * 8 + k;
      for (int64_t s = 0; s < P.stripsB; ++s) {
        float* dst = P.bp.data() + (s * rows + row) * kNr;
        const int64_t c0 = s * kNr;
        if (real[k] && c0 + kNr <= n) {
          for (int64_t c = 0; c < kNr; c += 4) _mm_storeu_ps(dst + c, _mm_max_ps(zero, _mm_loadu_ps(src[k] + c0 + c)));
        } else {
          for (int64_t c = 0; c < kNr; ++c) dst[c] = (real[k] && c0 + c < n) ? std::max(src[k][c0 + c], 0.0f) : 0.0f;
        }
      }
    }
    // Rows, compacted per tile: slot i is written, and kept when the row is active.
    float* val = P.aval.data() + b * P.cap * 8;
    int32_t* idx = P.aidx.data() + b * P.cap;
    int32_t* seg = P.aseg.data() + b * (P.nt + 1);
    int64_t slot = 0;
    for (int64_t I = 0; I < P.nt; ++I) {
      seg[I] = static_cast<int32_t>(slot);
      const int64_t i0 = I * kTile, i1 = std::min(n, i0 + kTile);
      int64_t i = i0;
      for (; i + 4 <= i1; i += 4) {
        __m128 v[8];
        __m128 any = zero;
        for (int64_t k = 0; k < 8; ++k) {
          v[k] = real[k] ? _mm_max_ps(zero, _mm_loadu_ps(src[k] + i)) : zero;
          any = _mm_or_ps(any, _mm_cmpgt_ps(v[k], zero));
        }
        const int bits = _mm_movemask_ps(any);
        if (!bits) continue;
        _MM_TRANSPOSE4_PS(v[0], v[1], v[2], v[3]);  // v[c] = tokens 0..3 of column i + c
        _MM_TRANSPOSE4_PS(v[4], v[5], v[6], v[7]);  // v[4 + c] = tokens 4..7
        for (int c = 0; c < 4; ++c) {
          _mm_storeu_ps(val + slot * 8, v[c]);
          _mm_storeu_ps(val + slot * 8 + 4, v[4 + c]);
          idx[slot] = static_cast<int32_t>(i + c - i0);
          slot += (bits >> c) & 1;
        }
      }
      for (; i < i1; ++i) {
        bool any = false;
        for (int64_t k = 0; k < 8; ++k) {
          const float x = real[k] ? std::max(src[k][i], 0.0f) : 0.0f;
          val[slot * 8 + k] = x;
          any |= x > 0.0f;
        }
        idx[slot] = static_cast<int32_t>(i - i0);
        slot += any;
      }
      while (slot % kMr) {
        std::fill_n(val + slot * 8, 8, 0.0f);
        idx[slot++] = static_cast<int32_t>(kTile);
      }
    }
    seg[P.nt] = static_cast<int32_t>(slot);
  }
}

// For the blocks [g0, g1) of the panels and column strip sj of tile (I, J):
// L[row][sj * 16 ..] += min(1, a_row . B) for every compacted row strip.
// L is [kTile + 1][kTile] (the last row takes the padding).
void softTileScalar(const SoftPanels& P, int64_t I, bool diag, int64_t sj, int64_t g0, int64_t g1, const float* B0,
                    float* L, int64_t /*strips: 1*/) {
  const int64_t rows = P.nb * 8;
  for (int64_t b = g0; b < g1; ++b) {
    const float* B = B0 + (sj * rows + b * 8) * kNr;
    const int32_t* seg = P.aseg.data() + b * (P.nt + 1);
    for (int64_t slot = seg[I]; slot < seg[I + 1]; slot += kMr) {
      const int32_t* idx = P.aidx.data() + b * P.cap + slot;
      if (diag && idx[0] >= (sj + 1) * kNr) break;  // the rest lies below the diagonal
      const float* A = P.aval.data() + (b * P.cap + slot) * 8;
      float c[kMr][kNr] = {};
      for (int k = 0; k < 8; ++k)
        for (int r = 0; r < kMr; ++r)
          for (int q = 0; q < kNr; ++q) c[r][q] += A[r * 8 + k] * B[k * kNr + q];
      for (int r = 0; r < kMr; ++r) {
        float* l = L + idx[r] * kTile + sj * kNr;
        for (int q = 0; q < kNr; ++q) l[q] += std::min(c[r][q], 1.0f);
      }
    }
  }
}

// p[0..16) += min(x, 1).
__attribute__((target("avx2,fma"), always_inline)) inline void softFlush(float* p, __m256 x0, __m256 x1, __m256 one) {
  _mm256_storeu_ps(p, _mm256_add_ps(_mm256_loadu_ps(p), _mm256_min_ps(x0, one)));
  _mm256_storeu_ps(p + 8, _mm256_add_ps(_mm256_loadu_ps(p + 8), _mm256_min_ps(x1, one)));
}

__attribute__((target("avx2,fma"))) void softTileAvx2(const SoftPanels& P, int64_t I, bool diag, int64_t sj, int64_t g0,
                                                      int64_t g1, const float* B0, float* L, int64_t /*strips: 1*/) {
  const int64_t rows = P.nb * 8;
  const __m256 one = _mm256_set1_ps(1.0f);
  float* Lc = L + sj * kNr;
  for (int64_t b = g0; b < g1; ++b) {
    const float* B = B0 + (sj * rows + b * 8) * kNr;
    const int32_t* seg = P.aseg.data() + b * (P.nt + 1);
    for (int64_t slot = seg[I]; slot < seg[I + 1]; slot += kMr) {
      const int32_t* idx = P.aidx.data() + b * P.cap + slot;
      if (diag && idx[0] >= (sj + 1) * kNr) break;  // the rest lies below the diagonal
      const float* A = P.aval.data() + (b * P.cap + slot) * 8;
      __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
      __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
#pragma GCC unroll 8
      for (int k = 0; k < 8; ++k) {
        const __m256 b0 = _mm256_loadu_ps(B + k * kNr), b1 = _mm256_loadu_ps(B + k * kNr + 8);
        __m256 av = _mm256_broadcast_ss(A + 0 * 8 + k);
        c00 = _mm256_fmadd_ps(av, b0, c00), c01 = _mm256_fmadd_ps(av, b1, c01);
        av = _mm256_broadcast_ss(A + 1 * 8 + k);
        c10 = _mm256_fmadd_ps(av, b0, c10), c11 = _mm256_fmadd_ps(av, b1, c11);
        av = _mm256_broadcast_ss(A + 2 * 8 + k);
        c20 = _mm256_fmadd_ps(av, b0, c20), c21 = _mm256_fmadd_ps(av, b1, c21);
        av = _mm256_broadcast_ss(A + 3 * 8 + k);
        c30 = _mm256_fmadd_ps(av, b0, c30), c31 = _mm256_fmadd_ps(av, b1, c31);
        av = _mm256_broadcast_ss(A + 4 * 8 + k);
        c40 = _mm256_fmadd_ps(av, b0, c40), c41 = _mm256_fmadd_ps(av, b1, c41);
        av = _mm256_broadcast_ss(A + 5 * 8 + k);
        c50 = _mm256_fmadd_ps(av, b0, c50), c51 = _mm256_fmadd_ps(av, b1, c51);
      }
      softFlush(Lc + idx[0] * kTile, c00, c01, one);
      softFlush(Lc + idx[1] * kTile, c10, c11, one);
      softFlush(Lc + idx[2] * kTile, c20, c21, one);
      softFlush(Lc + idx[3] * kTile, c30, c31, one);
      softFlush(Lc + idx[4] * kTile, c40, c41, one);
      softFlush(Lc + idx[5] * kTile, c50, c51, one);
    }
  }
}

// The AVX-512 micro-kernel: S (1 or 2) adjacent column strips at once, one
// 16-float vector per strip, so a 6-row slot group keeps 6 x S accumulators
// (12 of the 32 registers for a pair; 2 B loads and 6 broadcasts per 12 FMAs).
template <int S>
__attribute__((target("avx512f"), always_inline)) inline void softStrips512(const SoftPanels& P, int64_t I, bool diag,
                                                                            int64_t sj, int64_t g0, int64_t g1,
                                                                            const float* B0, float* L) {
  const int64_t rows = P.nb * 8;
  const __m512 one = _mm512_set1_ps(1.0f);
  float* Lc = L + sj * kNr;
  for (int64_t b = g0; b < g1; ++b) {
    const float* B[2] = {B0 + (sj * rows + b * 8) * kNr, B0 + ((sj + S - 1) * rows + b * 8) * kNr};
    const int32_t* seg = P.aseg.data() + b * (P.nt + 1);
    for (int64_t slot = seg[I]; slot < seg[I + 1]; slot += kMr) {
      const int32_t* idx = P.aidx.data() + b * P.cap + slot;
      if (diag && idx[0] >= (sj + S) * kNr) break;  // the rest lies below the diagonal
      const float* A = P.aval.data() + (b * P.cap + slot) * 8;
      __m512 c[kMr][S];
#pragma GCC unroll 6
      for (int r = 0; r < kMr; ++r)
#pragma GCC unroll 2
        for (int q = 0; q < S; ++q) c[r][q] = _mm512_setzero_ps();
#pragma GCC unroll 8
      for (int k = 0; k < 8; ++k) {
        __m512 bv[S];
#pragma GCC unroll 2
        for (int q = 0; q < S; ++q) bv[q] = _mm512_loadu_ps(B[q] + k * kNr);
#pragma GCC unroll 6
        for (int r = 0; r < kMr; ++r) {
          const __m512 av = _mm512_set1_ps(A[r * 8 + k]);
#pragma GCC unroll 2
          for (int q = 0; q < S; ++q) c[r][q] = _mm512_fmadd_ps(av, bv[q], c[r][q]);
        }
      }
#pragma GCC unroll 6
      for (int r = 0; r < kMr; ++r) {
        float* l = Lc + idx[r] * kTile;
#pragma GCC unroll 2
        for (int q = 0; q < S; ++q)
          // (maskz with every lane: _mm512_min_ps trips GCC 12's -Wmaybe-uninitialized)
          _mm512_storeu_ps(l + q * kNr,
                           _mm512_add_ps(_mm512_loadu_ps(l + q * kNr), _mm512_maskz_min_ps(0xFFFF, c[r][q], one)));
      }
    }
  }
}

__attribute__((target("avx512f"))) void softTileAvx512(const SoftPanels& P, int64_t I, bool diag, int64_t sj,
                                                       int64_t g0, int64_t g1, const float* B0, float* L,
                                                       int64_t strips) {
  if (strips >= 2)
    softStrips512<2>(P, I, diag, sj, g0, g1, B0, L);
  else
    softStrips512<1>(P, I, diag, sj, g0, g1, B0, L);
}

bool cpuHasAvx2Fma() { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"); }

}  // namespace

bool softCoactKernelAvailable(CoactKernel kernel) {
  switch (kernel) {
    case CoactKernel::Avx2:
      return cpuHasAvx2Fma();
    case CoactKernel::Avx512:
      return __builtin_cpu_supports("avx512f");
    default:
      return true;
  }
}

CoactKernel bestSoftCoactKernel() { return fastestOf(softCoactKernelAvailable); }

void accumulateSoftCoact(const float* h, int64_t tokens, int64_t n, const std::vector<SoftBlock>& blocks, float* S,
                         CoactKernel kernel) {
  for (size_t b = 0; b < blocks.size(); ++b) {
    const SoftBlock& k = blocks[b];
    if (k.len < 1 || k.len > 8 || k.first < 0 || k.first + k.len > tokens)
      throw ParameterError("soft co-activation block " + std::to_string(b) + " (first " + std::to_string(k.first) +
                           ", length " + std::to_string(k.len) + ") outside " + std::to_string(tokens) +
                           " tokens or not 1..8 long");
  }
  if (kernel == CoactKernel::Best) kernel = bestSoftCoactKernel();
  if (!softCoactKernelAvailable(kernel))
    throw ParameterError(std::string("soft co-activation kernel ") + coactKernelName(kernel) +
                         " does not run on this CPU");
  if (n <= 0 || blocks.empty()) return;
  const auto tileKernel = kernel == CoactKernel::Avx512 ? softTileAvx512
                          : kernel == CoactKernel::Avx2 ? softTileAvx2
                                                        : softTileScalar;
  const int64_t stripStep = kernel == CoactKernel::Avx512 ? 2 : 1;  // column strips per kernel call
  const int64_t nt = (n + kTile - 1) / kTile;
  std::vector<std::pair<int64_t, int64_t>> tiles;  // (I, J), J >= I
  for (int64_t I = 0; I < nt; ++I)
    for (int64_t J = I; J < nt; ++J) tiles.emplace_back(I, J);
  const int64_t ntiles = static_cast<int64_t>(tiles.size());
  const int64_t nblocks = static_cast<int64_t>(blocks.size());
  SoftPanels P;
  P.nt = nt;
  // Tiles are multiples of 6 rows, so the padding never exceeds this; + 4: the
  // branch-free compaction writes up to 3 slots past the last kept one.
  P.cap = (n + kMr - 1) / kMr * kMr + 4;
  P.stripsB = (n + kNr - 1) / kNr;
  const int64_t maxNb = std::min(kSuper, nblocks);
  P.aval.resize(static_cast<size_t>(maxNb * P.cap * 8));
  P.aidx.resize(static_cast<size_t>(maxNb * P.cap));
  P.aseg.resize(static_cast<size_t>(maxNb * (nt + 1)));
  P.bp.resize(static_cast<size_t>(P.stripsB * maxNb * 8 * kNr));
#pragma omp parallel
  {
    std::vector<float> L(static_cast<size_t>((kTile + 1) * kTile));
    for (int64_t s0 = 0; s0 < nblocks; s0 += kSuper) {
#pragma omp single
      P.nb = std::min(kSuper, nblocks - s0);
      packPanels(h, n, blocks.data() + s0, P);  // omp for (implicit barrier)
#pragma omp for schedule(dynamic, 1)
      for (int64_t p = 0; p < ntiles; ++p) {
        const auto [I, J] = tiles[static_cast<size_t>(p)];
        const int64_t i0 = I * kTile, j0 = J * kTile;
        const int64_t rowsI = std::min(kTile, n - i0), colsJ = std::min(kTile, n - j0);
        const int64_t sJ = (colsJ + kNr - 1) / kNr;
        const float* B0 = P.bp.data() + (j0 / kNr) * P.nb * 8 * kNr;
        std::fill(L.begin(), L.end(), 0.0f);
        for (int64_t g0 = 0; g0 < P.nb; g0 += kGroup)
          for (int64_t sj = 0; sj < sJ; sj += stripStep)
            tileKernel(P, I, I == J, sj, g0, std::min(P.nb, g0 + kGroup), B0, L.data(), std::min(stripStep, sJ - sj));
        // Write back: the upper triangle and its mirror.
        for (int64_t i = 0; i < rowsI; ++i) {
          const float* l = L.data() + i * kTile;
          float* srow = S + (i0 + i) * n + j0;
          for (int64_t j = (I == J ? i : 0); j < colsJ; ++j) srow[j] += l[j];
        }
        for (int64_t j = 0; j < colsJ; ++j) {
          float* srow = S + (j0 + j) * n + i0;
          const int64_t iEnd = I == J ? j : rowsI;  // strictly below the diagonal on a diagonal tile
          for (int64_t i = 0; i < iEnd; ++i) srow[i] += L[static_cast<size_t>(i * kTile + j)];
        }
      }
    }
  }
}

}  // namespace moefy
