// Mapped half-precision weights (issue 18, "Memory"): a LLaMA-shaped BF16
// checkpoint of about 3 GB is loaded with WeightMode::Convert (every weight
// converted to an owned F32 copy at load: today's path) and with
// WeightMode::Mapped (the BF16 tensors stay views of the file mapping and are
// converted per layer as the forward runs it), each in its own child process
// so that each peak resident size (VmHWM) is its own. Both run the same
// forward and the same recording; printed per path: load time, tokens/s and
// peak RSS against the file size, and the ratios Mapped / Convert from the
// same run. Targets: Mapped peak RSS <= 1.3x the file size; Mapped tokens/s
// within 15 % of Convert. The logits of the two paths are compared (they
// must be bit-identical: the same conversion, done later).
//
// usage: bench_mapped_weights [--dir DIR] [--layers N] [--batch B] [--seq-len T] [--record-layers K]
//   DIR (default $TMPDIR/moefy_bench_mapped) holds the checkpoint; it is
//   generated (random weights, seed 0) when DIR/config.json is missing and
//   reused otherwise. N = 28 layers of d_model 2048, d_ff 5632 (SiLU, gated),
//   16 heads, vocab 8192 gives 1.47 B parameters, 2.94 GB in BF16, in shards
//   of about 500 MB with model.safetensors.index.json, written one shard at
//   a time. The forward runs B x T = 2 x 256 tokens twice (the first is a
//   warm-up); the recording records the first K = 2 layers of 4 x 256 tokens
//   (d_ff^2 co-activation counts: 121 MiB per layer).
// Internal: bench_mapped_weights --child forward|record DIR convert|mapped B T K
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include "analysis/common/runtime.h"
#include "analysis/io/safetensors.h"
#include "analysis/jobs/job.h"
#include "analysis/model/config.h"
#include "analysis/model/model.h"
#include "analysis/record/recorder.h"

#include "bench/bench_common.h"

using namespace moefy;
namespace fs = std::filesystem;

namespace {

using bench::now;
using bench::statusMiB;

constexpr int kDModel = 2048, kDff = 5632, kHeads = 16, kVocab = 8192;

// Writes the random BF16 checkpoint shard by shard (a shard's tensors are the
// only ones in memory) and returns its size in bytes.
double generate(const fs::path& dir, int layers) {
  fs::create_directories(dir);
  nlohmann::json cfg = {
      {"model_type", "llama"},         {"vocab_size", kVocab},        {"hidden_size", kDModel},
      {"intermediate_size", kDff},     {"num_hidden_layers", layers}, {"num_attention_heads", kHeads},
      {"num_key_value_heads", kHeads}, {"hidden_act", "silu"},        {"max_position_embeddings", 2048},
      {"rms_norm_eps", 1e-5},          {"rope_theta", 10000.0},       {"tie_word_embeddings", false},
      {"torch_dtype", "bfloat16"}};
  at::manual_seed(0);
  auto w = [](std::vector<int64_t> s, double sd) { return (at::randn(s) * sd).to(at::kBFloat16); };
  nlohmann::json weightMap = nlohmann::json::object();
  std::vector<std::pair<std::string, at::Tensor>> shard;
  int shardNo = 0;
  double shardBytes = 0;
  const int perShard = 4;  // layers per shard (~470 MB)
  auto flush = [&]() {
    if (shard.empty()) return;
    const std::string name = "model-" + std::to_string(shardNo++) + ".safetensors";
    for (const auto& [n, t] : shard) weightMap[n] = name;
    writeSafetensors(dir / name, shard, {{"format", "pt"}});
    shard.clear();
  };
  auto add = [&](const std::string& n, at::Tensor t) {
    shardBytes += static_cast<double>(t.numel()) * 2;
    shard.emplace_back(n, std::move(t));
  };
  add("model.embed_tokens.weight", w({kVocab, kDModel}, 0.02));
  add("model.norm.weight", at::ones({kDModel}).to(at::kBFloat16));
  add("lm_head.weight", w({kVocab, kDModel}, 0.02));
  for (int L = 0; L < layers; ++L) {
    const std::string p = "model.layers." + std::to_string(L) + ".";
    add(p + "input_layernorm.weight", at::ones({kDModel}).to(at::kBFloat16));
    add(p + "post_attention_layernorm.weight", at::ones({kDModel}).to(at::kBFloat16));
    for (const char* q : {"q_proj", "k_proj", "v_proj", "o_proj"})
      add(p + "self_attn." + q + ".weight", w({kDModel, kDModel}, 0.02));
    add(p + "mlp.gate_proj.weight", w({kDff, kDModel}, 0.02));
    add(p + "mlp.up_proj.weight", w({kDff, kDModel}, 0.02));
    add(p + "mlp.down_proj.weight", w({kDModel, kDff}, 0.02));
    if ((L + 1) % perShard == 0) flush();
  }
  flush();
  nlohmann::json index = {{"metadata", {{"total_size", shardBytes}}}, {"weight_map", weightMap}};
  std::ofstream(dir / "model.safetensors.index.json") << index.dump(1);
  std::ofstream(dir / "config.json") << cfg.dump(1);  // last: its presence marks a complete checkpoint
  return shardBytes;
}

double fileBytes(const fs::path& dir) {
  double n = 0;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().extension() == ".safetensors") n += static_cast<double>(fs::file_size(e.path()));
  return n;
}

std::vector<std::vector<int64_t>> randomIds(int rows, int T) {
  at::manual_seed(1);
  at::Tensor r = at::randint(0, kVocab, {rows, T}, at::kLong);
  std::vector<std::vector<int64_t>> ids(rows);
  for (int i = 0; i < rows; ++i) ids[i].assign(r[i].data_ptr<int64_t>(), r[i].data_ptr<int64_t>() + T);
  return ids;
}

// One measurement in this process; prints "key value" lines for the parent.
int child(const std::string& what, const fs::path& dir, const std::string& mode, int B, int T, int K) {
  configureRuntime();
  LoadOptions lo;
  lo.weights = mode == "mapped" ? WeightMode::Mapped : WeightMode::Convert;
  double t0 = now();
  auto model = Model::load(dir, lo);
  const double load = now() - t0;
  std::printf("load_s %.3f\nmapped %d\nrss_after_load_mib %.1f\n", load, model->mappedWeights() ? 1 : 0,
              statusMiB("VmRSS:"));
  if (what == "forward") {
    auto ids = randomIds(B, T);
    at::Tensor logits = model->forward(makeBatch(ids, 0));  // warm-up (and the logits to compare)
    t0 = now();
    model->forward(makeBatch(ids, 0));
    const double dt = now() - t0;
    std::printf("tokens_per_s %.3f\n", B * T / dt);
    // A checksum of the logits: equal checksums across the two children mean equal logits.
    std::printf("logits_sum %.17g\nlogits_abs %.17g\n", logits.to(at::kDouble).sum().item<double>(),
                logits.to(at::kDouble).abs().sum().item<double>());
  } else {
    std::vector<Sequence> seqs;
    for (const auto& row : randomIds(4 * B, T)) {
      Sequence s;
      s.ids.assign(row.begin(), row.end());
      s.docId = static_cast<int64_t>(seqs.size());
      seqs.push_back(std::move(s));
    }
    RecordOptions o;
    o.seqLen = T;
    o.batch = B;
    o.samples = 1024;
    o.checkpointSeconds = 0;
    for (int L = 0; L < K; ++L) o.layers.push_back(L);
    const fs::path out = fs::temp_directory_path() / ("moefy_bench_mapped_rec_" + mode);
    fs::remove_all(out);
    JobContext job;
    t0 = now();
    recordActivations(*model, vectorSource(seqs), SourceInfo{}, o, out, job);
    const double dt = now() - t0;
    fs::remove_all(out);
    std::printf("tokens_per_s %.3f\n", 4.0 * B * T / dt);
  }
  std::printf("peak_rss_mib %.1f\n", statusMiB("VmHWM:"));
  return 0;
}

std::map<std::string, double> runChild(const std::string& exe, const std::string& what, const fs::path& dir,
                                       const std::string& mode, int B, int T, int K) {
  const std::string cmd = "'" + exe + "' --child " + what + " '" + dir.string() + "' " + mode + " " +
                          std::to_string(B) + " " + std::to_string(T) + " " + std::to_string(K);
  std::map<std::string, double> r;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) throw std::runtime_error("cannot run " + cmd);
  char key[128];
  double v;
  while (std::fscanf(p, "%127s %lf", key, &v) == 2) r[key] = v;
  const int rc = pclose(p);
  if (rc != 0 || !r.count("peak_rss_mib")) throw std::runtime_error("child failed: " + cmd);
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    if (argc >= 8 && !std::strcmp(argv[1], "--child"))
      return child(argv[2], argv[3], argv[4], std::atoi(argv[5]), std::atoi(argv[6]), std::atoi(argv[7]));
    fs::path dir = fs::temp_directory_path() / "moefy_bench_mapped";
    int layers = 28, B = 2, T = 256, K = 2;
    const char* usage =
        "usage: bench_mapped_weights [--dir DIR] [--layers N] [--batch B] [--seq-len T] [--record-layers K]\n"
        "  defaults: DIR $TMPDIR/moefy_bench_mapped (generated when missing, reused otherwise), N 28 (1..64),\n"
        "  B 2 (1..64), T 256 (1..1024), K 2 (1..N)\n";
    const char* prog = "bench_mapped_weights";
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      auto num = [&](int64_t lo, int64_t hi) {
        const int64_t v = bench::intArg(prog, usage, argv[i], bench::valueOf(prog, usage, argc, argv, i), lo, hi);
        ++i;
        return static_cast<int>(v);
      };
      if (bench::isHelp(argv[i])) {
        std::printf("%s", usage);
        return 0;
      } else if (a == "--dir") {
        dir = bench::valueOf(prog, usage, argc, argv, i++);
      } else if (a == "--layers") {
        layers = num(1, 64);
      } else if (a == "--batch") {
        B = num(1, 64);
      } else if (a == "--seq-len") {
        T = num(1, 1024);
      } else if (a == "--record-layers") {
        K = num(1, 64);
      } else {
        bench::badArg(prog, usage, argv[i]);
      }
    }
    if (K > layers) {
      std::fprintf(stderr, "%s: --record-layers %d is more than the model's %d layers\n%s", prog, K, layers, usage);
      return 2;
    }
    if (!fs::exists(dir / "config.json")) {
      const double t0 = now();
      std::printf("generating %d-layer LLaMA-shaped BF16 checkpoint in %s ...\n", layers, dir.c_str());
      std::fflush(stdout);
      // Written next to DIR and renamed into place when complete, so that a
      // failed or interrupted generation never leaves a checkpoint to reuse.
      const fs::path partial = dir.string() + ".partial";
      fs::remove_all(partial);
      generate(partial, layers);
      fs::rename(partial, dir);
      std::printf("  written in %.1f s\n", now() - t0);
    } else {
      std::printf("reusing the checkpoint in %s (--layers applies only when it is generated)\n", dir.c_str());
    }
    const double fileMiB = fileBytes(dir) / (1 << 20);
    const std::string exe = fs::canonical("/proc/self/exe").string();
    std::printf(
        "bench_mapped_weights: %s, %.0f MiB of BF16 weights; forward %d x %d tokens, record %d layers of %d "
        "tokens; threads %s\n",
        dir.c_str(), fileMiB, B, T, K, 4 * B * T,
        std::getenv("MOEFY_THREADS") ? std::getenv("MOEFY_THREADS") : "default");
    std::map<std::string, std::map<std::string, double>> res;
    for (const char* what : {"forward", "record"})
      for (const char* mode : {"convert", "mapped"}) {
        res[std::string(what) + "/" + mode] = runChild(exe, what, dir, mode, B, T, K);
        const auto& r = res[std::string(what) + "/" + mode];
        std::printf("  %-7s %-7s load %6.1f s  %8.2f tok/s  peak RSS %7.0f MiB = %.2fx the file\n", what, mode,
                    r.at("load_s"), r.at("tokens_per_s"), r.at("peak_rss_mib"), r.at("peak_rss_mib") / fileMiB);
        std::fflush(stdout);
      }
    for (const char* what : {"forward", "record"}) {
      const auto& c = res[std::string(what) + "/convert"];
      const auto& m = res[std::string(what) + "/mapped"];
      std::printf(
          "%s: mapped peak RSS %.2fx the file (target <= 1.3x), %.2fx convert's; tokens/s mapped/convert "
          "%.3f (target >= 0.85)\n",
          what, m.at("peak_rss_mib") / fileMiB, m.at("peak_rss_mib") / c.at("peak_rss_mib"),
          m.at("tokens_per_s") / c.at("tokens_per_s"));
    }
    const auto& fc = res["forward/convert"];
    const auto& fm = res["forward/mapped"];
    const bool same = fc.at("logits_sum") == fm.at("logits_sum") && fc.at("logits_abs") == fm.at("logits_abs");
    std::printf("logits of the two paths: %s (sum %.17g vs %.17g)\n", same ? "identical" : "DIFFERENT",
                fc.at("logits_sum"), fm.at("logits_sum"));
    return same ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_mapped_weights: %s\n", e.what());
    return 1;
  }
}
