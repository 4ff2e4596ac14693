// Co-activation accumulation against a float32 GEMM A^T A through the same
// BLAS (at::mm), measured in the same run.
//
//   bench_coact [T] [d_ff]        default T = 65,536 tokens, d_ff = 3072, 10 % density
//   bench_coact --llama           d_ff 11008 (LLaMA-7B width), one layer, T 65,536:
//                                 time and peak memory (heavy: ~1.2 GB of inputs)
//   options: --gemm-tokens N      time the GEMM on the first N tokens and scale to T
//            --no-soft            skip the soft co-activation part
//
// 1. Exact binary counts: bit-pack + AND/popcount per chunk of 16,384 tokens
//    (as the recorder does per batch) vs the GEMM on the 0/1 matrix; exact (the GEMM is
//    exact for integers below 2^24). Targets: >= 8x the GEMM; peak memory
//    above the input at most the counts (d_ff^2 int32) plus 10 %.
// 2. MoEfication's soft co-activation over 8-token blocks (tiled kernel,
//    accumulateSoftCoact) on real-valued activations with the same mask: it
//    performs T x d_ff^2 multiply-adds by the definition (T/8 blocks of 8 x
//    d_ff^2), as many as the GEMM, so its time over the GEMM's is its time over
//    the same multiply-adds at the measured SGEMM rate (target <= 2x). Against
//    the peer recipe's torch ops (bmm of each block group, clamp, sum), timed
//    on a slice of T and scaled (target >= 50x). Checked against the peer ops
//    on that slice (max relative difference).
// Peak memory: Linux's VmHWM after resetting it (/proc/self/clear_refs 5),
// minus the resident size before the step.
#include <torch/torch.h>

#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fstream>
#include <string>

#include "analysis/common/runtime.h"
#include "analysis/record/coact.h"

#include "bench/bench_common.h"

using namespace moefy;

namespace {

using bench::now;
using bench::statusMiB;

// Resets the peak resident size; returns the current resident size (MiB).
double resetPeak() {
  std::ofstream("/proc/self/clear_refs") << "5";
  return statusMiB("VmRSS:");
}
// Peak resident size since resetPeak, above `base` (MiB).
double peakAbove(double base) { return statusMiB("VmHWM:") - base; }

constexpr int64_t kChunk = 8192;        // tokens per GEMM chunk (and input generation)
constexpr int64_t kCoactChunk = 16384;  // tokens per bit-packed chunk (256 words: one word block of the kernel)

}  // namespace

int benchMain(int argc, char** argv) {
  configureRuntime();
  int64_t T = 65536, n = 3072, gemmTokens = 0;
  bool soft = true, llama = false;
  int pos = 0;
  const char* usage =
      "usage: bench_coact [T] [d_ff] [--llama] [--gemm-tokens N] [--no-soft]\n"
      "  T tokens (default 65536), d_ff neurons (default 3072)\n";
  for (int i = 1; i < argc; ++i) {
    if (bench::isHelp(argv[i])) {
      std::printf("%s", usage);
      return 0;
    } else if (!std::strcmp(argv[i], "--llama")) {
      llama = true, n = 11008;
    } else if (!std::strcmp(argv[i], "--no-soft")) {
      soft = false;
    } else if (!std::strcmp(argv[i], "--gemm-tokens")) {
      gemmTokens = bench::intArg("bench_coact", usage, "--gemm-tokens",
                                 bench::valueOf("bench_coact", usage, argc, argv, i), 1, 1ll << 24);
      ++i;
    } else if ((argv[i][0] != '-' || std::isdigit(static_cast<unsigned char>(argv[i][1]))) && pos < 2) {
      (pos == 0 ? T : n) =
          bench::intArg("bench_coact", usage, pos == 0 ? "T" : "d_ff", argv[i], 1, pos == 0 ? (1ll << 24) : 32768);
      ++pos;
    } else {
      bench::badArg("bench_coact", usage, argv[i]);
    }
  }
  if (llama) soft = false;  // the soft kernel is not part of the LLaMA-width case
  if (gemmTokens <= 0 || gemmTokens > T) gemmTokens = llama ? std::min<int64_t>(T, 16384) : T;
  gemmTokens = std::max<int64_t>(kChunk, gemmTokens / kChunk * kChunk);
  gemmTokens = std::min(gemmTokens, T);
  const double density = 0.10;
  std::printf("bench_coact: T = %lld tokens, d_ff = %lld, density %.2f, %d threads%s\n", static_cast<long long>(T),
              static_cast<long long>(n), density, runtimeThreads(), llama ? " (LLaMA-7B width, one layer)" : "");
  at::manual_seed(0);
  // Input: the 0/1 mask [T, n] as bytes, generated in chunks (no [T, n] float temporary).
  at::Tensor maskU8 = at::empty({T, n}, at::kByte);
  for (int64_t c = 0; c < T; c += kChunk) {
    const int64_t e = std::min(T, c + kChunk);
    maskU8.slice(0, c, e).copy_(at::rand({e - c, n}) < density);
  }

  // 1a. Bit-packed exact counts, chunk by chunk as the recorder does.
  double base = resetPeak();
  double t0 = now();
  std::vector<int32_t> counts(static_cast<size_t>(n * n), 0);
  {
    BitMatrix bits;
    for (int64_t c = 0; c < T; c += kCoactChunk) {
      const int64_t e = std::min(T, c + kCoactChunk);
      packMask(maskU8.data_ptr<uint8_t>() + c * n, e - c, n, bits);
      accumulateCoact(bits, counts.data());
    }
  }
  mirrorUpper(counts.data(), n);
  const double tBits = now() - t0;
  const double memBits = peakAbove(base);
  const double countsMiB = static_cast<double>(n) * n * 4 / (1 << 20);

  // 1b. Float32 GEMM through the same BLAS, accumulated over the same chunks
  // (a [T, n] float copy would need T x n x 4 bytes more), on gemmTokens.
  base = resetPeak();
  t0 = now();
  at::Tensor G = at::zeros({n, n}, at::kFloat);
  for (int64_t c = 0; c < gemmTokens; c += kChunk) {
    at::Tensor A = maskU8.slice(0, c, std::min(gemmTokens, c + kChunk)).to(at::kFloat);
    G.addmm_(A.t(), A);
  }
  const double tGemmSlice = now() - t0;
  const double memGemm = peakAbove(base);
  const double tGemm = tGemmSlice * static_cast<double>(T) / static_cast<double>(gemmTokens);

  int64_t maxDiff = 0;
  {
    // The GEMM covers gemmTokens: compare against counts over the same tokens.
    at::Tensor C;
    if (gemmTokens == T) {
      C = at::from_blob(counts.data(), {n, n}, at::kInt);
    } else {
      std::vector<int32_t> part(static_cast<size_t>(n * n), 0);
      BitMatrix bits;
      for (int64_t c = 0; c < gemmTokens; c += kCoactChunk) {
        packMask(maskU8.data_ptr<uint8_t>() + c * n, std::min(gemmTokens, c + kCoactChunk) - c, n, bits);
        accumulateCoact(bits, part.data());
      }
      mirrorUpper(part.data(), n);
      C = at::from_blob(part.data(), {n, n}, at::kInt).clone();
    }
    maxDiff = (C.to(at::kLong) - G.to(at::kLong)).abs().max().item<int64_t>();
  }
  std::printf("  bitpack+popcount : %8.3f s, peak %.0f MiB above the input (counts %.0f MiB: %.2fx; %s kernel)\n",
              tBits, memBits, countsMiB, memBits / countsMiB, coactKernelName(bestCoactKernel()));
  if (gemmTokens == T)
    std::printf("  float32 GEMM A^T A: %8.3f s, peak %.0f MiB above the input\n", tGemm, memGemm);
  else
    std::printf(
        "  float32 GEMM A^T A: %8.3f s (timed on %lld tokens: %.3f s, scaled to T), peak %.0f MiB above the "
        "input\n",
        tGemm, static_cast<long long>(gemmTokens), tGemmSlice, memGemm);
  std::printf("  exact: max |bitpack - gemm| = %lld\n", static_cast<long long>(maxDiff));
  std::printf("  ratio GEMM / bitpack = %.2fx (target >= 8x); memory / counts = %.2f (target <= 1.10)\n", tGemm / tBits,
              memBits / countsMiB);
  if (!soft) return maxDiff == 0 ? 0 : 1;

  // 2. Soft co-activation on real values: |N(0,1)| + 0.05 where active, small negatives elsewhere.
  at::Tensor h = at::empty({T, n}, at::kFloat);
  for (int64_t c = 0; c < T; c += kChunk) {
    const int64_t e = std::min(T, c + kChunk);
    at::Tensor m = maskU8.slice(0, c, e).to(at::kBool);
    h.slice(0, c, e).copy_(at::where(m, at::randn({e - c, n}).abs() + 0.05, at::rand({e - c, n}) * -0.2));
  }
  std::vector<SoftBlock> blocks;
  for (int64_t t = 0; t + 8 <= T; t += 8) blocks.push_back({t, 8});
  at::Tensor S = at::zeros({n, n}, at::kFloat);
  t0 = now();
  accumulateSoftCoact(h.data_ptr<float>(), T, n, blocks, S.data_ptr<float>());
  const double tSoft = now() - t0;

  // The peer recipe's torch ops on a slice: relu, [g, 8, n] blocks, bmm, clamp, sum.
  const int64_t slice = std::min<int64_t>(T / 8 * 8, 2048);
  t0 = now();
  at::Tensor P = at::zeros({n, n}, at::kFloat);
  {
    at::Tensor r = at::relu(h.slice(0, 0, slice)).reshape({-1, 8, n});
    const int64_t g = std::max<int64_t>(1, (256ll << 20) / (n * n * 4));
    for (int64_t b = 0; b < r.size(0); b += g) {
      at::Tensor blk = r.slice(0, b, std::min(r.size(0), b + g));
      P.add_(at::bmm(blk.transpose(1, 2), blk).clamp_max_(1.0f).sum(0));
    }
  }
  const double tPeerSlice = now() - t0;
  const double tPeer = tPeerSlice * static_cast<double>(T) / static_cast<double>(slice);
  at::Tensor Q = at::zeros({n, n}, at::kFloat);
  std::vector<SoftBlock> sliceBlocks(blocks.begin(), blocks.begin() + slice / 8);
  accumulateSoftCoact(h.data_ptr<float>(), T, n, sliceBlocks, Q.data_ptr<float>());
  const double rel = ((Q - P).abs() / P.abs().clamp_min(1.0)).max().item<double>();
  std::printf("  soft co-activation (tiled kernel, %s): %8.3f s for T x d_ff^2 = %.3g multiply-adds\n",
              coactKernelName(bestSoftCoactKernel()), tSoft, static_cast<double>(T) * n * n);
  std::printf("  the same multiply-adds at the SGEMM rate of this run: %8.3f s -> soft / GEMM = %.2fx (target <= 2x)\n",
              tGemm, tSoft / tGemm);
  std::printf(
      "  peer recipe (torch bmm + clamp + sum per block group), timed on %lld tokens (%.3f s) and scaled: "
      "%8.3f s -> %.1fx (target >= 50x); max rel diff on the slice %.2g\n",
      static_cast<long long>(slice), tPeerSlice, tPeer, tPeer / tSoft, rel);
  return maxDiff == 0 && rel < 1e-4 ? 0 : 1;
}

int main(int argc, char** argv) {
  return bench::runReportingErrors("bench_coact", [&] { return benchMain(argc, argv); });
}
