#include "analysis/model/model.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>
#include <tuple>

#include "analysis/common/error.h"
#include "analysis/common/hash.h"
#include "analysis/common/runtime.h"
#include "analysis/io/fsutil.h"
#include "analysis/io/json_input.h"
#include "analysis/io/safetensors.h"
#include "analysis/model/device.h"

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

std::string hookName(int layer, HookPoint p) { return hookName(Site::ofLayer(layer), p); }

std::string hookName(const Site& site, HookPoint p) {
  switch (p) {
    case HookPoint::FfnIn:
      return site.prefix() + "ffn_in";
    case HookPoint::FfnAct:
      return site.prefix() + "ffn_act";
    case HookPoint::RouterLogits:
      return site.prefix() + "router_logits";
    case HookPoint::TopkIds:
      return site.prefix() + "topk_ids";
    case HookPoint::TopkWeights:
      return site.prefix() + "topk_weights";
    case HookPoint::ExpertTokens:
      return site.prefix() + "tokens";
  }
  return site.prefix() + "?";
}

at::Tensor FfnOverride::forwardSite(const Site& site, const at::Tensor& x, at::Tensor* hidden) const {
  if (site.stack != SiteStack::Single || site.expert >= 0 || site.shared)
    throw ParameterError("this FFN override handles single-stack sites only, not " + site.name());
  return forward(site.layer, x, hidden);
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

namespace {
at::Tensor lin(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b);  // nn.Linear, GEMV for one row (below)
}

// One row (incremental decoding) goes through GEMV like the attention's
// projections and the MoE kernel's batch-1 path: with a one-row GEMM here the
// dense baseline was slower than a MoE with every expert active (issue 20
// defect 6).
at::Tensor denseFfn(const FfnWeights& w, const at::Tensor& x, at::Tensor* hidden) {
  at::Tensor h;
  if (w.gated()) {
    h = applyActivation(lin(x, w.gate, {}), w.act) * lin(x, w.up, {});
  } else {
    h = applyActivation(lin(x, w.up, w.upBias), w.act);
  }
  if (hidden) *hidden = h;
  return lin(h, w.down, w.downBias);
}

Model::~Model() = default;

std::shared_ptr<const FfnOverride> FfnOverride::onDevice(c10::Device device) const {
  throw ParameterError("--device " + device.str() + ": this FFN replacement has CPU kernels only (use --device cpu)");
}

void Model::setFfnOverride(std::shared_ptr<const FfnOverride> ffn) {
  if (ffn && !device_.is_cpu()) ffn = ffn->onDevice(device_);
  override_ = std::move(ffn);
}

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

namespace {

// F16/BF16 -> F32, bit-exact (the same values as Tensor::to). BF16 is the
// upper half of an F32, so a contiguous BF16 tensor converts by a 16-bit
// shift, which the compiler vectorises: about 4x torch's conversion here
// (4 ms against 15 ms for a 5632 x 2048 matrix on 2 cores), which matters
// because a mapped model converts every weight on every forward.
// The F32 buffers of mapped-weight conversions, reused. A fresh buffer of
// this size comes from mmap as fresh pages, and first-touching them (the
// kernel zeroes each page) cost more than the conversion itself: the mapped
// forward of bench_mapped_weights ran at 0.85x the converted one with fresh
// buffers and at 1.0x with reused heap memory. Process-wide (every mapped
// model shares it), thread-safe; it keeps at most `cap` bytes of free
// buffers (twice the largest mapped layer in F32, set at load), so the
// resident memory it adds is bounded by that. Never destroyed (the deleters
// of live tensors may run at exit).
class ConversionPool {
 public:
  static ConversionPool& instance() {
    static auto* pool = new ConversionPool();
    return *pool;
  }
  void raiseCap(size_t bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    cap_ = std::max(cap_, bytes);
  }
  // An F32 tensor of `sizes` on a pooled buffer (contents undefined).
  at::Tensor take(at::IntArrayRef sizes) {
    int64_t n = 1;
    for (int64_t d : sizes) n *= d;
    const size_t bytes = static_cast<size_t>(std::max<int64_t>(n, 1)) * sizeof(float);
    void* p = nullptr;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = free_.find(bytes);
      if (it != free_.end()) {
        p = it->second;
        free_.erase(it);
        freeBytes_ -= bytes;
      }
    }
    if (!p && posix_memalign(&p, 64, bytes) != 0) throw std::bad_alloc();
    return at::from_blob(
        p, sizes, [this, bytes](void* q) { give(q, bytes); }, at::TensorOptions().dtype(at::kFloat));
  }

 private:
  void give(void* p, size_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (freeBytes_ + bytes <= cap_) {
        free_.emplace(bytes, p);
        freeBytes_ += bytes;
        return;
      }
    }
    std::free(p);
  }
  std::mutex mu_;
  std::multimap<size_t, void*> free_;
  size_t freeBytes_ = 0, cap_ = 0;
};

// `pooled`: the result is a temporary of a mapped model's forward (from the
// ConversionPool) rather than an owned weight.
at::Tensor toFloat32(const at::Tensor& t, bool pooled = false) {
  if (t.scalar_type() == at::kFloat) return t;
  if (t.scalar_type() != at::kBFloat16 || !t.is_contiguous() || !t.device().is_cpu() || t.requires_grad())
    return t.to(at::kFloat);
  at::Tensor out = pooled && t.numel() >= (1 << 16) ? ConversionPool::instance().take(t.sizes())
                                                    : at::empty(t.sizes(), t.options().dtype(at::kFloat));
  const auto* in = static_cast<const uint16_t*>(t.data_ptr());
  auto* o = static_cast<uint32_t*>(out.data_ptr());
  at::parallel_for(0, t.numel(), 1 << 16, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) o[i] = static_cast<uint32_t>(in[i]) << 16;
  });
  return out;
}

}  // namespace

at::Tensor Model::t(Role role, int layer, SiteStack stack, int expert) const {
  std::string name = tensorName(role, layer < 0 ? 0 : layer, stack, expert);
  if (name.empty()) return {};
  auto it = tensors_.find(name);
  if (it == tensors_.end()) {
    // Tied heads fall back to the token embedding.
    if (role == Role::LmHead && config_.tiedEmbeddings) return t(Role::TokEmbd);
    return {};
  }
  at::Tensor v = it->second;
  if (v.scalar_type() != at::kFloat) v = toFloat32(v, /*pooled=*/true);  // a mapped half tensor (WeightMode::Mapped)
  const auto& table = archTable(config_);
  for (const auto& row : table.rows)
    if (row.role == role && row.stack == stack && row.conv1d) return v.t();
  return v;
}

at::Tensor Model::embedTokens(const at::Tensor& ids) const {
  auto it = tensors_.find(tensorName(Role::TokEmbd));
  if (it == tensors_.end()) throw FormatError("model: no token embedding");
  at::Tensor rows = at::embedding(it->second, ids.to(it->second.device()));
  return toFloat32(rows);
}

std::string Model::tensorName(Role role, int layer, SiteStack stack, int expert) const {
  const auto& table = archTable(config_);
  for (const auto& row : table.rows)
    if (row.role == role && row.stack == stack)
      return (roleIsHead(role) ? "" : prefix_) + expandPattern(row.pattern, layer, row.perExpert ? expert : -1);
  return "";
}

// Names that real checkpoints may store for a global role's tensor (T5's
// encoder/decoder embed_tokens, and lm_head when tied: HF makes them one
// parameter with shared.weight). An alias stands in for the role's tensor when
// that is absent and is dropped when it holds the same values; different
// values are refused, since which of them HF ends up with depends on load order.
void Model::resolveAliases(const std::string& file) {
  const auto& table = archTable(config_);
  std::vector<AliasRow> aliases = table.aliases;
  if (config_.arch == Arch::T5 && config_.tiedEmbeddings) aliases.push_back({Role::TokEmbd, "lm_head.weight"});
  for (const auto& a : aliases) {
    auto it = tensors_.find(a.pattern);
    if (it == tensors_.end()) continue;
    std::string own;  // aliases are only used by prefix-less tables: the row's pattern is the name
    for (const auto& row : table.rows)
      if (row.role == a.role && !row.perLayer && own.empty()) own = row.pattern;
    const at::Tensor alias = it->second;
    tensors_.erase(it);
    auto mine = tensors_.find(own);
    if (mine == tensors_.end()) {
      tensors_[own] = alias;
    } else if (mine->second.sizes() != alias.sizes() || !at::equal(mine->second, alias)) {
      throw FormatError(file + ": tensor '" + std::string(a.pattern) + "' differs from '" + own +
                        "' (the model ties them to one weight: store one of them, or equal values)");
    }
  }
}

void Model::splitFused(const std::string& file) {
  const auto& table = archTable(config_);
  for (const auto& f : table.fused)
    for (int L = 0; L < config_.nLayer; ++L) {
      const std::string name = expandPattern(f.pattern, L);
      auto it = tensors_.find(name);
      if (it == tensors_.end()) continue;  // stored split (e.g. a moefy MoE export): ordinary rows
      std::vector<int64_t> sizes;
      int64_t rows = 0, cols = -1;
      for (Role r : f.parts) {
        auto shape = expectedShape(r, config_);
        sizes.push_back((*shape)[0]);
        rows += (*shape)[0];
        cols = (*shape)[1];
      }
      const at::Tensor fused = it->second;
      if (fused.dim() != 2 || fused.size(0) != rows || fused.size(1) != cols)
        throw FormatError(file + ": tensor '" + name + "' has shape " + shapeString(fused) + ", expected " +
                          shapeString(std::vector<int64_t>{rows, cols}));
      int64_t off = 0;
      for (size_t i = 0; i < f.parts.size(); ++i) {
        std::string part = tensorName(f.parts[i], L);
        if (tensors_.count(part))
          throw FormatError(file + ": tensor '" + part + "' is also stored inside the fused '" + name + "'");
        tensors_[part] = fused.narrow(0, off, sizes[i]);  // a view: no copy
        off += sizes[i];
      }
      tensors_.erase(name);
    }
}

void Model::bind(const LoadOptions& options, const std::string& file) {
  const auto& table = archTable(config_);
  splitFused(file);
  resolveAliases(file);
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
  if (config_.encoderDecoder) {
    // An encoder-only export (T5EncoderModel) or a truncated file: say so once,
    // naming the first decoder tensor, rather than listing a consequence.
    bool anyDecoder = false;
    for (const auto& [name, tensor] : tensors_) anyDecoder |= name.rfind("decoder.", 0) == 0;
    if (!anyDecoder)
      throw FormatError(file + ": no decoder weights (missing tensor '" +
                        tensorName(Role::AttnQ, 0, SiteStack::Decoder) + "'); " + archName(config_.arch) +
                        " needs both stacks (encoder-only checkpoints are not supported)");
  }
  std::set<std::string> used;
  auto isFfnRole = [](Role r) { return r == Role::FfnUp || r == Role::FfnUpB || r == Role::FfnGate ||
                                       r == Role::FfnDown || r == Role::FfnDownB; };
  for (const auto& row : table.rows) {
    auto shape = expectedShape(row.role, config_);
    int layers = rowLayerCount(row, config_);
    // Native MoE expert rows repeat per expert; a missing expert is named like any missing tensor.
    const int experts = row.perExpert ? config_.expertCount : 1;
    for (int L = 0; L < layers; ++L)
      for (int E = 0; E < experts; ++E) {
        std::string name =
            (roleIsHead(row.role) ? "" : prefix_) + expandPattern(row.pattern, L, row.perExpert ? E : -1);
        auto it = tensors_.find(name);
        // Blocks of a mixed MoE model have either the dense MLP rows or the MoE rows.
        if (shape && row.perLayer && !roleInLayer(row.role, config_, L)) {
          if (it != tensors_.end())
            throw FormatError(file + ": unexpected tensor '" + name + "' (layer " + std::to_string(L) + " is a " +
                              (config_.moeLayer(L) ? "MoE" : "dense MLP") + " layer in this " + archName(config_.arch) +
                              " config)");
          continue;
        }
        if (!shape) {
          if (it != tensors_.end() && !(row.role == Role::AttnQKV || row.role == Role::AttnQKVB))
            throw FormatError(file + ": unexpected tensor '" + name + "' for this " + archName(config_.arch) +
                              " config");
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
        for (int L = 0; L < std::max({1, config_.nLayer, config_.nDecoderLayer}) && !ignorable; ++L)
          ignorable = name == p + expandPattern(pat, L);
    if (!ignorable) throw FormatError(file + ": unexpected tensor '" + name + "'");
  }
  // Drop ignorable buffers so tensors() is exactly the model's weights.
  for (auto it = tensors_.begin(); it != tensors_.end();) it = used.count(it->first) ? std::next(it) : tensors_.erase(it);

  if (options.headersOnly) {
    fingerprint_.clear();
    return;
  }
  requireDevice(options.device, "--device " + options.device.str());
  if (!options.device.is_cpu() && mapped_)
    throw ParameterError("--device " + options.device.str() +
                         ": the half-precision weights are kept mapped (MOEFY_WEIGHTS=mapped); a device needs them "
                         "converted (MOEFY_WEIGHTS=convert)");
  // The fingerprint covers every byte of every weight (a sample of values
  // let a model with, e.g., doubled FFN weights pass as the original). Each
  // tensor is hashed 8 bytes per step (FNV-1a over 64-bit words, several GB/s)
  // in parallel, then the per-tensor hashes are chained in name order.
  uint64_t h = kFnvOffset;
  std::string cfg = config_.raw.dump();
  h = fnv1a(h, cfg.data(), cfg.size());
  std::vector<std::pair<std::string, at::Tensor>> list(tensors_.begin(), tensors_.end());
  std::vector<uint64_t> th(list.size(), 0);
#pragma omp parallel for schedule(dynamic, 1)
  for (size_t i = 0; i < list.size(); ++i) {
    // Hashed as F32 whatever the weights are held as (WeightMode), so a
    // recording made with converted weights matches the mapped model.
    at::Tensor c = list[i].second.detach().to(at::kFloat).contiguous();
    const auto* p = static_cast<const unsigned char*>(c.data_ptr());
    const size_t nbytes = static_cast<size_t>(c.numel()) * c.element_size();
    uint64_t t = kFnvOffset;
    size_t k = 0;
    for (; k + 8 <= nbytes; k += 8) {
      uint64_t w;
      std::memcpy(&w, p + k, 8);
      t = (t ^ w) * 1099511628211ull;
    }
    t = fnv1a(t, p + k, nbytes - k);
    const int64_t dtype = static_cast<int64_t>(c.scalar_type());
    t = fnv1a(t, &dtype, sizeof dtype);
    for (int64_t d : c.sizes()) t = fnv1a(t, &d, sizeof d);
    th[i] = t;
  }
  for (size_t i = 0; i < list.size(); ++i) {
    h = fnv1a(h, list[i].first.data(), list[i].first.size());
    h = fnv1a(h, &th[i], sizeof th[i]);
  }
  fingerprint_ = hex16(h);
  // Hashed on the CPU above (the fingerprint does not depend on the device),
  // then copied to the device once.
  if (!options.device.is_cpu())
    for (auto& [name, tensor] : tensors_) tensor = tensor.to(options.device);
  device_ = options.device;
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
  std::vector<std::shared_ptr<SafetensorsFile>> opened;
  double halfBytes = 0;  // bytes of the F16/BF16 tensors as stored
  for (const auto& f : files) {
    if (!fs::exists(f)) throw IoError(f.string() + ": shard listed in model.safetensors.index.json is missing");
    opened.push_back(SafetensorsFile::open(f));
    for (const auto& info : opened.back()->tensors())
      if (info.dtype == DType::F16 || info.dtype == DType::BF16)
        halfBytes += static_cast<double>(info.end - info.begin);
  }
  WeightMode mode = options.weights;
  if (mode == WeightMode::Auto) {
    if (const char* env = std::getenv("MOEFY_WEIGHTS"); env && *env) {
      const std::string v = env;
      if (v == "convert")
        mode = WeightMode::Convert;
      else if (v == "mapped")
        mode = WeightMode::Mapped;
      else if (v != "auto")
        throw ParameterError("MOEFY_WEIGHTS='" + v + "' is not one of auto, convert, mapped");
    }
    if (mode == WeightMode::Auto && !options.device.is_cpu())
      mode = WeightMode::Convert;  // device memory holds the F32
    if (mode == WeightMode::Auto) {
      // The F32 copy takes twice the stored half bytes.
      mode = 2 * halfBytes > 0.5 * availableMemoryBytes() ? WeightMode::Mapped : WeightMode::Convert;
    }
  }
  m->mapped_ = (mode == WeightMode::Mapped || options.headersOnly) && halfBytes > 0;
  // Pooled conversion buffers: up to two layers' weights in F32 (halfBytes / layers is one layer's half bytes,
  // about; the embedding and head are counted in it, which errs on the large side).
  if (m->mapped_)
    ConversionPool::instance().raiseCap(static_cast<size_t>(
        2 * 2 * halfBytes /
        std::max(1, m->config_.layerCount(SiteStack::Single) + m->config_.layerCount(SiteStack::Decoder))));
  for (size_t fi = 0; fi < files.size(); ++fi) {
    const fs::path& f = files[fi];
    const auto& st = opened[fi];
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
      w = info.dtype == DType::F32 || m->mapped_ ? st->raw(info.name) : toFloat32(st->raw(info.name));
      // One NaN/Inf weight turns every logit into NaN: refuse it here, once, by name.
      if (!options.headersOnly) requireFinite(w, f.filename().string(), info.name);
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

FfnWeights Model::ffnWeights(const Site& site) const {
  const bool inRange = site.layer >= 0 && site.layer < config_.layerCount(site.stack) &&
                       (site.stack == SiteStack::Single) != config_.encoderDecoder;
  if (inRange && config_.moeLayer(site.layer) && (site.expert >= 0 || site.shared)) {
    FfnWeights w;
    w.act = config_.act;
    if (site.shared && config_.dShared > 0) {
      w.gate = t(Role::SharedGate, site.layer);
      w.up = t(Role::SharedUp, site.layer);
      w.down = t(Role::SharedDown, site.layer);
      return w;
    }
    if (!site.shared && site.expert < config_.expertCount) {
      w.gate = t(Role::ExpGate, site.layer, SiteStack::Single, site.expert);
      w.up = t(Role::ExpUp, site.layer, SiteStack::Single, site.expert);
      w.down = t(Role::ExpDown, site.layer, SiteStack::Single, site.expert);
      return w;
    }
  }
  if (!inRange || site.expert >= 0 || site.shared)
    throw ParameterError("the " + std::string(archName(config_.arch)) + " model has no FFN site " + site.name());
  if (site.stack == SiteStack::Single) return ffnWeights(site.layer);
  FfnWeights w;
  w.up = t(Role::FfnUp, site.layer, site.stack);
  w.gate = config_.gated ? t(Role::FfnGate, site.layer, site.stack) : at::Tensor();
  w.down = t(Role::FfnDown, site.layer, site.stack);
  w.act = config_.act;
  return w;
}

FfnWeights Model::ffnWeights(int layer) const {
  if (config_.moeLayer(layer))
    throw ParameterError("layer " + std::to_string(layer) + " of the " + archName(config_.arch) +
                         " model is a native MoE layer: its FFNs are the sites blk." + std::to_string(layer) +
                         ".exp.E" + (config_.dShared > 0 ? " and blk." + std::to_string(layer) + ".shared" : ""));
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

namespace {

// nn.Linear; a single row goes through GEMV (addmv), which OpenBLAS runs
// several times faster than a one-row GEMM (incremental decoding).
at::Tensor lin(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
  if (x.numel() != x.size(-1) || at::GradMode::is_enabled()) return at::linear(x, w, b);
  std::vector<int64_t> shape = x.sizes().vec();
  shape.back() = w.size(0);
  at::Tensor v = x.reshape({-1});
  at::Tensor y = b.defined() ? at::addmv(b, w, v) : at::mv(w, v);
  return y.view(shape);
}

constexpr double kPi = 3.14159265358979323846;

// Inverse RoPE frequencies [dim / 2] in double, as HF modeling_rope_utils
// computes them for each rope_type; `seqLen` is the current sequence length
// (dynamic NTK recomputes the base when it exceeds max_position_embeddings).
std::vector<double> ropeInvFreq(const RopeConfig& rc, int64_t seqLen) {
  const int dim = rc.dim;
  double base = rc.theta;
  if (rc.type == "dynamic" && seqLen > rc.maxPos)
    base *= std::pow(rc.factor * double(seqLen) / rc.maxPos - (rc.factor - 1), double(dim) / (dim - 2));
  std::vector<double> inv(dim / 2);
  for (int i = 0; i < dim / 2; ++i) inv[i] = 1.0 / std::pow(base, double(2 * i) / dim);
  if (rc.type == "linear") {
    for (double& f : inv) f /= rc.factor;
  } else if (rc.type == "llama3") {
    // Llama 3.1: long wavelengths divided by factor, short ones kept, a smooth blend between.
    const double lowWave = rc.originalMaxPos / rc.lowFreqFactor, highWave = rc.originalMaxPos / rc.highFreqFactor;
    for (double& f : inv) {
      const double wave = 2 * kPi / f;
      if (wave > lowWave) {
        f /= rc.factor;
      } else if (wave >= highWave) {
        const double smooth = (rc.originalMaxPos / wave - rc.lowFreqFactor) / (rc.highFreqFactor - rc.lowFreqFactor);
        f = (1 - smooth) * f / rc.factor + smooth * f;
      }
    }
  } else if (rc.type == "yarn") {
    // YaRN (Peng et al. 2023): interpolated and extrapolated frequencies blended by a linear ramp
    // over the dims whose rotation count at the original context lies in [beta_slow, beta_fast].
    auto corrDim = [&](double rot) {
      return dim * std::log(rc.originalMaxPos / (rot * 2 * kPi)) / (2 * std::log(rc.theta));
    };
    double lo = corrDim(rc.betaFast), hi = corrDim(rc.betaSlow);
    if (rc.truncate) lo = std::floor(lo), hi = std::ceil(hi);
    lo = std::max(lo, 0.0);
    hi = std::min(hi, double(dim - 1));
    if (lo == hi) hi += 0.001;
    for (int i = 0; i < dim / 2; ++i) {
      const double ramp = std::clamp((i - lo) / (hi - lo), 0.0, 1.0);
      const double extrapolation = 1 - ramp;
      inv[i] = inv[i] / rc.factor * (1 - extrapolation) + inv[i] * extrapolation;
    }
  }
  return inv;
}

// cos/sin [1, 1, T, dim] for positions P .. P + T - 1 (rotate-half layout: the
// frequencies repeated twice), times the yarn attention factor.
std::pair<at::Tensor, at::Tensor> ropeTables(const RopeConfig& rc, int64_t P, int64_t T, c10::Device device) {
  std::vector<double> inv = ropeInvFreq(rc, P + T);
  const int half = rc.dim / 2;
  at::Tensor cos = at::empty({T, rc.dim}, at::kFloat), sin = at::empty({T, rc.dim}, at::kFloat);
  auto c = cos.accessor<float, 2>();
  auto s = sin.accessor<float, 2>();
  for (int64_t t = 0; t < T; ++t)
    for (int i = 0; i < half; ++i) {
      const double a = double(P + t) * inv[i];
      c[t][i] = c[t][i + half] = static_cast<float>(std::cos(a) * rc.attentionFactor);
      s[t][i] = s[t][i + half] = static_cast<float>(std::sin(a) * rc.attentionFactor);
    }
  return {cos.view({1, 1, T, rc.dim}).to(device), sin.view({1, 1, T, rc.dim}).to(device)};
}

// x * cos + rotate_half(x) * sin on the first `cos.size(-1)` dims; the rest
// passes through (partial rotary).
at::Tensor applyRope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  const int64_t rd = cos.size(-1);
  at::Tensor r = rd == x.size(-1) ? x : x.narrow(-1, 0, rd);
  at::Tensor out = r * cos + rotateHalf(r) * sin;
  return rd == x.size(-1) ? out : at::cat({out, x.narrow(-1, rd, x.size(-1) - rd)}, -1);
}

}  // namespace

at::Tensor Model::norm(const at::Tensor& x, Role wr, Role br, int L) const {
  const auto& c = config_;
  at::Tensor w = t(wr, L);
  if (c.norm == NormKind::LayerNorm) return layerNorm(x, w, t(br, L), c.normEps);
  // Gemma's RMSNorm scales by (1 + w).
  return rmsNorm(x, c.normPlusOne ? w + 1.0 : w, c.normEps);
}

at::Tensor Model::attention(int L, const at::Tensor& x, const at::Tensor& bias, const Rope& rope, KvCache* cache) const {
  const auto& c = config_;
  const int64_t B = x.size(0), T = x.size(1), H = c.nHead, KV = c.nKVHead, D = c.headDim;
  at::Tensor q, k, v;
  at::Tensor qkvW = t(Role::AttnQKV, L);
  if (qkvW.defined()) {
    at::Tensor qkv = lin(x, qkvW, t(Role::AttnQKVB, L));  // [B, T, 3C]
    auto parts = qkv.split(c.dModel, -1);
    q = parts[0], k = parts[1], v = parts[2];
  } else {
    q = lin(x, t(Role::AttnQ, L), t(Role::AttnQB, L));
    k = lin(x, t(Role::AttnK, L), t(Role::AttnKB, L));
    v = lin(x, t(Role::AttnV, L), t(Role::AttnVB, L));
  }
  if (c.qkNorm == QkNorm::Full) {  // OLMo 2: over the whole projection
    q = norm(q, Role::AttnQNorm, Role::AttnQNorm, L);
    k = norm(k, Role::AttnKNorm, Role::AttnKNorm, L);
  }
  q = q.view({B, T, H, D}).transpose(1, 2);   // [B, H, T, D]
  k = k.view({B, T, KV, D}).transpose(1, 2);  // [B, KV, T, D]
  v = v.view({B, T, KV, D}).transpose(1, 2);
  if (c.qkNorm == QkNorm::PerHead) {  // Qwen3, Gemma3: per head, before RoPE
    q = norm(q, Role::AttnQNorm, Role::AttnQNorm, L);
    k = norm(k, Role::AttnKNorm, Role::AttnKNorm, L);
  }
  if (c.pos == PosKind::Rope) {
    q = applyRope(q, rope.cos, rope.sin);
    k = applyRope(k, rope.cos, rope.sin);
  }
  if (cache) {
    auto& ck = cache->k[L];
    auto& cv = cache->v[L];
    ck = ck.defined() ? at::cat({ck, k}, 2) : k.contiguous();
    cv = cv.defined() ? at::cat({cv, v}, 2) : v.contiguous();
    k = ck, v = cv;
  }
  const int64_t S = k.size(2);  // keys: T, or cached + T
  double scale = c.attnScale > 0 ? c.attnScale : 1.0 / std::sqrt(static_cast<double>(D));
  if (c.attnScaleInverseLayer) scale /= static_cast<double>(L + 1);
  const double cap = c.attnSoftcap;
  if (!at::GradMode::is_enabled() && x.is_cpu()) {
    // Inference on the CPU: one (sequence, head) pair per task across the thread pool.
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
        at::Tensor s = at::mm(q.select(0, b).select(0, h), k.select(0, b).select(0, h / rep).t());  // [T, S]
        s.mul_(scale);
        if (cap > 0) s.div_(cap).tanh_().mul_(cap);  // Gemma2 attention soft-capping
        s.add_(bias.select(0, b).select(0, 0));
        at::Tensor p = at::softmax(s, -1);
        at::Tensor o = out.select(0, b).select(1, h);  // [T, D] view into out
        at::mm_out(o, p, v.select(0, b).select(0, h / rep));
      }
    });
    return lin(out.view({B, T, H * D}), t(Role::AttnOut, L), t(Role::AttnOutB, L));
  }
  // Autograd path (training), and every device other than the CPU: batched matmuls.
  if (KV != H) {
    k = k.unsqueeze(2).expand({B, KV, H / KV, S, D}).reshape({B, H, S, D});
    v = v.unsqueeze(2).expand({B, KV, H / KV, S, D}).reshape({B, H, S, D});
  }
  at::Tensor scores = at::matmul(q * scale, k.transpose(-1, -2));  // [B, H, T, S]
  if (cap > 0) scores = at::tanh(scores / cap) * cap;
  scores = scores + bias;  // + [B, 1, T, S]
  at::Tensor probs = at::softmax(scores, -1);
  at::Tensor out = at::matmul(probs, v).transpose(1, 2).reshape({B, T, H * D});
  return lin(out, t(Role::AttnOut, L), t(Role::AttnOutB, L));
}

at::Tensor Model::forwardHidden(const Batch& batch, HookSink* hooks) const {
  if (config_.encoderDecoder)
    throw ParameterError(std::string(archName(config_.arch)) +
                         " is an encoder-decoder model: give decoder input ids (forwardSeq2Seq, --decoder-ids)");
  if (batch.ids.dim() != 2 || batch.ids.size(0) == 0 || batch.ids.size(1) == 0)
    throw ParameterError("batch must be a non-empty [B, T] id matrix");
  return run(batch.ids, batch.mask, batch.typeIds, nullptr, hooks);
}

at::Tensor Model::forwardCached(const std::vector<int64_t>& tokens, KvCache& cache) const {
  if (tokens.empty()) throw ParameterError("decoder step with no tokens");
  if (config_.encoderDecoder)
    throw ParameterError(std::string("incremental decoding of encoder-decoder models (") + archName(config_.arch) +
                         ") is not supported yet");
  if (!config_.causal)
    throw ParameterError(std::string("incremental decoding needs a causal model, not ") + archName(config_.arch));
  if (cache.k.size() != static_cast<size_t>(config_.nLayer)) {
    cache.k.assign(config_.nLayer, at::Tensor());
    cache.v.assign(config_.nLayer, at::Tensor());
    cache.length = 0;
  }
  at::Tensor ids = at::tensor(tokens, at::kLong).view({1, static_cast<int64_t>(tokens.size())});
  return run(ids, {}, {}, &cache, nullptr);
}

at::Tensor Model::run(const at::Tensor& ids, const at::Tensor& maskIn, const at::Tensor& typeIds, KvCache* cache,
                      HookSink* hooks) const {
  const auto& c = config_;
  std::optional<c10::InferenceMode> inference;
  if (!trainable_) inference.emplace();
  const int64_t B = ids.size(0), T = ids.size(1);
  const int64_t P = cache ? cache->length : 0;  // positions before this call
  const int64_t S = P + T;                      // keys attended to
  if (c.pos == PosKind::Learned && S > c.maxPos)
    throw ParameterError("sequence length " + std::to_string(S) + " exceeds the model's " + std::to_string(c.maxPos) +
                         " positions");
  {
    int64_t lo = ids.min().item<int64_t>(), hi = ids.max().item<int64_t>();
    if (lo < 0 || hi >= c.vocab)
      throw ParameterError("token id " + std::to_string(lo < 0 ? lo : hi) + " is outside the vocabulary [0, " +
                           std::to_string(c.vocab) + ")");
  }
  // Every tensor made below lives on the model's device (LoadOptions::device).
  const at::Tensor idsD = ids.to(device_);
  const auto onDevice = [&](at::ScalarType type) { return at::TensorOptions().dtype(type).device(device_); };
  at::Tensor mask = maskIn.defined() ? maskIn.to(device_) : at::ones({B, T}, onDevice(at::kLong));

  at::Tensor x = embedTokens(idsD);  // [B, T, E]
  if (at::Tensor pin = t(Role::ProjIn); pin.defined()) x = lin(x, pin, {});
  // Gemma: embeddings times sqrt(d_model).
  if (c.embedScale) x = x * std::sqrt(static_cast<double>(c.dModel));
  if (c.pos == PosKind::Learned) {
    at::Tensor pos;
    if (c.arch == Arch::OPT && !cache) {
      pos = (at::cumsum(mask, 1) * mask - 1) + c.posOffset;  // as HF's OPTLearnedPositionalEmbedding
    } else {
      pos = (at::arange(P, S, onDevice(at::kLong)) + c.posOffset).unsqueeze(0).expand({B, T});
    }
    x = x + at::embedding(t(Role::PosEmbd), pos);
  }
  if (at::Tensor te = t(Role::TypeEmbd); te.defined()) {
    at::Tensor types = typeIds.defined() ? typeIds.to(device_) : at::zeros({B, T}, onDevice(at::kLong));
    x = x + at::embedding(te, types);
  }
  if (at::Tensor en = t(Role::EmbNorm); en.defined()) x = layerNorm(x, en, t(Role::EmbNormB), c.normEps);

  // Additive attention biases [B, 1, T, S]: key padding, causality, and for
  // sliding layers the window (query i sees key j only if i - j < window).
  const float neg = -1e30f;
  at::Tensor qPos = at::arange(P, S, onDevice(at::kLong)).view({T, 1});
  at::Tensor kPos = at::arange(S, onDevice(at::kLong)).view({1, S});
  at::Tensor hide = at::zeros({T, S}, onDevice(at::kBool));
  if (c.causal) hide = kPos > qPos;
  at::Tensor full = at::zeros({B, 1, T, S}, onDevice(at::kFloat)).masked_fill(hide.view({1, 1, T, S}), neg);
  if (!cache) full = full.masked_fill((mask == 0).view({B, 1, 1, T}), neg);
  at::Tensor window = full;
  if (c.slidingWindow > 0 && S > c.slidingWindow)
    window = full.masked_fill(((qPos - kPos) >= c.slidingWindow).view({1, 1, T, S}), neg);

  Rope global, local;
  if (c.pos == PosKind::Rope) {
    std::tie(global.cos, global.sin) = ropeTables(c.rope, P, T, device_);
    local = global;
    if (c.arch == Arch::Gemma3) std::tie(local.cos, local.sin) = ropeTables(c.ropeLocal, P, T, device_);
  }

  for (int L = 0; L < c.nLayer; ++L) {
    const bool sl = c.sliding(L);
    auto attn = [&](const at::Tensor& in) { return attention(L, in, sl ? window : full, sl ? local : global, cache); };
    at::Tensor h;
    switch (c.placement) {
      case NormPlacement::Pre:
        x = x + attn(norm(x, Role::AttnNorm, Role::AttnNormB, L));
        h = norm(x, Role::FfnNorm, Role::FfnNormB, L);
        break;
      case NormPlacement::Post:
        x = norm(x + attn(x), Role::AttnNorm, Role::AttnNormB, L);
        h = x;
        break;
      case NormPlacement::Sandwich:
        x = x + norm(attn(norm(x, Role::AttnNorm, Role::AttnNormB, L)), Role::AttnPostNorm, Role::AttnPostNorm, L);
        h = norm(x, Role::FfnNorm, Role::FfnNormB, L);
        break;
      case NormPlacement::Output:
        x = x + norm(attn(x), Role::AttnPostNorm, Role::AttnPostNorm, L);
        h = x;
        break;
    }
    const Site site = Site::ofLayer(L);
    if (hooks && hooks->wantsSite(site, HookPoint::FfnIn)) hooks->onSite(site, HookPoint::FfnIn, h);
    at::Tensor flat = h.reshape({B * T, c.dModel});  // [B * T, d_model]
    at::Tensor f;
    if (c.moeLayer(L)) {
      f = nativeMoe(L, flat, B, T, hooks);  // hooks of blk.L, blk.L.exp.E and blk.L.shared inside
    } else {
      const bool wantAct = hooks && hooks->wantsSite(site, HookPoint::FfnAct);
      at::Tensor act;
      f = override_ ? override_->forward(L, flat, wantAct ? &act : nullptr)
                    : denseFfn(ffnWeights(L), flat, wantAct ? &act : nullptr);
      if (wantAct) hooks->onSite(site, HookPoint::FfnAct, act.view({B, T, -1}));
    }
    f = f.view({B, T, c.dModel});
    switch (c.placement) {
      case NormPlacement::Pre: x = x + f; break;
      case NormPlacement::Post: x = norm(x + f, Role::FfnNorm, Role::FfnNormB, L); break;
      case NormPlacement::Sandwich:
      case NormPlacement::Output: x = x + norm(f, Role::FfnPostNorm, Role::FfnPostNorm, L); break;
    }
  }
  if (cache) cache->length = S;
  if (c.finalNorm) x = norm(x, Role::OutNorm, Role::OutNormB, 0);
  if (at::Tensor pout = t(Role::ProjOut); pout.defined()) x = lin(x, pout, {});
  return x;
}

at::Tensor Model::head(const at::Tensor& hidden) const {
  std::optional<c10::InferenceMode> inference;
  if (!trainable_) inference.emplace();
  at::Tensor x = hidden;
  // T5ForConditionalGeneration with tied embeddings: decoder output * d_model^-0.5.
  if (config_.headScale != 1.0) x = x * config_.headScale;
  if (at::Tensor d = t(Role::HeadDense); d.defined()) {
    x = applyActivation(at::linear(x, d, t(Role::HeadDenseB)), config_.act);
    x = layerNorm(x, t(Role::HeadNorm), t(Role::HeadNormB), config_.normEps);
  }
  at::Tensor logits = lin(x, t(Role::LmHead), t(Role::LmHeadB));
  // Gemma2 final logit soft-capping: cap * tanh(logits / cap).
  if (config_.finalSoftcap > 0) logits = at::tanh(logits / config_.finalSoftcap) * config_.finalSoftcap;
  return logits;
}

at::Tensor Model::forward(const Batch& batch, HookSink* hooks) const { return head(forwardHidden(batch, hooks)); }

void Model::save(const fs::path& dir, const std::string& dtype) const {
  at::ScalarType st = dtype == "F16" ? at::kHalf : dtype == "BF16" ? at::kBFloat16 : at::kFloat;
  if (dtype != "F32" && dtype != "F16" && dtype != "BF16") throw ParameterError("--dtype must be F32, F16 or BF16");
  std::vector<std::pair<std::string, at::Tensor>> out;
  // Fused tensors (Phi-3) are written back in their HF layout.
  std::set<std::string> inFused;
  for (const auto& f : archTable(config_).fused)
    for (int L = 0; L < config_.nLayer; ++L) {
      std::vector<at::Tensor> parts;
      for (Role r : f.parts) {
        auto it = tensors_.find(tensorName(r, L));
        if (it == tensors_.end()) break;
        parts.push_back(it->second.detach());
      }
      if (parts.size() != f.parts.size()) continue;
      for (Role r : f.parts) inFused.insert(tensorName(r, L));
      out.emplace_back(expandPattern(f.pattern, L), at::cat(parts, 0).to(st).cpu().contiguous());
    }
  for (const auto& [name, tensor] : tensors_) {
    if (inFused.count(name)) continue;
    out.emplace_back(name, tensor.detach().to(st).cpu().contiguous());
  }
  writeSafetensors(dir / "model.safetensors", out, {{"format", "pt"}});
  writeFileAtomic(dir / "config.json", config_.raw.dump(2) + "\n");
}

}  // namespace moefy
