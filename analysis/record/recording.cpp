#include "analysis/record/recording.h"

#include <torch/torch.h>

#include <algorithm>
#include <atomic>
#include <cmath>

#include "analysis/common/error.h"
#include "analysis/io/fsutil.h"
#include "analysis/io/json_input.h"
#include "analysis/io/safetensors.h"
#include "analysis/model/model.h"

namespace moefy {

namespace fs = std::filesystem;

namespace {

const nlohmann::json& req(const nlohmann::json& j, const char* key, const std::string& ctx) {
  if (!j.is_object() || !j.contains(key)) throw FormatError(ctx + ": missing key '" + key + "'");
  return j.at(key);
}

int64_t reqInt(const nlohmann::json& j, const char* key, const std::string& ctx) {
  const auto& v = req(j, key, ctx);
  if (!v.is_number_integer()) throw FormatError(ctx + ": key '" + key + "' must be an integer");
  return v.get<int64_t>();
}

std::string reqStr(const nlohmann::json& j, const char* key, const std::string& ctx) {
  const auto& v = req(j, key, ctx);
  if (!v.is_string()) throw FormatError(ctx + ": key '" + key + "' must be a string");
  return v.get<std::string>();
}

void checkTensor(const SafetensorsFile& f, const std::string& name, DType dtype, const std::vector<int64_t>& shape) {
  const TensorInfo* t = f.find(name);
  if (!t) throw FormatError(f.path().string() + ": missing tensor '" + name + "'");
  if (t->dtype != dtype)
    throw FormatError(f.path().string() + ": tensor '" + name + "' has dtype " + dtypeName(t->dtype) + ", expected " +
                      dtypeName(dtype));
  if (t->shape != shape)
    throw FormatError(f.path().string() + ": tensor '" + name + "' has shape " + shapeString(t->shape) +
                      ", expected " + shapeString(shape));
}

std::string lname(int L, const char* what) { return "blk." + std::to_string(L) + "." + what; }

// The invariants that tie a layer's tensors together and to the manifest's
// token count (docs/formats.md "Recording"). O(d_ff^2) per layer, far cheaper
// than any use of the recording; an impossible recording (negative or
// asymmetric counts, counts above the token count) would otherwise be split
// or routed without a word.
void checkLayerInvariants(const SafetensorsFile& stats, const SafetensorsFile& coactFile, int L, int64_t n,
                          int64_t tokens, bool soft) {
  const std::string sp = stats.path().string(), cp = coactFile.path().string();
  auto fail = [&](const std::string& file, const std::string& what) { throw FormatError(file + ": " + what); };
  const std::string tok = " (the manifest's tokens is " + std::to_string(tokens) + ")";
  at::Tensor count = stats.raw(lname(L, "count")).contiguous();
  const int64_t* cnt = count.data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i)
    if (cnt[i] < 0 || cnt[i] > tokens)
      fail(sp, "tensor '" + lname(L, "count") + "'[" + std::to_string(i) + "] = " + std::to_string(cnt[i]) +
                   " is outside [0, tokens]" + tok);
  at::Tensor hist = stats.raw(lname(L, "active_hist")).contiguous();
  const int64_t* hp = hist.data_ptr<int64_t>();
  int64_t histTotal = 0, activeTotal = 0, countTotal = 0;
  for (int64_t a = 0; a <= n; ++a) {
    if (hp[a] < 0)
      fail(sp, "tensor '" + lname(L, "active_hist") + "'[" + std::to_string(a) + "] = " + std::to_string(hp[a]) +
                   " is negative");
    histTotal += hp[a];
    activeTotal += hp[a] * a;
  }
  for (int64_t i = 0; i < n; ++i) countTotal += cnt[i];
  if (histTotal != tokens)
    fail(sp, "tensor '" + lname(L, "active_hist") + "' counts " + std::to_string(histTotal) + " tokens" + tok);
  if (activeTotal != countTotal)
    fail(sp, "tensor '" + lname(L, "active_hist") + "' holds " + std::to_string(activeTotal) +
                 " activations but '" + lname(L, "count") + "' sums to " + std::to_string(countTotal));
  at::Tensor catTok = stats.raw(lname(L, "category_tokens")).contiguous();
  at::Tensor catCnt = stats.raw(lname(L, "category_count")).contiguous();
  const int64_t C = catTok.size(0);
  const int64_t* ct = catTok.data_ptr<int64_t>();
  const int64_t* cc = catCnt.data_ptr<int64_t>();
  int64_t catTotal = 0;
  for (int64_t c = 0; c < C; ++c) {
    if (ct[c] < 0 || ct[c] > tokens)
      fail(sp, "tensor '" + lname(L, "category_tokens") + "'[" + std::to_string(c) + "] = " + std::to_string(ct[c]) +
                   " is outside [0, tokens]" + tok);
    catTotal += ct[c];
    for (int64_t i = 0; i < n; ++i)
      if (cc[c * n + i] < 0 || cc[c * n + i] > ct[c] || cc[c * n + i] > cnt[i])
        fail(sp, "tensor '" + lname(L, "category_count") + "'[" + std::to_string(c) + ", " + std::to_string(i) +
                     "] = " + std::to_string(cc[c * n + i]) + " is outside [0, min(category_tokens, count)]");
  }
  if (catTotal > tokens)
    fail(sp, "tensor '" + lname(L, "category_tokens") + "' sums to " + std::to_string(catTotal) + tok);
  for (const char* name : {"sum", "sumsq"}) {
    at::Tensor t = stats.raw(lname(L, name)).contiguous();
    const double* v = t.data_ptr<double>();
    for (int64_t i = 0; i < n; ++i)
      if (!std::isfinite(v[i]) || (name[3] == 's' && v[i] < 0))
        fail(sp, "tensor '" + lname(L, name) + "'[" + std::to_string(i) + "] = " + std::to_string(v[i]) +
                     (std::isfinite(v[i]) ? " is negative" : " is not finite"));
  }
  {
    at::Tensor mx = stats.raw(lname(L, "max")).contiguous();
    const float* v = mx.data_ptr<float>();
    for (int64_t i = 0; i < n; ++i)
      if (!std::isfinite(v[i]))
        fail(sp, "tensor '" + lname(L, "max") + "'[" + std::to_string(i) + "] is not finite");
  }
  at::Tensor co = coactFile.raw(lname(L, "coact")).contiguous();
  const int32_t* m = co.data_ptr<int32_t>();
  // 64 x 64 tiles (the symmetry test reads the transposed tile; row by row
  // it would stride through memory), tile rows in parallel; the row of the
  // first violation found is then re-examined to name it.
  std::atomic<int64_t> badRow{n};
  constexpr int64_t kT = 64;
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t i0 = 0; i0 < n; i0 += kT) {
    const int64_t i1 = std::min(n, i0 + kT);
    for (int64_t j0 = 0; j0 < n; j0 += kT) {
      const int64_t j1 = std::min(n, j0 + kT);
      for (int64_t i = i0; i < i1; ++i) {
        const int32_t* r = m + i * n;
        bool bad = i >= j0 && i < j1 && r[i] != cnt[i];
        for (int64_t j = j0; j < j1 && !bad; ++j) bad = r[j] < 0 || r[j] != m[j * n + i] || r[j] > cnt[i];
        if (bad) {
          int64_t cur = badRow.load();
          while (i < cur && !badRow.compare_exchange_weak(cur, i)) {
          }
        }
      }
    }
  }
  if (badRow.load() < n) {
    const int64_t i = badRow.load();
    const int32_t* r = m + i * n;
    const std::string t = "tensor '" + lname(L, "coact") + "'";
    if (r[i] != cnt[i])
      fail(cp, t + "[" + std::to_string(i) + ", " + std::to_string(i) + "] = " + std::to_string(r[i]) + " differs from '" +
                   lname(L, "count") + "'[" + std::to_string(i) + "] = " + std::to_string(cnt[i]) +
                   " (the diagonal must equal the per-neuron active counts)");
    for (int64_t j = 0; j < n; ++j) {
      const std::string where = "[" + std::to_string(i) + ", " + std::to_string(j) + "] = " + std::to_string(r[j]);
      if (r[j] < 0) fail(cp, t + where + " is negative");
      if (r[j] != m[j * n + i])
        fail(cp, t + " is not symmetric: " + where + " but [" + std::to_string(j) + ", " + std::to_string(i) + "] = " +
                     std::to_string(m[j * n + i]));
      if (r[j] > cnt[i])
        fail(cp, t + where + " exceeds the neuron's active count " + std::to_string(cnt[i]));
    }
  }
  if (soft) {
    at::Tensor sc = coactFile.raw(lname(L, "coact_soft")).contiguous();
    const float* v = sc.data_ptr<float>();
    for (int64_t k = 0; k < n * n; ++k)
      if (!(v[k] >= 0) || !std::isfinite(v[k]))
        fail(cp, "tensor '" + lname(L, "coact_soft") + "'[" + std::to_string(k / n) + ", " + std::to_string(k % n) +
                     "] = " + std::to_string(v[k]) + " is negative or not finite");
  }
}

}  // namespace

Recording Recording::open(const fs::path& dir, bool allowPartial) {
  Recording r;
  r.dir_ = dir;
  if (!fs::is_directory(dir)) throw IoError(dir.string() + ": not a recording folder (no such directory)");
  const fs::path mpath = dir / "manifest.json";
  if (!fs::exists(mpath)) throw FormatError(mpath.string() + ": missing (not a recording folder)");
  const std::string ctx = mpath.string();
  r.manifest_ = readJsonFile(mpath);
  const auto& m = r.manifest_;
  if (!m.is_object()) throw FormatError(ctx + ": not a JSON object");
  if (reqStr(m, "format", ctx) != "moefy-recording")
    throw FormatError(ctx + ": format is '" + m["format"].get<std::string>() + "', expected 'moefy-recording'");
  if (reqInt(m, "version", ctx) != 1)
    throw FormatError(ctx + ": unsupported version " + std::to_string(m["version"].get<int64_t>()));
  try {
    const auto& model = req(m, "model", ctx);
    r.fingerprint_ = reqStr(model, "fingerprint", ctx + ": model");
    r.modelPath_ = reqStr(model, "path", ctx + ": model");
    // Range-checked in 64 bits before narrowing (2^32 + 64 must not read as 64).
    constexpr int kMaxDim = 1 << 30;
    r.dFF_ = jsonInt(req(model, "d_ff", ctx + ": model"), 1, kMaxDim, ctx + ": model.d_ff");
    r.dModel_ = jsonInt(req(model, "d_model", ctx + ": model"), 1, kMaxDim, ctx + ": model.d_model");
    r.modelLayers_ = jsonInt(req(model, "layers", ctx + ": model"), 1, kMaxDim, ctx + ": model.layers");
    if (r.dFF_ <= 0 || r.dModel_ <= 0 || r.modelLayers_ <= 0) throw FormatError(ctx + ": model dimensions must be positive");
    const auto& corpus = req(m, "corpus", ctx);
    const auto& cats = req(corpus, "categories", ctx + ": corpus");
    if (!cats.is_array()) throw FormatError(ctx + ": corpus.categories must be a list");
    for (const auto& c : cats) {
      if (!c.is_string()) throw FormatError(ctx + ": corpus.categories must hold strings");
      r.categories_.push_back(c.get<std::string>());
    }
    r.tokens_ = reqInt(m, "tokens", ctx);
    r.sequences_ = reqInt(m, "sequences", ctx);
    r.chunksDone_ = reqInt(m, "chunks_done", ctx);
    if (r.tokens_ < 0 || r.sequences_ < 0) throw FormatError(ctx + ": negative token or sequence count");
    const auto& layers = req(m, "layers", ctx);
    if (!layers.is_array() || layers.empty()) throw FormatError(ctx + ": 'layers' must be a non-empty list");
    for (const auto& l : layers) {
      // Checked in 64 bits: a layer 2^32 must not become layer 0.
      if (!l.is_number_integer() || jsonInteger(l, INT64_MIN, INT64_MAX, ctx) < 0 || l.get<int64_t>() >= r.modelLayers_)
        throw FormatError(ctx + ": layer " + l.dump() + " is outside the model's " + std::to_string(r.modelLayers_) +
                          " layers");
      const int layer = static_cast<int>(l.get<int64_t>());
      if (std::find(r.layers_.begin(), r.layers_.end(), layer) != r.layers_.end())
        throw FormatError(ctx + ": layer " + l.dump() + " is listed twice");
      r.layers_.push_back(layer);
    }
    const auto& opts = req(m, "options", ctx);
    r.active_ = ActiveRule::fromJson(req(opts, "active", ctx + ": options"), ctx + ": options.active");
    const auto& soft = req(opts, "soft_coact", ctx + ": options");
    if (!soft.is_boolean()) throw FormatError(ctx + ": options.soft_coact must be true or false");
    r.soft_ = soft.get<bool>();
    r.complete_ = m.value("complete", true);
  } catch (const nlohmann::json::exception& e) {
    throw FormatError(ctx + ": malformed manifest (" + std::string(e.what()) + ")");
  }
  if (!r.complete_ && !allowPartial)
    throw FormatError(ctx + ": this is an unfinished checkpoint; finish it with `moefy record ... --resume`");

  r.stats_ = SafetensorsFile::open(dir / "stats.safetensors");
  r.coact_ = SafetensorsFile::open(dir / "coact.safetensors");
  r.sampleFile_ = SafetensorsFile::open(dir / "samples.safetensors");
  const int64_t n = r.dFF_, C = static_cast<int64_t>(r.categories_.size());
  for (int L : r.layers_) {
    checkTensor(*r.stats_, lname(L, "count"), DType::I64, {n});
    checkTensor(*r.stats_, lname(L, "sum"), DType::F64, {n});
    checkTensor(*r.stats_, lname(L, "sumsq"), DType::F64, {n});
    checkTensor(*r.stats_, lname(L, "max"), DType::F32, {n});
    checkTensor(*r.stats_, lname(L, "active_hist"), DType::I64, {n + 1});
    checkTensor(*r.stats_, lname(L, "category_count"), DType::I64, {C, n});
    checkTensor(*r.stats_, lname(L, "category_tokens"), DType::I64, {C});
    checkTensor(*r.coact_, lname(L, "coact"), DType::I32, {n, n});
    if (r.soft_) checkTensor(*r.coact_, lname(L, "coact_soft"), DType::F32, {n, n});
    checkLayerInvariants(*r.stats_, *r.coact_, L, n, r.tokens_, r.soft_);
  }
  const TensorInfo* tid = r.sampleFile_->find("token_id");
  if (!tid) throw FormatError((dir / "samples.safetensors").string() + ": missing tensor 'token_id'");
  if (tid->shape.size() != 1)
    throw FormatError((dir / "samples.safetensors").string() + ": tensor 'token_id' must be 1-D");
  r.samples_ = tid->shape[0];
  if (r.samples_ > r.tokens_)
    throw FormatError((dir / "samples.safetensors").string() + ": holds " + std::to_string(r.samples_) +
                      " sampled tokens, more than the " + std::to_string(r.tokens_) + " recorded tokens");
  const int64_t S = r.samples_;
  checkTensor(*r.sampleFile_, "token_id", DType::I32, {S});
  checkTensor(*r.sampleFile_, "doc_id", DType::I64, {S});
  checkTensor(*r.sampleFile_, "position", DType::I32, {S});
  checkTensor(*r.sampleFile_, "category", DType::I32, {S});
  for (int L : r.layers_) {
    checkTensor(*r.sampleFile_, lname(L, "ffn_in"), DType::F16, {S, static_cast<int64_t>(r.dModel_)});
    checkTensor(*r.sampleFile_, lname(L, "ffn_act"), DType::F16, {S, n});
  }
  return r;
}

bool Recording::hasLayer(int layer) const {
  return std::find(layers_.begin(), layers_.end(), layer) != layers_.end();
}

void Recording::requireLayer(int layer) const {
  if (!hasLayer(layer)) {
    std::string list;
    for (int L : layers_) list += (list.empty() ? "" : ",") + std::to_string(L);
    throw ParameterError(dir_.string() + ": layer " + std::to_string(layer) + " was not recorded (recorded: " + list + ")");
  }
}

at::Tensor Recording::count(int L) const { requireLayer(L); return stats_->raw(lname(L, "count")); }
at::Tensor Recording::sum(int L) const { requireLayer(L); return stats_->raw(lname(L, "sum")); }
at::Tensor Recording::sumsq(int L) const { requireLayer(L); return stats_->raw(lname(L, "sumsq")); }
at::Tensor Recording::max(int L) const { requireLayer(L); return stats_->raw(lname(L, "max")); }
at::Tensor Recording::activeHist(int L) const { requireLayer(L); return stats_->raw(lname(L, "active_hist")); }
at::Tensor Recording::categoryCount(int L) const { requireLayer(L); return stats_->raw(lname(L, "category_count")); }
at::Tensor Recording::categoryTokens(int L) const { requireLayer(L); return stats_->raw(lname(L, "category_tokens")); }
at::Tensor Recording::coact(int L) const { requireLayer(L); return coact_->raw(lname(L, "coact")); }
at::Tensor Recording::coactSoft(int L) const {
  requireLayer(L);
  return soft_ ? coact_->raw(lname(L, "coact_soft")) : at::Tensor();
}
at::Tensor Recording::sampleTokenIds() const { return sampleFile_->raw("token_id"); }
at::Tensor Recording::sampleDocIds() const { return sampleFile_->raw("doc_id"); }
at::Tensor Recording::samplePositions() const { return sampleFile_->raw("position"); }
at::Tensor Recording::sampleCategories() const { return sampleFile_->raw("category"); }
at::Tensor Recording::sampleFfnIn(int L) const { requireLayer(L); return sampleFile_->raw(lname(L, "ffn_in")); }
at::Tensor Recording::sampleFfnAct(int L) const { requireLayer(L); return sampleFile_->raw(lname(L, "ffn_act")); }

void Recording::checkModel(const Model& model) const {
  const auto& c = model.config();
  if (model.fingerprint() != fingerprint_)
    throw ParameterError(dir_.string() + ": recording was made with model " + modelPath_ + " (fingerprint " +
                         fingerprint_ + "), not with " + model.dir().string() + " (fingerprint " + model.fingerprint() +
                         ")");
  if (c.dFF != dFF_ || c.dModel != dModel_ || c.nLayer != modelLayers_)
    throw ParameterError(dir_.string() + ": recording shape (d_ff " + std::to_string(dFF_) + ", d_model " +
                         std::to_string(dModel_) + ") does not match model " + model.dir().string());
}

}  // namespace moefy
