// Forward throughput of a GPT-2-small-shaped model (12 layers, d_model 768,
// d_ff 3072, 12 heads, vocab 50257, random weights made in-process) on a batch
// of 8 x 256 tokens, printed next to the GEMM bound measured in the same run:
// the model's matmul FLOPs per token divided by the SGEMM rate at::mm reaches
// on the same shapes. Target: at least 60% of the bound.
//
//   build/bench/bench_forward [--batch 8] [--seq 256] [--reps 2]
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "analysis/common/runtime.h"
#include "analysis/model/model.h"

using namespace moefy;
using Clock = std::chrono::steady_clock;

namespace {

double seconds(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

struct Gemm {
  const char* what;
  int64_t batch, m, k, n;  // batch x ([m, k] x [k, n])
  double count;            // how many per forward
  double rate = 0;         // measured GFLOP/s
  double flops() const { return 2.0 * batch * m * k * n; }
};

// Best-of-`reps` GFLOP/s of at::mm on [m, k] x [k, n] in the layout at::linear
// uses (weight [n, k] transposed). Batched products run as independent
// at::mm calls spread over the thread pool (the fastest way found for small
// per-head products here: at::bmm reached only ~0.5 GFLOP/s on them).
double measureGemm(const Gemm& g, int reps) {
  at::Tensor a, w, out;
  auto once = [&] {
    if (g.batch == 1) {
      at::mm_out(out, a, w.t());
    } else {
      at::parallel_for(0, g.batch, 1, [&](int64_t begin, int64_t end) {
        c10::InferenceMode guard;
        for (int64_t i = begin; i < end; ++i) {
          at::Tensor o = out.select(0, i);
          at::mm_out(o, a.select(0, i), w.select(0, i).t());
        }
      });
    }
  };
  if (g.batch == 1) {
    a = at::randn({g.m, g.k});
    w = at::randn({g.n, g.k});  // nn.Linear weight [out, in]
    out = at::empty({g.m, g.n});
  } else {
    a = at::randn({g.batch, g.m, g.k});
    w = at::randn({g.batch, g.n, g.k});
    out = at::empty({g.batch, g.m, g.n});
  }
  once();
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    auto t0 = Clock::now();
    once();
    best = std::min(best, seconds(t0, Clock::now()));
  }
  return g.flops() / best / 1e9;
}

}  // namespace

int main(int argc, char** argv) {
  int64_t B = 8, T = 256;
  int reps = 2;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--batch")) B = std::atoll(argv[i + 1]);
    if (!std::strcmp(argv[i], "--seq")) T = std::atoll(argv[i + 1]);
    if (!std::strcmp(argv[i], "--reps")) reps = std::atoi(argv[i + 1]);
  }
  configureRuntime();
  const int64_t L = 12, C = 768, F = 3072, H = 12, V = 50257, P = 1024;
  c10::InferenceMode guard;

  nlohmann::json j = {{"model_type", "gpt2"}, {"n_layer", L},  {"n_embd", C},           {"n_head", H},
                      {"n_inner", F},         {"vocab_size", V}, {"n_positions", P},     {"activation_function", "gelu_new"},
                      {"layer_norm_epsilon", 1e-5}};
  ModelConfig cfg = ModelConfig::fromJson(j, "bench config");
  at::manual_seed(0);
  std::map<std::string, at::Tensor> w;
  auto rnd = [](std::vector<int64_t> shape, double std) { return at::randn(shape) * std; };
  w["transformer.wte.weight"] = rnd({V, C}, 0.02);
  w["transformer.wpe.weight"] = rnd({P, C}, 0.01);
  w["transformer.ln_f.weight"] = at::ones({C});
  w["transformer.ln_f.bias"] = at::zeros({C});
  for (int64_t l = 0; l < L; ++l) {
    std::string p = "transformer.h." + std::to_string(l) + ".";
    w[p + "ln_1.weight"] = at::ones({C});
    w[p + "ln_1.bias"] = at::zeros({C});
    w[p + "attn.c_attn.weight"] = rnd({C, 3 * C}, 0.02);  // Conv1D [in, out]
    w[p + "attn.c_attn.bias"] = at::zeros({3 * C});
    w[p + "attn.c_proj.weight"] = rnd({C, C}, 0.02);
    w[p + "attn.c_proj.bias"] = at::zeros({C});
    w[p + "ln_2.weight"] = at::ones({C});
    w[p + "ln_2.bias"] = at::zeros({C});
    w[p + "mlp.c_fc.weight"] = rnd({C, F}, 0.02);
    w[p + "mlp.c_fc.bias"] = at::zeros({F});
    w[p + "mlp.c_proj.weight"] = rnd({F, C}, 0.02);
    w[p + "mlp.c_proj.bias"] = at::zeros({C});
  }
  auto model = Model::fromTensors(cfg, std::move(w));
  const int64_t N = B * T;

  // The model's GEMMs per forward; attention's score and value products are
  // batched over B x heads, as the engine runs them.
  std::vector<Gemm> gemms = {
      {"qkv    ", 1, N, C, 3 * C, double(L)},
      {"attn_o ", 1, N, C, C, double(L)},
      {"ffn_up ", 1, N, C, F, double(L)},
      {"ffn_dn ", 1, N, F, C, double(L)},
      {"lm_head", 1, N, C, V, 1.0},
      {"scores ", B * H, T, C / H, T, double(L)},
      {"values ", B * H, T, T, C / H, double(L)},
  };
  double flopsPerForward = 0;
  for (const auto& g : gemms) flopsPerForward += g.count * g.flops();

  // Each shape's rate is the best of the measurements before and after the
  // forward runs (the faster SGEMM gives the stricter bound).
  auto measureRates = [&]() {
    for (auto& g : gemms) g.rate = std::max(g.rate, measureGemm(g, 3));
  };

  std::printf("bench_forward: GPT-2-small shape (L=%lld, d_model=%lld, d_ff=%lld, heads=%lld, vocab=%lld), "
              "batch %lld x %lld, %d threads\n",
              (long long)L, (long long)C, (long long)F, (long long)H, (long long)V, (long long)B, (long long)T,
              runtimeThreads());
  std::printf("model FLOPs per token: %.1f MFLOP (matmuls incl. attention and LM head)\n",
              flopsPerForward / N / 1e6);

  at::Tensor ids = at::randint(0, V, {B, T}, at::kLong);
  Batch batch{ids, at::ones({B, T}, at::kLong), {}};
  measureRates();
  (void)model->forward(batch);  // warm-up (allocator, thread pool)
  double best = 1e30, total = 0;
  for (int r = 0; r < reps; ++r) {
    auto t0 = Clock::now();
    at::Tensor logits = model->forward(batch);
    double s = seconds(t0, Clock::now());
    best = std::min(best, s);
    total += s;
    if (logits.size(2) != V) return 1;
  }
  measureRates();
  double bound = 0;  // seconds per forward if every GEMM ran at its measured rate and nothing else cost time
  for (const auto& g : gemms) bound += g.count * g.flops() / (g.rate * 1e9);

  std::printf("\nSGEMM rates (at::mm, GFLOP/s, best of 3 before and 3 after the forward runs):\n");
  for (const auto& g : gemms)
    std::printf("  %s %4lld x [%5lld x %4lld] x [%4lld x %5lld]  x%-3.0f %7.1f\n", g.what, (long long)g.batch,
                (long long)g.m, (long long)g.k, (long long)g.k, (long long)g.n, g.count, g.rate);
  const double tps = N / best, tpsMean = N * reps / total, boundTps = N / bound;
  std::printf("\nforward: best %.3f s, mean %.3f s over %d runs\n", best, total / reps, reps);
  std::printf("throughput      %10.0f tokens/s (best run; mean %.0f)\n", tps, tpsMean);
  std::printf("GEMM bound      %10.0f tokens/s (%.1f GFLOP/s effective over the model's GEMMs)\n", boundTps,
              flopsPerForward / bound / 1e9);
  double peak = 0;
  for (const auto& g : gemms) peak = std::max(peak, g.rate);
  const double strictTps = N / (flopsPerForward / (peak * 1e9));
  std::printf("strict bound    %10.0f tokens/s (every FLOP at the fastest SGEMM rate, %.1f GFLOP/s)\n", strictTps, peak);
  std::printf("ratio           %10.1f %% of the GEMM bound (target >= 60%%); %.1f %% of the strict bound\n",
              100.0 * tps / boundTps, 100.0 * tps / strictTps);
  return 0;
}
