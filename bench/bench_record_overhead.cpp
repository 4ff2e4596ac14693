// Recording overhead: `recordActivations` over all 12 layers of a random
// GPT-2-small-shaped model (d_model 768, d_ff 3072, ReLU with negative FFN
// biases for ~10-30% density) vs a plain forward pass over the same tokens,
// measured in the same run. Target: recording <= 1.5x the plain forward.
// usage: bench_record_overhead [BATCHES] [BATCH] [SEQ_LEN] [SAMPLES]
//        bench_record_overhead --wide [BATCHES BATCH SEQ_LEN SAMPLES]
// The default is 8 x 4 x 256 = 8192 tokens: writing the folder (the L x d_ff^2
// co-activation counts, ~450 MB here, plus the samples) is a one-off cost
// that a 2048-token run would let dominate (1.85x there, 1.06x without it).
// --wide: LLaMA-7B's FFN width on one layer (d_model 768, d_ff 11008, vocab
// 8192, ReLU with a bias for ~10 % density), 16 x 16 x 256 = 65,536 tokens,
// no samples: the co-activation counts (d_ff^2 int32, 462 MiB) dominate the
// recording's memory; prints the peak resident memory of the recording above
// the process before it, and above the peak of the plain forward over the same
// batches (the forward's own [batch tokens, d_ff] products are in both),
// against the counts (target: what the recording adds <= counts + 10 %).
#include <torch/torch.h>

#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <string>

#include "analysis/common/runtime.h"
#include "analysis/jobs/job.h"
#include "analysis/model/config.h"
#include "analysis/model/model.h"
#include "analysis/record/recorder.h"
#include "analysis/record/recording.h"

#include "bench/bench_common.h"

using namespace moefy;
namespace fs = std::filesystem;

using bench::now;
using bench::statusMiB;

int benchMain(int argc, char** argv) {
  configureRuntime();
  const char* usage =
      "usage: bench_record_overhead [BATCHES] [BATCH] [SEQ_LEN] [SAMPLES]\n"
      "       bench_record_overhead --wide [BATCHES BATCH SEQ_LEN SAMPLES]\n";
  const char* prog = "bench_record_overhead";
  if (argc > 1 && bench::isHelp(argv[1])) {
    std::printf("%s", usage);
    return 0;
  }
  const bool wide = argc > 1 && !std::strcmp(argv[1], "--wide");
  if (wide) --argc, ++argv;
  if (argc > 5) bench::badArg(prog, usage, argv[5]);
  for (int i = 1; i < argc; ++i)
    if (argv[i][0] == '-' && !std::isdigit(static_cast<unsigned char>(argv[i][1]))) bench::badArg(prog, usage, argv[i]);
  const int batches =
      argc > 1 ? static_cast<int>(bench::intArg(prog, usage, "BATCHES", argv[1], 1, 1 << 20)) : (wide ? 16 : 8);
  const int B = argc > 2 ? static_cast<int>(bench::intArg(prog, usage, "BATCH", argv[2], 1, 4096)) : (wide ? 16 : 4);
  const int T = argc > 3 ? static_cast<int>(bench::intArg(prog, usage, "SEQ_LEN", argv[3], 1, 1024)) : 256;
  const int64_t samples = argc > 4 ? bench::intArg(prog, usage, "SAMPLES", argv[4], 0, 1ll << 24) : (wide ? 0 : 65536);
  const int C = 768, F = wide ? 11008 : 3072, V = wide ? 8192 : 50257, P = 1024, Lyr = wide ? 1 : 12;
  nlohmann::json cfg = {{"model_type", "gpt2"}, {"vocab_size", V}, {"n_positions", P}, {"n_embd", C},
                        {"n_layer", Lyr},       {"n_head", 12},   {"n_inner", F},    {"activation_function", "relu"},
                        {"layer_norm_epsilon", 1e-5}};
  ModelConfig config = ModelConfig::fromJson(cfg, "bench");
  at::manual_seed(0);
  std::map<std::string, at::Tensor> t;
  auto w = [](std::vector<int64_t> s, double sd) { return at::randn(s) * sd; };
  t["wte.weight"] = w({V, C}, 0.02);
  t["wpe.weight"] = w({P, C}, 0.01);
  t["ln_f.weight"] = at::ones({C});
  t["ln_f.bias"] = at::zeros({C});
  for (int L = 0; L < Lyr; ++L) {
    std::string h = "h." + std::to_string(L) + ".";
    t[h + "ln_1.weight"] = at::ones({C});
    t[h + "ln_1.bias"] = at::zeros({C});
    t[h + "attn.c_attn.weight"] = w({C, 3 * C}, 0.02);
    t[h + "attn.c_attn.bias"] = at::zeros({3 * C});
    t[h + "attn.c_proj.weight"] = w({C, C}, 0.02);
    t[h + "attn.c_proj.bias"] = at::zeros({C});
    t[h + "ln_2.weight"] = at::ones({C});
    t[h + "ln_2.bias"] = at::zeros({C});
    t[h + "mlp.c_fc.weight"] = w({C, F}, 0.036);  // pre-activation std ~ 1
    t[h + "mlp.c_fc.bias"] = at::full({F}, wide ? -1.28 : -1.0) + w({F}, 0.2);
    t[h + "mlp.c_proj.weight"] = w({F, C}, 0.02);
    t[h + "mlp.c_proj.bias"] = at::zeros({C});
  }
  auto model = Model::fromTensors(config, std::move(t));
  std::vector<Sequence> seqs;
  std::vector<std::vector<int64_t>> ids;
  for (int i = 0; i < batches * B; ++i) {
    Sequence s;
    at::Tensor r = at::randint(0, V, {T}, at::kLong);
    for (int k = 0; k < T; ++k) s.ids.push_back(static_cast<int32_t>(r[k].item<int64_t>()));
    s.docId = i;
    ids.emplace_back(s.ids.begin(), s.ids.end());
    seqs.push_back(std::move(s));
  }
  const int64_t tokens = static_cast<int64_t>(batches) * B * T;
  std::printf(
      "bench_record_overhead: %s (%d x %d/%d, vocab %d), %lld tokens (%d x %d x %d), samples %lld, %d threads\n",
      wide ? "LLaMA-7B FFN width, one layer" : "GPT-2-small shape", Lyr, C, F, V, static_cast<long long>(tokens),
      batches, B, T, static_cast<long long>(samples), runtimeThreads());
  // Warm-up.
  model->forward(makeBatch({ids[0]}, 0));

  double t0 = now();
  for (int b = 0; b < batches; ++b) {
    std::vector<std::vector<int64_t>> part(ids.begin() + b * B, ids.begin() + (b + 1) * B);
    model->forward(makeBatch(part, 0));
  }
  const double tForward = now() - t0;
  std::ofstream("/proc/self/clear_refs") << "5";  // reset the peak resident size
  const double rssBeforeHidden = statusMiB("VmRSS:");
  t0 = now();
  for (int b = 0; b < batches; ++b) {
    std::vector<std::vector<int64_t>> part(ids.begin() + b * B, ids.begin() + (b + 1) * B);
    model->forwardHidden(makeBatch(part, 0));
  }
  const double tHidden = now() - t0;
  // The forward's own transient memory per batch (the FFN's [B x T, d_ff]
  // products), which the recording's peak includes as well.
  const double peakHidden = statusMiB("VmHWM:") - rssBeforeHidden;

  fs::path out = fs::temp_directory_path() / "moefy_bench_record";
  fs::remove_all(out);
  RecordOptions o;
  o.seqLen = T;
  o.batch = B;
  o.samples = samples;
  o.checkpointSeconds = 0;
  double tWriteStart = 0;
  JobContext job([&](const std::string& stage, double) {
    if (stage == "record: write") tWriteStart = now();
  }, nullptr);
  std::ofstream("/proc/self/clear_refs") << "5";  // reset the peak resident size
  const double rssBefore = statusMiB("VmRSS:");
  t0 = now();
  recordActivations(*model, vectorSource(seqs), SourceInfo{}, o, out, job);
  const double tRecord = now() - t0;
  const double peakRecord = statusMiB("VmHWM:") - rssBefore;
  const double countsMiB = static_cast<double>(Lyr) * F * F * 4 / (1 << 20);
  const double tWrite = tWriteStart > 0 ? now() - tWriteStart : 0;  // approx: until after return
  Recording rec = Recording::open(out);
  const double density = rec.count(Lyr / 2).sum().item<double>() / (static_cast<double>(tokens) * F);
  fs::remove_all(out);

  std::printf("  plain forward (logits)      : %7.2f s  (%.0f tok/s)\n", tForward, tokens / tForward);
  std::printf("  forward to last hidden      : %7.2f s\n", tHidden);
  std::printf("  record all %2d layers (total): %7.2f s  (of which writing the folder ~%.2f s)\n", Lyr, tRecord,
              tWrite);
  std::printf("  layer-%d density %.3f\n", Lyr / 2, density);
  std::printf("  peak memory of the recording above the process: %.0f MiB; co-activation counts %.0f MiB (%.2fx)\n",
              peakRecord, countsMiB, peakRecord / countsMiB);
  // The memory the recording holds besides the forward's: the counts, and
  // with samples the reservoir's filled rows (F16 [S, d_model + d_ff] per
  // layer; only min(S, tokens) rows are resident).
  const double filledMiB =
      static_cast<double>(Lyr) * static_cast<double>(std::min(samples, tokens)) * (C + F) * 2 / (1 << 20);
  char held[96];
  if (samples == 0)
    std::snprintf(held, sizeof held, "the counts; target <= 1.10x");
  else
    std::snprintf(held, sizeof held, "the counts and the %.0f MiB of filled sample rows", filledMiB);
  std::printf(
      "  the forward alone (to the last hidden) peaks %.0f MiB above the process; the recording adds %.0f MiB to it "
      "(%.2fx %s)\n",
      peakHidden, peakRecord - peakHidden, (peakRecord - peakHidden) / (countsMiB + filledMiB), held);
  std::printf("  ratio record / forward = %.2fx (target <= 1.5x); excluding the one-off write %.2fx\n",
              tRecord / tForward, (tRecord - tWrite) / tForward);
  return 0;
}

int main(int argc, char** argv) {
  return bench::runReportingErrors("bench_record_overhead", [&] { return benchMain(argc, argv); });
}
