#include "analysis/moe/moe_ffn.h"

#include <ATen/Parallel.h>
#include <dlfcn.h>
#include <omp.h>
#include <torch/torch.h>
#include <unistd.h>

#include <immintrin.h>
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>

#include "analysis/common/error.h"
#include "analysis/model/device.h"

namespace moefy {

namespace {

// ---- BLAS: CBLAS from the process (Debian's libtorch loads libblas.so.3,
// which is OpenBLAS when installed), found at run time so no link change is
// needed; ATen matmuls on borrowed buffers otherwise.
constexpr int kRowMajor = 101, kNoTrans = 111, kTrans = 112;
using SgemmFn = void (*)(int, int, int, int, int, int, float, const float*, int, const float*, int, float, float*, int);
using SgemvFn = void (*)(int, int, int, int, float, const float*, int, const float*, int, float, float*, int);

struct Blas {
  SgemmFn sgemm = nullptr;
  SgemvFn sgemv = nullptr;
  Blas() {
    if (std::getenv("MOEFY_NO_CBLAS")) return;
    sgemm = reinterpret_cast<SgemmFn>(dlsym(RTLD_DEFAULT, "cblas_sgemm"));
    sgemv = reinterpret_cast<SgemvFn>(dlsym(RTLD_DEFAULT, "cblas_sgemv"));
    if (!sgemm || !sgemv) {
      void* h = dlopen("libblas.so.3", RTLD_NOW | RTLD_LOCAL);
      if (h) {
        sgemm = reinterpret_cast<SgemmFn>(dlsym(h, "cblas_sgemm"));
        sgemv = reinterpret_cast<SgemvFn>(dlsym(h, "cblas_sgemv"));
      }
    }
    if (!sgemm || !sgemv) sgemm = nullptr, sgemv = nullptr;
  }
};
const Blas& blas() {
  static Blas b;
  return b;
}

at::Tensor borrow(const float* p, int64_t rows, int64_t cols, int64_t ld) {
  return at::from_blob(const_cast<float*>(p), {rows, cols}, {ld, 1}, at::TensorOptions().dtype(at::kFloat));
}

// C[M, N] = A[M, K] @ op(B) + beta C, row-major; B is [N, K] when transB, else [K, N].
void gemm(bool transB, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb,
          float beta, float* C, int64_t ldc) {
  const Blas& b = blas();
  if (M == 1 && b.sgemv) {
    // y[N] = op(B) x: B [N, K] -> NoTrans; B [K, N] -> Trans.
    if (transB)
      b.sgemv(kRowMajor, kNoTrans, int(N), int(K), 1.0f, B, int(ldb), A, 1, beta, C, 1);
    else
      b.sgemv(kRowMajor, kTrans, int(K), int(N), 1.0f, B, int(ldb), A, 1, beta, C, 1);
    return;
  }
  if (b.sgemm) {
    b.sgemm(kRowMajor, kNoTrans, transB ? kTrans : kNoTrans, int(M), int(N), int(K), 1.0f, A, int(lda), B, int(ldb),
            beta, C, int(ldc));
    return;
  }
  at::Tensor a = borrow(A, M, K, lda);
  at::Tensor bb = transB ? borrow(B, N, K, ldb).t() : borrow(B, K, N, ldb);
  at::Tensor c = borrow(C, M, N, ldc);
  if (beta == 0.0f)
    at::mm_out(c, a, bb);
  else
    c.addmm_(a, bb, 1.0, 1.0);
}

inline float activate(float v, Activation act) {
  switch (act) {
    // Branch-free (maxss; a NaN passes through as in torch.relu): the branch of
    // `v > 0 ? v : 0` was mispredicted for about half of the neurons.
    case Activation::ReLU:
      return std::max(v, 0.0f);
    case Activation::GELU: return 0.5f * v * (1.0f + std::erf(v * 0.70710678118654752f));
    case Activation::GELUTanh: {
      float u = 0.7978845608028654f * (v + 0.044715f * v * v * v);
      return 0.5f * v * (1.0f + std::tanh(u));
    }
    case Activation::SiLU: return v / (1.0f + std::exp(-v));
  }
  return v;
}

// u[rows, s] in place: act(u + bias) (bias [s] or null), or act(g) * u for a
// gated FFN (g [rows, s]). The activation is dispatched once per call, not per
// element: inside the loop it was reloaded and branched on for every element
// (the stores to u may alias it), and the ReLU loop did not vectorise.
template <Activation A>
void activateRowsAs(float* __restrict u, const float* __restrict g, const float* __restrict bias, int64_t rows,
                    int64_t s) {
  if (g) {
#pragma omp simd
    for (int64_t i = 0; i < rows * s; ++i) u[i] = activate(g[i], A) * u[i];
    return;
  }
  for (int64_t t = 0; t < rows; ++t, u += s) {
    if (bias) {
#pragma omp simd
      for (int64_t j = 0; j < s; ++j) u[j] = activate(u[j] + bias[j], A);
    } else {
#pragma omp simd
      for (int64_t j = 0; j < s; ++j) u[j] = activate(u[j], A);
    }
  }
}

void activateExpertRows(Activation act, float* u, const float* g, const float* bias, int64_t rows, int64_t s) {
  switch (act) {
    case Activation::ReLU:
      return activateRowsAs<Activation::ReLU>(u, g, bias, rows, s);
    case Activation::GELU:
      return activateRowsAs<Activation::GELU>(u, g, bias, rows, s);
    case Activation::GELUTanh:
      return activateRowsAs<Activation::GELUTanh>(u, g, bias, rows, s);
    case Activation::SiLU:
      return activateRowsAs<Activation::SiLU>(u, g, bias, rows, s);
  }
}

// ---- Few-token expert kernels (AVX2 + FMA, chosen at run time) -------------
// An expert that a handful of tokens picked is a [cnt x d] by [d x s] product
// with cnt of 2..~16: too small for BLAS's packing to pay off, and in a batch
// every such call streams a fresh expert block from memory. These kernels
// read each weight once per block of tokens, straight from the contiguous
// expert layout, with register blocking; they need d % 8 == 0.

bool fewTokenSimd() {
  static const bool ok = !std::getenv("MOEFY_NO_SIMD") && __builtin_cpu_supports("avx2") &&
                         __builtin_cpu_supports("fma");
  return ok;
}

__attribute__((target("avx2,fma"), always_inline)) inline float hsum8(__m256 v) {
  __m128 a = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  a = _mm_add_ps(a, _mm_movehl_ps(a, a));
  a = _mm_add_ss(a, _mm_movehdup_ps(a));
  return _mm_cvtss_f32(a);
}

// Token blocks: a count of tokens is cut into blocks of 4 and 3 (2 and 1 only
// for counts 1, 2 and 5). A block of T tokens keeps T x R accumulators, and a
// block of 1 or 2 tokens has too few independent FMA chains to hide the FMA
// latency (3 or 6 of them against the 8 that two 4-cycle pipes need): with
// 4 + 4 + 1 for 9 tokens the last token cost as much as two. 9 = 3 + 3 + 3.
// sizes: room for cnt / 3 + 2 entries; returns the number of blocks.
inline int tokenBlocks(int64_t cnt, int* sizes) {
  int64_t fours = cnt / 4, threes = 0, rest = 0;
  switch (cnt % 4) {
    case 3:
      threes = 1;
      break;
    case 2:
      fours >= 1 ? (--fours, threes = 2) : (rest = 2);
      break;
    case 1:
      if (fours >= 2)
        fours -= 2, threes = 3;
      else if (fours == 1)
        fours = 0, threes = 1, rest = 2;
      else
        rest = 1;
      break;
    default:
      break;
  }
  int m = 0;
  for (int64_t i = 0; i < fours; ++i) sizes[m++] = 4;
  for (int64_t i = 0; i < threes; ++i) sizes[m++] = 3;
  if (rest) sizes[m++] = static_cast<int>(rest);
  return m;
}

// u[t * s + r] = x_t . w_r for T tokens (rows of x, stride d) and R weight rows.
// With `pf`, the rows pf[r * d ..] of another matrix of the same shape (the
// expert's down block) are requested into L2 as the weight rows stream past,
// one cache line of it per line of w. The loop order keeps every value in the
// 16 AVX2 registers: T x R accumulators plus either R weight vectors and one
// token vector (T = 4, R = 3) or T token vectors and one weight vector.
template <int T, int R, bool PF>
__attribute__((target("avx2,fma"))) void dotBlock(const float* const* xs, const float* w, int64_t d, float* u,
                                                  int64_t s, const float* pf) {
  // The first token block passes `pf` = w + R * d: its own next R rows, one
  // row block ahead (the hardware prefetchers fall behind the R interleaved
  // row streams; about 2-3x slower without it).
  static_assert(T * R + std::min(T, R) + 1 <= 16, "dotBlock: accumulators and operands exceed 16 registers");
  __m256 acc[T][R];
  #pragma GCC unroll 4
  for (int t = 0; t < T; ++t)
#pragma GCC unroll 12
    for (int r = 0; r < R; ++r) acc[t][r] = _mm256_setzero_ps();
  for (int64_t c = 0; c < d; c += 8) {
    if constexpr (PF) {
      if ((c & 15) == 0)
#pragma GCC unroll 12
        for (int r = 0; r < R; ++r) _mm_prefetch(reinterpret_cast<const char*>(pf + r * d + c), _MM_HINT_T1);
    }
    if constexpr (R <= T) {
      __m256 wv[R];
#pragma GCC unroll 12
      for (int r = 0; r < R; ++r) wv[r] = _mm256_loadu_ps(w + r * d + c);
#pragma GCC unroll 4
      for (int t = 0; t < T; ++t) {
        const __m256 xv = _mm256_loadu_ps(xs[t] + c);
#pragma GCC unroll 12
        for (int r = 0; r < R; ++r) acc[t][r] = _mm256_fmadd_ps(xv, wv[r], acc[t][r]);
      }
    } else {
      __m256 xv[T];
#pragma GCC unroll 4
      for (int t = 0; t < T; ++t) xv[t] = _mm256_loadu_ps(xs[t] + c);
#pragma GCC unroll 12
      for (int r = 0; r < R; ++r) {
        const __m256 wv = _mm256_loadu_ps(w + r * d + c);
#pragma GCC unroll 4
        for (int t = 0; t < T; ++t) acc[t][r] = _mm256_fmadd_ps(xv[t], wv, acc[t][r]);
      }
    }
  }
  #pragma GCC unroll 4
  for (int t = 0; t < T; ++t)
#pragma GCC unroll 12
    for (int r = 0; r < R; ++r) u[t * s + r] = hsum8(acc[t][r]);
}

// Rows per dotBlock for a block of T tokens: 12 accumulators (3 for 1 token
// would leave two FMA pipes idle on the latency of the chains).
template <int T>
constexpr int rowsFor() {
  return T == 4 ? 3 : T == 3 ? 4 : T == 2 ? 6 : 12;
}

template <int T, int R>
__attribute__((target("avx2,fma"))) void dotRowsR(const float* const* xs, const float* w, int64_t d, int64_t rows,
                                                  float* u, int64_t ld, const float* pf, bool selfAhead) {
  int64_t r = 0;
  if (pf || selfAhead) {
    // With selfAhead, pf is the block's own rows one block of R (or 3, 1) ahead.
    auto at = [&](int64_t rr, int64_t step) { return selfAhead ? w + (rr + step) * d : pf + rr * d; };
    for (; r + R <= rows; r += R) dotBlock<T, R, true>(xs, w + r * d, d, u + r, ld, at(r, R));
    for (; r + 3 <= rows; r += 3) dotBlock<T, 3, true>(xs, w + r * d, d, u + r, ld, at(r, 3));
    for (; r < rows; ++r) dotBlock<T, 1, true>(xs, w + r * d, d, u + r, ld, at(r, 1));
    return;
  }
  for (; r + R <= rows; r += R) dotBlock<T, R, false>(xs, w + r * d, d, u + r, ld, nullptr);
  for (; r + 3 <= rows; r += 3) dotBlock<T, 3, false>(xs, w + r * d, d, u + r, ld, nullptr);
  for (; r < rows; ++r) dotBlock<T, 1, false>(xs, w + r * d, d, u + r, ld, nullptr);
}

// u[t * ld + r] for rows r < rows of w, T tokens; `pf` as in dotBlock (or null).
template <int T>
__attribute__((target("avx2,fma"))) void dotRows(const float* const* xs, const float* w, int64_t d, int64_t rows,
                                                 float* u, int64_t ld, const float* pf, bool selfAhead) {
  dotRowsR<T, rowsFor<T>()>(xs, w, d, rows, u, ld, pf, selfAhead);
}

/// U[cnt, s] = X W^T: X rows xs[0..cnt) of length d, W [s, d] contiguous;
/// sizes[0 .. blocks): the token blocks of tokenBlocks(cnt).
/// The weight rows go in chunks of about 128 KB (a multiple of 12 rows), which
/// stay in L2 while every block of tokens (whose rows stay in L1) passes over
/// them; so each weight comes from memory once. The first token block of a
/// chunk streams it from memory and prefetches its own rows one row block
/// ahead. `next` (optional, [s, d] like W): the block the caller reads next
/// (the expert's down rows), fetched into L2 by the second token block: its
/// column-strip walk in fewTokenDown would otherwise miss on every row of the
/// first strip (a stride of d floats, which the hardware prefetchers do not
/// follow). With a single token block it is not fetched (that block already
/// streams W from memory).
__attribute__((target("avx2,fma"))) void fewTokenUp(const float* const* xs, const int* sizes, int blocks,
                                                    const float* w, int64_t d, int64_t s, float* u,
                                                    const float* next = nullptr) {
  const int64_t chunk = std::max<int64_t>(12, (int64_t{128} * 1024 / (d * 4)) / 12 * 12);
  for (int64_t r0 = 0; r0 < s; r0 += chunk) {
    const int64_t rows = std::min(chunk, s - r0);
    const float* wc = w + r0 * d;
    float* uc = u + r0;
    int64_t t = 0;
    for (int b = 0; b < blocks; t += sizes[b++]) {
      // Block 0 prefetches its own rows ahead (selfAhead), block 1 the
      // matching rows of `next`. Prefetches never fault, so the lines past the
      // end of a block that the last rows ask for are harmless.
      const bool selfAhead = b == 0;
      const float* pf = next && b == 1 ? next + r0 * d : nullptr;
      switch (sizes[b]) {
        case 4:
          dotRows<4>(xs + t, wc, d, rows, uc + t * s, s, pf, selfAhead);
          break;
        case 3:
          dotRows<3>(xs + t, wc, d, rows, uc + t * s, s, pf, selfAhead);
          break;
        case 2:
          dotRows<2>(xs + t, wc, d, rows, uc + t * s, s, pf, selfAhead);
          break;
        default:
          dotRows<1>(xs + t, wc, d, rows, uc + t * s, s, pf, selfAhead);
          break;
      }
    }
  }
}

// ys[t][c0 .. c0 + 8C) += sum_j u[t * s + j] D[j, c0 ..] for T tokens. With
// `prefetch`, the lines of the next column strip (D[j, c0 + 8C ..]) are
// requested while this one runs: the strip walks the rows with a stride of d,
// which the hardware prefetchers do not follow.
template <int T, int C>
__attribute__((target("avx2,fma"))) void axpyBlock(const float* u, int64_t s, const float* D, int64_t d, int64_t c0,
                                                   float* const* ys, bool prefetch) {
  __m256 acc[T][C];
#pragma GCC unroll 4
  for (int t = 0; t < T; ++t)
#pragma GCC unroll 4
    for (int c = 0; c < C; ++c) acc[t][c] = _mm256_setzero_ps();
  const int64_t next = c0 + 8 * C;
  for (int64_t j = 0; j < s; ++j) {
    const float* row = D + j * d;
    if (prefetch) {
      _mm_prefetch(reinterpret_cast<const char*>(row + next), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(row + next + 8 * C - 1), _MM_HINT_T0);
    }
    __m256 dv[C];
#pragma GCC unroll 4
    for (int c = 0; c < C; ++c) dv[c] = _mm256_loadu_ps(row + c0 + 8 * c);
#pragma GCC unroll 4
    for (int t = 0; t < T; ++t) {
      const __m256 uv = _mm256_broadcast_ss(u + t * s + j);
#pragma GCC unroll 4
      for (int c = 0; c < C; ++c) acc[t][c] = _mm256_fmadd_ps(uv, dv[c], acc[t][c]);
    }
  }
#pragma GCC unroll 4
  for (int t = 0; t < T; ++t)
#pragma GCC unroll 4
    for (int c = 0; c < C; ++c) {
      float* p = ys[t] + c0 + 8 * c;
      _mm256_storeu_ps(p, _mm256_add_ps(_mm256_loadu_ps(p), acc[t][c]));
    }
}

// One column strip of 8C columns for every token: the strip (s x 8C floats)
// comes from memory once and stays in L1 for the following token blocks
// (blocks of 4 and 3 tokens, as tokenBlocks cuts them).
template <int C>
__attribute__((target("avx2,fma"))) void axpyStrip(const float* u, int64_t s, const float* D, int64_t d, int64_t c0,
                                                   float* const* ys, const int* sizes, int blocks) {
  const bool pf = c0 + 16 * C <= d;
  int64_t t = 0;
  for (int b = 0; b < blocks; t += sizes[b++]) {
    const bool first = pf && b == 0;
    switch (sizes[b]) {
      case 4:
        axpyBlock<4, C>(u + t * s, s, D, d, c0, ys + t, first);
        break;
      case 3:
        axpyBlock<3, C>(u + t * s, s, D, d, c0, ys + t, first);
        break;
      case 2:
        axpyBlock<2, C>(u + t * s, s, D, d, c0, ys + t, first);
        break;
      default:
        axpyBlock<1, C>(u + t * s, s, D, d, c0, ys + t, first);
        break;
    }
  }
}

/// Y rows ys[0..cnt) (length d) += U[cnt, s] D, D [s, d] contiguous; sizes as
/// in fewTokenUp.
__attribute__((target("avx2,fma"))) void fewTokenDown(const float* u, const int* sizes, int blocks, int64_t s,
                                                      const float* D, int64_t d, float* const* ys) {
  int64_t c0 = 0;
  for (; c0 + 24 <= d; c0 += 24) axpyStrip<3>(u, s, D, d, c0, ys, sizes, blocks);
  for (; c0 < d; c0 += 8) axpyStrip<1>(u, s, D, d, c0, ys, sizes, blocks);
}

// ---- The same kernels on AVX-512 (16-float vectors, 32 registers) -----------
// With 32 registers a block holds up to 8 tokens, so an expert picked by up
// to 8 tokens (a batch of 32 with 8 of 32 experts picks each about 8 times)
// streams its rows once, in one pass, instead of once from memory and again
// from L2 for the second block of 4. They need d % 16 == 0. The sums run in
// a different order from the AVX2 kernels' (16 partial sums per dot product,
// not 8), so the two differ by float rounding. They mirror the AVX2 kernels
// loop for loop; they are written out because GCC's target attribute cannot
// follow a template parameter (an always_inline body shared by both fails to
// inline the intrinsics: "target specific option mismatch").

bool fewTokenAvx512Cpu() {
  static const bool ok = fewTokenSimd() && !std::getenv("MOEFY_NO_AVX512") && __builtin_cpu_supports("avx512f");
  return ok;
}

__attribute__((target("avx512f"), always_inline)) inline float hsum16(__m512 v) {
  // All in 512-bit registers, with maskz forms: GCC 12's 256-bit casts and
  // extracts and its plain shuffles trip -Wuninitialized.
  v = _mm512_add_ps(v, _mm512_maskz_shuffle_f32x4(0xFFFF, v, v, 0x4E));  // + the other 256-bit half
  v = _mm512_add_ps(v, _mm512_maskz_shuffle_f32x4(0xFFFF, v, v, 0xB1));  // + the other 128-bit lane
  v = _mm512_add_ps(v, _mm512_maskz_permute_ps(0xFFFF, v, 0x4E));        // + the other pair
  v = _mm512_add_ps(v, _mm512_maskz_permute_ps(0xFFFF, v, 0xB1));        // + the neighbour
  return _mm512_cvtss_f32(v);
}

// Token blocks of at most 8, as even as possible (9 = 5 + 4, 16 = 8 + 8).
inline int tokenBlocks512(int64_t cnt, int* sizes) {
  const int64_t m = (cnt + 7) / 8;
  for (int64_t b = 0; b < m; ++b) sizes[b] = static_cast<int>(cnt / m + (b < cnt % m ? 1 : 0));
  return static_cast<int>(m);
}

// As dotBlock, with 16-float vectors: u[t * s + r] = x_t . w_r. pf: lines to
// request into L2 as the rows stream past (one per row and 16 floats), pf2 a
// second such set (or null).
template <int T, int R, bool PF>
__attribute__((target("avx512f"))) void dotBlock512(const float* const* xs, const float* w, int64_t d, float* u,
                                                    int64_t s, const float* pf, const float* pf2) {
  static_assert(T * R + std::min(T, R) + 1 <= 32, "dotBlock512: accumulators and operands exceed 32 registers");
  __m512 acc[T][R];
#pragma GCC unroll 8
  for (int t = 0; t < T; ++t)
#pragma GCC unroll 12
    for (int r = 0; r < R; ++r) acc[t][r] = _mm512_setzero_ps();
  for (int64_t c = 0; c < d; c += 16) {
    if constexpr (PF) {
#pragma GCC unroll 12
      for (int r = 0; r < R; ++r) _mm_prefetch(reinterpret_cast<const char*>(pf + r * d + c), _MM_HINT_T1);
      if (pf2)
#pragma GCC unroll 12
        for (int r = 0; r < R; ++r) _mm_prefetch(reinterpret_cast<const char*>(pf2 + r * d + c), _MM_HINT_T1);
    }
    if constexpr (R <= T) {
      __m512 wv[R];
#pragma GCC unroll 12
      for (int r = 0; r < R; ++r) wv[r] = _mm512_loadu_ps(w + r * d + c);
#pragma GCC unroll 8
      for (int t = 0; t < T; ++t) {
        const __m512 xv = _mm512_loadu_ps(xs[t] + c);
#pragma GCC unroll 12
        for (int r = 0; r < R; ++r) acc[t][r] = _mm512_fmadd_ps(xv, wv[r], acc[t][r]);
      }
    } else {
      __m512 xv[T];
#pragma GCC unroll 8
      for (int t = 0; t < T; ++t) xv[t] = _mm512_loadu_ps(xs[t] + c);
#pragma GCC unroll 12
      for (int r = 0; r < R; ++r) {
        const __m512 wv = _mm512_loadu_ps(w + r * d + c);
#pragma GCC unroll 8
        for (int t = 0; t < T; ++t) acc[t][r] = _mm512_fmadd_ps(xv[t], wv, acc[t][r]);
      }
    }
  }
#pragma GCC unroll 8
  for (int t = 0; t < T; ++t)
#pragma GCC unroll 12
    for (int r = 0; r < R; ++r) u[t * s + r] = hsum16(acc[t][r]);
}

// Rows per dotBlock512 for a block of T tokens: about 24 accumulators.
template <int T>
constexpr int rowsFor512() {
  return T >= 7 ? 3 : T >= 5 ? 4 : T == 4 ? 6 : T == 3 ? 8 : T == 2 ? 12 : 6;
}

// u[t * ld + r] for the rows r < rows of w, T tokens. selfAhead: prefetch the
// block's own rows one row block ahead (the block that streams them from
// memory); next: also the matching rows of that matrix (or null).
template <int T>
__attribute__((target("avx512f"))) void dotRows512(const float* const* xs, const float* w, int64_t d, int64_t rows,
                                                   float* u, int64_t ld, bool selfAhead, const float* next) {
  // Blocks of R rows, then of 4 and of 1 (a lone row of one token is a single
  // FMA chain, four times slower per row than the blocks).
  constexpr int R = rowsFor512<T>(), R2 = R > 4 ? 4 : 1;
  int64_t r = 0;
  auto run = [&](auto rTag) {
    constexpr int RR = decltype(rTag)::value;
    for (; r + RR <= rows; r += RR) {
      const float* nx = next ? next + r * d : nullptr;
      if (selfAhead)
        dotBlock512<T, RR, true>(xs, w + r * d, d, u + r, ld, w + (r + RR) * d, nx);
      else if (nx)
        dotBlock512<T, RR, true>(xs, w + r * d, d, u + r, ld, nx, nullptr);
      else
        dotBlock512<T, RR, false>(xs, w + r * d, d, u + r, ld, nullptr, nullptr);
    }
  };
  run(std::integral_constant<int, R>{});
  run(std::integral_constant<int, R2>{});
  run(std::integral_constant<int, 1>{});
}

/// As fewTokenUp, with blocks of up to 8 tokens (tokenBlocks512). A single
/// block streams W and prefetches `next` (the expert's down rows) with it.
__attribute__((target("avx512f"))) void fewTokenUp512(const float* const* xs, const int* sizes, int blocks,
                                                      const float* w, int64_t d, int64_t s, float* u,
                                                      const float* next = nullptr) {
  const int64_t chunk = std::max<int64_t>(24, (int64_t{128} * 1024 / (d * 4)) / 24 * 24);
  for (int64_t r0 = 0; r0 < s; r0 += chunk) {
    const int64_t rows = std::min(chunk, s - r0);
    const float* wc = w + r0 * d;
    float* uc = u + r0;
    int64_t t = 0;
    for (int b = 0; b < blocks; t += sizes[b++]) {
      const bool selfAhead = b == 0;
      const float* pf = next && b == (blocks > 1 ? 1 : 0) ? next + r0 * d : nullptr;
      switch (sizes[b]) {
#define MOEFY_UP512(TT)                                                \
  case TT:                                                             \
    dotRows512<TT>(xs + t, wc, d, rows, uc + t * s, s, selfAhead, pf); \
    break;
        MOEFY_UP512(8)
        MOEFY_UP512(7)
        MOEFY_UP512(6)
        MOEFY_UP512(5)
        MOEFY_UP512(4)
        MOEFY_UP512(3)
        MOEFY_UP512(2)
        default:
          dotRows512<1>(xs + t, wc, d, rows, uc + t * s, s, selfAhead, pf);
          break;
#undef MOEFY_UP512
      }
    }
  }
}

// Lines to request into L2 while a down projection runs from L2: the next
// expert's up rows, so that memory keeps streaming (the up projection then
// finds its rows in L2, and streams the down rows of its own expert). Row j of
// a strip asks for `per` lines from p + j * per * 16; none at or past `end`.
struct FarPrefetch {
  const float* p = nullptr;
  const float* end = nullptr;
  int64_t per = 0;
};

// As axpyBlock, with 16-float vectors: ys[t][c0 .. c0 + 16C) += sum_j u[t * s + j] D[j, c0 ..].
template <int T, int C>
__attribute__((target("avx512f"))) void axpyBlock512(const float* u, int64_t s, const float* D, int64_t d, int64_t c0,
                                                     float* const* ys, bool prefetch, FarPrefetch far) {
  static_assert(T * C + C + 1 <= 32, "axpyBlock512: accumulators and operands exceed 32 registers");
  __m512 acc[T][C];
#pragma GCC unroll 8
  for (int t = 0; t < T; ++t)
#pragma GCC unroll 12
    for (int c = 0; c < C; ++c) acc[t][c] = _mm512_setzero_ps();
  const int64_t next = c0 + 16 * C;
  for (int64_t j = 0; j < s; ++j) {
    const float* row = D + j * d;
    if (prefetch)
#pragma GCC unroll 12
      for (int c = 0; c < C; ++c) _mm_prefetch(reinterpret_cast<const char*>(row + next + 16 * c), _MM_HINT_T0);
    for (int64_t q = 0; q < far.per; ++q) {
      const float* line = far.p + (j * far.per + q) * 16;
      if (line < far.end) _mm_prefetch(reinterpret_cast<const char*>(line), _MM_HINT_T1);
    }
    __m512 dv[C];
#pragma GCC unroll 12
    for (int c = 0; c < C; ++c) dv[c] = _mm512_loadu_ps(row + c0 + 16 * c);
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) {
      const __m512 uv = _mm512_set1_ps(u[t * s + j]);
#pragma GCC unroll 12
      for (int c = 0; c < C; ++c) acc[t][c] = _mm512_fmadd_ps(uv, dv[c], acc[t][c]);
    }
  }
#pragma GCC unroll 8
  for (int t = 0; t < T; ++t)
#pragma GCC unroll 12
    for (int c = 0; c < C; ++c) {
      float* p = ys[t] + c0 + 16 * c;
      _mm512_storeu_ps(p, _mm512_add_ps(_mm512_loadu_ps(p), acc[t][c]));
    }
}

// Column vectors per strip for blocks of up to T tokens.
constexpr int colsFor512(int T) { return T >= 7 ? 3 : T >= 5 ? 4 : T >= 3 ? 6 : T == 2 ? 8 : 12; }

template <int T, int C>
__attribute__((target("avx512f"), always_inline)) inline void axpyIf512(const float* u, int64_t s, const float* D,
                                                                        int64_t d, int64_t c0, float* const* ys,
                                                                        bool prefetch, FarPrefetch far) {
  if constexpr (T * C + C + 1 <= 32) axpyBlock512<T, C>(u, s, D, d, c0, ys, prefetch, far);
}

// One column strip of 16C columns for every token block (each of at most the
// tokens that C allows: colsFor512); the first block also prefetches `far`.
template <int C>
__attribute__((target("avx512f"))) void axpyStrip512(const float* u, int64_t s, const float* D, int64_t d, int64_t c0,
                                                     float* const* ys, const int* sizes, int blocks, FarPrefetch far) {
  const bool pf = c0 + 32 * C <= d;
  int64_t t = 0;
  for (int b = 0; b < blocks; t += sizes[b++]) {
    const bool first = pf && b == 0;
    const FarPrefetch f = b == 0 ? far : FarPrefetch{};
    const float* ub = u + t * s;
    float* const* yb = ys + t;
    switch (sizes[b]) {
      case 8:
        axpyIf512<8, C>(ub, s, D, d, c0, yb, first, f);
        break;
      case 7:
        axpyIf512<7, C>(ub, s, D, d, c0, yb, first, f);
        break;
      case 6:
        axpyIf512<6, C>(ub, s, D, d, c0, yb, first, f);
        break;
      case 5:
        axpyIf512<5, C>(ub, s, D, d, c0, yb, first, f);
        break;
      case 4:
        axpyIf512<4, C>(ub, s, D, d, c0, yb, first, f);
        break;
      case 3:
        axpyIf512<3, C>(ub, s, D, d, c0, yb, first, f);
        break;
      case 2:
        axpyIf512<2, C>(ub, s, D, d, c0, yb, first, f);
        break;
      default:
        axpyIf512<1, C>(ub, s, D, d, c0, yb, first, f);
        break;
    }
  }
}

/// As fewTokenDown, for the blocks of tokenBlocks512 (largest first) and
/// d % 16 == 0: strips of 16C columns, C as wide as the largest block allows.
/// far, farFloats: a block to request into L2 meanwhile, spread over the
/// strips' rows (the next expert's up rows; null for none).
__attribute__((target("avx512f"))) void fewTokenDown512(const float* u, const int* sizes, int blocks, int64_t s,
                                                        const float* D, int64_t d, float* const* ys,
                                                        const float* far = nullptr, int64_t farFloats = 0) {
  // The widest strip the largest block allows that tiles d exactly (else
  // the remainder would go in 16-column strips of 1 accumulator per token).
  int C0 = colsFor512(sizes[0]);
  for (int c : {12, 8, 6, 4, 3, 2})
    if (c <= C0 && (d / 16) % c == 0) {
      C0 = c;
      break;
    }
  const int64_t wide = d / (16 * C0), narrow = (d - wide * 16 * C0) / 16;
  const int64_t rowsWalked = (wide + narrow) * s, lines = far ? (farFloats + 15) / 16 : 0;
  const int64_t per = rowsWalked > 0 ? (lines + rowsWalked - 1) / rowsWalked : 0;
  int64_t c0 = 0, strip = 0;
  auto strips = [&](auto cTag) {
    constexpr int C = decltype(cTag)::value;
    for (; c0 + 16 * C <= d; c0 += 16 * C, ++strip) {
      const FarPrefetch f = far ? FarPrefetch{far + strip * s * per * 16, far + farFloats, per} : FarPrefetch{};
      axpyStrip512<C>(u, s, D, d, c0, ys, sizes, blocks, f);
    }
  };
  switch (C0) {
    case 2:
      strips(std::integral_constant<int, 2>{});
      break;
    case 3:
      strips(std::integral_constant<int, 3>{});
      break;
    case 4:
      strips(std::integral_constant<int, 4>{});
      break;
    case 6:
      strips(std::integral_constant<int, 6>{});
      break;
    case 8:
      strips(std::integral_constant<int, 8>{});
      break;
    default:
      strips(std::integral_constant<int, 12>{});
      break;
  }
  strips(std::integral_constant<int, 1>{});
}
}  // namespace

namespace {
std::atomic<int64_t>& fewTokenMaxRef() {
  static std::atomic<int64_t> v = [] {
    const char* e = std::getenv("MOEFY_FEW_MAX");
    return e ? static_cast<int64_t>(std::atoll(e)) : int64_t{16};
  }();
  return v;
}

std::atomic<bool>& fewTokenAvx512Ref() {
  static std::atomic<bool> v{true};
  return v;
}
}  // namespace

// An expert that one token picked runs through these kernels (not BLAS's
// GEMV) when its up block takes at most half of L2: the kernels request the
// next matrix's rows into L2 while one streams past, and the next expert's
// up rows during the down projection, which keeps memory busy where GEMV
// waits between calls (GPT-2 small, E 32, batch 1: 6-16 % faster). With
// blocks too large for two to share L2 the requested rows are evicted
// before use, and GEMV was faster (d_model 2048, gated, 88 rows: 1-10 %).
int64_t oneTokenBytesMax() {
  static const int64_t v = [] {
    const long l2 = sysconf(_SC_LEVEL2_CACHE_SIZE);
    return static_cast<int64_t>(l2 > 0 ? l2 : 1L << 20) / 2;
  }();
  return v;
}

int64_t fewTokenMax() { return fewTokenMaxRef().load(std::memory_order_relaxed); }
bool sparseKernelUsesAvx512() { return fewTokenAvx512Cpu() && fewTokenAvx512Ref().load(std::memory_order_relaxed); }
void setFewTokenAvx512(bool on) { fewTokenAvx512Ref().store(on, std::memory_order_relaxed); }
void setFewTokenMax(int64_t tokens) { fewTokenMaxRef().store(tokens, std::memory_order_relaxed); }
bool sparseKernelUsesSimd() { return fewTokenSimd(); }

bool sparseKernelUsesCblas() { return blas().sgemm != nullptr; }

void sparseFfnKernel(const MoeLayerWeights& w, const float* x, int64_t n, const int64_t* sel, int k, float* y,
                     float* hidden) {
  const int E = w.layout.experts;
  const int64_t d = w.dModel(), F = w.dFF();
  const float* up = w.up.data_ptr<float>();
  const float* gate = w.gated() ? w.gate.data_ptr<float>() : nullptr;
  const float* b1 = w.upBias.defined() ? w.upBias.data_ptr<float>() : nullptr;
  const float* downT = w.downT.data_ptr<float>();
  const int64_t* perm = w.layout.perm.data_ptr<int64_t>();
  const Activation act = w.act;

  // Group tokens by expert (counting sort): tokens[start[e] .. start[e+1]).
  // A shared expert (block E) takes every token, so it runs as one GEMM over
  // the whole batch like any expert that all tokens picked. An entry -1 of
  // `sel` is no expert (a token that routes to fewer than k).
  const int B = w.layout.blocks();
  std::vector<int64_t> start(B + 1, 0);
  for (int64_t i = 0; i < n * k; ++i) {
    int64_t e = sel[i];
    if (e == -1) continue;
    if (e < 0 || e >= E) throw ParameterError("expert id " + std::to_string(e) + " outside [0, " + std::to_string(E) + ")");
    ++start[e + 1];
  }
  if (w.layout.shared) start[E + 1] = n;
  for (int e = 0; e < B; ++e) start[e + 1] += start[e];
  std::vector<int64_t> tokens(start[B]);
  {
    std::vector<int64_t> fill(start.begin(), start.end() - 1);
    for (int64_t t = 0; t < n; ++t)
      for (int j = 0; j < k; ++j)
        if (sel[t * k + j] >= 0) tokens[fill[sel[t * k + j]]++] = t;
    if (w.layout.shared)
      for (int64_t t = 0; t < n; ++t) tokens[fill[E]++] = t;
  }
  // Tasks: the blocks some token picked, as packed row ranges [off, off + s).
  // With several threads the shared expert runs as pieces about the size of a
  // routed expert. It is one block that every token takes and several times a
  // routed expert's size (e.g. 1/8 of d_ff beside 56 experts of 1/64); as one
  // task it kept one thread busy long after the others had finished the
  // routed experts (at batch 1, one long GEMV against a few short ones), which
  // made a shared expert far slower than routed experts of the same FLOPs.
  // Its pieces are the tasks that the same neurons as routed experts picked by
  // every token would be. With one thread it stays whole (the summation order
  // of before); otherwise only the order in which the pieces' down
  // projections are summed differs.
  struct Task {
    int e;
    int64_t off, s;
  };
  std::vector<Task> active;
  const int maxThreads = std::max(1, at::get_num_threads());
  for (int e = 0; e < B; ++e) {
    if (start[e + 1] == start[e]) continue;
    const int64_t off = w.layout.offsets[e], s = w.layout.expertSize(e);
    int64_t pieces = 1;
    if (e == E && maxThreads > 1 && E > 0) {
      const double routedMean = double(w.layout.offsets[E]) / E;
      pieces =
          std::clamp<int64_t>(std::llround(double(s) / std::max(1.0, routedMean)), 1, std::min<int64_t>(s, maxThreads));
    }
    for (int64_t p = 0; p < pieces; ++p) {
      const int64_t r0 = s * p / pieces, r1 = s * (p + 1) / pieces;
      active.push_back({e, off + r0, r1 - r0});
    }
  }

  if (hidden) std::memset(hidden, 0, sizeof(float) * n * F);
  // Experts with 2..fewMax tokens use the few-token SIMD kernels (d_model a
  // multiple of 8; MOEFY_FEW_MAX overrides, 0 disables; measured in bench_moe_ffn).
  const int64_t fewMax = fewTokenMax();
  const bool useFew = fewTokenSimd() && d % 8 == 0 && fewMax > 1;
  const bool use512 = useFew && d % 16 == 0 && sparseKernelUsesAvx512();
  const int threads = std::max(1, std::min<int>(at::get_num_threads(), static_cast<int>(active.size())));
  std::memset(y, 0, sizeof(float) * n * d);

  // The tasks begin .. end, accumulated into out [n, d].
  auto runTasks = [&](int64_t begin, int64_t end, float* out) {
    std::vector<float> xbuf, ubuf, gbuf, ybuf;
    std::vector<const float*> xptr;
    std::vector<float*> yptr;
    std::vector<int> blockSizes;
    for (int64_t ti = begin; ti < end; ++ti) {
      const int e = active[ti].e;
      const int64_t off = active[ti].off, s = active[ti].s;
      const int64_t cnt = start[e + 1] - start[e];
      const int64_t* idx = tokens.data() + start[e];
      const bool all = cnt == n;  // every token (tokens are in ascending order)
      // Activation (with b1, or times the gate) in place on u [rows, s], and the
      // hidden rows in the original neuron order.
      auto activateRows = [&](float* u, const float* g, int64_t rows) {
        activateExpertRows(act, u, g, b1 ? b1 + off : nullptr, rows, s);
      };
      auto storeHidden = [&](const float* u, int64_t rows) {
        if (!hidden) return;
        for (int64_t t = 0; t < rows; ++t, u += s) {
          float* hrow = hidden + idx[t] * F;
          for (int64_t j = 0; j < s; ++j) hrow[perm[off + j]] = u[j];
        }
      };
      ubuf.resize(cnt * s);
      if (gate) gbuf.resize(cnt * s);
      if (useFew && (cnt > 1 || (use512 && s * d * 4 <= oneTokenBytesMax())) && cnt <= fewMax) {
        // A few tokens: register-blocked kernels on the expert's rows, gathering
        // the token rows by pointer and accumulating straight into the output.
        xptr.resize(cnt);
        yptr.resize(cnt);
        for (int64_t t = 0; t < cnt; ++t) xptr[t] = x + idx[t] * d, yptr[t] = out + idx[t] * d;
        blockSizes.resize(static_cast<size_t>(cnt / 3 + 2));
        if (use512) {
          const int blocks = tokenBlocks512(cnt, blockSizes.data());
          fewTokenUp512(xptr.data(), blockSizes.data(), blocks, up + off * d, d, s, ubuf.data(),
                        (gate ? gate : downT) + off * d);
          if (gate)
            fewTokenUp512(xptr.data(), blockSizes.data(), blocks, gate + off * d, d, s, gbuf.data(), downT + off * d);
          activateRows(ubuf.data(), gate ? gbuf.data() : nullptr, cnt);
          storeHidden(ubuf.data(), cnt);
          // Meanwhile the next expert's up rows come into L2.
          const float* far = nullptr;
          int64_t farFloats = 0;
          if (ti + 1 < end) far = up + active[ti + 1].off * d, farFloats = active[ti + 1].s * d;
          fewTokenDown512(ubuf.data(), blockSizes.data(), blocks, s, downT + off * d, d, yptr.data(), far, farFloats);
          continue;
        }
        const int blocks = tokenBlocks(cnt, blockSizes.data());
        fewTokenUp(xptr.data(), blockSizes.data(), blocks, up + off * d, d, s, ubuf.data(), downT + off * d);
        if (gate) fewTokenUp(xptr.data(), blockSizes.data(), blocks, gate + off * d, d, s, gbuf.data());
        activateRows(ubuf.data(), gate ? gbuf.data() : nullptr, cnt);
        storeHidden(ubuf.data(), cnt);
        fewTokenDown(ubuf.data(), blockSizes.data(), blocks, s, downT + off * d, d, yptr.data());
        continue;
      }
      const float* xe = x;
      if (cnt == 1) {
        xe = x + idx[0] * d;
      } else if (!all) {
        xbuf.resize(cnt * d);
        for (int64_t t = 0; t < cnt; ++t) std::memcpy(xbuf.data() + t * d, x + idx[t] * d, sizeof(float) * d);
        xe = xbuf.data();
      }
      gemm(true, cnt, s, d, xe, d, up + off * d, d, 0.0f, ubuf.data(), s);
      if (gate) gemm(true, cnt, s, d, xe, d, gate + off * d, d, 0.0f, gbuf.data(), s);
      activateRows(ubuf.data(), gate ? gbuf.data() : nullptr, cnt);
      storeHidden(ubuf.data(), cnt);
      if (cnt == 1 || all) {
        gemm(false, cnt, d, s, ubuf.data(), s, downT + off * d, d, 1.0f, out + (all ? 0 : idx[0] * d), d);
      } else {
        ybuf.resize(cnt * d);
        gemm(false, cnt, d, s, ubuf.data(), s, downT + off * d, d, 0.0f, ybuf.data(), d);
        for (int64_t t = 0; t < cnt; ++t) {
          float* dst = out + idx[t] * d;
          const float* src = ybuf.data() + t * d;
          for (int64_t c = 0; c < d; ++c) dst[c] += src[c];
        }
      }
    }
  };

  const int64_t tasks = static_cast<int64_t>(active.size());
  const float* b2 = w.downBias.defined() ? w.downBias.data_ptr<float>() : nullptr;
  if (threads <= 1) {
    runTasks(0, tasks, y);
    if (b2)
      for (int64_t t = 0; t < n; ++t)
        for (int64_t c = 0; c < d; ++c) y[t * d + c] += b2[c];
    return;
  }
  // Contiguous task ranges, balanced by work (tokens x expert size). Range 0
  // accumulates straight into y, range r > 0 into its own buffer part r - 1,
  // and y = range 0 + range 1 + ... (+ b2), summed in that order: the split
  // depends only on the batch, so the result does too, whichever thread runs
  // a range. The buffers are the calling thread's and kept for the next call
  // up to 4 MiB (a fresh allocation cost ~10 us of page faults in a 1 ms
  // batch-32 call, bench_moe_ffn).
  std::vector<double> cum(tasks + 1, 0.0);
  for (int64_t i = 0; i < tasks; ++i) {
    const int e = active[i].e;
    cum[i + 1] = cum[i] + double(start[e + 1] - start[e]) * double(active[i].s);
  }
  std::vector<int64_t> cut(threads + 1, 0);
  cut[threads] = tasks;
  for (int t = 1; t < threads; ++t) {
    double target = cum[tasks] * t / threads;
    int64_t i = cut[t - 1];
    while (i < tasks && cum[i + 1] <= target) ++i;
    cut[t] = std::max(i, cut[t - 1]);
  }
  const size_t part = static_cast<size_t>(n * d), need = part * static_cast<size_t>(threads - 1);
  thread_local std::vector<float> pool;
  std::vector<float> fresh;
  constexpr size_t kPoolFloats = size_t{1} << 20;  // 4 MiB
  std::vector<float>& bufs = need <= kPoolFloats ? pool : fresh;
  if (bufs.size() < need) bufs.resize(need);
  float* const acc = bufs.data();
  std::exception_ptr err;
  // One parallel region: the ranges, then (after the barrier) the sum over
  // row blocks. A team smaller than `threads` (a nested call) runs several
  // ranges per thread, into the same buffers.
#pragma omp parallel num_threads(threads)
  {
    const int nth = omp_get_num_threads(), me = omp_get_thread_num();
    for (int r = me; r < threads; r += nth) {
      try {
        float* out = y;
        if (r > 0) {
          out = acc + static_cast<size_t>(r - 1) * part;
          std::memset(out, 0, sizeof(float) * part);
        }
        runTasks(cut[r], cut[r + 1], out);
      } catch (...) {
#pragma omp critical
        err = std::current_exception();
      }
    }
#pragma omp barrier
#pragma omp for schedule(static)
    for (int64_t t = 0; t < n; ++t) {
      float* __restrict yt = y + t * d;
      for (int r = 1; r < threads; ++r) {
        const float* __restrict a = acc + static_cast<size_t>(r - 1) * part + static_cast<size_t>(t * d);
        for (int64_t c = 0; c < d; ++c) yt[c] += a[c];
      }
      if (b2)
        for (int64_t c = 0; c < d; ++c) yt[c] += b2[c];
    }
  }
  if (err) std::rethrow_exception(err);
}

std::vector<Site> siteIndexTable(const ModelConfig& c) {
  if (c.expertCount <= 0 || c.encoderDecoder) return c.ffnSites();
  std::vector<Site> v;
  for (int L = 0; L < c.nLayer; ++L) v.push_back(Site::ofLayer(L));
  for (int L = 0; L < c.nLayer; ++L)
    for (int e = 0; e < c.expertCount; ++e) v.push_back(Site{SiteStack::Single, L, e, false});
  if (c.dShared > 0)
    for (int L = 0; L < c.nLayer; ++L) v.push_back(Site{SiteStack::Single, L, -1, true});
  return v;
}

MoeFfn::MoeFfn(std::vector<MoeLayer> layers, std::vector<FfnWeights> dense, std::vector<Site> sites)
    : layers_(std::move(layers)), dense_(std::move(dense)), sites_(std::move(sites)) {
  dense_.resize(layers_.size());
  if (!sites_.empty() && sites_.size() != layers_.size())
    throw ParameterError("MoE FFN: " + std::to_string(sites_.size()) + " sites for " + std::to_string(layers_.size()) +
                         " layers");
  for (size_t L = 0; L < layers_.size(); ++L) {
    const auto& l = layers_[L];
    if (!l.weights) {
      // With a site list, an index without an FFN of its own (siteIndexTable) may have neither.
      if (!dense_[L].up.defined() && sites_.empty())
        throw FormatError("layer " + std::to_string(L) + " has neither experts nor dense FFN weights");
      continue;
    }
    if (!l.router) throw ParameterError("layer " + std::to_string(L) + ": no router");
    const int E = l.weights->layout.experts;
    if (l.topK < 1 || l.topK > E)
      throw ParameterError("layer " + std::to_string(L) + ": top-k " + std::to_string(l.topK) + " outside [1, " +
                           std::to_string(E) + "] (the layer has " + std::to_string(E) + " experts)");
    if (l.router->kind == RouterKind::DynamicK && l.router->minK > l.topK)
      throw ParameterError("layer " + std::to_string(L) + ": dynamic-k min k " + std::to_string(l.router->minK) +
                           " above its top-k (max k) " + std::to_string(l.topK));
    if (l.router->experts != E)
      throw ParameterError("layer " + std::to_string(L) + ": router has " + std::to_string(l.router->experts) +
                           " experts, the partition " + std::to_string(E));
  }
}

namespace {
// Top-k experts of a few tokens for a similarity or sigmoid router, without
// ATen dispatch: those scores are a positive per-token scale (1 / |x|) or a
// monotone function (sigmoid) of the logits x . W_e, so the top-k of x . W_e
// selects the same experts (up to float rounding in near-ties). At batch 1
// the ATen path (norm, clamp, div, mm, topk: ~7 dispatches) took 15 us of
// a 125 us GPT-2-sized MoE FFN. x [n, d] F32 contiguous, W [E, d] F32
// contiguous; returns [n, k] int64, each row by descending score (a NaN
// score ranks first, as in at::topk; ties by lower expert index).
at::Tensor fewTokenTopK(const at::Tensor& x, const at::Tensor& W, int k) {
  const int64_t n = x.size(0), d = x.size(1), E = W.size(0);
  const float* xp = x.data_ptr<float>();
  const float* wp = W.data_ptr<float>();
  at::Tensor out = at::empty({n, k}, at::kLong);
  int64_t* o = out.data_ptr<int64_t>();
  std::vector<float> score(static_cast<size_t>(E));
  std::vector<int64_t> idx(static_cast<size_t>(E));
  for (int64_t t = 0; t < n; ++t) {
    const float* xt = xp + t * d;
    for (int64_t e = 0; e < E; ++e) {
      const float* we = wp + e * d;
      float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
      for (int64_t c = 0; c < d; ++c) acc += xt[c] * we[c];
      score[static_cast<size_t>(e)] = acc;
      idx[static_cast<size_t>(e)] = e;
    }
    auto before = [&](int64_t a, int64_t b) {  // a strict total order, NaN first
      const float sa = score[static_cast<size_t>(a)], sb = score[static_cast<size_t>(b)];
      const bool na = std::isnan(sa), nb = std::isnan(sb);
      if (na != nb) return na;
      if (!na && sa != sb) return sa > sb;
      return a < b;
    };
    std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), before);
    std::copy(idx.begin(), idx.begin() + k, o + t * k);
  }
  return out;
}
}  // namespace

at::Tensor MoeFfn::route(int layer, const at::Tensor& x) const {
  const MoeLayer& l = layers_.at(layer);
  const LayerRouter& r = *l.router;
  if (x.is_cpu() && x.dim() == 2 && x.size(0) <= 8 && x.scalar_type() == at::kFloat && x.is_contiguous() &&
      !x.requires_grad() && l.topK >= 1 && l.topK <= r.experts) {
    const at::Tensor& W = r.kind == RouterKind::Similarity ? r.centroids
                          : r.kind == RouterKind::Sigmoid  ? r.w1
                                                           : at::Tensor();
    if (W.defined() && W.scalar_type() == at::kFloat && W.is_contiguous() && W.dim() == 2 && W.size(1) == x.size(1) &&
        W.size(0) == r.experts && !W.requires_grad())
      return fewTokenTopK(x, W, l.topK);
  }
  at::Tensor s = r.scores(x, *l.weights);  // [N, E]
  // Dynamic-k: topK is the most experts a token may take; rows end in -1.
  if (r.kind == RouterKind::DynamicK) return dynamicKExperts(s, r.tau, r.minK, l.topK);
  return topKExperts(s, l.topK).contiguous();
}

at::Tensor MoeFfn::compute(int layer, const at::Tensor& xIn, const at::Tensor& selIn, at::Tensor* hidden) const {
  const MoeLayer& l = layers_.at(layer);
  const MoeLayerWeights& w = *l.weights;
  const bool autograd = at::GradMode::is_enabled() &&
                        (xIn.requires_grad() || w.up.requires_grad() || w.downT.requires_grad());
  if (autograd || !xIn.is_cpu()) {  // the masked ATen path (the kernel is CPU code)
    if (w.up.device() != xIn.device())
      throw ParameterError("MoE FFN: input on " + xIn.device().str() + " but experts on " + w.up.device().str() +
                           " (MoeFfn::onDevice)");
    at::Tensor h = w.packedHidden(xIn);  // [N, d_ff] packed
    // Mask [N, blocks]: the selected experts (entries -1 select none) and the shared expert.
    at::Tensor m = at::zeros({xIn.size(0), w.layout.blocks()}, xIn.options().requires_grad(false));
    at::Tensor s = selIn.to(at::kLong);
    m.scatter_add_(1, s.to(m.device()).clamp_min(0), (s >= 0).to(m.device(), m.scalar_type())).clamp_max_(1.0);
    if (w.layout.shared) m.narrow(1, w.layout.experts, 1).fill_(1.0);
    h = h * m.index_select(1, w.layout.rowExpert);
    if (hidden) *hidden = h.index_select(1, w.layout.invPerm);
    return at::linear(h, w.downT.t(), w.downBias);
  }
  at::Tensor x = xIn.to(at::kFloat).contiguous();
  at::Tensor sel = selIn.to(at::kLong).contiguous();
  const int64_t n = x.size(0);
  at::Tensor y = at::empty({n, w.dModel()}, x.options());
  at::Tensor h;
  if (hidden) h = at::empty({n, w.dFF()}, x.options());
  sparseFfnKernel(w, x.data_ptr<float>(), n, sel.data_ptr<int64_t>(), static_cast<int>(sel.size(1)),
                  y.data_ptr<float>(), hidden ? h.data_ptr<float>() : nullptr);
  if (hidden) *hidden = h;
  return y;
}

DenseKernelFfn::DenseKernelFfn(const std::vector<FfnWeights>& dense) {
  for (const FfnWeights& w : dense)
    layers_.push_back(
        MoeLayerWeights::pack(w, ExpertLayout::fromLabels(at::zeros({w.up.size(0)}, at::kInt), 1, "dense baseline")));
}

namespace {
std::vector<FfnWeights> allFfnWeights(const Model& model) {
  std::vector<FfnWeights> out;
  for (int L = 0; L < model.config().nLayer; ++L) out.push_back(model.ffnWeights(L));
  return out;
}
}  // namespace

DenseKernelFfn::DenseKernelFfn(const Model& model) : DenseKernelFfn(allFfnWeights(model)) {}

at::Tensor DenseKernelFfn::forward(int layer, const at::Tensor& xIn, at::Tensor* hidden) const {
  if (layer < 0 || layer >= static_cast<int>(layers_.size()))
    throw ParameterError("DenseKernelFfn: layer " + std::to_string(layer) + " outside [0, " +
                         std::to_string(layers_.size()) + ")");
  const at::Tensor x = xIn.to(at::kFloat).contiguous();
  const MoeLayerWeights& w = *layers_[static_cast<size_t>(layer)];
  at::Tensor y = at::empty({x.size(0), w.dModel()});
  at::Tensor h;
  if (hidden) h = at::empty({x.size(0), w.dFF()});
  const std::vector<int64_t> sel(static_cast<size_t>(x.size(0)), 0);
  sparseFfnKernel(w, x.data_ptr<float>(), x.size(0), sel.data(), 1, y.data_ptr<float>(),
                  hidden ? h.data_ptr<float>() : nullptr);
  if (hidden) *hidden = h;
  return y;
}

at::Tensor MoeFfn::forward(int layer, const at::Tensor& x, at::Tensor* hidden) const {
  if (layer < 0 || layer >= static_cast<int>(layers_.size()))
    throw ParameterError("MoE FFN has no layer " + std::to_string(layer));
  if (!layers_[layer].weights) {
    if (!dense_[layer].up.defined())
      throw ParameterError("the MoE FFN has no FFN at site " + siteAt(layer).name() + " (index " +
                           std::to_string(layer) + ")");
    return denseFfn(dense_[layer], x, hidden);
  }
  at::Tensor sel;
  {
    at::NoGradGuard ng;
    sel = route(layer, x.detach());
  }
  return compute(layer, x, sel, hidden);
}

namespace {
at::Tensor moved(const at::Tensor& t, c10::Device device) { return t.defined() ? t.to(device) : t; }
}  // namespace

std::shared_ptr<const FfnOverride> MoeFfn::onDevice(c10::Device device) const {
  requireDevice(device, "--device " + device.str());
  std::lock_guard<std::mutex> lock(deviceMu_);
  for (const auto& [on, copy] : deviceCopies_)
    if (on == device) return copy;
  std::vector<MoeLayer> layers = layers_;
  for (MoeLayer& l : layers) {
    if (l.weights) {
      auto w = std::make_shared<MoeLayerWeights>(*l.weights);
      for (at::Tensor* t : {&w->up, &w->gate, &w->upBias, &w->downT, &w->downBias}) *t = moved(*t, device);
      w->layout = w->layout.to(device);
      l.weights = w;
    }
    if (l.router) l.router = std::make_shared<LayerRouter>(l.router->to(device));
  }
  std::vector<FfnWeights> dense = dense_;
  for (FfnWeights& d : dense)
    for (at::Tensor* t : {&d.up, &d.upBias, &d.gate, &d.down, &d.downBias}) *t = moved(*t, device);
  auto copy = std::make_shared<const MoeFfn>(std::move(layers), std::move(dense), sites_);
  deviceCopies_.emplace_back(device, copy);
  return copy;
}

at::Tensor MoeFfn::forwardSite(const Site& site, const at::Tensor& x, at::Tensor* hidden) const {
  const int L = indexOf(site);
  if (L < 0) throw ParameterError("the MoE FFN has no site " + site.name());
  return forward(L, x, hidden);
}

int MoeFfn::indexOf(const Site& site) const {
  if (sites_.empty()) {
    const bool single = site.stack == SiteStack::Single && site.expert < 0 && !site.shared;
    return single && site.layer < static_cast<int>(layers_.size()) ? site.layer : -1;
  }
  for (size_t i = 0; i < sites_.size(); ++i)
    if (sites_[i] == site) return static_cast<int>(i);
  return -1;
}

Site MoeFfn::siteAt(int layer) const {
  return sites_.empty() ? Site::ofLayer(layer) : sites_.at(static_cast<size_t>(layer));
}

std::shared_ptr<MoeFfn> MoeFfn::withTopK(const std::vector<int>& k) const {
  auto layers = layers_;
  for (size_t L = 0; L < layers.size() && L < k.size(); ++L) {
    if (!layers[L].weights) continue;
    layers[L].topK = k[L];
    // A dynamic-k router's min k is capped at the new max k (a budget sweep may go below it).
    const auto& r = layers[L].router;
    if (r && r->kind == RouterKind::DynamicK && r->minK > k[L] && k[L] >= 1) {
      auto capped = std::make_shared<LayerRouter>(*r);
      capped->minK = k[L];
      layers[L].router = capped;
    }
  }
  return std::make_shared<MoeFfn>(std::move(layers), dense_, sites_);
}

std::shared_ptr<MoeFfn> MoeFfn::withMoeOnly(const std::vector<bool>& keep) const {
  auto layers = layers_;
  auto dense = dense_;
  for (size_t L = 0; L < layers.size(); ++L) {
    if (!layers[L].weights || (L < keep.size() && keep[L])) continue;
    dense[L] = layers[L].weights->unpack();
    layers[L] = MoeLayer{};
  }
  return std::make_shared<MoeFfn>(std::move(layers), std::move(dense), sites_);
}

std::shared_ptr<MoeFfn> MoeFfn::withFraction(double f) const {
  if (!(f > 0.0 && f <= 1.0)) throw ParameterError("expert fraction " + std::to_string(f) + " outside (0, 1]");
  std::vector<int> k(layers_.size(), 0);
  for (size_t L = 0; L < layers_.size(); ++L)
    if (layers_[L].weights) k[L] = topKForFraction(f, layers_[L].weights->layout.experts);
  auto out = withTopK(k);
  if (f < 1.0) return out;
  // Every expert: a dynamic-k router's tau would still stop early, so its
  // copy takes min k = E (the dense FFN, as for the other kinds).
  auto layers = out->layers_;
  for (auto& l : layers)
    if (l.weights && l.router && l.router->kind == RouterKind::DynamicK) {
      auto r = std::make_shared<LayerRouter>(*l.router);
      r->minK = l.weights->layout.experts;
      l.router = r;
    }
  return std::make_shared<MoeFfn>(std::move(layers), dense_, sites_);
}

}  // namespace moefy
