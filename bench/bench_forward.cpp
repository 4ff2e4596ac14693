// Forward throughput of random-weight models made in-process, each printed
// next to its GEMM bound measured in the same run: the model's matmul FLOPs
// per forward divided by the SGEMM rate at::mm reaches on the same shapes.
// Target: at least 60% of the bound.
//
//   --case gpt2 (default): GPT-2-small shape (12 layers, d_model 768, d_ff
//     3072, 12 heads, vocab 50257) on a batch of 8 x 256 tokens.
//   --case t5: T5-base shape, v1.0 (relu, tied embeddings): 12 + 12 blocks,
//     d_model 768, d_ff 3072, 12 heads of d_kv 64, vocab 32128; teacher-forced
//     forwardSeq2Seq of 8 x 256 source and 8 x 256 target tokens (--seq sets
//     both lengths); tokens/s counts source + target tokens.
//   --case mixtral: Mixtral-8x7B scaled to fit 24 GB of RAM: width / 4
//     (d_model 1024, experts of d_ff 3584, 8 heads of 128 with 2 KV heads:
//     head_dim and the 4:1 GQA ratio kept), depth / 4 (8 of 32 layers), 8
//     experts, top-2 and vocab 32000 kept: 0.79 G parameters, 3.2 GB in F32
//     (the real model: 46.7 G, 187 GB). Batch 8 x 256 tokens.
//   --case all: the three in turn.
// The t5 and mixtral cases then time one more forward split into its parts
// (attention, FFN / router / expert FFNs / expert dispatch, LM head), each
// next to the bound of its own GEMMs.
//
// --smoke runs the chosen cases at a tiny size (2 layers, d_model 64, batch
// 2 x 16, 1 run) as a test (ctest bench_forward_smoke): it exits 1 when a
// forward fails, gives a wrong shape or non-finite logits, when the timed
// split forward's logits differ from the plain one's, when the GEMM list's
// FLOPs differ from those the model's weight matrices imply, or (mixtral)
// when a layer does not route exactly top-k x tokens. These checks also run
// at full size. Bad options exit 2.
//
// --device cuda[:N] runs the gpt2 case (its GEMM rates too) on a GPU: a
// CUDA-enabled libtorch build (scripts/gpu-check.sh); each timing waits for
// the device's queue.
//
//   build/bench/bench_forward [--case gpt2|t5|mixtral|all] [--batch 8] [--seq 256] [--reps 2]
//                             [--device cpu|cuda|cuda:N] [--smoke]
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "analysis/common/runtime.h"
#include "analysis/io/safetensors.h"
#include "analysis/model/arch.h"
#include "analysis/model/device.h"
#include "analysis/model/model.h"

using namespace moefy;
using Clock = std::chrono::steady_clock;

namespace {

double seconds(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

// --device: where the gpt2 case's model and its GEMM rates run (cuda needs a
// CUDA-enabled libtorch build, scripts/gpu-check.sh).
c10::Device gDevice(c10::kCPU);
// Waits for the device's queued work before a clock is read (a no-op on the
// CPU): reading one value back synchronises.
void sync(const at::Tensor& t) {
  if (!t.is_cpu()) (void)t.reshape({-1})[0].item<float>();
}

struct Gemm {
  const char* what;
  int64_t batch, m, k, n;      // batch x ([m, k] x [k, n])
  double count;                // how many per forward
  double rate = 0;             // measured GFLOP/s
  const char* part = nullptr;  // the part of the time split it belongs to (t5, mixtral)
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
    } else if (!gDevice.is_cpu()) {
      at::bmm_out(out, a, w.transpose(1, 2));  // one batched kernel on a device
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
  const auto on = at::TensorOptions().device(gDevice);
  if (g.batch == 1) {
    a = at::randn({g.m, g.k}, on);
    w = at::randn({g.n, g.k}, on);  // nn.Linear weight [out, in]
    out = at::empty({g.m, g.n}, on);
  } else {
    a = at::randn({g.batch, g.m, g.k}, on);
    w = at::randn({g.batch, g.n, g.k}, on);
    out = at::empty({g.batch, g.m, g.n}, on);
  }
  once();
  sync(out);
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    auto t0 = Clock::now();
    once();
    sync(out);
    best = std::min(best, seconds(t0, Clock::now()));
  }
  return g.flops() / best / 1e9;
}

struct Options {
  std::string which = "gpt2";
  int64_t batch = 8, seq = 256;
  int reps = 2;
  bool smoke = false;
};

// A failed check of the bench's own invariants (exit 1).
struct CheckFailed : std::runtime_error {
  using std::runtime_error::runtime_error;
};

void check(bool ok, const std::string& what) {
  if (!ok) throw CheckFailed(what);
}

// Norm weights are the 1-D tensors that multiply (start at 1); the other
// vectors are biases (start at 0). Role names: "attn_norm", "cross_norm",
// "attn_q_norm", ...; their biases end in "_b" ("attn_norm_b").
bool isNormWeight(Role role) {
  const std::string n = roleName(role);
  return n.find("norm") != std::string::npos && n.substr(n.size() - 2) != "_b";
}

// Random F32 weights of every tensor the architecture table asks of `cfg`
// (all stacks, layers and experts): norms 1, biases 0, matrices N(0, std^2).
// The values only have to keep the forward finite and the routing spread.
std::map<std::string, at::Tensor> randomWeights(const ModelConfig& cfg, double std) {
  const auto& table = archTable(cfg);
  const std::string prefix = table.prefixes.empty() ? "" : table.prefixes.front();
  std::map<std::string, at::Tensor> out;
  for (const auto& row : table.rows) {
    auto shape = expectedShape(row.role, cfg);
    if (!shape || (row.role == Role::LmHead && cfg.tiedEmbeddings)) continue;
    const int experts = row.perExpert ? cfg.expertCount : 1;
    for (int L = 0; L < rowLayerCount(row, cfg); ++L) {
      if (row.perLayer && !roleInLayer(row.role, cfg, L)) continue;
      for (int e = 0; e < experts; ++e) {
        std::vector<int64_t> s = *shape;
        if (row.conv1d) std::reverse(s.begin(), s.end());
        const std::string name =
            (roleIsHead(row.role) ? "" : prefix) + expandPattern(row.pattern, L, row.perExpert ? e : -1);
        out[name] = s.size() == 1 ? (isNormWeight(row.role) ? at::ones(s) : at::zeros(s)) : at::randn(s) * std;
      }
    }
  }
  return out;
}

// FLOPs of the model's weight matrices per forward: 2 x numel x the tokens
// each one multiplies (`tokensOf` a tensor name; 0 for tables that are only
// looked up). The GEMM list of a case must add up to this.
double weightFlops(const Model& model, const std::function<double(const std::string&)>& tokensOf) {
  double f = 0;
  for (const auto& [name, t] : model.tensors())
    if (t.dim() == 2) f += 2.0 * static_cast<double>(t.numel()) * tokensOf(name);
  return f;
}

void checkGemmList(const std::vector<Gemm>& gemms, double weights, const char* name) {
  double listed = 0;
  for (const auto& g : gemms)
    if (g.batch == 1) listed += g.count * g.flops();
  check(std::abs(listed - weights) <= 1e-9 * weights,
        std::string(name) + ": the GEMM list has " + std::to_string(listed / 1e9) +
            " GFLOP of weight products per forward but the model's weights imply " + std::to_string(weights / 1e9));
}

void checkLogits(const at::Tensor& logits, std::vector<int64_t> shape, const char* name) {
  check(logits.sizes() == at::IntArrayRef(shape),
        std::string(name) + ": logits " + shapeString(logits) + ", expected " + shapeString(shape));
  check(at::isfinite(logits).all().item<bool>(), std::string(name) + ": non-finite logits");
}

// Each shape's rate is the best of the measurements before and after the
// forward runs (the faster SGEMM gives the stricter bound).
void measureRates(std::vector<Gemm>& gemms) {
  for (auto& g : gemms) g.rate = std::max(g.rate, measureGemm(g, 3));
}

// Seconds of `gemms` (those of `part`, or all) at their measured rates.
double boundSeconds(const std::vector<Gemm>& gemms, const char* part = nullptr) {
  double s = 0;
  for (const auto& g : gemms)
    if (!part || (g.part && !std::strcmp(g.part, part))) s += g.count * g.flops() / (g.rate * 1e9);
  return s;
}

double totalFlops(const std::vector<Gemm>& gemms) {
  double f = 0;
  for (const auto& g : gemms) f += g.count * g.flops();
  return f;
}

// Measures the rates, times a warm-up and `reps` forwards between two rate
// measurements and prints the rates, throughput (N tokens per forward), the
// bound and the ratio. Returns the last logits.
at::Tensor timeForward(std::vector<Gemm>& gemms, int64_t N, int reps, const std::function<at::Tensor()>& forward) {
  const double flopsPerForward = totalFlops(gemms);
  measureRates(gemms);
  at::Tensor logits = forward();  // warm-up (allocator, thread pool)
  sync(logits);
  double best = 1e30, total = 0;
  for (int r = 0; r < reps; ++r) {
    auto t0 = Clock::now();
    logits = forward();
    sync(logits);
    double s = seconds(t0, Clock::now());
    best = std::min(best, s);
    total += s;
  }
  measureRates(gemms);
  const double bound = boundSeconds(gemms);  // seconds per forward if every GEMM ran at its rate and nothing else cost

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
  std::printf("strict bound    %10.0f tokens/s (every FLOP at the fastest SGEMM rate, %.1f GFLOP/s)\n", strictTps,
              peak);
  std::printf("ratio           %10.1f %% of the GEMM bound (target >= 60%%); %.1f %% of the strict bound\n",
              100.0 * tps / boundTps, 100.0 * tps / strictTps);
  return logits;
}

// One row of the time split: measured seconds next to the bound of the part's GEMMs.
struct Part {
  const char* name;
  double seconds;
  double bound;
};

void printSplit(const std::vector<Part>& parts) {
  std::printf("\ntime split (one more forward; timers at the engine's hooks and around each FFN call):\n");
  std::printf("  %-20s %9s %14s %11s\n", "part", "time s", "GEMM bound s", "bound/time");
  double t = 0, b = 0;
  for (const auto& p : parts) {
    t += p.seconds, b += p.bound;
    if (p.bound > 0)
      std::printf("  %-20s %9.3f %14.3f %9.1f %%\n", p.name, p.seconds, p.bound, 100.0 * p.bound / p.seconds);
    else
      std::printf("  %-20s %9.3f %14s %11s\n", p.name, p.seconds, "-", "-");
  }
  std::printf("  %-20s %9.3f %14.3f %9.1f %%\n", "total", t, b, 100.0 * b / t);
}

// The model's own FFN arithmetic (denseFfn on the site's weights, as the
// engine runs without an override) with a wall-clock timer around each call,
// summed per stack. The bench calls forward from one thread, so the sums need
// no lock.
class TimedFfn : public FfnOverride {
 public:
  explicit TimedFfn(const Model& model) : model_(model) {}
  at::Tensor forward(int layer, const at::Tensor& x, at::Tensor* hidden) const override {
    return timed(Site::ofLayer(layer), x, hidden);
  }
  at::Tensor forwardSite(const Site& site, const at::Tensor& x, at::Tensor* hidden) const override {
    return timed(site, x, hidden);
  }
  /// Seconds spent in the FFNs of `stack` so far.
  double total(SiteStack stack) const { return total_[static_cast<int>(stack)]; }

 private:
  at::Tensor timed(const Site& site, const at::Tensor& x, at::Tensor* hidden) const {
    const FfnWeights w = model_.ffnWeights(site);
    auto t0 = Clock::now();
    at::Tensor y = denseFfn(w, x, hidden);
    total_[static_cast<int>(site.stack)] += std::chrono::duration<double>(Clock::now() - t0).count();
    return y;
  }
  const Model& model_;
  mutable double total_[3] = {0, 0, 0};
};

// Timestamps of a native MoE forward at its hooks: blk.L.ffn_in (after the
// attention and the FFN norm), blk.L.router_logits (after router, softmax and
// top-k) and blk.L.exp.E.tokens (after expert E's gather, FFN and scatter).
class MoeClock : public HookSink {
 public:
  explicit MoeClock(int layers) : ffnIn(layers), routed(layers), lastExpert(layers), tokens(layers, 0) {}
  bool wants(int, HookPoint) const override { return false; }
  bool wantsSite(const Site& s, HookPoint p) const override {
    if (s.stack != SiteStack::Single || s.shared) return false;
    return s.expert < 0 ? (p == HookPoint::FfnIn || p == HookPoint::RouterLogits) : p == HookPoint::ExpertTokens;
  }
  void on(int, HookPoint, const at::Tensor&) override {}
  void onSite(const Site& s, HookPoint p, const at::Tensor& x) override {
    const auto now = Clock::now();
    const auto L = static_cast<size_t>(s.layer);
    if (s.expert >= 0) {
      lastExpert[L] = now;
      tokens[L] += x.size(0);
      minTokens = std::min(minTokens, x.size(0));
      maxTokens = std::max(maxTokens, x.size(0));
    } else if (p == HookPoint::FfnIn) {
      ffnIn[L] = now;
    } else {
      routed[L] = now;
    }
  }
  std::vector<Clock::time_point> ffnIn, routed, lastExpert;
  std::vector<int64_t> tokens;  // tokens routed per layer (all experts): must be top-k x N
  int64_t minTokens = std::numeric_limits<int64_t>::max(), maxTokens = 0;
};

// ---------------------------------------------------------------- GPT-2 small
int gpt2Case(const Options& o) {
  const bool s = o.smoke;
  const int64_t B = o.batch, T = o.seq;
  const int64_t L = s ? 2 : 12, C = s ? 64 : 768, F = s ? 256 : 3072, H = s ? 4 : 12, V = s ? 1000 : 50257,
                P = s ? 128 : 1024;
  nlohmann::json j = {{"model_type", "gpt2"},
                      {"n_layer", L},
                      {"n_embd", C},
                      {"n_head", H},
                      {"n_inner", F},
                      {"vocab_size", V},
                      {"n_positions", P},
                      {"activation_function", "gelu_new"},
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
  LoadOptions placement;
  placement.device = gDevice;
  auto model = Model::fromTensors(cfg, std::move(w), placement);
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
  const std::string wpe = model->tensorName(Role::PosEmbd);
  checkGemmList(gemms, weightFlops(*model, [&](const std::string& n) { return n == wpe ? 0.0 : double(N); }), "gpt2");

  std::printf(
      "bench_forward: GPT-2-small shape (L=%lld, d_model=%lld, d_ff=%lld, heads=%lld, vocab=%lld), "
      "batch %lld x %lld, %d threads, device %s\n",
      (long long)L, (long long)C, (long long)F, (long long)H, (long long)V, (long long)B, (long long)T,
      runtimeThreads(), gDevice.str().c_str());
  std::printf("model FLOPs per token: %.1f MFLOP (matmuls incl. attention and LM head)\n", totalFlops(gemms) / N / 1e6);

  at::Tensor ids = at::randint(0, V, {B, T}, at::kLong);
  Batch batch{ids, at::ones({B, T}, at::kLong), {}};
  at::Tensor logits = timeForward(gemms, N, o.reps, [&] { return model->forward(batch); });
  checkLogits(logits, {B, T, V}, "gpt2");
  if (s)
    std::printf("smoke gpt2: ok (logits %s finite, GEMM list = the weights' FLOPs)\n", shapeString(logits).c_str());
  return 0;
}

// ------------------------------------------------------------ T5-base (v1.0)
int t5Case(const Options& o) {
  const bool s = o.smoke;
  const int64_t B = o.batch, S = o.seq, T = o.seq;  // source and target lengths
  const int64_t L = s ? 2 : 12, C = s ? 64 : 768, F = s ? 256 : 3072, H = s ? 4 : 12, D = s ? 16 : 64,
                V = s ? 1000 : 32128;
  nlohmann::json j = {{"model_type", "t5"},
                      {"num_layers", L},
                      {"num_decoder_layers", L},
                      {"d_model", C},
                      {"d_kv", D},
                      {"num_heads", H},
                      {"d_ff", F},
                      {"vocab_size", V},
                      {"feed_forward_proj", "relu"},
                      {"tie_word_embeddings", true},
                      {"relative_attention_num_buckets", 32},
                      {"relative_attention_max_distance", 128},
                      {"layer_norm_epsilon", 1e-6},
                      {"decoder_start_token_id", 0}};
  ModelConfig cfg = ModelConfig::fromJson(j, "bench t5 config");
  at::manual_seed(0);
  auto model = Model::fromTensors(cfg, randomWeights(cfg, 0.02));
  const int64_t Ns = B * S, Nt = B * T, HD = H * D;
  const double l = static_cast<double>(L);

  // The model's GEMMs per forward (model/t5.cpp): separate q/k/v/o
  // projections; the decoder's cross-attention projects its queries from the
  // decoder and its keys/values from the encoder output; score and value
  // products per (sequence, head); the tied head on the decoder positions.
  std::vector<Gemm> gemms = {
      {"enc_qkv", 1, Ns, C, HD, 3 * l, 0, "encoder attention"},
      {"enc_o  ", 1, Ns, HD, C, l, 0, "encoder attention"},
      {"enc_scr", B * H, S, D, S, l, 0, "encoder attention"},
      {"enc_val", B * H, S, S, D, l, 0, "encoder attention"},
      {"enc_up ", 1, Ns, C, F, l, 0, "encoder FFN"},
      {"enc_dn ", 1, Ns, F, C, l, 0, "encoder FFN"},
      {"dec_qkv", 1, Nt, C, HD, 3 * l, 0, "decoder attention"},
      {"dec_o  ", 1, Nt, HD, C, l, 0, "decoder attention"},
      {"dec_scr", B * H, T, D, T, l, 0, "decoder attention"},
      {"dec_val", B * H, T, T, D, l, 0, "decoder attention"},
      {"x_q    ", 1, Nt, C, HD, l, 0, "decoder attention"},
      {"x_kv   ", 1, Ns, C, HD, 2 * l, 0, "decoder attention"},
      {"x_o    ", 1, Nt, HD, C, l, 0, "decoder attention"},
      {"x_scr  ", B * H, T, D, S, l, 0, "decoder attention"},
      {"x_val  ", B * H, T, S, D, l, 0, "decoder attention"},
      {"dec_up ", 1, Nt, C, F, l, 0, "decoder FFN"},
      {"dec_dn ", 1, Nt, F, C, l, 0, "decoder FFN"},
      {"lm_head", 1, Nt, C, V, 1.0, 0, "lm_head"},
  };
  const std::string relBias = "relative_attention_bias";
  checkGemmList(gemms,
                weightFlops(*model,
                            [&](const std::string& n) {
                              if (n.find(relBias) != std::string::npos) return 0.0;  // a lookup table
                              if (n.rfind("encoder.", 0) == 0) return double(Ns);
                              if (n.find("EncDecAttention.k.") != std::string::npos ||
                                  n.find("EncDecAttention.v.") != std::string::npos)
                                return double(Ns);
                              return double(Nt);  // decoder, and shared.weight as the tied head
                            }),
                "t5");

  const int64_t N = Ns + Nt;
  std::printf(
      "bench_forward: T5-base shape (v1.0 relu, tied; L=%lld+%lld, d_model=%lld, d_ff=%lld, heads=%lld x "
      "d_kv %lld, vocab=%lld), batch %lld x (%lld source + %lld target), %d threads\n",
      (long long)L, (long long)L, (long long)C, (long long)F, (long long)H, (long long)D, (long long)V, (long long)B,
      (long long)S, (long long)T, runtimeThreads());
  std::printf("model FLOPs per token: %.1f MFLOP (matmuls incl. attention and LM head; tokens = source + target)\n",
              totalFlops(gemms) / N / 1e6);

  at::Tensor src = at::randint(0, V, {B, S}, at::kLong), dec = at::randint(0, V, {B, T}, at::kLong);
  dec.select(1, 0).fill_(cfg.decoderStartId);
  Batch source{src, at::ones({B, S}, at::kLong), {}};
  Batch decoder{dec, at::ones({B, T}, at::kLong), {}};
  at::Tensor logits = timeForward(gemms, N, o.reps, [&] { return model->forwardSeq2Seq(source, decoder); });
  checkLogits(logits, {B, T, V}, "t5");

  // The split: the public stages of forwardSeq2Seq, with the FFNs timed inside.
  auto ffn = std::make_shared<TimedFfn>(*model);
  model->setFfnOverride(ffn);
  auto t0 = Clock::now();
  at::Tensor enc = model->encode(source);
  auto t1 = Clock::now();
  at::Tensor hidden = model->decodeHidden(enc, source.mask, decoder);
  auto t2 = Clock::now();
  at::Tensor split = model->head(hidden);
  auto t3 = Clock::now();
  model->setFfnOverride(nullptr);
  const double encFfn = ffn->total(SiteStack::Encoder), decFfn = ffn->total(SiteStack::Decoder);
  printSplit({
      {"encoder attention", seconds(t0, t1) - encFfn, boundSeconds(gemms, "encoder attention")},
      {"encoder FFN", encFfn, boundSeconds(gemms, "encoder FFN")},
      {"decoder attention", seconds(t1, t2) - decFfn, boundSeconds(gemms, "decoder attention")},
      {"decoder FFN", decFfn, boundSeconds(gemms, "decoder FFN")},
      {"lm_head", seconds(t2, t3), boundSeconds(gemms, "lm_head")},
  });
  std::printf("  (attention rows include the norms, residual adds and the relative position bias)\n");
  const double diff = (split - logits).abs().max().item<double>();
  check(diff <= 1e-4, "t5: the split forward's logits differ from forwardSeq2Seq's by " + std::to_string(diff));
  if (s)
    std::printf("smoke t5: ok (logits %s finite, split forward max abs diff %.3g, GEMM list = the weights' FLOPs)\n",
                shapeString(logits).c_str(), diff);
  return 0;
}

// ------------------------------------------------ Mixtral-8x7B scaled to 24 GB
int mixtralCase(const Options& o) {
  const bool s = o.smoke;
  const int64_t B = o.batch, T = o.seq, N = B * T;
  const int64_t L = s ? 2 : 8, C = s ? 64 : 1024, F = s ? 224 : 3584, H = s ? 4 : 8, KV = 2, E = 8, K = 2,
                V = s ? 1000 : 32000;
  const int64_t D = C / H;
  nlohmann::json j = {{"model_type", "mixtral"},  {"num_hidden_layers", L},
                      {"hidden_size", C},         {"intermediate_size", F},
                      {"num_attention_heads", H}, {"num_key_value_heads", KV},
                      {"num_local_experts", E},   {"num_experts_per_tok", K},
                      {"vocab_size", V},          {"max_position_embeddings", 32768},
                      {"rms_norm_eps", 1e-5},     {"rope_theta", 1e6},
                      {"hidden_act", "silu"},     {"tie_word_embeddings", false}};
  ModelConfig cfg = ModelConfig::fromJson(j, "bench mixtral config");
  at::manual_seed(0);
  auto model = Model::fromTensors(cfg, randomWeights(cfg, 0.02));
  const double l = static_cast<double>(L), routed = static_cast<double>(N * K);
  // Each expert gets N k / E tokens on average (the random router spreads
  // them; the split below prints the real range). Its GEMMs are timed at that
  // mean size; `count` keeps the total FLOPs exact when E does not divide N k.
  const int64_t n = std::max<int64_t>(1, std::llround(routed / static_cast<double>(E)));

  // The model's GEMMs per forward (Model::attention, Model::nativeMoe): q, k,
  // v (GQA: KV heads), o; scores/values per (sequence, head); the router;
  // per expert act(x W1^T) * (x W3^T) then W2 on its tokens; the LM head.
  std::vector<Gemm> gemms = {
      {"q      ", 1, N, C, H * D, l, 0, "attention"},
      {"kv     ", 1, N, C, KV * D, 2 * l, 0, "attention"},
      {"o      ", 1, N, H * D, C, l, 0, "attention"},
      {"scores ", B * H, T, D, T, l, 0, "attention"},
      {"values ", B * H, T, T, D, l, 0, "attention"},
      {"router ", 1, N, C, E, l, 0, "router"},
      {"exp_gu ", 1, n, C, F, 2 * l * routed / double(n), 0, "expert FFNs"},
      {"exp_dn ", 1, n, F, C, l * routed / double(n), 0, "expert FFNs"},
      {"lm_head", 1, N, C, V, 1.0, 0, "lm_head"},
  };
  const std::string embed = model->tensorName(Role::TokEmbd);
  checkGemmList(gemms,
                weightFlops(*model,
                            [&](const std::string& name) {
                              if (name == embed) return 0.0;  // untied: a lookup table (lm_head is its own weight)
                              if (name.find(".experts.") != std::string::npos) return routed / double(E);
                              return double(N);
                            }),
                "mixtral");

  const double gb = static_cast<double>(model->parameterCount()) * 4 / 1e9;
  std::printf(
      "bench_forward: Mixtral-8x7B shape scaled (width/4, depth/4: L=%lld, d_model=%lld, %lld experts x d_ff "
      "%lld, top-%lld, heads=%lld (%lld KV) x %lld, vocab=%lld; %.2f G params, %.1f GB F32), "
      "batch %lld x %lld, %d threads\n",
      (long long)L, (long long)C, (long long)E, (long long)F, (long long)K, (long long)H, (long long)KV, (long long)D,
      (long long)V, gb / 4, gb, (long long)B, (long long)T, runtimeThreads());
  std::printf("model FLOPs per token: %.1f MFLOP (matmuls incl. attention, router and LM head; %lld of %lld experts)\n",
              totalFlops(gemms) / N / 1e6, (long long)K, (long long)E);

  at::Tensor ids = at::randint(0, V, {B, T}, at::kLong);
  Batch batch{ids, at::ones({B, T}, at::kLong), {}};
  at::Tensor logits = timeForward(gemms, N, o.reps, [&] { return model->forward(batch); });
  checkLogits(logits, {B, T, V}, "mixtral");

  // The split: timestamps at the hooks, the expert FFNs timed inside.
  auto ffn = std::make_shared<TimedFfn>(*model);
  MoeClock clock(static_cast<int>(L));
  model->setFfnOverride(ffn);
  auto t0 = Clock::now();
  at::Tensor split = model->forward(batch, &clock);
  auto t1 = Clock::now();
  model->setFfnOverride(nullptr);
  double attn = 0, router = 0, moe = 0;
  for (size_t i = 0; i < static_cast<size_t>(L); ++i) {
    attn += seconds(i == 0 ? t0 : clock.lastExpert[i - 1], clock.ffnIn[i]);
    router += seconds(clock.ffnIn[i], clock.routed[i]);
    moe += seconds(clock.routed[i], clock.lastExpert[i]);
    check(clock.tokens[i] == N * K, "mixtral: layer " + std::to_string(i) + " routed " +
                                        std::to_string(clock.tokens[i]) + " (token, expert) pairs, expected " +
                                        std::to_string(N * K));
  }
  const double expertFfn = ffn->total(SiteStack::Single);
  printSplit({
      {"attention", attn, boundSeconds(gemms, "attention")},
      {"router", router, boundSeconds(gemms, "router")},
      {"expert FFNs", expertFfn, boundSeconds(gemms, "expert FFNs")},
      {"expert dispatch", moe - expertFfn, 0},
      {"lm_head", seconds(clock.lastExpert.back(), t1), boundSeconds(gemms, "lm_head")},
  });
  std::printf(
      "  (attention includes the embedding, norms, RoPE and residual adds; router: linear, softmax, top-k;\n"
      "   expert dispatch: the per-expert loop's nonzero, gather, weighting and index_add; lm_head: final "
      "norm + head)\n");
  std::printf("  tokens per expert: min %lld, max %lld, mean %.1f (the bound times every expert at %lld)\n",
              (long long)clock.minTokens, (long long)clock.maxTokens, routed / double(E), (long long)n);
  const double diff = (split - logits).abs().max().item<double>();
  check(diff <= 1e-4, "mixtral: the split forward's logits differ from the plain forward's by " + std::to_string(diff));
  if (s)
    std::printf(
        "smoke mixtral: ok (logits %s finite, split forward max abs diff %.3g, %lld x %lld routed per layer, "
        "GEMM list = the weights' FLOPs)\n",
        shapeString(logits).c_str(), diff, (long long)N, (long long)K);
  return 0;
}

[[noreturn]] void usage(const std::string& what) {
  std::fprintf(stderr,
               "bench_forward: %s (usage: bench_forward [--case gpt2|t5|mixtral|all] [--batch N] [--seq N] "
               "[--reps N] [--device cpu|cuda|cuda:N] [--smoke])\n",
               what.c_str());
  std::exit(2);
}

int64_t positive(const char* key, const char* text) {
  char* end = nullptr;
  const long long v = std::strtoll(text, &end, 10);
  if (end == text || *end != '\0' || v <= 0 || v > (1ll << 30))
    usage(std::string(key) + " must be a positive integer, got '" + text + "'");
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  bool batchSet = false, seqSet = false, repsSet = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--smoke") {
      o.smoke = true;
      continue;
    }
    if (a != "--case" && a != "--batch" && a != "--seq" && a != "--reps" && a != "--device")
      usage("unknown option '" + a + "'");
    if (i + 1 >= argc) usage(a + " needs a value");
    const char* v = argv[++i];
    if (a == "--case") {
      o.which = v;
      if (o.which != "gpt2" && o.which != "t5" && o.which != "mixtral" && o.which != "all")
        usage("--case must be gpt2, t5, mixtral or all, got '" + o.which + "'");
    } else if (a == "--batch") {
      o.batch = positive("--batch", v), batchSet = true;
    } else if (a == "--seq") {
      o.seq = positive("--seq", v), seqSet = true;
    } else if (a == "--device") {
      try {
        gDevice = parseDevice(v);
      } catch (const std::exception& e) {
        usage(e.what());
      }
    } else {
      o.reps = static_cast<int>(positive("--reps", v)), repsSet = true;
    }
  }
  if (o.smoke) {
    if (!batchSet) o.batch = 2;
    if (!seqSet) o.seq = 16;
    if (!repsSet) o.reps = 1;
  }
  if (!gDevice.is_cpu() && o.which != "gpt2") usage("--device " + gDevice.str() + " applies to --case gpt2");
  configureRuntime();
  c10::InferenceMode guard;
  const bool all = o.which == "all";
  try {
    if (all || o.which == "gpt2") gpt2Case(o);
    if (all) std::printf("\n");
    if (all || o.which == "t5") t5Case(o);
    if (all) std::printf("\n");
    if (all || o.which == "mixtral") mixtralCase(o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_forward: %s\n", e.what());
    return 1;
  }
  return 0;
}
