#include "analysis/model/model.h"

#include <torch/torch.h>

#include <cmath>
#include <optional>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "analysis/common/error.h"
#include "analysis/common/hash.h"
#include "analysis/io/fsutil.h"
#include "analysis/io/json_input.h"
#include "analysis/io/safetensors.h"

namespace moefy {

namespace fs = std::filesystem;

int64_t Batch::batchSize() const { return ids.size(0); }
int64_t Batch::seqLen() const { return ids.size(1); }

Batch makeBatch(const std::vector<std::vector<int64_t>>& seqs, int64_t padId) {
  if (seqs.empty()) throw ParameterError("empty batch");
  size_t T = 0;
  for (const auto& s : seqs) T = std::max(T, s.size());
  if (T == 0) throw ParameterError("empty token sequence");
  const int64_t B = static_cast<int64_t>(seqs.size());
  Batch b;
  b.ids = at::full({B, static_cast<int64_t>(T)}, padId, at::kLong);
  b.mask = at::zeros({B, static_cast<int64_t>(T)}, at::kLong);
  auto ids = b.ids.accessor<int64_t, 2>();
  auto mask = b.mask.accessor<int64_t, 2>();
  for (int64_t i = 0; i < B; ++i)
    for (size_t t = 0; t < seqs[i].size(); ++t) {
      ids[i][t] = seqs[i][t];
      mask[i][t] = 1;
    }
  return b;
}

std::string hookName(int layer, HookPoint p) {
  return "blk." + std::to_string(layer) + (p == HookPoint::FfnIn ? ".ffn_in" : ".ffn_act");
}

at::Tensor applyActivation(const at::Tensor& x, Activation act) {
  switch (act) {
    case Activation::ReLU: return at::relu(x);
    case Activation::GELU: return at::gelu(x);
    case Activation::GELUTanh: return at::gelu(x, "tanh");
    case Activation::SiLU: return at::silu(x);
  }
  return x;
}

at::Tensor denseFfn(const FfnWeights& w, const at::Tensor& x, at::Tensor* hidden) {
  at::Tensor h;
  if (w.gated()) {
    h = applyActivation(at::linear(x, w.gate), w.act) * at::linear(x, w.up);
  } else {
    h = applyActivation(at::linear(x, w.up, w.upBias), w.act);
  }
  if (hidden) *hidden = h;
  return at::linear(h, w.down, w.downBias);
}

Model::~Model() = default;

namespace {

at::Tensor layerNorm(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, double eps) {
  return at::layer_norm(x, {x.size(-1)}, w, b, eps);
}

at::Tensor rmsNorm(const at::Tensor& x, const at::Tensor& w, double eps) {
  at::Tensor var = x.pow(2).mean(-1, true);
  return x * at::rsqrt(var + eps) * w;
}

at::Tensor rotateHalf(const at::Tensor& x) {
  auto half = x.size(-1) / 2;
  return at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
}

}  // namespace

at::Tensor Model::t(Role role, int layer) const {
  std::string name = tensorName(role, layer < 0 ? 0 : layer);
  if (name.empty()) return {};
  auto it = tensors_.find(name);
  if (it == tensors_.end()) {
    // Tied heads fall back to the token embedding.
    if (role == Role::LmHead && config_.tiedEmbeddings) return t(Role::TokEmbd);
    return {};
  }
  at::Tensor v = it->second;
  const auto& table = archTable(config_.arch);
  for (const auto& row : table.rows)
    if (row.role == role && row.conv1d) return v.t();
  return v;
}

std::string Model::tensorName(Role role, int layer) const {
  const auto& table = archTable(config_.arch);
  for (const auto& row : table.rows)
    if (row.role == role) return (roleIsHead(role) ? "" : prefix_) + expandPattern(row.pattern, layer);
  return "";
}

void Model::bind(const LoadOptions& options, const std::string& file) {
  const auto& table = archTable(config_.arch);
  // The prefix is whichever makes the token embedding resolve.
  prefix_.clear();
  bool found = false;
  for (const auto& p : table.prefixes) {
    for (const auto& row : table.rows)
      if (row.role == Role::TokEmbd && tensors_.count(p + row.pattern)) {
        prefix_ = p;
        found = true;
      }
    if (found) break;
  }
  if (!found) {
    std::string tok;
    for (const auto& row : table.rows)
      if (row.role == Role::TokEmbd) tok = table.prefixes.front() + row.pattern;
    throw FormatError(file + ": missing tensor '" + tok + "' (token embedding)");
  }
  std::set<std::string> used;
  auto isFfnRole = [](Role r) { return r == Role::FfnUp || r == Role::FfnUpB || r == Role::FfnGate ||
                                       r == Role::FfnDown || r == Role::FfnDownB; };
  for (const auto& row : table.rows) {
    auto shape = expectedShape(row.role, config_);
    int layers = row.perLayer ? config_.nLayer : 1;
    for (int L = 0; L < layers; ++L) {
      std::string name = (roleIsHead(row.role) ? "" : prefix_) + expandPattern(row.pattern, L);
      auto it = tensors_.find(name);
      if (!shape) {
        if (it != tensors_.end() && !(row.role == Role::AttnQKV || row.role == Role::AttnQKVB))
          throw FormatError(file + ": unexpected tensor '" + name + "' for this " + archName(config_.arch) + " config");
        continue;
      }
      if (options.skipFfn && isFfnRole(row.role)) {
        if (it != tensors_.end()) used.insert(name);
        continue;
      }
      // GPT-2 uses the fused qkv projection; the split q/k/v rows do not exist there.
      if (it == tensors_.end()) {
        if (row.role == Role::LmHead && config_.tiedEmbeddings) continue;
        if (config_.arch == Arch::GPT2 || (row.role != Role::AttnQKV && row.role != Role::AttnQKVB))
          throw FormatError(file + ": missing tensor '" + name + "'");
        continue;
      }
      std::vector<int64_t> want = *shape;
      if (row.conv1d) std::reverse(want.begin(), want.end());
      if (it->second.sizes().vec() != want)
        throw FormatError(file + ": tensor '" + name + "' has shape " + shapeString(it->second) + ", expected " +
                          shapeString(want));
      used.insert(name);
    }
  }
  for (const auto& [name, tensor] : tensors_) {
    if (used.count(name)) continue;
    bool ignorable = false;
    for (const auto& pat : table.ignorable)
      for (const auto& p : table.prefixes)
        for (int L = 0; L < std::max(1, config_.nLayer) && !ignorable; ++L)
          ignorable = name == p + expandPattern(pat, L);
    if (!ignorable) throw FormatError(file + ": unexpected tensor '" + name + "'");
  }
  // Drop ignorable buffers so tensors() is exactly the model's weights.
  for (auto it = tensors_.begin(); it != tensors_.end();) it = used.count(it->first) ? std::next(it) : tensors_.erase(it);

  uint64_t h = kFnvOffset;
  std::string cfg = config_.raw.dump();
  h = fnv1a(h, cfg.data(), cfg.size());
  for (const auto& [name, tensor] : tensors_) {
    h = fnv1a(h, name.data(), name.size());
    at::Tensor flat = tensor.reshape({-1});
    int64_t n = flat.numel();
    for (int k = 0; k < 16 && n > 0; ++k) {
      float v = flat[(n - 1) * k / 15].item<float>();
      h = fnv1a(h, &v, sizeof v);
    }
  }
  fingerprint_ = hex16(h);
}

std::unique_ptr<Model> Model::load(const fs::path& dir, const LoadOptions& options) {
  if (!fs::is_directory(dir)) throw IoError(dir.string() + ": not a model folder");
  fs::path cfgPath = dir / "config.json";
  if (!fs::exists(cfgPath)) throw FormatError(dir.string() + ": no config.json");
  std::unique_ptr<Model> m(new Model());
  m->dir_ = dir;
  m->config_ = ModelConfig::fromFile(cfgPath);

  // Which files hold the weights.
  std::vector<fs::path> files;
  std::string fileForErrors;
  fs::path index = dir / "model.safetensors.index.json";
  std::map<std::string, std::string> weightMap;
  if (fs::exists(dir / "model.safetensors")) {
    files.push_back(dir / "model.safetensors");
    fileForErrors = "model.safetensors";
  } else if (fs::exists(index)) {
    nlohmann::json j = readJsonFile(index);
    if (!j.contains("weight_map") || !j["weight_map"].is_object())
      throw FormatError(index.string() + ": missing 'weight_map'");
    std::set<std::string> names;
    for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
      if (!it.value().is_string()) throw FormatError(index.string() + ": weight_map entry '" + it.key() + "' is not a file name");
      std::string f = it.value().get<std::string>();
      if (f.find('/') != std::string::npos || f.find("..") != std::string::npos)
        throw FormatError(index.string() + ": weight_map file '" + f + "' must be a plain file name");
      weightMap[it.key()] = f;
      names.insert(f);
    }
    for (const auto& n : names) files.push_back(dir / n);
    fileForErrors = "model.safetensors.index.json";
  } else {
    for (const auto& e : fs::directory_iterator(dir))
      if (e.path().extension() == ".safetensors") files.push_back(e.path());
    std::sort(files.begin(), files.end());
    if (files.empty())
      throw FormatError(dir.string() + ": no weights (model.safetensors or model.safetensors.index.json)");
    fileForErrors = files.size() == 1 ? files[0].filename().string() : dir.filename().string();
  }
  std::set<std::string> dtypes;
  for (const auto& f : files) {
    if (!fs::exists(f)) throw IoError(f.string() + ": shard listed in model.safetensors.index.json is missing");
    auto st = SafetensorsFile::open(f);
    for (const auto& info : st->tensors()) {
      if (!weightMap.empty()) {
        auto wm = weightMap.find(info.name);
        if (wm == weightMap.end() || wm->second != f.filename().string())
          throw FormatError(f.filename().string() + ": tensor '" + info.name + "' is not listed for this shard in the index");
      }
      if (m->tensors_.count(info.name))
        throw FormatError(f.filename().string() + ": tensor '" + info.name + "' appears in two shards");
      if (info.dtype != DType::F32 && info.dtype != DType::F16 && info.dtype != DType::BF16)
        throw FormatError(f.filename().string() + ": tensor '" + info.name + "' has dtype " + dtypeName(info.dtype) +
                          " (weights must be F32, F16 or BF16)");
      if (options.skipFfn) {
        // defer: FFN tensors may still be loaded, they are just not required
      }
      dtypes.insert(dtypeName(info.dtype));
      at::Tensor& w = m->tensors_[info.name];
      w = info.dtype == DType::F32 ? st->raw(info.name) : st->f32(info.name);
      // One NaN/Inf weight turns every logit into NaN: refuse it here, once, by name.
      requireFinite(w, f.filename().string(), info.name);
    }
  }
  for (const auto& [name, f] : weightMap)
    if (!m->tensors_.count(name)) throw FormatError(fileForErrors + ": tensor '" + name + "' listed in the index is missing from " + f);
  m->storedDType_ = dtypes.size() == 1 ? *dtypes.begin() : (dtypes.empty() ? "F32" : "mixed");
  m->bind(options, fileForErrors);
  return m;
}

std::unique_ptr<Model> Model::fromTensors(const ModelConfig& config, std::map<std::string, at::Tensor> tensors,
                                          const LoadOptions& options) {
  std::unique_ptr<Model> m(new Model());
  m->config_ = config;
  m->tensors_ = std::move(tensors);
  m->bind(options, "model");
  return m;
}

int64_t Model::parameterCount() const {
  int64_t n = 0;
  for (const auto& [name, t] : tensors_) n += t.numel();
  return n;
}

FfnWeights Model::ffnWeights(int layer) const {
  FfnWeights w;
  w.up = t(Role::FfnUp, layer);
  w.upBias = t(Role::FfnUpB, layer);
  w.gate = config_.gated ? t(Role::FfnGate, layer) : at::Tensor();
  w.down = t(Role::FfnDown, layer);
  w.downBias = t(Role::FfnDownB, layer);
  w.act = config_.act;
  return w;
}

std::vector<at::Tensor> Model::makeTrainable() {
  std::vector<at::Tensor> params;
  for (auto& [name, tensor] : tensors_) {
    tensor = tensor.detach().to(at::kFloat).clone().set_requires_grad(true);
    params.push_back(tensor);
  }
  trainable_ = true;
  return params;
}

at::Tensor Model::attention(int L, const at::Tensor& x, const at::Tensor& bias, const at::Tensor& cos,
                            const at::Tensor& sin) const {
  const auto& c = config_;
  const int64_t B = x.size(0), T = x.size(1), H = c.nHead, KV = c.nKVHead, D = c.headDim;
  at::Tensor q, k, v;
  at::Tensor qkvW = t(Role::AttnQKV, L);
  if (qkvW.defined()) {
    at::Tensor qkv = at::linear(x, qkvW, t(Role::AttnQKVB, L));  // [B, T, 3C]
    auto parts = qkv.split(c.dModel, -1);
    q = parts[0], k = parts[1], v = parts[2];
  } else {
    q = at::linear(x, t(Role::AttnQ, L), t(Role::AttnQB, L));
    k = at::linear(x, t(Role::AttnK, L), t(Role::AttnKB, L));
    v = at::linear(x, t(Role::AttnV, L), t(Role::AttnVB, L));
  }
  q = q.view({B, T, H, D}).transpose(1, 2);   // [B, H, T, D]
  k = k.view({B, T, KV, D}).transpose(1, 2);  // [B, KV, T, D]
  v = v.view({B, T, KV, D}).transpose(1, 2);
  if (c.pos == PosKind::Rope) {
    q = q * cos + rotateHalf(q) * sin;
    k = k * cos + rotateHalf(k) * sin;
  }
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  if (!at::GradMode::is_enabled()) {
    // Inference: one (sequence, head) pair per task across the thread pool.
    // Each product is a single-threaded BLAS call on [T, D] panels that stay
    // in cache; batched matmuls instead wake every BLAS thread for each of the
    // 2 x B x H small products, which costs more than the products themselves
    // (measured in bench/bench_forward). GQA heads share their K/V in place.
    at::Tensor out = at::empty({B, T, H, D}, q.options());  // [B, T, H, D]
    const bool inference = c10::InferenceMode::is_enabled();
    const int64_t rep = H / KV;
    at::parallel_for(0, B * H, 1, [&](int64_t begin, int64_t end) {
      std::optional<c10::InferenceMode> guard;  // thread-local: re-enter it in the worker
      if (inference) guard.emplace();
      at::NoGradGuard noGrad;
      for (int64_t i = begin; i < end; ++i) {
        const int64_t b = i / H, h = i % H;
        at::Tensor s = at::mm(q.select(0, b).select(0, h), k.select(0, b).select(0, h / rep).t());  // [T, T]
        s.mul_(scale).add_(bias.select(0, b).select(0, 0));
        at::Tensor p = at::softmax(s, -1);
        at::Tensor o = out.select(0, b).select(1, h);  // [T, D] view into out
        at::mm_out(o, p, v.select(0, b).select(0, h / rep));
      }
    });
    return at::linear(out.view({B, T, H * D}), t(Role::AttnOut, L), t(Role::AttnOutB, L));
  }
  // Autograd path (training): batched matmuls.
  if (KV != H) {
    k = k.unsqueeze(2).expand({B, KV, H / KV, T, D}).reshape({B, H, T, D});
    v = v.unsqueeze(2).expand({B, KV, H / KV, T, D}).reshape({B, H, T, D});
  }
  at::Tensor scores = at::matmul(q * scale, k.transpose(-1, -2));  // [B, H, T, T]
  scores = scores + bias;                                           // + [B, 1, T, T]
  at::Tensor probs = at::softmax(scores, -1);
  at::Tensor out = at::matmul(probs, v).transpose(1, 2).reshape({B, T, H * D});
  return at::linear(out, t(Role::AttnOut, L), t(Role::AttnOutB, L));
}

at::Tensor Model::forwardHidden(const Batch& batch, HookSink* hooks) const {
  const auto& c = config_;
  std::optional<c10::InferenceMode> inference;
  if (!trainable_) inference.emplace();
  const int64_t B = batch.ids.size(0), T = batch.ids.size(1);
  if (batch.ids.dim() != 2 || B == 0 || T == 0) throw ParameterError("batch must be a non-empty [B, T] id matrix");
  if (c.pos == PosKind::Learned && T > c.maxPos)
    throw ParameterError("sequence length " + std::to_string(T) + " exceeds the model's " + std::to_string(c.maxPos) + " positions");
  {
    int64_t lo = batch.ids.min().item<int64_t>(), hi = batch.ids.max().item<int64_t>();
    if (lo < 0 || hi >= c.vocab)
      throw ParameterError("token id " + std::to_string(lo < 0 ? lo : hi) + " is outside the vocabulary [0, " +
                           std::to_string(c.vocab) + ")");
  }
  at::Tensor mask = batch.mask.defined() ? batch.mask : at::ones({B, T}, at::kLong);

  at::Tensor x = at::embedding(t(Role::TokEmbd), batch.ids);  // [B, T, E]
  if (at::Tensor pin = t(Role::ProjIn); pin.defined()) x = at::linear(x, pin);
  if (c.pos == PosKind::Learned) {
    at::Tensor pos;
    if (c.arch == Arch::OPT) {
      pos = (at::cumsum(mask, 1) * mask - 1) + c.posOffset;  // as HF's OPTLearnedPositionalEmbedding
    } else {
      pos = at::arange(T, at::kLong).unsqueeze(0).expand({B, T});
    }
    x = x + at::embedding(t(Role::PosEmbd), pos);
  }
  if (at::Tensor te = t(Role::TypeEmbd); te.defined()) {
    at::Tensor types = batch.typeIds.defined() ? batch.typeIds : at::zeros({B, T}, at::kLong);
    x = x + at::embedding(te, types);
  }
  if (at::Tensor en = t(Role::EmbNorm); en.defined()) x = layerNorm(x, en, t(Role::EmbNormB), c.normEps);

  // Additive attention bias [B, 1, T, T]: key padding, plus causality.
  const float neg = -1e30f;
  at::Tensor keyPad = (mask == 0).view({B, 1, 1, T});
  at::Tensor bias = at::zeros({B, 1, T, T}, at::kFloat).masked_fill(keyPad, neg);
  if (c.causal) bias = bias.masked_fill(at::ones({T, T}, at::kBool).triu(1).view({1, 1, T, T}), neg);
  // Sliding window (Mistral): query i sees key j only if i - j < window.
  if (c.slidingWindow > 0 && T > c.slidingWindow)
    bias = bias.masked_fill(at::ones({T, T}, at::kBool).tril(-c.slidingWindow).view({1, 1, T, T}), neg);

  at::Tensor cos, sin;
  if (c.pos == PosKind::Rope) {
    at::Tensor invFreq = 1.0 / at::pow(c.ropeTheta, at::arange(0, c.headDim, 2, at::kFloat) / c.headDim);
    at::Tensor freqs = at::outer(at::arange(T, at::kFloat), invFreq);  // [T, D/2]
    at::Tensor emb = at::cat({freqs, freqs}, -1);                       // [T, D]
    cos = emb.cos().view({1, 1, T, c.headDim});
    sin = emb.sin().view({1, 1, T, c.headDim});
  }

  auto norm = [&](const at::Tensor& v, Role w, Role b) {
    return c.norm == NormKind::RMSNorm ? rmsNorm(v, t(w, -1), c.normEps) : layerNorm(v, t(w, -1), t(b, -1), c.normEps);
  };
  for (int L = 0; L < c.nLayer; ++L) {
    auto nrm = [&](const at::Tensor& v, Role w, Role b) {
      return c.norm == NormKind::RMSNorm ? rmsNorm(v, t(w, L), c.normEps) : layerNorm(v, t(w, L), t(b, L), c.normEps);
    };
    at::Tensor h;
    if (c.preNorm) {
      x = x + attention(L, nrm(x, Role::AttnNorm, Role::AttnNormB), bias, cos, sin);
      h = nrm(x, Role::FfnNorm, Role::FfnNormB);
    } else {
      x = nrm(x + attention(L, x, bias, cos, sin), Role::AttnNorm, Role::AttnNormB);
      h = x;
    }
    if (hooks && hooks->wants(L, HookPoint::FfnIn)) hooks->on(L, HookPoint::FfnIn, h);
    const bool wantAct = hooks && hooks->wants(L, HookPoint::FfnAct);
    at::Tensor act;
    at::Tensor flat = h.reshape({B * T, c.dModel});
    at::Tensor f = override_ ? override_->forward(L, flat, wantAct ? &act : nullptr)
                             : denseFfn(ffnWeights(L), flat, wantAct ? &act : nullptr);
    f = f.view({B, T, c.dModel});
    if (wantAct) hooks->on(L, HookPoint::FfnAct, act.view({B, T, -1}));
    if (c.preNorm) {
      x = x + f;
    } else {
      x = nrm(x + f, Role::FfnNorm, Role::FfnNormB);
    }
  }
  if (c.finalNorm) x = norm(x, Role::OutNorm, Role::OutNormB);
  if (at::Tensor pout = t(Role::ProjOut); pout.defined()) x = at::linear(x, pout);
  return x;
}

at::Tensor Model::head(const at::Tensor& hidden) const {
  std::optional<c10::InferenceMode> inference;
  if (!trainable_) inference.emplace();
  at::Tensor x = hidden;
  if (at::Tensor d = t(Role::HeadDense); d.defined()) {
    x = applyActivation(at::linear(x, d, t(Role::HeadDenseB)), config_.act);
    x = layerNorm(x, t(Role::HeadNorm), t(Role::HeadNormB), config_.normEps);
  }
  return at::linear(x, t(Role::LmHead), t(Role::LmHeadB));
}

at::Tensor Model::forward(const Batch& batch, HookSink* hooks) const { return head(forwardHidden(batch, hooks)); }

void Model::save(const fs::path& dir, const std::string& dtype) const {
  at::ScalarType st = dtype == "F16" ? at::kHalf : dtype == "BF16" ? at::kBFloat16 : at::kFloat;
  if (dtype != "F32" && dtype != "F16" && dtype != "BF16") throw ParameterError("--dtype must be F32, F16 or BF16");
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& [name, tensor] : tensors_) {
    out.emplace_back(name, tensor.detach().to(st).contiguous());
  }
  writeSafetensors(dir / "model.safetensors", out, {{"format", "pt"}});
  writeFileAtomic(dir / "config.json", config_.raw.dump(2) + "\n");
}

}  // namespace moefy
