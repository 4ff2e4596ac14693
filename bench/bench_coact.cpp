// Co-activation accumulation: bit-packed AND/popcount vs float32 GEMM A^T A
// through the same BLAS (at::mm), on T = 65,536 tokens, d_ff = 3072, 10% density.
// Checks that the counts are exact (equal to the GEMM's, which is exact for
// integers below 2^24) and prints the speed ratio. Target: >= 5x.
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>

#include "analysis/common/runtime.h"
#include "analysis/record/coact.h"

using namespace moefy;

static double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

int main(int argc, char** argv) {
  configureRuntime();
  const int64_t T = argc > 1 ? std::atoll(argv[1]) : 65536;
  const int64_t n = argc > 2 ? std::atoll(argv[2]) : 3072;
  const double density = 0.10;
  std::printf("bench_coact: T = %lld tokens, d_ff = %lld, density %.2f, %d threads\n", static_cast<long long>(T),
              static_cast<long long>(n), density, runtimeThreads());
  at::manual_seed(0);
  at::Tensor mask = (at::rand({T, n}) < density);  // [T, n] bool
  at::Tensor maskU8 = mask.to(at::kByte).contiguous();

  // Bit-packed: pack + accumulate (what the recorder does per chunk).
  std::vector<int32_t> counts(static_cast<size_t>(n * n), 0);
  double t0 = now();
  BitMatrix bits;
  packMask(maskU8.data_ptr<uint8_t>(), T, n, bits);
  double tPack = now() - t0;
  accumulateCoact(bits, counts.data());
  mirrorUpper(counts.data(), n);
  double tBits = now() - t0;

  // Float32 GEMM through the same BLAS.
  at::Tensor A = mask.to(at::kFloat);  // [T, n]
  t0 = now();
  at::Tensor G = at::mm(A.t(), A);  // [n, n]
  double tGemm = now() - t0;

  at::Tensor C = at::from_blob(counts.data(), {n, n}, at::kInt);
  const int64_t maxDiff = (C.to(at::kLong) - G.to(at::kLong)).abs().max().item<int64_t>();
  std::printf("  bitpack+popcount : %8.3f s (pack %.3f s)\n", tBits, tPack);
  std::printf("  float32 GEMM A^T A: %8.3f s\n", tGemm);
  std::printf("  exact: max |bitpack - gemm| = %lld\n", static_cast<long long>(maxDiff));
  std::printf("  ratio GEMM / bitpack = %.2fx (target >= 5x)\n", tGemm / tBits);
  return maxDiff == 0 ? 0 : 1;
}
