#include "analysis/record/recording.h"

#include <torch/torch.h>

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
      r.layers_.push_back(static_cast<int>(l.get<int64_t>()));
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
  }
  const TensorInfo* tid = r.sampleFile_->find("token_id");
  if (!tid) throw FormatError((dir / "samples.safetensors").string() + ": missing tensor 'token_id'");
  if (tid->shape.size() != 1)
    throw FormatError((dir / "samples.safetensors").string() + ": tensor 'token_id' must be 1-D");
  r.samples_ = tid->shape[0];
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
    throw FormatError(dir_.string() + ": recording was made with model " + modelPath_ + " (fingerprint " + fingerprint_ +
                      "), not with " + model.dir().string() + " (fingerprint " + model.fingerprint() + ")");
  if (c.dFF != dFF_ || c.dModel != dModel_ || c.nLayer != modelLayers_)
    throw FormatError(dir_.string() + ": recording shape (d_ff " + std::to_string(dFF_) + ", d_model " +
                      std::to_string(dModel_) + ") does not match model " + model.dir().string());
}

}  // namespace moefy
