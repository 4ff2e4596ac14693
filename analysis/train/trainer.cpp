// Language-model training: data stream, GPT-2 init, AdamW, schedule, eval, checkpoints.
#include "analysis/train/trainer.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "analysis/analyze/moe_stats.h"
#include "analysis/common/error.h"
#include "analysis/common/runtime.h"
#include "analysis/io/fsutil.h"
#include "analysis/io/json_input.h"
#include "analysis/io/safetensors.h"
#include "analysis/jobs/job.h"
#include "analysis/model/arch.h"
#include "analysis/model/model.h"
#include "analysis/text/tokenizer.h"
#include "analysis/train/bpe_trainer.h"
#include "analysis/train/router_loss.h"

namespace moefy {

namespace {

namespace fs = std::filesystem;

// Encodes documents with the project's Tokenizer when it can load the file,
// else with the trainer's own byte-level BPE encoder (same ids: both are
// checked against the HF reference in tests/core/test_bpe_trainer.cpp).
class DocEncoder {
 public:
  explicit DocEncoder(const fs::path& path) {
    try {
      tok_ = Tokenizer::fromFile(path);
      vocab_ = tok_->vocabSize();
      kind_ = tok_->kind();
    } catch (const FormatError& e) {
      bpe_ = std::make_unique<BpeEncoder>(BpeModel::fromTokenizerJson(path));
      vocab_ = static_cast<int64_t>(bpe_->model().tokens.size());
      kind_ = "byte-level BPE (trainer encoder), " + std::to_string(vocab_) + " tokens";
    }
  }
  std::vector<int32_t> encode(const std::string& text) const {
    return tok_ ? tok_->encode(text, true) : bpe_->encode(text, true);
  }
  int64_t vocab() const { return vocab_; }
  const std::string& kind() const { return kind_; }

 private:
  std::unique_ptr<Tokenizer> tok_;
  std::unique_ptr<BpeEncoder> bpe_;
  int64_t vocab_ = 0;
  std::string kind_;
};

bool isNormRole(Role r) {
  switch (r) {
    case Role::AttnNorm:
    case Role::FfnNorm:
    case Role::OutNorm:
    case Role::EmbNorm:
    case Role::HeadNorm:
    case Role::AttnPostNorm:
    case Role::FfnPostNorm:
    case Role::AttnQNorm:
    case Role::AttnKNorm:
      return true;
    default:
      return false;
  }
}
bool isBiasRole(Role r) {
  switch (r) {
    case Role::EmbNormB:
    case Role::OutNormB:
    case Role::LmHeadB:
    case Role::HeadDenseB:
    case Role::HeadNormB:
    case Role::AttnNormB:
    case Role::AttnQKVB:
    case Role::AttnQB:
    case Role::AttnKB:
    case Role::AttnVB:
    case Role::AttnOutB:
    case Role::FfnNormB:
    case Role::FfnUpB:
    case Role::FfnDownB:
      return true;
    default:
      return false;
  }
}
// Projections whose output is added to the residual stream (GPT-2's scaled init).
bool isResidualOut(Role r) {
  return r == Role::AttnOut || r == Role::FfnDown || r == Role::ExpDown || r == Role::SharedDown;
}

// GPT-2 initialisation of every tensor the architecture needs: matrices
// (routers and experts included) normal(0, 0.02), residual output projections
// normal(0, 0.02 / sqrt(2 n_layer)), norms 1 (0 where the norm applies 1 + w),
// biases 0. Per-expert rows repeat for every expert; rows a block lacks (the
// dense MLP of a MoE block and vice versa) are skipped as the loader does.
std::map<std::string, at::Tensor> initTensors(const ModelConfig& cfg, uint64_t seed) {
  torch::manual_seed(seed);
  const auto& table = archTable(cfg);
  const std::string prefix = table.prefixes.empty() ? "" : table.prefixes.front();
  const double std0 = 0.02, stdResid = 0.02 / std::sqrt(2.0 * cfg.nLayer);
  std::map<std::string, at::Tensor> out;
  for (const auto& row : table.rows) {
    auto shape = expectedShape(row.role, cfg);
    if (!shape) continue;
    if (row.role == Role::LmHead && cfg.tiedEmbeddings) continue;
    const int layers = row.perLayer ? cfg.nLayer : 1;
    const int experts = row.perExpert ? cfg.expertCount : 1;
    for (int L = 0; L < layers; ++L) {
      if (row.perLayer && !roleInLayer(row.role, cfg, L)) continue;
      for (int E = 0; E < experts; ++E) {
        std::vector<int64_t> s = *shape;
        if (row.conv1d) std::reverse(s.begin(), s.end());
        at::Tensor t;
        if (isNormRole(row.role)) {
          t = cfg.normPlusOne ? torch::zeros(s) : torch::ones(s);
        } else if (isBiasRole(row.role)) {
          t = torch::zeros(s);
        } else {
          t = torch::randn(s) * (isResidualOut(row.role) ? stdResid : std0);
        }
        std::string name = (roleIsHead(row.role) ? "" : prefix) + expandPattern(row.pattern, L, row.perExpert ? E : -1);
        out.emplace(name, t);
      }
    }
  }
  return out;
}

std::vector<int32_t> tokenStream(const fs::path& corpus, const DocEncoder& enc, int keepMod, bool keep, JobContext& job,
                                 int64_t* docs) {
  auto files = corpusTextFiles(corpus);
  if (keepMod > 0 && files.size() < 2)
    throw FormatError(corpus.string() + ": needs at least 2 documents to hold one out (or give --heldout)");
  std::vector<int32_t> stream;
  *docs = 0;
  for (size_t i = 0; i < files.size(); ++i) {
    // Every keepMod-th document is held out; with fewer documents, the last one.
    const size_t mod = std::min(static_cast<size_t>(keepMod), files.size());
    bool heldOut = keepMod > 0 && i % mod == mod - 1;
    if (keepMod > 0 && heldOut != keep) continue;
    auto ids = enc.encode(readFile(files[i]));
    stream.insert(stream.end(), ids.begin(), ids.end());
    ++*docs;
    job.setProgress(static_cast<double>(i + 1) / static_cast<double>(files.size()));
    job.checkCancel();
  }
  return stream;
}

double lrAt(const TrainOptions& o, int64_t warmup, int64_t step) {  // step is 0-based
  if (step < warmup) return o.lr * static_cast<double>(step + 1) / static_cast<double>(warmup);
  double progress = o.steps > warmup ? static_cast<double>(step - warmup) / static_cast<double>(o.steps - warmup) : 1.0;
  progress = std::min(1.0, std::max(0.0, progress));
  double minLr = o.lr * o.minLrRatio;
  return minLr + 0.5 * (o.lr - minLr) * (1.0 + std::cos(M_PI * progress));
}

// A [B, T+1] batch of random windows of the stream, drawn from an RNG seeded by (seed, step).
at::Tensor sampleBatch(const std::vector<int32_t>& stream, int B, int T, uint64_t seed, int64_t step) {
  std::seed_seq sq{static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32), static_cast<uint32_t>(step),
                   static_cast<uint32_t>(step >> 32), 0x5eedu};
  std::mt19937_64 rng(sq);
  std::uniform_int_distribution<int64_t> pick(0, static_cast<int64_t>(stream.size()) - (T + 1));
  at::Tensor out = torch::empty({B, T + 1}, torch::kLong);
  auto acc = out.accessor<int64_t, 2>();
  for (int b = 0; b < B; ++b) {
    int64_t s = pick(rng);
    for (int t = 0; t <= T; ++t) acc[b][t] = stream[s + t];
  }
  return out;
}

// The final evaluation's statistics: active (> 0) FFN hidden units of the
// dense layers, and the top-k selections of the native MoE layers.
class FinalEvalSink : public HookSink {
 public:
  explicit FinalEvalSink(const ModelConfig& cfg)
      : cfg_(cfg), active(cfg.nLayer, 0.0), units(cfg.nLayer, 0.0), ids(cfg.nLayer) {}
  bool wants(int, HookPoint) const override { return false; }
  void on(int, HookPoint, const at::Tensor&) override {}
  bool wantsSite(const Site& site, HookPoint p) const override {
    if (site.stack != SiteStack::Single || site.expert >= 0 || site.shared) return false;
    return cfg_.moeLayer(site.layer) ? p == HookPoint::TopkIds : p == HookPoint::FfnAct;
  }
  void onSite(const Site& site, HookPoint p, const at::Tensor& x) override {
    const int L = site.layer;
    if (p == HookPoint::TopkIds) {
      ids[L].push_back(x.reshape({-1, x.size(-1)}).clone());  // [B T, k]
    } else if (p == HookPoint::FfnAct) {                      // x [B, T, d_ff]
      active[L] += (x > 0).sum().item<double>();
      units[L] += static_cast<double>(x.numel());
    }
  }
  std::vector<double> activeFraction() const {
    std::vector<double> f;
    for (size_t L = 0; L < active.size(); ++L) f.push_back(active[L] / std::max(1.0, units[L]));
    return f;
  }
  /// Usage health of every MoE layer over all the selections seen.
  std::vector<ExpertUsage> usage() const {
    std::vector<ExpertUsage> out;
    for (int L = 0; L < cfg_.nLayer; ++L) {
      if (!cfg_.moeLayer(L) || ids[L].empty()) continue;
      at::Tensor sel = at::cat(ids[L], 0);                                                            // [N, k]
      at::Tensor chosen = at::zeros({sel.size(0), cfg_.expertCount}, at::kByte).scatter_(1, sel, 1);  // [N, E]
      using Mask = Eigen::Matrix<uint8_t, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
      const UsageHealth h =
          usageHealth(Eigen::Map<const Mask>(chosen.data_ptr<uint8_t>(), chosen.size(0), chosen.size(1)));
      out.push_back({L, h.share, h.perplexity, h.deadShare});
    }
    return out;
  }

 private:
  const ModelConfig& cfg_;
  std::vector<double> active, units;         // per layer (dense layers)
  std::vector<std::vector<at::Tensor>> ids;  // per layer (MoE layers): [B T, k] per batch
};

// Mean next-token loss over consecutive windows of the held-out stream (up to maxTokens predicted tokens).
std::pair<double, int64_t> evalLoss(const Model& model, const std::vector<int32_t>& stream, int B, int T,
                                    int64_t maxTokens, JobContext& job, HookSink* hooks = nullptr) {
  torch::NoGradGuard ng;
  std::vector<at::Tensor> windows;
  int64_t predicted = 0;
  for (int64_t s = 0; s + 1 < static_cast<int64_t>(stream.size()); s += T) {
    int64_t len = std::min<int64_t>(T + 1, static_cast<int64_t>(stream.size()) - s);
    if (len < 2) break;
    if (len < T + 1) break;  // keep full windows only (equal shapes); the tail is < T tokens
    at::Tensor w = torch::from_blob(const_cast<int32_t*>(stream.data() + s), {len}, torch::kInt).to(torch::kLong);
    windows.push_back(w);
    predicted += len - 1;
    if (maxTokens > 0 && predicted >= maxTokens) break;
  }
  if (windows.empty()) throw ParameterError("held-out corpus has fewer than seq_len + 1 tokens");
  double total = 0;
  int64_t count = 0;
  for (size_t i = 0; i < windows.size(); i += B) {
    size_t n = std::min(windows.size() - i, static_cast<size_t>(B));
    at::Tensor w = torch::stack(std::vector<at::Tensor>(windows.begin() + i, windows.begin() + i + n));  // [n, T+1]
    Batch batch;
    batch.ids = w.slice(1, 0, T);
    batch.mask = torch::ones_like(batch.ids);
    at::Tensor logits = model.forward(batch, hooks);  // [n, T, V]
    at::Tensor loss =
        torch::nn::functional::cross_entropy(logits.reshape({-1, logits.size(-1)}), w.slice(1, 1, T + 1).reshape({-1}),
                                             torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum));
    total += loss.item<double>();
    count += static_cast<int64_t>(n) * T;
    job.checkCancel();
  }
  return {total / static_cast<double>(count), count};
}

struct AdamState {
  std::vector<at::Tensor> m, v;  // same shapes as the parameters
};

void writeCheckpoint(const fs::path& dir, const std::vector<std::string>& names, const std::vector<at::Tensor>& params,
                     const AdamState& st, int64_t step, const nlohmann::json& options) {
  writeFolderAtomic(dir, true, [&](const fs::path& tmp) {
    std::vector<std::pair<std::string, at::Tensor>> p, o;
    for (size_t i = 0; i < params.size(); ++i) {
      p.emplace_back(names[i], params[i].detach());
      o.emplace_back(names[i] + ".exp_avg", st.m[i]);
      o.emplace_back(names[i] + ".exp_avg_sq", st.v[i]);
    }
    writeSafetensors(tmp / "model.safetensors", p);
    writeSafetensors(tmp / "optimizer.safetensors", o);
    nlohmann::json j = {{"format", "moefy-train-checkpoint"},
                        {"version", 1},
                        {"tool_version", MOEFY_VERSION},
                        {"step", step},
                        {"options", options}};
    writeFileAtomic(tmp / "state.json", j.dump(2) + "\n");
  });
}

// The router losses of a native MoE model (on = false for dense models).
struct RouterLossSetting {
  bool on = false;
  double aux = 0, z = 0;  // coefficients
};

nlohmann::json optionsJson(const TrainOptions& o, int64_t warmup, const RouterLossSetting& rl) {
  nlohmann::json j = {{"corpus", o.corpus.string()},
                      {"heldout", o.heldout.string()},
                      {"config", o.config.string()},
                      {"tokenizer", o.tokenizer.string()},
                      {"steps", o.steps},
                      {"seed", o.seed},
                      {"batch", o.batch},
                      {"seq_len", o.seqLen},
                      {"lr", o.lr},
                      {"min_lr_ratio", o.minLrRatio},
                      {"warmup", warmup},
                      {"weight_decay", o.weightDecay},
                      {"beta1", o.beta1},
                      {"beta2", o.beta2},
                      {"eps", o.eps},
                      {"clip", o.clip},
                      {"dtype", o.dtype}};
  if (rl.on) {
    j["aux_loss_coef"] = rl.aux;
    j["z_loss_coef"] = rl.z;
  }
  return j;
}

// A coefficient option: finite and >= 0; only for native MoE models.
void checkCoefficient(const std::optional<double>& v, const char* option, bool moe, const fs::path& config) {
  if (!v) return;
  if (!std::isfinite(*v) || *v < 0)
    throw ParameterError(std::string("--") + option + ": must be a number >= 0 (got " + std::to_string(*v) + ")");
  if (!moe)
    throw ParameterError(std::string("--") + option + ": " + config.string() +
                         " is a dense model (no router); the option applies to native MoE models only");
}

// The coefficients of a native MoE run: the options, else the config's
// router_aux_loss_coef, else the HF default of the model_type.
RouterLossSetting routerLossSetting(const TrainOptions& o, const ModelConfig& cfg, const nlohmann::json& cfgJson) {
  RouterLossSetting rl;
  rl.on = cfg.expertCount > 0;
  checkCoefficient(o.auxLossCoef, "aux-loss-coef", rl.on, o.config);
  checkCoefficient(o.zLossCoef, "z-loss-coef", rl.on, o.config);
  if (!rl.on) return rl;
  // configuration_mixtral.py / configuration_qwen2_moe.py: 0.001; configuration_olmoe.py: 0.01.
  double fromConfig = cfg.arch == Arch::Olmoe ? 0.01 : 0.001;
  if (cfgJson.contains("router_aux_loss_coef")) {
    const auto& v = cfgJson["router_aux_loss_coef"];
    if (!v.is_number() || !std::isfinite(v.get<double>()) || v.get<double>() < 0)
      throw FormatError(o.config.string() + ": key 'router_aux_loss_coef' must be a number >= 0 (got " + v.dump() +
                        ")");
    fromConfig = v.get<double>();
  }
  rl.aux = o.auxLossCoef.value_or(fromConfig);
  rl.z = o.zLossCoef.value_or(0.0);
  return rl;
}

/// Refuses, before anything is allocated, a config whose weights cannot fit:
/// training holds 4 F32 copies of every weight (value, gradient, two AdamW
/// moments). The message names the config key behind the largest tensor.
void checkTrainingMemory(const ModelConfig& cfg, const fs::path& configPath) {
  const auto& table = archTable(cfg);
  double params = 0, biggest = 0;
  std::vector<int64_t> biggestShape;
  std::string biggestName;
  for (const auto& row : table.rows) {
    auto shape = expectedShape(row.role, cfg);
    if (!shape) continue;
    double n = 1;
    for (int64_t d : *shape) n *= static_cast<double>(d);
    int blocks = 1;
    if (row.perLayer) {
      blocks = 0;
      for (int L = 0; L < cfg.nLayer; ++L) blocks += roleInLayer(row.role, cfg, L) ? 1 : 0;
    }
    params += n * blocks * (row.perExpert ? cfg.expertCount : 1);
    if (n > biggest)
      biggest = n, biggestShape = *shape, biggestName = expandPattern(row.pattern, 0, row.perExpert ? 0 : -1);
  }
  const double need = params * 4 * 4, have = physicalMemoryBytes();
  if (have <= 0 || need <= have) return;
  std::string key = "n_layer / hidden size";
  for (int64_t d : biggestShape) {
    if (d == static_cast<int64_t>(cfg.maxPos) + cfg.posOffset)
      key = "n_positions (max_position_embeddings) " + std::to_string(cfg.maxPos);
    else if (d == cfg.vocab)
      key = "vocab_size " + std::to_string(cfg.vocab);
    else if (d == cfg.dFF && key.rfind("n_positions", 0) != 0 && key.rfind("vocab", 0) != 0)
      key = "the FFN size (n_inner / intermediate_size) " + std::to_string(cfg.dFF);
  }
  throw FormatError(configPath.string() + ": " + key + " gives tensor '" + biggestName + "' " +
                    shapeString(biggestShape) + "; training this config needs " + byteSize(need) + " (" +
                    std::to_string(static_cast<int64_t>(params)) +
                    " parameters x 16 bytes: weights, gradients and AdamW moments in F32), more than this machine's " +
                    byteSize(have) + " of memory");
}

TrainResult trainInto(const TrainOptions& o, JobContext& job, const ModelConfig& cfg, const DocEncoder& enc,
                      const fs::path& work, int64_t warmup, std::chrono::steady_clock::time_point t0,
                      const RouterLossSetting& rl);

}  // namespace

TrainResult trainLanguageModel(const TrainOptions& o, JobContext& job) {
  auto t0 = std::chrono::steady_clock::now();
  if (o.steps < 1) throw ParameterError("--steps: must be >= 1");
  if (o.batch < 1) throw ParameterError("--batch: must be >= 1");
  if (o.seqLen < 2) throw ParameterError("--seq-len: must be >= 2");
  if (!(o.lr > 0)) throw ParameterError("--lr: must be > 0");
  if (o.minLrRatio < 0 || o.minLrRatio > 1) throw ParameterError("--min-lr-ratio: must be in [0, 1]");
  if (o.clip < 0) throw ParameterError("--clip: must be >= 0");
  if (o.dtype != "F32" && o.dtype != "F16" && o.dtype != "BF16")
    throw ParameterError("--dtype: must be F32, F16 or BF16");
  if (o.outDir.empty()) throw ParameterError("--out: missing");
  const int64_t warmup = o.warmup >= 0 ? std::max<int64_t>(1, o.warmup) : std::max<int64_t>(1, o.steps / 20);

  // Config: the model to train; vocab must match the tokenizer.
  nlohmann::json cfgJson = readJsonFile(o.config);
  job.setStage("tokenize");
  DocEncoder enc(o.tokenizer);
  ModelConfig probe = ModelConfig::fromJson(cfgJson, o.config.string());
  if (probe.vocab != enc.vocab())
    throw FormatError(o.config.string() + ": vocab_size " + std::to_string(probe.vocab) +
                      " does not match the tokenizer's " + std::to_string(enc.vocab()) + " tokens (" +
                      o.tokenizer.string() + ")");
  if (probe.pos == PosKind::Learned && o.seqLen > probe.maxPos)
    throw ParameterError("--seq-len: " + std::to_string(o.seqLen) + " exceeds the config's " +
                         std::to_string(probe.maxPos) + " positions");
  if (!cfgJson.contains("bos_token_id")) cfgJson["bos_token_id"] = 0;
  if (!cfgJson.contains("eos_token_id")) cfgJson["eos_token_id"] = 0;
  const ModelConfig cfg = ModelConfig::fromJson(cfgJson, o.config.string());
  if (!cfg.causal) throw ParameterError(o.config.string() + ": only causal language models can be trained");
  checkTrainingMemory(cfg, o.config);
  const RouterLossSetting rl = routerLossSetting(o, cfg, cfgJson);

  // Output folder. The run works in WORK = MODEL_DIR.partial and moves it
  // into place at the end in one atomic exchange, so MODEL_DIR is the old
  // model or the new one, never a mix, and a cancelled `train --force` leaves
  // the previous model untouched. WORK holds the checkpoint for --resume.
  std::error_code ec;
  fs::path absOut = fs::absolute(o.outDir).lexically_normal();
  if (absOut.filename().empty()) absOut = absOut.parent_path();  // "out/" names "out"
  const fs::path work = absOut.string() + ".partial";
  const fs::path ckDir = work / "checkpoint";
  OutputLock outputLock(o.outDir);
  OutputLock workLock(work);
  const std::vector<fs::path> inputs = {o.corpus, o.heldout, o.config, o.tokenizer};
  bool copied = false;  // WORK is a copy of a finished MODEL_DIR: never worth keeping on failure
  if (o.resume) {
    if (!fs::exists(ckDir / "state.json")) {
      // A finished run keeps its last checkpoint in MODEL_DIR/checkpoint.
      if (!fs::exists(o.outDir / "checkpoint" / "state.json"))
        throw IoError(ckDir.string() + ": no checkpoint to resume from (nor in " + (o.outDir / "checkpoint").string() +
                      ")");
      fs::remove_all(work, ec);
      fs::copy(o.outDir, work, fs::copy_options::recursive, ec);
      if (ec)
        throw IoError(work.string() + ": cannot copy " + o.outDir.string() + " to resume it (" + ec.message() + ")");
      copied = true;
    }
    checkOutput(o.outDir, true, "trained model", inputs);
  } else {
    checkOutput(o.outDir, o.force, "trained model", inputs);
    fs::remove_all(work, ec);  // a checkpoint of an earlier run: starting afresh
    fs::create_directories(work, ec);
    if (ec) throw IoError(work.string() + ": cannot create (" + ec.message() + ")");
  }
  try {
    return trainInto(o, job, cfg, enc, work, warmup, t0, rl);
  } catch (const CancelledError&) {
    std::string note =
        fs::exists(o.outDir, ec) ? o.outDir.string() + " is unchanged" : o.outDir.string() + " was not written";
    if (!copied && fs::exists(ckDir / "state.json", ec)) {
      std::string step = "?";
      try {
        step = std::to_string(nlohmann::json::parse(readFile(ckDir / "state.json")).at("step").get<int64_t>());
      } catch (const std::exception&) {
      }
      note += "; the checkpoint " + ckDir.string() + " (step " + step + ") is kept: continue with --resume";
    } else {
      fs::remove_all(work, ec);
      note += "; no checkpoint was due, nothing else is on disk";
    }
    throw CancelledError(note);
  } catch (...) {
    if (copied || !fs::exists(ckDir / "state.json", ec)) fs::remove_all(work, ec);
    throw;
  }
}

namespace {

TrainResult trainInto(const TrainOptions& o, JobContext& job, const ModelConfig& cfg, const DocEncoder& enc,
                      const fs::path& work, int64_t warmup, std::chrono::steady_clock::time_point t0,
                      const RouterLossSetting& rl) {
  const fs::path ckDir = work / "checkpoint";

  int64_t docsTrain = 0, docsHeld = 0;
  std::vector<int32_t> train, held;
  if (o.heldout.empty()) {
    train = tokenStream(o.corpus, enc, 20, false, job, &docsTrain);
    held = tokenStream(o.corpus, enc, 20, true, job, &docsHeld);
  } else {
    train = tokenStream(o.corpus, enc, 0, false, job, &docsTrain);
    held = tokenStream(o.heldout, enc, 0, false, job, &docsHeld);
  }
  if (static_cast<int64_t>(train.size()) < o.seqLen + 1)
    throw FormatError(o.corpus.string() + ": only " + std::to_string(train.size()) +
                      " training tokens, need at least seq_len + 1");
  if (static_cast<int64_t>(held.size()) < o.seqLen + 1)
    throw FormatError((o.heldout.empty() ? o.corpus : o.heldout).string() + ": only " + std::to_string(held.size()) +
                      " held-out tokens, need at least seq_len + 1");
  job.log("train: " + std::to_string(train.size()) + " tokens in " + std::to_string(docsTrain) +
          " documents, held-out " + std::to_string(held.size()) + " tokens in " + std::to_string(docsHeld) +
          " documents; tokenizer " + enc.kind());

  // Model and optimiser state.
  auto model = Model::fromTensors(cfg, initTensors(cfg, o.seed));
  std::vector<at::Tensor> params = model->makeTrainable();
  std::vector<std::string> names;
  for (const auto& [name, t] : model->tensors()) names.push_back(name);  // same (map) order as makeTrainable
  AdamState st;
  for (const auto& p : params) {
    st.m.push_back(torch::zeros_like(p).detach());
    st.v.push_back(torch::zeros_like(p).detach());
  }
  int64_t startStep = 0;
  const nlohmann::json optJson = optionsJson(o, warmup, rl);
  fs::path logPath = work / "training_log.jsonl";
  if (o.resume) {
    auto state = readJsonFile(ckDir / "state.json");
    startStep = state.value("step", int64_t{0});
    const nlohmann::json savedOptions =
        state.contains("options") && state["options"].is_object() ? state["options"] : nlohmann::json::object();
    for (std::string key : {"steps", "batch", "seq_len", "seed", "aux_loss_coef", "z_loss_coef"}) {
      // A key a run does not record (the router coefficients of a dense model) compares as null.
      const nlohmann::json saved = savedOptions.value(key, nlohmann::json()),
                           now = optJson.value(key, nlohmann::json());
      if (saved != now) {
        std::replace(key.begin(), key.end(), '_', '-');
        throw ParameterError("--resume: --" + key + " differs from the checkpoint's (" + saved.dump() + ")");
      }
    }
    auto pf = SafetensorsFile::open(ckDir / "model.safetensors");
    auto of = SafetensorsFile::open(ckDir / "optimizer.safetensors");
    torch::NoGradGuard ng;
    for (size_t i = 0; i < params.size(); ++i) {
      at::Tensor p = pf->f32(names[i]);
      requireFinite(p, (ckDir / "model.safetensors").string(), names[i]);
      if (p.sizes() != params[i].sizes())
        throw FormatError((ckDir / "model.safetensors").string() + ": tensor '" + names[i] + "' has shape " +
                          shapeString(p));
      params[i].copy_(p);
      const std::string optFile = (ckDir / "optimizer.safetensors").string();
      at::Tensor m = of->f32(names[i] + ".exp_avg"), v = of->f32(names[i] + ".exp_avg_sq");
      requireFinite(m, optFile, names[i] + ".exp_avg");
      requireFinite(v, optFile, names[i] + ".exp_avg_sq");
      st.m[i].copy_(m);
      st.v[i].copy_(v);
    }
    // Keep the log lines up to the checkpoint.
    std::string kept;
    if (fs::exists(logPath)) {
      std::istringstream in(readFile(logPath));
      for (std::string line; std::getline(in, line);) {
        if (line.empty()) continue;
        // A damaged line (a kill mid-append) is dropped, not fatal.
        nlohmann::json j;
        try {
          j = parseJson(line, logPath.string());
        } catch (const FormatError&) {
          continue;
        }
        if (j.is_object() && j.contains("step") && j["step"].is_number_integer() &&
            j["step"].get<int64_t>() <= startStep)
          kept += line + "\n";
      }
    }
    writeFileAtomic(logPath, kept);
    job.log("train: resumed from step " + std::to_string(startStep));
  } else {
    writeFileAtomic(logPath, "");
  }
  std::FILE* logFile = std::fopen(logPath.c_str(), "a");
  if (!logFile) throw IoError(logPath.string() + ": cannot open for writing");
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> logGuard(logFile, &std::fclose);
  auto logLine = [&](const nlohmann::json& j) {
    std::string s = j.dump() + "\n";
    writeAll(logFile, s.data(), s.size(), logPath.string());
    std::fflush(logFile);
  };
  writeFileAtomic(work / "tokenizer.json", readFile(o.tokenizer));

  TrainResult r;
  r.parameters = model->parameterCount();
  r.trainTokens = static_cast<int64_t>(train.size());
  job.setStage("train");
  const int B = o.batch, T = o.seqLen;
  double windowLoss = 0, windowAux = 0, windowZ = 0;
  int64_t windowSteps = 0, runTokens = 0;
  RouterLogitsCapture router;  // the step's router logits (native MoE models)
  r.auxLossCoef = rl.aux;
  r.zLossCoef = rl.z;
  auto windowStart = std::chrono::steady_clock::now();
  auto runStart = windowStart;
  for (int64_t step = startStep; step < o.steps; ++step) {
    job.checkCancel();
    const double lr = lrAt(o, warmup, step);
    at::Tensor w = sampleBatch(train, B, T, o.seed, step);  // [B, T+1]
    Batch batch;
    batch.ids = w.slice(1, 0, T);
    batch.mask = torch::ones_like(batch.ids);
    router.clear();
    at::Tensor logits = model->forward(batch, rl.on ? &router : nullptr);  // [B, T, V]
    at::Tensor loss =
        torch::nn::functional::cross_entropy(logits.reshape({-1, logits.size(-1)}), w.slice(1, 1, T + 1).reshape({-1}));
    // The objective: cross-entropy + aux_coef x load balancing + z_coef x z-loss
    // (MixtralForCausalLM adds router_aux_loss_coef * aux_loss the same way).
    at::Tensor objective = loss;
    double auxV = 0, zV = 0;
    if (rl.on) {
      at::Tensor aux = loadBalancingLoss(router.logits, cfg.expertCount, cfg.expertTopK);
      at::Tensor zl = routerZLoss(router.logits);
      if (rl.aux > 0) objective = objective + aux * rl.aux;
      if (rl.z > 0) objective = objective + zl * rl.z;
      auxV = aux.item<double>();
      zV = zl.item<double>();
    }
    for (auto& p : params) p.mutable_grad() = at::Tensor();
    objective.backward();
    router.clear();  // frees the step's graph
    double lossV = loss.item<double>();
    if (!std::isfinite(auxV) || !std::isfinite(zV))
      throw Error("train: router loss is not finite at step " + std::to_string(step + 1) + " (try a lower --lr)");
    if (!std::isfinite(lossV))
      throw Error("train: loss is " + std::to_string(lossV) + " at step " + std::to_string(step + 1) +
                  " (try a lower --lr)");
    double gnorm;
    {
      torch::NoGradGuard ng;
      at::Tensor sq = torch::zeros({}, torch::kDouble);
      for (auto& p : params)
        if (p.grad().defined()) sq += p.grad().pow(2).sum().to(torch::kDouble);
      gnorm = std::sqrt(sq.item<double>());
      double scale = (o.clip > 0 && gnorm > o.clip) ? o.clip / (gnorm + 1e-6) : 1.0;
      const double t = static_cast<double>(step + 1);
      const double bc1 = 1.0 - std::pow(o.beta1, t), bc2 = 1.0 - std::pow(o.beta2, t);
      for (size_t i = 0; i < params.size(); ++i) {
        at::Tensor g = params[i].grad();
        if (!g.defined()) continue;
        if (scale != 1.0) g = g * scale;
        st.m[i].mul_(o.beta1).add_(g, 1.0 - o.beta1);
        st.v[i].mul_(o.beta2).addcmul_(g, g, 1.0 - o.beta2);
        if (o.weightDecay > 0 && params[i].dim() >= 2) params[i].mul_(1.0 - lr * o.weightDecay);
        at::Tensor denom = (st.v[i] / bc2).sqrt_().add_(o.eps);
        params[i].addcdiv_(st.m[i], denom, -lr / bc1);
      }
    }
    if (o.checkpointEvery > 0 && (step + 1) % o.checkpointEvery == 0 && step + 1 < o.steps)
      writeCheckpoint(ckDir, names, params, st, step + 1, optJson);
    if (step == startStep) r.firstLoss = lossV;
    windowLoss += lossV;
    windowAux += auxV;
    windowZ += zV;
    ++windowSteps;
    runTokens += static_cast<int64_t>(B) * T;
    const bool last = step + 1 == o.steps;
    if ((step + 1) % o.logEvery == 0 || last) {
      auto now = std::chrono::steady_clock::now();
      double dt = std::chrono::duration<double>(now - windowStart).count();
      double tps = static_cast<double>(windowSteps) * B * T / std::max(dt, 1e-9);
      double mean = windowLoss / static_cast<double>(windowSteps);
      r.finalLoss = mean;
      nlohmann::json line = {
          {"step", step + 1},   {"loss", mean},        {"lr", lr},
          {"grad_norm", gnorm}, {"tokens_per_s", tps}, {"elapsed_s", std::chrono::duration<double>(now - t0).count()}};
      char buf[260];
      std::snprintf(buf, sizeof buf, "step %6lld/%lld  loss %.4f  lr %.2e  grad %.3f  %.0f tok/s",
                    static_cast<long long>(step + 1), static_cast<long long>(o.steps), mean, lr, gnorm, tps);
      std::string text = buf;
      if (rl.on) {
        r.finalAuxLoss = windowAux / static_cast<double>(windowSteps);
        r.finalZLoss = windowZ / static_cast<double>(windowSteps);
        line["aux_loss"] = r.finalAuxLoss;
        line["z_loss"] = r.finalZLoss;
        std::snprintf(buf, sizeof buf, "  aux %.4f  z %.3f", r.finalAuxLoss, r.finalZLoss);
        text += buf;
      }
      logLine(line);
      job.log(text);
      windowLoss = 0;
      windowAux = 0;
      windowZ = 0;
      windowSteps = 0;
      windowStart = std::chrono::steady_clock::now();
    }
    if (o.evalEvery > 0 && (step + 1) % o.evalEvery == 0 && !last) {
      auto [hl, n] = evalLoss(*model, held, B, T, o.evalTokens, job);
      logLine({{"step", step + 1}, {"heldout_loss", hl}, {"heldout_ppl", std::exp(hl)}, {"heldout_tokens", n}});
      char buf[160];
      std::snprintf(buf, sizeof buf, "step %6lld  held-out loss %.4f  ppl %.2f (%lld tokens)",
                    static_cast<long long>(step + 1), hl, std::exp(hl), static_cast<long long>(n));
      job.log(buf);
      windowStart = std::chrono::steady_clock::now();  // keep eval time out of tokens/s
    }
    job.setProgress(static_cast<double>(step + 1 - startStep) / static_cast<double>(o.steps - startStep));
  }
  double trainSecs = std::chrono::duration<double>(std::chrono::steady_clock::now() - runStart).count();
  r.tokensPerSecond = static_cast<double>(runTokens) / std::max(trainSecs, 1e-9);
  r.steps = o.steps;

  job.setStage("final eval");
  FinalEvalSink counter(cfg);
  auto [hl, n] = evalLoss(*model, held, B, T, 0, job, &counter);
  if (cfg.expertCount == 0) r.activeFraction = counter.activeFraction();
  r.expertUsage = counter.usage();
  r.heldoutLoss = hl;
  r.heldoutPerplexity = std::exp(hl);
  r.heldoutTokens = n;
  nlohmann::json usage = nlohmann::json::array();
  for (const auto& u : r.expertUsage)
    usage.push_back({{"site", Site::ofLayer(u.layer).name()},
                     {"share", u.share},
                     {"usage_perplexity", u.perplexity},
                     {"dead_share", u.deadShare}});
  nlohmann::json finalLine = {
      {"step", o.steps}, {"heldout_loss", hl}, {"heldout_ppl", std::exp(hl)}, {"heldout_tokens", n}, {"final", true}};
  if (rl.on) {
    nlohmann::json perplexities = nlohmann::json::array();
    for (const auto& u : r.expertUsage) perplexities.push_back(u.perplexity);
    finalLine["usage_perplexity"] = perplexities;
  } else {
    finalLine["active_fraction"] = r.activeFraction;
  }
  logLine(finalLine);

  job.setStage("save");
  // The saved config records how it was trained.
  model->save(work, o.dtype);
  if (o.checkpointEvery > 0) writeCheckpoint(ckDir, names, params, st, o.steps, optJson);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  nlohmann::json summary = {{"format", "moefy-training"},
                            {"version", 1},
                            {"tool_version", MOEFY_VERSION},
                            {"options", optJson},
                            {"parameters", r.parameters},
                            {"train_tokens", r.trainTokens},
                            {"train_documents", docsTrain},
                            {"heldout_documents", docsHeld},
                            {"heldout_tokens", r.heldoutTokens},
                            {"heldout_loss", r.heldoutLoss},
                            {"heldout_perplexity", r.heldoutPerplexity},
                            {"final_train_loss", r.finalLoss},
                            {"heldout_active_fraction", r.activeFraction},
                            {"tokens_per_s", r.tokensPerSecond},
                            {"seconds", r.seconds},
                            {"tokenizer", enc.kind()}};
  if (rl.on) {
    summary["final_aux_loss"] = r.finalAuxLoss;
    summary["final_z_loss"] = r.finalZLoss;
    summary["heldout_expert_usage"] = usage;
    summary.erase("heldout_active_fraction");  // dense FFN units; a MoE model's are in the usage
  }
  writeFileAtomic(work / "training.json", summary.dump(2) + "\n");
  logGuard.reset();
  job.checkCancel();
  replaceFolder(work, o.outDir, o.force || o.resume, {o.corpus, o.heldout, o.config, o.tokenizer});
  return r;
}

}  // namespace

}  // namespace moefy
