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
#include "analysis/train/train_data.h"

namespace moefy {

namespace {

namespace fs = std::filesystem;

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
    case Role::CrossNorm:
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

// T5's initialisation (transformers models/t5/modeling_t5.py,
// T5PreTrainedModel._init_weights, initializer_factor 1): the shared
// embedding and an untied lm_head normal(0, 1); wi (wi_0, wi_1) normal(0,
// d_model^-0.5), wo normal(0, d_ff^-0.5); attention q normal(0, (d_model
// d_kv)^-0.5) (T5 does not scale the scores by 1/sqrt(d_kv)), k and v
// normal(0, d_model^-0.5), o normal(0, (heads d_kv)^-0.5); the relative
// attention bias normal(0, d_model^-0.5). Norms are 1 (initTensors).
double t5InitStd(Role r, const ModelConfig& c) {
  const double dm = c.dModel, dkv = c.headDim, h = c.nHead;
  switch (r) {
    case Role::TokEmbd:
    case Role::LmHead:
      return 1.0;
    case Role::FfnUp:
    case Role::FfnGate:
      return 1.0 / std::sqrt(dm);
    case Role::FfnDown:
      return 1.0 / std::sqrt(static_cast<double>(c.dFF));
    case Role::AttnQ:
    case Role::CrossQ:
      return 1.0 / std::sqrt(dm * dkv);
    case Role::AttnK:
    case Role::AttnV:
    case Role::CrossK:
    case Role::CrossV:
    case Role::RelBias:
      return 1.0 / std::sqrt(dm);
    case Role::AttnOut:
    case Role::CrossOut:
      return 1.0 / std::sqrt(h * dkv);
    default:
      throw Error(std::string("train: no T5 initialisation for role ") + roleName(r));
  }
}

// Initialisation of every tensor the architecture needs. GPT-2 style for
// single-stack models: matrices (routers and experts included) normal(0,
// 0.02), residual output projections normal(0, 0.02 / sqrt(2 n_layer)), norms
// 1 (0 where the norm applies 1 + w), biases 0. T5 (encoder-decoder): the
// stds of t5InitStd. Per-layer rows repeat over their stack's blocks,
// per-expert rows for every expert; rows a block lacks (the dense MLP of a
// MoE block and vice versa) are skipped as the loader does.
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
    const int layers = rowLayerCount(row, cfg);
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
        } else if (cfg.encoderDecoder) {
          t = torch::randn(s) * t5InitStd(row.role, cfg);
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

double lrAt(const TrainOptions& o, int64_t warmup, int64_t step) {  // step is 0-based
  if (step < warmup) return o.lr * static_cast<double>(step + 1) / static_cast<double>(warmup);
  double progress = o.steps > warmup ? static_cast<double>(step - warmup) / static_cast<double>(o.steps - warmup) : 1.0;
  progress = std::min(1.0, std::max(0.0, progress));
  double minLr = o.lr * o.minLrRatio;
  return minLr + 0.5 * (o.lr - minLr) * (1.0 + std::cos(M_PI * progress));
}

// The final evaluation's statistics: active (> 0) FFN hidden units of every
// dense FFN site (the single stack's blocks, or T5's encoder then decoder
// blocks; padding left out), and the top-k selections of the native MoE layers.
class FinalEvalSink : public HookSink, public MaskedSink {
 public:
  explicit FinalEvalSink(const ModelConfig& cfg) : cfg_(cfg), ids(cfg.nLayer) {
    for (SiteStack st : cfg.stacks())
      for (int L = 0; L < cfg.layerCount(st); ++L)
        if (!cfg.moeLayer(L) || cfg.encoderDecoder) sites_.push_back(Site{st, L, -1, false});
    active_.assign(sites_.size(), 0.0);
    units_.assign(sites_.size(), 0.0);
  }
  bool wants(int, HookPoint) const override { return false; }
  void on(int, HookPoint, const at::Tensor&) override {}
  void setMasks(const at::Tensor& sourceMask, const at::Tensor& decoderMask) override {
    sourceMask_ = sourceMask;
    decoderMask_ = decoderMask;
  }
  bool wantsSite(const Site& site, HookPoint p) const override {
    if (site.expert >= 0 || site.shared) return false;
    if (site.stack == SiteStack::Single && cfg_.moeLayer(site.layer)) return p == HookPoint::TopkIds;
    return p == HookPoint::FfnAct;
  }
  void onSite(const Site& site, HookPoint p, const at::Tensor& x) override {
    if (p == HookPoint::TopkIds) {
      ids[site.layer].push_back(x.reshape({-1, x.size(-1)}).cpu().clone());  // [B T, k], read on the host
      return;
    }
    const auto it = std::find(sites_.begin(), sites_.end(), site);
    if (it == sites_.end()) return;
    const auto i = static_cast<size_t>(it - sites_.begin());
    // x [B, T, d_ff]; the mask [B, T] of its stack leaves padded positions out.
    const at::Tensor& mask = site.stack == SiteStack::Decoder ? decoderMask_ : sourceMask_;
    if (mask.defined() && mask.sizes() == x.sizes().slice(0, 2)) {
      at::Tensor m = mask.to(x.device(), at::kBool).unsqueeze(-1);
      active_[i] += ((x > 0) & m).sum().item<double>();
      units_[i] += m.sum().item<double>() * static_cast<double>(x.size(-1));
    } else {
      active_[i] += (x > 0).sum().item<double>();
      units_[i] += static_cast<double>(x.numel());
    }
  }
  /// The dense FFN sites in order, and their active fraction.
  const std::vector<Site>& sites() const { return sites_; }
  std::vector<double> activeFraction() const {
    std::vector<double> f;
    for (size_t i = 0; i < active_.size(); ++i) f.push_back(active_[i] / std::max(1.0, units_[i]));
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
  std::vector<Site> sites_;                  // dense FFN sites
  std::vector<double> active_, units_;       // per dense site
  std::vector<std::vector<at::Tensor>> ids;  // per layer (MoE layers): [B T, k] per batch
  at::Tensor sourceMask_, decoderMask_;      // of the batch being run (seq2seq)
};

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
  if (o.targetLen > 0) j["target_len"] = o.targetLen;  // encoder-decoder models only
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
      for (int L = 0; L < rowLayerCount(row, cfg); ++L) blocks += roleInLayer(row.role, cfg, L) ? 1 : 0;
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

TrainResult trainInto(const TrainOptions& o, JobContext& job, const ModelConfig& cfg, const nlohmann::json& cfgJson,
                      const TrainTokenizer& tokenizer, const fs::path& work, int64_t warmup,
                      std::chrono::steady_clock::time_point t0, const RouterLossSetting& rl);

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
  const TrainTokenizer tokenizer(o.tokenizer);
  const int64_t tokVocab = tokenizer.vocab();
  ModelConfig probe = ModelConfig::fromJson(cfgJson, o.config.string());
  if (probe.vocab != tokVocab)
    throw FormatError(o.config.string() + ": vocab_size " + std::to_string(probe.vocab) +
                      " does not match the tokenizer's " + std::to_string(tokVocab) + " tokens (" +
                      o.tokenizer.string() + ")");
  if (o.targetLen < 0) throw ParameterError("--target-len: must be >= 2 (or 0 = --seq-len)");
  if (o.targetLen == 1) throw ParameterError("--target-len: must be >= 2 (a target token and </s>)");
  if (probe.pos == PosKind::Learned && o.seqLen > probe.maxPos)
    throw ParameterError("--seq-len: " + std::to_string(o.seqLen) + " exceeds the config's " +
                         std::to_string(probe.maxPos) + " positions");
  if (!probe.encoderDecoder) {
    if (!cfgJson.contains("bos_token_id")) cfgJson["bos_token_id"] = 0;
    if (!cfgJson.contains("eos_token_id")) cfgJson["eos_token_id"] = 0;
  }
  const ModelConfig cfg = ModelConfig::fromJson(cfgJson, o.config.string());
  if (!cfg.causal && !cfg.encoderDecoder)
    throw ParameterError(o.config.string() +
                         ": only causal language models and encoder-decoder (T5) models can be trained");
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
    return trainInto(o, job, cfg, cfgJson, tokenizer, work, warmup, t0, rl);
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

TrainResult trainInto(const TrainOptions& o, JobContext& job, const ModelConfig& cfg, const nlohmann::json& cfgJson,
                      const TrainTokenizer& tokenizer, const fs::path& work, int64_t warmup,
                      std::chrono::steady_clock::time_point t0, const RouterLossSetting& rl) {
  const fs::path ckDir = work / "checkpoint";

  const std::unique_ptr<TrainData> data = loadTrainData(o, cfg, cfgJson, tokenizer, job);
  job.log("train: " + data->describe());

  // Model and optimiser state.
  LoadOptions placement;
  placement.device = o.device;  // initialised on the host (the same draws on every device), then moved
  auto model = Model::fromTensors(cfg, initTensors(cfg, o.seed), placement);
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
    for (std::string key : {"steps", "batch", "seq_len", "target_len", "seed", "aux_loss_coef", "z_loss_coef"}) {
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
  r.trainTokens = data->trainTokens();
  job.setStage("train");
  double windowLoss = 0, windowAux = 0, windowZ = 0;
  int64_t windowSteps = 0, runTokens = 0, windowTokens = 0;
  RouterLogitsCapture router;  // the step's router logits (native MoE models)
  r.auxLossCoef = rl.aux;
  r.zLossCoef = rl.z;
  auto windowStart = std::chrono::steady_clock::now();
  auto runStart = windowStart;
  for (int64_t step = startStep; step < o.steps; ++step) {
    job.checkCancel();
    const double lr = lrAt(o, warmup, step);
    router.clear();
    const BatchLoss batchLoss = data->stepLoss(*model, step, rl.on ? &router : nullptr);
    const at::Tensor& loss = batchLoss.loss;
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
      at::Tensor sq = torch::zeros({}, params.front().options().dtype(torch::kDouble));
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
    runTokens += batchLoss.tokens;
    windowTokens += batchLoss.tokens;
    const bool last = step + 1 == o.steps;
    if ((step + 1) % o.logEvery == 0 || last) {
      auto now = std::chrono::steady_clock::now();
      double dt = std::chrono::duration<double>(now - windowStart).count();
      double tps = static_cast<double>(windowTokens) / std::max(dt, 1e-9);
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
      windowTokens = 0;
      windowStart = std::chrono::steady_clock::now();
    }
    if (o.evalEvery > 0 && (step + 1) % o.evalEvery == 0 && !last) {
      auto [hl, n] = data->heldoutLoss(*model, o.evalTokens, job, nullptr);
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
  auto [hl, n] = data->heldoutLoss(*model, 0, job, &counter);
  if (cfg.expertCount == 0) {
    r.activeFraction = counter.activeFraction();
    r.activeSites = siteNames(counter.sites());
  }
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
                            {"train_documents", data->trainDocuments()},
                            {"heldout_documents", data->heldoutDocuments()},
                            {"heldout_tokens", r.heldoutTokens},
                            {"heldout_loss", r.heldoutLoss},
                            {"heldout_perplexity", r.heldoutPerplexity},
                            {"final_train_loss", r.finalLoss},
                            {"heldout_active_fraction", r.activeFraction},
                            {"heldout_active_sites", r.activeSites},
                            {"tokens_per_s", r.tokensPerSecond},
                            {"seconds", r.seconds},
                            {"tokenizer", tokenizer.kind()}};
  if (rl.on) {
    summary["final_aux_loss"] = r.finalAuxLoss;
    summary["final_z_loss"] = r.finalZLoss;
    summary["heldout_expert_usage"] = usage;
    summary.erase("heldout_active_fraction");  // dense FFN units; a MoE model's are in the usage
    summary.erase("heldout_active_sites");
  }
  writeFileAtomic(work / "training.json", summary.dump(2) + "\n");
  logGuard.reset();
  job.checkCancel();
  replaceFolder(work, o.outDir, o.force || o.resume, {o.corpus, o.heldout, o.config, o.tokenizer});
  return r;
}

}  // namespace

}  // namespace moefy
