#include "analysis/moe/moe_checkpoint.h"

#include <torch/torch.h>

#include "analysis/common/error.h"
#include "analysis/io/fsutil.h"
#include "analysis/io/json_input.h"
#include "analysis/io/safetensors.h"
#include "analysis/model/model.h"
#include "analysis/moe/moe_export.h"
#include "analysis/moe/moe_ffn.h"

namespace moefy {

namespace fs = std::filesystem;

nlohmann::json readMoeficationBlock(const fs::path& dir) {
  auto cfg = dir / "config.json";
  if (!fs::exists(cfg)) return nullptr;
  nlohmann::json j;
  try {
    j = readJsonFile(cfg);
  } catch (const FormatError&) {
    return nullptr;  // Model::load reports the malformed config with its context
  }
  if (!j.is_object() || !j.contains("moefication")) {
    if (fs::exists(dir / "moe.safetensors"))
      throw FormatError(cfg.string() + ": no 'moefication' block, but the folder holds MoE experts (moe.safetensors); "
                        "the block was removed or the config replaced - re-export the model");
    return nullptr;
  }
  const nlohmann::json& b = j["moefication"];
  if (!b.is_object()) throw FormatError(cfg.string() + ": 'moefication' must be an object");
  return b;
}

namespace {

std::vector<int> listOf(const nlohmann::json& b, const char* key, const std::string& ctx) {
  if (!b.contains(key) || !b[key].is_array()) throw FormatError(ctx + ": moefication." + key + " must be a list");
  // Each entry is range-checked in 64 bits before narrowing to int.
  return jsonIntList(b[key], 0, std::numeric_limits<int>::max(), ctx + ": moefication." + key);
}

}  // namespace

void attachMoeFromCheckpoint(Model& model, const nlohmann::json& b, const fs::path& dir) {
  const std::string ctx = (dir / "config.json").string();
  const auto& c = model.config();
  if (b.value("format", "") != "moefy-moe") throw FormatError(ctx + ": moefication.format must be 'moefy-moe'");
  if (!b.contains("version") || !b["version"].is_number_integer() ||
      (b["version"].get<int64_t>() != 1 && b["version"].get<int64_t>() != 2))
    throw FormatError(ctx + ": unsupported moefication.version (this build reads versions 1 and 2)");
  auto layers = listOf(b, "layers", ctx);
  auto experts = listOf(b, "experts", ctx);
  auto topk = listOf(b, "top_k", ctx);
  if (layers.empty()) throw FormatError(ctx + ": moefication.layers is empty");
  // Shared experts (docs/moe.md): neurons per layer, 0 = none; absent in exports without any.
  std::vector<int> sharedSizes(layers.size(), 0);
  if (b.contains("shared_sizes")) {
    sharedSizes = listOf(b, "shared_sizes", ctx);
    if (sharedSizes.size() != layers.size())
      throw FormatError(ctx + ": moefication.shared_sizes has " + std::to_string(sharedSizes.size()) +
                        " entries, moefication.layers " + std::to_string(layers.size()));
  }
  if (experts.size() != layers.size() || topk.size() != layers.size())
    throw FormatError(ctx + ": moefication lists 'layers' (" + std::to_string(layers.size()) + "), 'experts' (" +
                      std::to_string(experts.size()) + ") and 'top_k' (" + std::to_string(topk.size()) +
                      ") must have the same length");
  // Site indices (analysis/model/site.h): the layer for single-stack models;
  // an encoder-decoder export names its sites (moefication.sites).
  const std::vector<Site> table = c.ffnSites();
  const int nSites = static_cast<int>(table.size());
  if (c.expertCount > 0)
    throw FormatError(ctx + ": a MoE export of a native MoE model (" + c.modelType +
                      ") is not supported (moefy export refuses to write one)");
  std::vector<Site> sites;
  if (c.encoderDecoder) {
    if (!b.contains("sites")) throw FormatError(ctx + ": moefication.sites is missing (an encoder-decoder export)");
    sites = readSiteList(b, layers, ctx + ": moefication");
  }
  for (size_t i = 0; i < layers.size(); ++i) {
    if (layers[i] < 0 || layers[i] >= nSites)
      throw FormatError(ctx + ": moefication.layers names layer " + std::to_string(layers[i]) + ", the model has " +
                        std::to_string(nSites) + (c.encoderDecoder ? " FFN sites" : " layers"));
    if (!sites.empty() && !(sites[i] == table[static_cast<size_t>(layers[i])]))
      throw FormatError(ctx + ": moefication.sites[" + std::to_string(i) + "] = " + sites[i].name() +
                        " is not the model's site " + std::to_string(layers[i]) + " (" +
                        table[static_cast<size_t>(layers[i])].name() + ")");
    if (i && layers[i] <= layers[i - 1]) throw FormatError(ctx + ": moefication.layers must be ascending and unique");
    if (experts[i] <= 0 || experts[i] > c.dFF)
      throw FormatError(ctx + ": layer " + std::to_string(layers[i]) + " has " + std::to_string(experts[i]) + " experts");
    if (topk[i] < 1 || topk[i] > experts[i])
      throw FormatError(ctx + ": layer " + std::to_string(layers[i]) + " has top_k " + std::to_string(topk[i]) +
                        " outside [1, " + std::to_string(experts[i]) + "]");
  }
  RouterKind kind;
  try {
    kind = routerKindFromName(b.value("router", ""), ctx + ": moefication.router");
  } catch (const ParameterError& e) {
    throw FormatError(e.what());
  }
  // Dynamic-k routers: tau and min k per layer (top_k is the most experts a token takes).
  std::vector<double> dynTau;
  std::vector<int> dynMinK;
  if (kind == RouterKind::DynamicK) {
    if (!b.contains("dynamic_k") || !b["dynamic_k"].is_object())
      throw FormatError(ctx + ": moefication.dynamic_k is missing (a dynamic-k router needs tau and min_k)");
    const auto& dk = b["dynamic_k"];
    dynMinK = listOf(dk, "min_k", ctx + ": moefication.dynamic_k");
    if (!dk.contains("tau") || !dk["tau"].is_array())
      throw FormatError(ctx + ": moefication.dynamic_k.tau must be a list");
    for (const auto& t : dk["tau"]) dynTau.push_back(jsonFinite(t, ctx + ": moefication.dynamic_k.tau"));
    if (dynTau.size() != layers.size() || dynMinK.size() != layers.size())
      throw FormatError(ctx + ": moefication.dynamic_k lists need one entry per layer");
    for (size_t i = 0; i < layers.size(); ++i)
      if (!(dynTau[i] > 0 && dynTau[i] <= 1) || dynMinK[i] < 1 || dynMinK[i] > topk[i])
        throw FormatError(ctx + ": layer " + std::to_string(layers[i]) + ": dynamic_k tau " +
                          std::to_string(dynTau[i]) + " outside (0, 1] or min_k " + std::to_string(dynMinK[i]) +
                          " outside [1, top_k]");
  }
  if (!b.contains("checksum") || !b["checksum"].is_string())
    throw FormatError(ctx + ": moefication.checksum is missing");
  if (b["checksum"].get<std::string>() != moeficationChecksum(b))
    throw FormatError(ctx + ": the moefication block was edited (checksum mismatch); re-export the model with "
                      "'moefy export' instead of editing config.json");
  std::string wname = b.value("weights", "moe.safetensors");
  if (wname.find('/') != std::string::npos || wname.find("..") != std::string::npos)
    throw FormatError(ctx + ": moefication.weights must be a plain file name");
  fs::path wf = dir / wname;
  if (!fs::exists(wf)) throw IoError(wf.string() + ": missing (MoE expert weights)");
  auto st = SafetensorsFile::open(wf);
  auto meta = st->metadata().find("moefication_checksum");
  if (meta == st->metadata().end() || meta->second != b["checksum"].get<std::string>())
    throw FormatError(wf.string() + ": does not belong to this config.json (moefication checksum differs)");

  const std::string wfs = wf.string();
  auto get = [&](const std::string& name, std::vector<int64_t> shape) {
    const TensorInfo* info = st->find(name);
    if (!info) throw FormatError(wfs + ": missing tensor '" + name + "'");
    if (info->shape != shape)
      throw FormatError(wfs + ": tensor '" + name + "' has shape " + shapeString(info->shape) + ", expected " +
                        shapeString(shape));
    at::Tensor t = st->f32(name);
    requireFinite(t, wfs, name);
    return t;
  };
  const int64_t d = c.dModel, F = c.dFF;
  std::vector<MoeLayer> moeLayers(nSites);
  std::vector<FfnWeights> dense(nSites);
  for (int L = 0; L < nSites; ++L) {
    const Site& site = table[static_cast<size_t>(L)];
    auto it = std::find(layers.begin(), layers.end(), L);
    if (it == layers.end()) {
      dense[L] = model.ffnWeights(site);
      if (!dense[L].up.defined() || !dense[L].down.defined())
        throw FormatError(ctx + ": " + (c.encoderDecoder ? "site " + site.name() : "layer " + std::to_string(L)) +
                          " is not in moefication.layers but has no dense FFN tensors");
      continue;
    }
    const size_t i = static_cast<size_t>(it - layers.begin());
    const int E = experts[i];
    const std::string p = site.prefix();  // "blk.L." ("enc.blk.L.", "dec.blk.L." in encoder-decoder exports)
    at::Tensor labels = get(p + "labels", {F}).to(at::kInt);
    const bool shared = sharedSizes[i] > 0;
    ExpertLayout layout = ExpertLayout::fromLabels(labels, E, wfs + ": layer " + std::to_string(L), shared);
    if (layout.sharedSize() != sharedSizes[i])
      throw FormatError(wfs + ": layer " + std::to_string(L) + " labels give the shared expert " +
                        std::to_string(layout.sharedSize()) + " neurons, moefication.shared_sizes says " +
                        std::to_string(sharedSizes[i]));
    std::vector<at::Tensor> up, gate, ub, down;
    for (int e = 0; e < layout.blocks(); ++e) {  // the routed experts, then the shared one (packed block E)
      const int64_t s = layout.expertSize(e);
      const std::string q = e == E ? p + "shared." : p + "experts." + std::to_string(e) + ".";
      up.push_back(get(q + "up.weight", {s, d}));
      if (c.gated) gate.push_back(get(q + "gate.weight", {s, d}));
      if (c.ffnBias) ub.push_back(get(q + "up.bias", {s}));
      down.push_back(get(q + "down.weight", {d, s}).t());
    }
    auto w = std::make_shared<MoeLayerWeights>();
    w->up = at::cat(up, 0).contiguous();
    if (c.gated) w->gate = at::cat(gate, 0).contiguous();
    if (c.ffnBias) {
      w->upBias = at::cat(ub, 0).contiguous();
      w->downBias = get(p + "down.bias", {d}).contiguous();
    }
    w->downT = at::cat(down, 0).contiguous();
    w->act = c.act;
    w->layout = std::move(layout);
    auto r = std::make_shared<LayerRouter>();
    r->kind = kind;
    r->experts = E;
    if (kind == RouterKind::Similarity) r->centroids = get(p + "router.centroids", {E, d}).contiguous();
    if (kind == RouterKind::Mlp || kind == RouterKind::Sigmoid || kind == RouterKind::DynamicK)
      r->w1 = get(p + "router.w1", {E, d}).contiguous();
    if (kind == RouterKind::Mlp) r->w2 = get(p + "router.w2", {E, E}).contiguous();
    if (kind == RouterKind::DynamicK) {
      r->b1 = get(p + "router.b1", {E}).contiguous();
      r->tau = dynTau[i];
      r->minK = dynMinK[i];
    }
    moeLayers[L].weights = w;
    moeLayers[L].router = r;
    moeLayers[L].topK = topk[i];
  }
  model.setFfnOverride(
      std::make_shared<MoeFfn>(std::move(moeLayers), std::move(dense), c.encoderDecoder ? table : std::vector<Site>{}));
}

}  // namespace moefy
