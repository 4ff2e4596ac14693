#pragma once
// Exact binary co-activation counting on bit-packed activation masks.
//
// A chunk of N tokens is packed per neuron into W = ceil(N / 64) uint64 words
// (bit t of row i set when neuron i is active on token t). The pair counts are
// C[i][j] += popcount(row_i AND row_j) summed over the words, computed on
// cache-sized blocks of the upper triangle with OpenMP, and mirrored once at
// the end. This is exact and about an order of magnitude faster than a float
// GEMM A^T A on the same 0/1 matrix (bench/bench_coact.cpp).
//
// MoEfication's soft co-activation (accumulateSoftCoact) is a float kernel of
// the same shape: a clamped rank-8 update per 8-token block.
#include <cstdint>
#include <vector>

namespace moefy {

/// Bit-packed activation masks of one chunk: rows x words, row-major.
struct BitMatrix {
  int64_t rows = 0;   ///< neurons
  int64_t words = 0;  ///< ceil(tokens / 64)
  int64_t tokens = 0;
  std::vector<uint64_t> bits;  ///< [rows, words]
  void reset(int64_t rows, int64_t tokens);
  uint64_t* row(int64_t i) { return bits.data() + i * words; }
  const uint64_t* row(int64_t i) const { return bits.data() + i * words; }
};

/// Packs a dense row-major mask source: `active(t, i)` for t < tokens, i < rows
/// is given as a byte matrix [tokens, rows] (nonzero = active). Resets `out`.
/// Work: one pass over the bytes (64 at a time with AVX-512BW, else 8) into
/// token-major bits (a temporary of tokens x ceil(rows / 64) words), then
/// packTokenBits. OpenMP over tokens, then over tiles.
void packMask(const uint8_t* mask, int64_t tokens, int64_t rows, BitMatrix& out);

/// Packs token-major bits: bit b of tokenBits[t * G + g] (G = ceil(rows / 64))
/// is neuron g * 64 + b of token t (activeBits writes this layout; bits at or
/// past `rows` are ignored). Resets `out`. Work: a 64 x 64 bit transpose per
/// 64 tokens x 64 neurons, OpenMP over those tiles. The token-major form is
/// an eighth of packMask's byte matrix.
void packTokenBits(const uint64_t* tokenBits, int64_t tokens, int64_t rows, BitMatrix& out);

/// The kernels of accumulateCoact. All are exact (integer popcounts); they
/// differ only in speed.
enum class CoactKernel {
  Best,    ///< the fastest one this CPU runs: Avx512, else Avx2, else Scalar
  Scalar,  ///< portable: 4 x 4 row tiles, one 64-bit popcount per word pair
  Avx2,    ///< 2 x 4 row tiles, 4 words per vector, popcount by nibble lookup (AVX2 + POPCNT)
  Avx512,  ///< 4 x 4 row tiles, 8 words per vector, VPOPCNTQ (AVX-512F + AVX-512 VPOPCNTDQ)
};

/// Adds the pair counts of `m` into the upper triangle (j >= i) of `counts`
/// ([rows, rows] row-major, int32). The lower triangle is left untouched;
/// call mirrorUpper() before reading the full matrix. Work: rows^2 / 2 x
/// words AND + popcount, in 64 x 64 row blocks of 256 words (OpenMP over the
/// block pairs). Throws ParameterError when `kernel` cannot run on this CPU.
/// Not thread-safe on the same `counts`.
void accumulateCoact(const BitMatrix& m, int32_t* counts, CoactKernel kernel = CoactKernel::Best);
/// Whether `kernel` can run on this CPU (Best and Scalar always can).
bool coactKernelAvailable(CoactKernel kernel);
/// The kernel Best resolves to on this CPU (never Best).
CoactKernel bestCoactKernel();
/// "best", "scalar", "avx2" or "avx512".
const char* coactKernelName(CoactKernel kernel);

/// Copies the upper triangle onto the lower one of a [n, n] matrix.
void mirrorUpper(int32_t* counts, int64_t n);

/// One block of tokens for the soft co-activation: rows [first, first + len)
/// of the activation matrix, 1 <= len <= 8.
struct SoftBlock {
  int64_t first = 0;
  int64_t len = 0;
};

/// MoEfication's soft co-activation (Zhang et al. 2022, "MoEfication",
/// co-activation graph construction): for every block b of at most 8 tokens,
///   S[i][j] += min(1, sum_{t in b} r_ti r_tj),   r = max(h, 0).
/// `h` is [tokens, n] row-major F32 (the FFN activations of the chunk);
/// `S` is [n, n] row-major F32 and receives the sum over `blocks` on both
/// triangles (it stays symmetric when it was). Blocks need not be contiguous
/// nor disjoint; each must lie inside [0, tokens).
///
/// Work: (n^2 / 2) x 8 multiply-adds per block (the upper triangle only),
/// done in 192 x 192 output tiles that stay in L2 while the blocks stream
/// past in packed groups; each thread owns whole tiles (OpenMP). `kernel`
/// picks the micro-kernel: Avx512 (AVX-512F: 6 rows x 32 columns per step),
/// Avx2 (AVX2 + FMA: 6 x 16), Scalar (portable), or Best (the first of those
/// this CPU runs). All add the same products in a different order than a
/// naive loop, so the result equals the definition up to float rounding
/// (tests/numeric/test_soft_coact.cpp compares each with numpy at 1e-5
/// relative).
/// Throws ParameterError for a block outside [0, tokens) or with len outside
/// [1, 8], and for a kernel this CPU cannot run. Not thread-safe on the same S.
void accumulateSoftCoact(const float* h, int64_t tokens, int64_t n, const std::vector<SoftBlock>& blocks, float* S,
                         CoactKernel kernel = CoactKernel::Best);
/// Whether accumulateSoftCoact's `kernel` runs on this CPU (Best and Scalar
/// always do; Avx2 needs AVX2 + FMA, Avx512 needs AVX-512F).
bool softCoactKernelAvailable(CoactKernel kernel);
/// The kernel accumulateSoftCoact's Best resolves to on this CPU (never Best).
CoactKernel bestSoftCoactKernel();

}  // namespace moefy
