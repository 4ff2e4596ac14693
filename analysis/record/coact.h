#pragma once
// Exact binary co-activation counting on bit-packed activation masks.
//
// A chunk of N tokens is packed per neuron into W = ceil(N / 64) uint64 words
// (bit t of row i set when neuron i is active on token t). The pair counts are
// C[i][j] += popcount(row_i AND row_j) summed over the words, computed on
// cache-sized blocks of the upper triangle with OpenMP, and mirrored once at
// the end. This is exact and about an order of magnitude faster than a float
// GEMM A^T A on the same 0/1 matrix (bench/bench_coact.cpp).
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
/// is given as a byte matrix [tokens, rows] (0/1).
void packMask(const uint8_t* mask, int64_t tokens, int64_t rows, BitMatrix& out);

/// Adds the pair counts of `m` into the upper triangle (j >= i) of `counts`
/// ([rows, rows] row-major, int32). The lower triangle is left untouched;
/// call mirrorUpper() before reading the full matrix.
void accumulateCoact(const BitMatrix& m, int32_t* counts);

/// Copies the upper triangle onto the lower one of a [n, n] matrix.
void mirrorUpper(int32_t* counts, int64_t n);

}  // namespace moefy
