// Benchmark: one FFN layer, dense vs MoE (router cost included), and end-to-end
// greedy generation tokens/s, dense vs MoE, measured in the same run.
//
//   bench_moe_ffn [--quick] [--vocab 50257] [--no-generate] [--no-variants]
//                 [--fraction F] [--batch B] [--shape gpt2|llama]
//                 [--moe-only]
//   (the last five pick one case, e.g. to profile it with perf; --moe-only
//   times only the MoE with its default kernels, no dense baseline)
//
// Layer shapes: GPT-2-small (768 -> 3072, ReLU, biases, 32 experts of 96, and 16
// of 192) and a gated LLaMA-like FFN (2048 -> 5632, SiLU, 64 experts of 88).
// Each layer is timed over several weight copies in turn with fresh inputs, so
// that neither the weights nor the expert choice stay in cache between calls. The MoE uses the
// similarity router (its cost is included); fractions 12.5%, 25%, 50%; batch 1
// and 32. A second table puts a shared expert and dynamic-k (a per-token k)
// beside fixed top-k at the same FFN FLOPs (fractions 25% and 50%, batch 1 and
// 32; see "Shared expert and dynamic-k rows" below). Generation: a
// GPT-2-small-shaped random model (12 layers, d_model 768, d_ff 3072, ReLU),
// KV-cached greedy decoding of 32 tokens after a 16-token prompt, batch 1.
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "analysis/common/runtime.h"
#include "analysis/common/timing.h"
#include "analysis/eval/eval.h"
#include "analysis/model/model.h"
#include "analysis/moe/ffn_flops.h"
#include "analysis/moe/moe_ffn.h"
#include "analysis/route/router.h"

#include "bench/bench_common.h"

using namespace moefy;

namespace {

// Medians (seconds per call) of functions timed against each other by the
// core's interleavedSeconds (one call each per round, the order reversed
// every other round, until each has minReps calls lasting minSeconds), after
// `warm` untimed calls of each; so that a drift of the machine (clock, other
// load) falls on all of them alike. Ratios of these are what the tables report.
std::vector<double> interleavedMedians(const std::vector<std::function<void()>>& fns, double minSeconds, int minReps,
                                       int warm = 1) {
  for (int w = 0; w < warm; ++w)
    for (const auto& fn : fns) fn();
  std::vector<std::function<double()>> runs;
  for (const auto& fn : fns)
    runs.push_back([&fn] {
      const double t0 = bench::now();
      fn();
      return bench::now() - t0;
    });
  std::vector<double> med;
  for (auto& v : interleavedSeconds(runs, minSeconds, minReps)) med.push_back(medianOf(std::move(v)));
  return med;
}

double medianSeconds(const std::function<void()>& fn, double minSeconds, int minReps) {
  return interleavedMedians({fn}, minSeconds, minReps, 3)[0];
}

at::Tensor balancedLabels(int64_t F, int E, uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  return (at::arange(F, at::kLong) * E / F).index_select(0, at::randperm(F, gen, at::kLong)).to(at::kInt);
}

MoeLayer similarityLayer(const FfnWeights& w, ExpertLayout layout, int k) {
  const int E = layout.experts;
  auto packed = MoeLayerWeights::pack(w, std::move(layout));
  auto r = std::make_shared<LayerRouter>();
  r->kind = RouterKind::Similarity;
  r->experts = E;
  r->centroids = similarityCentroids(*packed);
  return {packed, r, k};
}

MoeLayer makeLayer(const FfnWeights& w, int E, int k) {
  return similarityLayer(w, ExpertLayout::fromLabels(balancedLabels(w.up.size(0), E, 5), E, "bench"), k);
}

// The layout of makeLayer with its last `merged` experts turned into one
// shared expert: E - merged routed experts of the same size as before, and a
// shared expert of merged * d_ff / E neurons.
MoeLayer makeSharedLayer(const FfnWeights& w, int E, int merged, int k) {
  const int routed = E - merged;
  at::Tensor labels = balancedLabels(w.up.size(0), E, 5).clamp_max(routed);
  return similarityLayer(w, ExpertLayout::fromLabels(labels, routed, "bench", true), k);
}

// Per-token expert counts for dynamic-k rows: `count` values (even) in pairs
// k0 - delta, k0 + delta with delta uniform in [0, k0 / 2], shuffled; their
// mean is exactly k0, so the routed FLOPs equal those of fixed top-k0.
std::vector<int> drawTokenK(int k0, size_t count, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> delta(0, k0 / 2);
  std::vector<int> ks;
  while (ks.size() < count) {
    const int dk = delta(rng);
    ks.push_back(k0 - dk);
    ks.push_back(k0 + dk);
  }
  std::shuffle(ks.begin(), ks.end(), rng);
  return ks;
}

struct Shape {
  const char* name;
  int64_t d, F;
  bool gated;
  int E;
};

}  // namespace

int main(int argc, char** argv) {
  bool quick = false, generate = true, variants = true, moeOnly = false, cacheResident = false;
  int64_t vocab = 50257, onlyBatch = 0;
  double onlyFraction = 0;
  std::string onlyShape;
  const char* usage =
      "usage: bench_moe_ffn [--quick] [--no-generate] [--no-variants] [--moe-only] [--shape gpt2|llama]\n"
      "                     [--batch 1|32] [--fraction 0.125|0.25|0.5] [--vocab N] [--cache-resident]\n"
      "  --cache-resident: one copy of each layer, called again and again, so its weights stay in the\n"
      "                    last-level cache (default: copies spanning 160 MB, streamed from memory as in a model)\n";
  for (int i = 1; i < argc; ++i) {
    const char* prog = "bench_moe_ffn";
    if (bench::isHelp(argv[i])) {
      std::printf("%s", usage);
      return 0;
    } else if (!std::strcmp(argv[i], "--quick")) {
      quick = true;
    } else if (!std::strcmp(argv[i], "--no-generate")) {
      generate = false;
    } else if (!std::strcmp(argv[i], "--no-variants")) {
      variants = false;
    } else if (!std::strcmp(argv[i], "--cache-resident")) {
      cacheResident = true;
    } else if (!std::strcmp(argv[i], "--moe-only")) {
      moeOnly = true, variants = false;
    } else if (!std::strcmp(argv[i], "--fraction")) {
      onlyFraction = bench::realArg(prog, usage, "--fraction", bench::valueOf(prog, usage, argc, argv, i), 0.125, 0.5);
      ++i;
      if (onlyFraction != 0.125 && onlyFraction != 0.25 && onlyFraction != 0.5) {
        std::fprintf(stderr, "bench_moe_ffn: --fraction must be 0.125, 0.25 or 0.5, got %s\n%s", argv[i], usage);
        return 2;
      }
    } else if (!std::strcmp(argv[i], "--batch")) {
      onlyBatch = bench::intArg(prog, usage, "--batch", bench::valueOf(prog, usage, argc, argv, i), 1, 32);
      ++i;
      if (onlyBatch != 1 && onlyBatch != 32) {
        std::fprintf(stderr, "bench_moe_ffn: --batch must be 1 or 32 (the table's batches), got %s\n%s", argv[i],
                     usage);
        return 2;
      }
    } else if (!std::strcmp(argv[i], "--shape")) {
      onlyShape = bench::valueOf(prog, usage, argc, argv, i);
      ++i;
      if (onlyShape != "gpt2" && onlyShape != "llama") {
        std::fprintf(stderr, "bench_moe_ffn: --shape must be gpt2 or llama, got '%s'\n%s", onlyShape.c_str(), usage);
        return 2;
      }
    } else if (!std::strcmp(argv[i], "--vocab")) {
      vocab = bench::intArg(prog, usage, "--vocab", bench::valueOf(prog, usage, argc, argv, i), 2, 1 << 24);
      ++i;
    } else {
      bench::badArg(prog, usage, argv[i]);
    }
  }
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  configureRuntime();
  c10::InferenceMode guard;
  const double minSec = quick ? 0.15 : 0.6;
  std::printf("bench_moe_ffn: %d threads, CBLAS %s\n", runtimeThreads(), sparseKernelUsesCblas() ? "direct" : "via ATen");
  std::printf("dense-aten: the engine's denseFfn (ATen linear); dense-blas: the same FFN through direct GEMV/GEMM.\n"
              "speedup = best dense / moe (router included)\n");
  const int64_t fewDefault = fewTokenMax();
  std::printf(
      "few-token SIMD kernels: %s, up to %lld tokens per expert (moe-blas ms: BLAS for every expert, batch 32 only;\n"
      "at batch 1 every expert has one token and takes the BLAS GEMV path, or the AVX-512 kernel for experts of\n"
      "at most %lld KB; moe-avx2 ms: the AVX2 kernels instead of the AVX-512 ones, \"-\" without AVX-512)\n",
      sparseKernelUsesSimd() ? (sparseKernelUsesAvx512() ? "AVX-512" : "AVX2") : "unavailable",
      static_cast<long long>(fewDefault), static_cast<long long>(oneTokenBytesMax() / 1024));
  std::printf("weights: %s\n", cacheResident ? "one copy per shape, called again and again (--cache-resident)"
                                             : "copies spanning 160 MB, used in turn (streamed from memory)");
  std::printf("%-27s %5s %8s %14s %14s %12s %12s %10s %8s %10s\n", "shape", "batch", "active", "dense-aten ms",
              "dense-blas ms", "moe-blas ms", "moe-avx2 ms", "moe ms", "speedup", "vs aten");
  // GPT-2-small with 32 experts of 96 (and 16 of 192), LLaMA-like with 64 experts of 88.
  const Shape shapes[] = {{"gpt2-small 768x3072", 768, 3072, false, 32},
                          {"gpt2-small 768x3072", 768, 3072, false, 16},
                          {"llama-like 2048x5632", 2048, 5632, true, 64}};
  auto gen = at::make_generator<at::CPUGeneratorImpl>(1);
  std::vector<std::string> variantRows;  // the second table, printed after the first
  for (const auto& s : shapes) {
    if (!onlyShape.empty() && std::strncmp(s.name, onlyShape.c_str(), onlyShape.size()) != 0) continue;
    // Several copies of the layer, used in turn, with a fresh input per call: as
    // in a model, a layer's weights are not in cache when it runs again (the
    // other layers' weights went through it), and different tokens pick
    // different experts.
    // --cache-resident: one copy, which stays in the last-level cache when it
    // fits (GPT-2-small's 19 MB in a 32 MB L3): the difference to the default
    // is the cost of streaming the weights from memory.
    const int copies =
        cacheResident ? 1 : static_cast<int>(std::max<int64_t>(2, (160ll << 20) / (s.d * s.F * (s.gated ? 12 : 8))));
    std::vector<FfnWeights> ws;
    for (int c = 0; c < copies; ++c) {
      FfnWeights w;
      w.up = at::randn({s.F, s.d}, gen) * 0.05;
      w.down = at::randn({s.d, s.F}, gen) * 0.05;
      if (s.gated) {
        w.gate = at::randn({s.F, s.d}, gen) * 0.05;
        w.act = Activation::SiLU;
      } else {
        w.upBias = at::randn({s.F}, gen) * 0.05;
        w.downBias = at::randn({s.d}, gen) * 0.05;
        w.act = Activation::ReLU;
      }
      ws.push_back(w);
    }
    DenseKernelFfn blasFfn(ws);
    for (int64_t batch : {1, 32}) {
      if (onlyBatch > 0 && batch != onlyBatch) continue;
      std::vector<at::Tensor> xs;
      for (int i = 0; i < 16; ++i) xs.push_back(at::randn({batch, s.d}, gen));
      int call = 0;
      auto next = [&](int& layer) {
        layer = call % copies;
        return xs[(call++ / copies) % xs.size()];
      };
      int L = 0;
      // The dense baselines are timed interleaved with each fraction's MoE
      // (one call each in turn), so that a drift of the machine's speed falls
      // on both sides of the ratio; `dense` (the best of the first fraction's
      // run) is the baseline of the second table.
      double dense = NAN;
      for (double f : {0.125, 0.25, 0.5}) {
        if (onlyFraction > 0 && f != onlyFraction) continue;
        int k = topKForFraction(f, s.E);
        std::vector<MoeLayer> layers;
        for (const auto& w : ws) layers.push_back(makeLayer(w, s.E, k));
        MoeFfn moe(layers, std::vector<FfnWeights>(copies));
        std::vector<std::function<void()>> kinds = {[&] {
          at::Tensor x = next(L);
          moe.forward(L, x, nullptr);
        }};
        // The same MoE with BLAS for every expert (no few-token SIMD kernels).
        const bool timeBlas = batch > 1 && fewDefault > 1 && !moeOnly;
        if (timeBlas)
          kinds.push_back([&] {
            setFewTokenMax(0);
            at::Tensor x = next(L);
            moe.forward(L, x, nullptr);
            setFewTokenMax(fewDefault);
          });
        // The same MoE with the AVX2 few-token kernels (the CPUs without AVX-512).
        const bool timeAvx2 = sparseKernelUsesAvx512() && fewDefault > 1 && !moeOnly;
        if (timeAvx2)
          kinds.push_back([&] {
            setFewTokenAvx512(false);
            at::Tensor x = next(L);
            moe.forward(L, x, nullptr);
            setFewTokenAvx512(true);
          });
        if (!moeOnly) {
          kinds.push_back([&] {
            at::Tensor x = next(L);
            denseFfn(ws[L], x, nullptr);
          });
          kinds.push_back([&] {
            at::Tensor x = next(L);
            blasFfn.forward(L, x, nullptr);
          });
        }
        const std::vector<double> med = interleavedMedians(kinds, minSec, 5, 3);
        const double t = med[0], tBlas = timeBlas ? med[1] : t, tAvx2 = timeAvx2 ? med[timeBlas ? 2 : 1] : NAN;
        const double denseAten = moeOnly ? NAN : med[med.size() - 2], denseBlas = moeOnly ? NAN : med.back();
        const double best = std::min(denseAten, denseBlas);
        if (std::isnan(dense)) dense = best;
        if (moeOnly) {
          const double tr = medianSeconds(
              [&] {
                at::Tensor x = next(L);
                moe.route(L, x);
              },
              minSec, 5);
          std::printf("  router alone: %.4f ms\n", tr * 1e3);
        }
        char name[64];
        std::snprintf(name, sizeof name, "%s E=%d", s.name, s.E);
        // "-" where --moe-only timed no dense baseline.
        auto cell = [](double v, const char* fmt) {
          char b[32];
          std::snprintf(b, sizeof b, std::isnan(v) ? "-" : fmt, v);
          return std::string(b);
        };
        std::printf("%-27s %5lld %7.1f%% %14s %14s %12s %12s %10.3f %8s %10s\n", name, static_cast<long long>(batch),
                    f * 100, cell(denseAten * 1e3, "%.3f").c_str(), cell(denseBlas * 1e3, "%.3f").c_str(),
                    cell(timeBlas ? tBlas * 1e3 : NAN, "%.3f").c_str(), cell(tAvx2 * 1e3, "%.3f").c_str(), t * 1e3,
                    cell(best / t, "%.2fx").c_str(), cell(denseAten / t, "%.2fx").c_str());
      }

      // Shared expert and dynamic-k rows, at the FFN FLOPs of fixed top-k0
      // (k0 = fraction x E experts of d_ff / E neurons):
      //  - shared: the last E/8 experts of the same partition merged into one
      //    shared expert (d_ff / 8 neurons), E - E/8 routed experts, top-(k0 - E/8);
      //  - dynamic-k: E experts, token t takes the k_t best of its similarity
      //    scores (top-kmax, the rest of its row -1), k_t drawn per token
      //    (drawTokenK, seeded) with mean exactly k0 over each pass;
      //  - dyn-router: the fixed-k experts behind a real dynamic-k router
      //    (its selection cost included), tau set so its mean k is ~k0.
      // Each timed sample is one pass over the 16 inputs (the layer copies
      // in turn), so a dynamic-k sample holds every drawn k once; the four
      // kinds are measured interleaved and reported as ms per call.
      const int merged = s.E / 8;
      for (double f : {0.25, 0.5}) {
        if (!variants || (onlyFraction > 0 && f != onlyFraction)) continue;
        const int k0 = topKForFraction(f, s.E), kShared = k0 - merged, kMax = k0 + k0 / 2;
        std::vector<MoeLayer> fixedL, sharedL, dynL;
        for (const auto& w : ws) {
          fixedL.push_back(makeLayer(w, s.E, k0));
          sharedL.push_back(makeSharedLayer(w, s.E, merged, kShared));
          dynL.push_back(makeLayer(w, s.E, kMax));
        }
        // The dynamic-k router itself (RouterKind::DynamicK: predicted norms
        // exp(x W1^T + b1), dynamicKExperts) on the fixed-k experts, W1 random
        // (logits of unit variance), with the tau whose mean k over the 16
        // inputs is the smallest >= k0 (bisection; mean k grows with tau).
        auto dynRouter = std::make_shared<LayerRouter>();
        dynRouter->kind = RouterKind::DynamicK;
        dynRouter->experts = s.E;
        auto routerGen = at::make_generator<at::CPUGeneratorImpl>(23);  // leaves `gen`'s inputs as they were
        dynRouter->w1 = at::randn({s.E, s.d}, routerGen) / std::sqrt(static_cast<double>(s.d));
        dynRouter->b1 = at::zeros({s.E});
        dynRouter->minK = 1;
        auto meanK = [&](double tau) {
          double sum = 0;
          for (const auto& x : xs)
            sum += (dynamicKExperts(dynRouter->scores(x, *fixedL[0].weights), tau, 1, kMax) >= 0).sum().item<double>();
          return sum / static_cast<double>(xs.size() * batch);
        };
        double lo = 0.0, hi = 1.0;
        for (int it = 0; it < 40; ++it) {
          const double mid = 0.5 * (lo + hi);
          if (meanK(mid) >= k0)
            hi = mid;
          else
            lo = mid;
        }
        dynRouter->tau = hi;
        const double routerK = meanK(hi);
        std::vector<MoeLayer> dynRouterL;
        for (const auto& l : fixedL) dynRouterL.push_back({l.weights, dynRouter, kMax});
        const std::vector<FfnWeights> none(copies);
        MoeFfn fixedMoe(fixedL, none), sharedMoe(sharedL, none), dynMoe(dynL, none), dynRouterMoe(dynRouterL, none);
        // Per input, the [batch, kMax] entries past each token's k_t.
        const std::vector<int> ks = drawTokenK(k0, xs.size() * batch, 17 + static_cast<uint64_t>(batch));
        std::vector<at::Tensor> beyond;
        for (size_t i = 0; i < xs.size(); ++i) {
          at::Tensor kt = at::tensor(std::vector<int64_t>(ks.begin() + static_cast<std::ptrdiff_t>(i) * batch,
                                                          ks.begin() + static_cast<std::ptrdiff_t>(i + 1) * batch));
          beyond.push_back(at::arange(kMax, at::kLong).unsqueeze(0) >= kt.unsqueeze(1));
        }
        int pass = 0;
        auto overInputs = [&](const std::function<void(int, size_t)>& one) {
          return [&, one] {
            for (size_t i = 0; i < xs.size(); ++i) one((pass++) % copies, i);
          };
        };
        const double perPass = static_cast<double>(xs.size());
        const auto med =
            interleavedMedians({overInputs([&](int L, size_t i) { fixedMoe.forward(L, xs[i], nullptr); }),
                                overInputs([&](int L, size_t i) { sharedMoe.forward(L, xs[i], nullptr); }),
                                overInputs([&](int L, size_t i) {
                                  at::Tensor sel = dynMoe.route(L, xs[i]).masked_fill_(beyond[i], -1);
                                  dynMoe.compute(L, xs[i], sel, nullptr);
                                }),
                                overInputs([&](int L, size_t i) { dynRouterMoe.forward(L, xs[i], nullptr); })},
                               minSec, 5);
        // FFN FLOP fractions with the router (ffn_flops.h); the neurons are equal by construction.
        const int64_t expertSize = s.F / s.E;
        auto flops = [&](double neurons, int experts, RouterKind router = RouterKind::Similarity) {
          return ffnFlopsFraction({FfnFlopCount::Method::Moe, s.d, s.F, s.gated, neurons, router, experts});
        };
        char tauK[32];
        std::snprintf(tauK, sizeof tauK, "tau=%.2f k=%.2f", hi, routerK);
        const double fixedMs = med[0] / perPass * 1e3;
        struct Row {
          const char* kind;
          std::string k;
          double flops, ms;
        };
        const Row rows[] = {{"fixed-k", "k=" + std::to_string(k0), flops(double(k0 * expertSize), s.E), fixedMs},
                            {"shared", "S=" + std::to_string(merged * expertSize) + " k=" + std::to_string(kShared),
                             flops(double((merged + kShared) * expertSize), s.E - merged), med[1] / perPass * 1e3},
                            {"dynamic-k", "k=" + std::to_string(k0 - k0 / 2) + ".." + std::to_string(kMax),
                             flops(double(k0 * expertSize), s.E), med[2] / perPass * 1e3},
                            {"dyn-router", tauK, flops(routerK * double(expertSize), s.E, RouterKind::DynamicK),
                             med[3] / perPass * 1e3}};
        for (const Row& r : rows) {
          char name[64], line[256];
          std::snprintf(name, sizeof name, "%s E=%d", s.name, s.E);
          std::snprintf(line, sizeof line, "%-27s %5lld %7.1f%% %-10s %-16s %7.1f%% %10.3f %10.3f %8.2fx %9.2f", name,
                        static_cast<long long>(batch), f * 100, r.kind, r.k.c_str(), r.flops * 100, dense * 1e3, r.ms,
                        dense * 1e3 / r.ms, r.ms / fixedMs);
          variantRows.push_back(line);
        }
      }
    }
  }
  if (!variantRows.empty()) {
    std::printf(
        "\nshared expert and dynamic-k beside fixed top-k at the same FFN FLOPs (active: neurons per token;\n"
        "flops: with the router; dense ms: the best dense above; ms per call, mean over a pass of the 16\n"
        "inputs, median of passes; overhead = kind / fixed-k, target <= 1.10)\n");
    std::printf("%-27s %5s %8s %-10s %-16s %8s %10s %10s %9s %9s\n", "shape", "batch", "active", "kind", "k", "flops",
                "dense ms", "moe ms", "speedup", "overhead");
    for (const auto& line : variantRows) std::printf("%s\n", line.c_str());
  }
  if (!generate) return 0;

  // End-to-end greedy generation on a GPT-2-small-shaped random model.
  ModelConfig c = ModelConfig::fromJson({{"model_type", "gpt2"}, {"n_layer", 12}, {"n_embd", 768}, {"n_head", 12},
                                         {"n_inner", 3072}, {"vocab_size", vocab}, {"n_positions", 1024},
                                         {"activation_function", "relu"}},
                                        "bench");
  std::map<std::string, at::Tensor> t;
  auto rnd = [&](std::vector<int64_t> shape, double std) { return at::randn(shape, gen) * std; };
  t["wte.weight"] = rnd({vocab, 768}, 0.02);
  t["wpe.weight"] = rnd({1024, 768}, 0.01);
  t["ln_f.weight"] = at::ones({768});
  t["ln_f.bias"] = at::zeros({768});
  for (int L = 0; L < 12; ++L) {
    std::string p = "h." + std::to_string(L) + ".";
    t[p + "ln_1.weight"] = at::ones({768});
    t[p + "ln_1.bias"] = at::zeros({768});
    t[p + "ln_2.weight"] = at::ones({768});
    t[p + "ln_2.bias"] = at::zeros({768});
    t[p + "attn.c_attn.weight"] = rnd({768, 2304}, 0.02);
    t[p + "attn.c_attn.bias"] = at::zeros({2304});
    t[p + "attn.c_proj.weight"] = rnd({768, 768}, 0.02);
    t[p + "attn.c_proj.bias"] = at::zeros({768});
    t[p + "mlp.c_fc.weight"] = rnd({768, 3072}, 0.02);
    t[p + "mlp.c_fc.bias"] = at::zeros({3072});
    t[p + "mlp.c_proj.weight"] = rnd({3072, 768}, 0.02);
    t[p + "mlp.c_proj.bias"] = at::zeros({768});
  }
  auto model = Model::fromTensors(c, std::move(t));
  std::vector<int64_t> prompt;
  for (int i = 0; i < 16; ++i) prompt.push_back((i * 7919) % vocab);
  const int newTokens = quick ? 16 : 32;
  const int E = 32;
  std::vector<FfnWeights> dense(12);
  std::printf("\ngreedy generation, gpt2-small shape (12 x 768 -> 3072, vocab %lld), %d new tokens, batch 1, KV cache\n",
              static_cast<long long>(vocab), newTokens);
  // generationTokensPerSecond already keeps the best of >= 3 runs (after a warm-up).
  auto best = [&](std::shared_ptr<const FfnOverride> ffn) {
    return generationTokensPerSecond(*model, ffn, prompt, newTokens, quick ? 0.0 : 1.0);
  };
  double denseAten = best(nullptr);
  double denseTps = best(std::make_shared<DenseKernelFfn>(*model));
  std::printf("%-12s %10.1f tokens/s\n%-12s %10.1f tokens/s (baseline below)\n", "dense-aten", denseAten, "dense-blas",
              denseTps);
  denseTps = std::max(denseTps, denseAten);
  // The rest of the model (attention, norms, LM head) with an FFN that costs
  // nothing: what a MoE cannot speed up. An FFN at fraction f then bounds the
  // speed-up at (rest + ffn) / (rest + f ffn).
  struct NoFfn : FfnOverride {
    at::Tensor forward(int, const at::Tensor& x, at::Tensor*) const override { return at::zeros_like(x); }
  };
  const double restTps = best(std::make_shared<NoFfn>());
  const double rest = 1.0 / restTps, ffn = std::max(0.0, 1.0 / denseTps - rest);
  std::printf("%-12s %10.1f tokens/s (attention, norms and LM head: %.1f ms of the dense %.1f ms per token)\n",
              "no-ffn", restTps, rest * 1e3, 1e3 / denseTps);
  for (double f : {0.125, 0.25, 0.5}) {
    int k = topKForFraction(f, E);
    std::vector<MoeLayer> layers;
    for (int L = 0; L < 12; ++L) layers.push_back(makeLayer(model->ffnWeights(L), E, k));
    auto moe = std::make_shared<MoeFfn>(layers, dense);
    double tps = best(moe);
    std::printf("moe %6.1f%% %10.1f tokens/s  speedup %.2fx  (bound with this rest: %.2fx)\n", f * 100, tps,
                tps / denseTps, (rest + ffn) / (rest + f * ffn));
  }
  return 0;
}
