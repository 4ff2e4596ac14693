#pragma once
// Exact, order-independent sums for the recorder's per-neuron sum and sum of
// squares (docs/formats.md "Recording", tensors <site>.sum_exact and
// <site>.sumsq_exact).
//
// A floating sum depends on the order of its terms, so a recording split into
// shards (--merge, --resume, mpirun's ranks) would differ from the single run
// in the last bits. The recorder therefore sums each chunk's tokens in F64
// (a fixed order: the chunk is always one rank's, in batch order) and adds the
// chunk's partial sum into a fixed-point accumulator: the F64 value truncated
// toward zero to a multiple of 2^-40 (kFractionBits), held as a signed
// 128-bit integer. Integer addition is exact and commutative, so any grouping
// of the chunks gives the same bits. The truncation loses less than 2^-40
// (9.1e-13) per chunk and neuron, below the F64 rounding of the chunk sums.
//
// A record is three int64: lo and hi (the two's complement 128-bit integer)
// and flags (1: a +inf or a partial of magnitude >= 2^86 was added, 2: the same
// for -inf, 4: NaN). The value is NaN when flag 4 or both 1 and 2 are set,
// +-inf with flag 1 or 2 alone, else the integer times 2^-40 rounded to F64.
// Overflow of the 128-bit sum (beyond about 1.5e26) saturates to the inf flag
// of its sign. All functions are pure; thread-safe for distinct records.
#include <cmath>
#include <cstdint>
#include <limits>

namespace moefy::exact_sum {

constexpr int kFractionBits = 40;
constexpr int kRecordInts = 3;  ///< int64 per record: lo, hi, flags
constexpr int64_t kPosInf = 1, kNegInf = 2, kNaN = 4;

inline __int128 get(const int64_t* r) {
  return static_cast<__int128>((static_cast<unsigned __int128>(static_cast<uint64_t>(r[1])) << 64) |
                               static_cast<uint64_t>(r[0]));
}

inline void set(int64_t* r, __int128 v) {
  const auto u = static_cast<unsigned __int128>(v);
  r[0] = static_cast<int64_t>(static_cast<uint64_t>(u));
  r[1] = static_cast<int64_t>(static_cast<uint64_t>(u >> 64));
}

/// r += v (fixed-point units), saturating to the inf flag of v's sign.
inline void addFixed(int64_t* r, __int128 v) {
  __int128 out;
  if (__builtin_add_overflow(get(r), v, &out))
    r[2] |= v > 0 ? kPosInf : kNegInf;
  else
    set(r, out);
}

/// Adds the F64 value x to record r (x truncated toward zero to 2^-40).
inline void add(int64_t* r, double x) {
  if (x == 0) return;
  if (std::isnan(x)) {
    r[2] |= kNaN;
    return;
  }
  if (std::fabs(x) >= 0x1p86) {  // also +-inf
    r[2] |= x > 0 ? kPosInf : kNegInf;
    return;
  }
  addFixed(r, static_cast<__int128>(std::ldexp(x, kFractionBits)));
}

/// inout += in (records): exact; associative and commutative.
inline void combine(const int64_t* in, int64_t* inout) {
  inout[2] |= in[2];
  addFixed(inout, get(in));
}

/// The record's value as F64 (see the file comment).
inline double value(const int64_t* r) {
  if ((r[2] & kNaN) || (r[2] & (kPosInf | kNegInf)) == (kPosInf | kNegInf))
    return std::numeric_limits<double>::quiet_NaN();
  if (r[2] & kPosInf) return std::numeric_limits<double>::infinity();
  if (r[2] & kNegInf) return -std::numeric_limits<double>::infinity();
  return std::ldexp(static_cast<double>(get(r)), -kFractionBits);
}

/// The values of n consecutive records (records: [n, kRecordInts] int64,
/// row-major) into out[n]. Used by the recorder to write `sum`/`sumsq` and by
/// the reader to check them against `sum_exact`/`sumsq_exact`.
inline void values(const int64_t* records, int64_t n, double* out) {
  for (int64_t j = 0; j < n; ++j) out[j] = value(records + j * kRecordInts);
}

}  // namespace moefy::exact_sum
