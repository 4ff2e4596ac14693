#include "analysis/model/loader.h"

#include "analysis/common/error.h"
#include "analysis/moe/moe_checkpoint.h"

namespace moefy {

LoadedModel loadModel(const std::filesystem::path& dir) {
  LoadedModel out;
  if (!std::filesystem::is_directory(dir)) throw IoError(dir.string() + ": not a model folder");
  out.moefication = readMoeficationBlock(dir);
  LoadOptions opts;
  opts.skipFfn = out.isMoe();
  out.model = Model::load(dir, opts);
  if (out.isMoe()) attachMoeFromCheckpoint(*out.model, out.moefication, dir);
  try {
    out.tokenizer = Tokenizer::fromModelDir(dir);
  } catch (const Error& e) {
    out.tokenizerError = e.what();
  }
  return out;
}

nlohmann::json describeModel(const LoadedModel& loaded) {
  const Model& m = *loaded.model;
  const ModelConfig& c = m.config();
  nlohmann::json j;
  j["path"] = m.dir().string();
  j["arch"] = archName(c.arch);
  j["family"] = archName(c.arch);
  j["model_type"] = c.modelType;
  j["layers"] = c.nLayer;
  j["d_model"] = c.dModel;
  j["d_ff"] = c.dFF;
  j["heads"] = c.nHead;
  j["kv_heads"] = c.nKVHead;
  j["head_dim"] = c.headDim;
  j["vocab"] = c.vocab;
  j["ffn_kind"] = c.ffnKind();
  j["activation"] = activationName(c.act);
  j["norm"] = c.norm == NormKind::RMSNorm ? "rmsnorm" : "layernorm";
  j["pre_norm"] = c.preNorm;
  j["positions"] = c.pos == PosKind::Rope ? "rope" : "learned";
  j["max_positions"] = c.maxPos;
  j["rope"] = c.pos == PosKind::Rope ? c.rope.type : "none";
  j["position_encoding"] = c.ropeSummary();
  j["norms"] = c.normSummary();
  j["window_pattern"] = c.windowPattern();
  j["attention"] = c.attentionSummary();
  j["parameters"] = m.parameterCount();
  j["dtype"] = m.storedDType();
  if (loaded.tokenizer) {
    j["tokenizer"] = loaded.tokenizer->kind();
  } else {
    // The summary already names the folder: the reason without its path prefix.
    std::string why = loaded.tokenizerError;
    const std::string prefix = m.dir().string() + "/";
    for (size_t at; (at = why.find(prefix)) != std::string::npos;) why.erase(at, prefix.size());
    j["tokenizer"] = "none (" + why + ")";
  }
  j["fingerprint"] = m.fingerprint();
  if (loaded.isMoe()) j["moefication"] = loaded.moefication;
  return j;
}

}  // namespace moefy
