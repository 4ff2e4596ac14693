#include "analysis/checkpoint/loader.h"

#include <algorithm>
#include <set>

#include "analysis/common/error.h"
#include "analysis/io/fsutil.h"
#include "analysis/io/json_input.h"
#include "analysis/io/safetensors.h"
#include "analysis/model/arch.h"
#include "analysis/moe/moe_checkpoint.h"

namespace moefy {

namespace {

// Native MoE layout for `inspect --json`: experts, top-k, shared expert, and
// which layers are MoE blocks and which dense MLPs.
void addMoeFields(nlohmann::json& j, const ModelConfig& c) {
  if (c.expertCount == 0) return;
  nlohmann::json moe;
  moe["experts"] = c.expertCount;
  moe["experts_per_token"] = c.expertTopK;
  moe["expert_d_ff"] = c.dExpert;
  moe["norm_topk_prob"] = c.normTopK;
  moe["shared_expert_d_ff"] = c.dShared;
  nlohmann::json moeLayers = nlohmann::json::array(), denseLayers = nlohmann::json::array();
  // The sites of each MoE layer's experts (analysis/model/site.h), keyed by the layer's site.
  nlohmann::json expertSites = nlohmann::json::object();
  for (int L = 0; L < c.nLayer; ++L) {
    (c.moeLayer(L) ? moeLayers : denseLayers).push_back(L);
    if (c.moeLayer(L)) expertSites[Site::ofLayer(L).name()] = siteNames(c.expertSites(L));
  }
  moe["moe_layers"] = moeLayers;
  moe["dense_layers"] = denseLayers;
  moe["expert_sites"] = expertSites;
  moe["summary"] = c.moeSummary();
  moe["layer_summary"] = c.moeLayerSummary();
  j["native_moe"] = moe;
}

// The fields `inspect` shows that come from config.json alone: shared by the
// loaded-model summary and the headers-only one, so they cannot disagree.
void addConfigFields(nlohmann::json& j, const ModelConfig& c) {
  j["arch"] = archName(c.arch);
  j["family"] = archName(c.arch);
  j["model_type"] = c.modelType;
  j["layers"] = c.nLayer;
  if (c.encoderDecoder) j["decoder_layers"] = c.nDecoderLayer;
  // The stacks and their whole-FFN sites (analysis/model/site.h): one
  // "single" stack of blk.L, or an "encoder" of enc.blk.L and a "decoder" of dec.blk.L.
  nlohmann::json stacks = nlohmann::json::array();
  for (SiteStack st : c.stacks()) {
    const int n = c.layerCount(st);
    nlohmann::json s;
    s["stack"] = st == SiteStack::Encoder ? "encoder" : st == SiteStack::Decoder ? "decoder" : "single";
    s["layers"] = n;
    s["site_prefix"] = st == SiteStack::Encoder ? "enc.blk" : st == SiteStack::Decoder ? "dec.blk" : "blk";
    stacks.push_back(s);
  }
  j["stacks"] = stacks;
  j["stack_summary"] = c.stackSummary();
  j["ffn_sites"] = siteNames(c.ffnSites());
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
  j["positions"] = c.pos == PosKind::Rope ? "rope" : c.pos == PosKind::Relative ? "relative" : "learned";
  j["max_positions"] = c.maxPos;
  j["rope"] = c.pos == PosKind::Rope ? c.rope.type : "none";
  j["position_encoding"] = c.ropeSummary();
  j["norms"] = c.normSummary();
  j["window_pattern"] = c.windowPattern();
  j["attention"] = c.attentionSummary();
}

// The parameters of an export's weights file (moe.safetensors), from its
// header: the experts' FFN weights (with each layer's down bias) and the
// routers; the neuron labels (blk.L.labels) are an index, not parameters.
struct MoeParameters {
  int64_t experts = 0, routers = 0;
};

MoeParameters countMoeParameters(const std::filesystem::path& dir, const nlohmann::json& block) {
  const std::filesystem::path f = dir / block.value("weights", std::string("moe.safetensors"));
  if (!std::filesystem::exists(f)) throw IoError(f.string() + ": missing (listed weights file)");
  MoeParameters p;
  auto st = SafetensorsFile::open(f);  // header only: the mapping is not read
  for (const auto& info : st->tensors()) {
    const std::string& n = info.name;
    if (n.size() >= 7 && n.compare(n.size() - 7, 7, ".labels") == 0) continue;
    int64_t count = 1;
    for (int64_t d : info.shape) count *= d;
    (n.find(".router.") != std::string::npos ? p.routers : p.experts) += count;
  }
  return p;
}

// "0-3", "0,2,5", "0-2,7" for a sorted list of layer indices.
std::string layerRanges(const std::vector<int64_t>& v) {
  std::string out;
  for (size_t i = 0; i < v.size();) {
    size_t j = i;
    while (j + 1 < v.size() && v[j + 1] == v[j] + 1) ++j;
    if (!out.empty()) out += ",";
    out += std::to_string(v[i]) + (j > i ? "-" + std::to_string(v[j]) : std::string());
    i = j + 1;
  }
  return out;
}

// "16" when every entry is 16, "8-16" when they differ.
std::string spanText(const std::vector<int64_t>& v) {
  if (v.empty()) return "?";
  const auto [lo, hi] = std::minmax_element(v.begin(), v.end());
  return *lo == *hi ? std::to_string(*lo) : std::to_string(*lo) + "-" + std::to_string(*hi);
}

std::vector<int64_t> intList(const nlohmann::json& block, const char* key) {
  std::vector<int64_t> out;
  if (block.contains(key) && block[key].is_array())
    for (const auto& x : block[key])
      if (x.is_number_integer()) out.push_back(x.get<int64_t>());
  return out;
}

// Adds the parameter split and the one-line summary of an export's MoEfication.
void addMoeficationFields(nlohmann::json& j, const ModelConfig& c, const nlohmann::json& block,
                          const std::filesystem::path& dir) {
  const MoeParameters p = countMoeParameters(dir, block);
  j["parameters"] = j["parameters"].get<int64_t>() + p.experts + p.routers;
  j["expert_parameters"] = p.experts;
  j["router_parameters"] = p.routers;
  j["moefication_summary"] = moeficationSummary(block, c);
}

// "none (why)" without the folder's path prefix: the summary already names it.
std::string noTokenizer(std::string why, const std::filesystem::path& dir) {
  const std::string prefix = dir.string() + "/";
  for (size_t at; (at = why.find(prefix)) != std::string::npos;) why.erase(at, prefix.size());
  return "none (" + why + ")";
}

}  // namespace

std::string moeficationSummary(const nlohmann::json& block, const ModelConfig& c) {
  if (!block.is_object()) return "none";
  const std::vector<int64_t> layers = intList(block, "layers"), experts = intList(block, "experts"),
                             topK = intList(block, "top_k");
  std::string s = "MoEfied: " + spanText(experts) + " experts";
  if (block.contains("expert_size") && block["expert_size"].is_number_integer())
    s += " of " + std::to_string(block["expert_size"].get<int64_t>()) + " neurons";
  if (block.contains("sites") && block["sites"].is_array()) {
    // Encoder-decoder exports: the MoEfied sites by name, of all the model's FFN sites.
    std::string names;
    for (const auto& n : block["sites"])
      if (n.is_string()) names += (names.empty() ? "" : ", ") + n.get<std::string>();
    s += " at " + std::to_string(block["sites"].size()) + " of " + std::to_string(c.ffnSites().size()) +
         " FFN sites (" + names + ")";
  } else {
    s += " in " + std::to_string(layers.size()) + " of " + std::to_string(c.nLayer) + " layers";
    if (!layers.empty()) s += " (" + layerRanges(layers) + ")";
  }
  s += ", top-" + spanText(topK);
  if (block.contains("router") && block["router"].is_string())
    s += ", " + block["router"].get<std::string>() + " router";
  return s;
}

LoadedModel loadModel(const std::filesystem::path& dir, c10::Device device) {
  LoadedModel out;
  if (!std::filesystem::is_directory(dir)) throw IoError(dir.string() + ": not a model folder");
  out.moefication = readMoeficationBlock(dir);
  LoadOptions opts;
  opts.skipFfn = out.isMoe();
  opts.device = device;
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
  addConfigFields(j, c);
  j["parameters"] = m.parameterCount();
  j["dtype"] = m.storedDType();
  if (loaded.tokenizer) {
    j["tokenizer"] = loaded.tokenizer->kind();
  } else {
    j["tokenizer"] = noTokenizer(loaded.tokenizerError, m.dir());
  }
  j["fingerprint"] = m.fingerprint();
  addMoeFields(j, c);
  if (loaded.isMoe()) {
    j["moefication"] = loaded.moefication;
    addMoeficationFields(j, c, loaded.moefication, m.dir());
  }
  return j;
}

nlohmann::json describeModelFiles(const std::filesystem::path& dir) {
  namespace fs = std::filesystem;
  if (!fs::is_directory(dir)) throw IoError(dir.string() + ": not a model folder");
  const ModelConfig c = ModelConfig::fromFile(dir / "config.json");
  const nlohmann::json moe = readMoeficationBlock(dir);
  std::vector<fs::path> files;
  if (fs::exists(dir / "model.safetensors")) {
    files.push_back(dir / "model.safetensors");
  } else if (fs::exists(dir / "model.safetensors.index.json")) {
    const nlohmann::json j = readJsonFile(dir / "model.safetensors.index.json");
    std::set<std::string> names;
    if (j.contains("weight_map") && j["weight_map"].is_object())
      for (const auto& [k, v] : j["weight_map"].items())
        if (v.is_string()) names.insert(v.get<std::string>());
    for (const auto& n : names) {
      if (n.find('/') != std::string::npos || n.find("..") != std::string::npos)
        throw FormatError((dir / "model.safetensors.index.json").string() + ": weight_map file '" + n +
                          "' must be a plain file name");
      files.push_back(dir / n);
    }
  } else {
    for (const auto& e : fs::directory_iterator(dir))
      if (e.path().extension() == ".safetensors" && e.path().filename() != "moe.safetensors") files.push_back(e.path());
    std::sort(files.begin(), files.end());
  }
  if (files.empty())
    throw FormatError(dir.string() + ": no weights (model.safetensors or model.safetensors.index.json)");
  const ArchTable& table = archTable(c);
  auto ignorable = [&](const std::string& name) {
    // Aliases (T5's embed_tokens, a tied T5 lm_head) are shared.weight stored again: count it once.
    for (const auto& alias : table.aliases)
      if (name == alias.pattern) return true;
    if (c.arch == Arch::T5 && c.tiedEmbeddings && name == "lm_head.weight") return true;
    for (const auto& pat : table.ignorable)
      for (const auto& p : table.prefixes)
        for (int L = 0; L < std::max({1, c.nLayer, c.nDecoderLayer}); ++L)
          if (name == p + expandPattern(pat, L)) return true;
    return false;
  };
  int64_t params = 0;
  std::set<std::string> dtypes;
  for (const auto& f : files) {
    if (!fs::exists(f)) throw IoError(f.string() + ": missing (listed weights file)");
    auto st = SafetensorsFile::open(f);  // header only: the mapping is not read
    for (const auto& info : st->tensors()) {
      if (ignorable(info.name)) continue;
      int64_t n = 1;
      for (int64_t d : info.shape) n *= d;
      params += n;
      dtypes.insert(dtypeName(info.dtype));
    }
  }
  nlohmann::json j;
  j["path"] = dir.string();
  addConfigFields(j, c);
  j["parameters"] = params;
  j["dtype"] = dtypes.size() == 1 ? *dtypes.begin() : (dtypes.empty() ? "F32" : "mixed");
  try {
    j["tokenizer"] = Tokenizer::fromModelDir(dir)->kind();
  } catch (const Error& e) {
    j["tokenizer"] = noTokenizer(e.what(), dir);
  }
  addMoeFields(j, c);
  if (!moe.is_null()) {
    j["moefication"] = moe;
    addMoeficationFields(j, c, moe, dir);
  }
  return j;
}

}  // namespace moefy
