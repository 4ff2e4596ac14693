#include "analysis/moe/moe_export.h"

#include <torch/torch.h>

#include <algorithm>
#include <set>
#include <sstream>

#include "analysis/common/error.h"
#include "analysis/common/hash.h"
#include "analysis/io/fsutil.h"
#include "analysis/io/links.h"
#include "analysis/io/safetensors.h"
#include "analysis/jobs/job.h"
#include "analysis/model/model.h"
#include "analysis/route/route_build.h"

namespace moefy {

namespace fs = std::filesystem;

std::string moeficationChecksum(const nlohmann::json& block) {
  nlohmann::json b = block;
  if (b.is_object()) b.erase("checksum");
  std::string s = b.dump();
  return hex16(fnv1a(kFnvOffset, s.data(), s.size()));
}

void checkRouterSet(const Model& model, const PartitionData& part, const RouterSet& r) {
  part.checkModel(model);
  // Named by its folder: eval may take several --router folders.
  const std::string rj = r.sourceDir.empty() ? std::string("router.json") : (r.sourceDir / "router.json").string();
  if (r.modelFingerprint != model.fingerprint())
    throw ParameterError(rj + ": router was built for model " + r.modelFingerprint + ", not for " +
                         model.dir().string() + " (fingerprint " + model.fingerprint() + ")");
  if (r.layers.size() != part.layers.size())
    throw ParameterError(
        rj + ": router has " + std::to_string(r.layers.size()) + " layers, the partition " + part.dir.string() + " " +
        std::to_string(part.layers.size()) +
        (r.partitionPath.empty() ? std::string() : " (the router was built on " + r.partitionPath + ")"));
  for (size_t i = 0; i < r.layers.size(); ++i) {
    if (r.layers[i] != part.layers[i])
      throw ParameterError(rj + ": router entry " + std::to_string(i) + " is layer " + std::to_string(r.layers[i]) +
                           ", the partition's is layer " + std::to_string(part.layers[i]));
    if (r.experts[i] != part.experts)
      throw ParameterError(rj + ": layer " + std::to_string(r.layers[i]) + " router has " + std::to_string(r.experts[i]) +
                           " experts, the partition " + std::to_string(part.experts));
    r.routers[i].validate(model.config().dModel, "router.safetensors: layer " + std::to_string(r.layers[i]));
  }
  if (r.partitionLabelsHash != part.labelsHash)
    throw ParameterError(rj + ": router was trained for another partition (labels hash " + r.partitionLabelsHash +
                         ", " + part.dir.string() + " has " + part.labelsHash + ")");
}

std::shared_ptr<MoeFfn> buildMoeFfn(const Model& model, const PartitionData& part, const RouterSet& routers, int topK) {
  checkRouterSet(model, part, routers);
  // Indexed by site index (model/site.h); encoder-decoder and native MoE
  // models name their sites (a native MoE's expert sites come after its layers).
  const ModelConfig& c = model.config();
  const std::vector<Site> sites = siteIndexTable(c);
  const int nL = static_cast<int>(sites.size());
  if (topK != 0 && (topK < 1 || topK > part.experts))
    throw ParameterError("--top-k " + std::to_string(topK) + " outside [1, " + std::to_string(part.experts) +
                         "] (the partition has " + std::to_string(part.experts) + " experts)");
  auto packed = packExperts(model, part);
  std::vector<MoeLayer> layers(nL);
  std::vector<FfnWeights> dense(nL);
  for (int L = 0; L < nL; ++L) {
    int i = part.indexOfLayer(L);
    if (i < 0) {
      const Site& site = sites[static_cast<size_t>(L)];
      if (c.siteIndex(site) == L) dense[L] = model.ffnWeights(site);  // else: no FFN of its own at L
      continue;
    }
    layers[L].weights = packed[i];
    layers[L].router = std::make_shared<LayerRouter>(routers.routers[i]);
    layers[L].topK = topK ? topK : routers.topK[i];
  }
  const bool named = c.encoderDecoder || c.expertCount > 0;
  return std::make_shared<MoeFfn>(std::move(layers), std::move(dense), named ? sites : std::vector<Site>{});
}

nlohmann::json writeMoeFolder(const Model& model, const MoeFfn& moe, RouterKind kind, nlohmann::json block,
                              const fs::path& out, bool force, JobContext& job) {
  const auto& c = model.config();
  for (int L = 0; L < static_cast<int>(moe.layers().size()); ++L)
    if (moe.isMoe(L) && (moe.siteAt(L).expert >= 0 || moe.siteAt(L).shared))
      throw ParameterError(moe.siteAt(L).name() +
                           " is an expert of a native MoE layer; writing and reloading finer experts inside "
                           "native experts is not supported yet; evaluate it with `moefy eval --partition P "
                           "--router R`");
  if (c.expertCount > 0)
    throw ParameterError(c.modelType +
                         " is a native MoE model; writing and reloading a MoEfied copy of it is not supported yet; "
                         "evaluate it with `moefy eval --partition P --router R`");
  std::vector<int> layers, experts, topk;
  std::vector<int64_t> sharedSizes;  // per MoE layer, 0 = no shared expert
  nlohmann::json sizes = nlohmann::json::array();
  std::set<std::string> moeNames;  // dense FFN tensors the experts replace
  std::vector<Site> sites;         // the site of each MoE entry (enc.blk.L / dec.blk.L for encoder-decoder models)
  for (int L = 0; L < static_cast<int>(moe.layers().size()); ++L) {
    if (!moe.isMoe(L)) continue;
    const auto& ml = moe.layers()[L];
    const Site site = moe.siteAt(L);
    layers.push_back(L);
    sites.push_back(site);
    experts.push_back(ml.weights->layout.experts);
    topk.push_back(ml.topK);
    std::vector<int64_t> s;
    for (int e = 0; e < ml.weights->layout.experts; ++e) s.push_back(ml.weights->layout.expertSize(e));
    sizes.push_back(s);
    sharedSizes.push_back(ml.weights->layout.sharedSize());
    for (Role r : {Role::FfnUp, Role::FfnUpB, Role::FfnGate, Role::FfnDown, Role::FfnDownB}) {
      std::string n = model.tensorName(r, site.layer, site.stack);
      if (!n.empty()) moeNames.insert(n);
    }
  }
  if (layers.empty()) throw ParameterError("the model has no MoE layers to write");
  block["format"] = "moefy-moe";
  block["version"] = 2;
  block["tool_version"] = MOEFY_VERSION;
  block["weights"] = "moe.safetensors";
  block["layers"] = layers;  // site indices (analysis/model/site.h): the layer for single-stack models
  // Encoder-decoder exports name their sites (enc.blk.L, dec.blk.L; tensors
  // are prefixed with them); single-stack blocks stay as version 2 wrote them.
  if (c.encoderDecoder)
    block["sites"] = siteNames(sites);
  else
    block.erase("sites");
  block["experts"] = experts;
  block["expert_sizes"] = sizes;
  // Only exports with a shared expert carry the key, so other blocks (and
  // their checksums) stay as older versions wrote them.
  if (kind == RouterKind::DynamicK) {
    std::vector<double> taus;
    std::vector<int> minKs;
    for (int L : layers) taus.push_back(moe.layers()[L].router->tau), minKs.push_back(moe.layers()[L].router->minK);
    block["dynamic_k"] = {{"tau", taus}, {"min_k", minKs}};  // per layer; top_k is each layer's max k
  } else {
    block.erase("dynamic_k");
  }
  if (std::any_of(sharedSizes.begin(), sharedSizes.end(), [](int64_t n) { return n > 0; }))
    block["shared_sizes"] = sharedSizes;
  else
    block.erase("shared_sizes");
  if (!block.contains("expert_size")) block["expert_size"] = sizes[0][0];
  block["top_k"] = topk;
  block["router"] = routerKindName(kind);
  block["activation_rule"] = (c.act == Activation::ReLU && !c.gated) ? "positive" : "abs";
  block["ffn_kind"] = c.ffnKind();
  block.erase("checksum");
  block["checksum"] = moeficationChecksum(block);

  nlohmann::json config = c.raw;
  config["moefication"] = block;

  writeFolderAtomic(out, force, [&](const fs::path& tmp) {
    job.setStage("export: write");
    std::vector<std::pair<std::string, at::Tensor>> base;
    for (const auto& [name, t] : model.tensors())
      if (!moeNames.count(name)) base.emplace_back(name, t.detach().to(at::kFloat).contiguous());
    writeSafetensors(tmp / "model.safetensors", base, {{"format", "pt"}});
    job.checkCancel();
    std::vector<std::pair<std::string, at::Tensor>> mt;
    for (size_t i = 0; i < layers.size(); ++i) {
      const int L = layers[i];
      const auto& ml = moe.layers()[L];
      const MoeLayerWeights& w = *ml.weights;
      const std::string p = sites[i].prefix();  // "blk.L.", "enc.blk.L.", "dec.blk.L."
      mt.emplace_back(p + "labels", w.layout.labels.to(at::kInt).contiguous());
      for (int e = 0; e < w.layout.blocks(); ++e) {  // routed experts, then the shared one (block E)
        const int64_t off = w.layout.offsets[e], s = w.layout.expertSize(e);
        const std::string q = e == w.layout.experts ? p + "shared." : p + "experts." + std::to_string(e) + ".";
        mt.emplace_back(q + "up.weight", w.up.detach().narrow(0, off, s).contiguous());
        if (w.gated()) mt.emplace_back(q + "gate.weight", w.gate.detach().narrow(0, off, s).contiguous());
        if (w.upBias.defined()) mt.emplace_back(q + "up.bias", w.upBias.detach().narrow(0, off, s).contiguous());
        mt.emplace_back(q + "down.weight", w.downT.detach().narrow(0, off, s).t().contiguous());  // [d_model, s]
      }
      if (w.downBias.defined()) mt.emplace_back(p + "down.bias", w.downBias.detach().contiguous());
      const LayerRouter& r = *ml.router;
      if (r.kind == RouterKind::Similarity) mt.emplace_back(p + "router.centroids", r.centroids.detach().contiguous());
      if (r.kind == RouterKind::Mlp || r.kind == RouterKind::Sigmoid || r.kind == RouterKind::DynamicK)
        mt.emplace_back(p + "router.w1", r.w1.detach().contiguous());
      if (r.kind == RouterKind::Mlp) mt.emplace_back(p + "router.w2", r.w2.detach().contiguous());
      if (r.kind == RouterKind::DynamicK) mt.emplace_back(p + "router.b1", r.b1.detach().contiguous());
      job.setProgress(double(i + 1) / layers.size());
      job.checkCancel();
    }
    writeSafetensors(tmp / "moe.safetensors", mt,
                     {{"format", "moefy-moe"}, {"moefication_checksum", block["checksum"].get<std::string>()}});
    for (const char* f : {"tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
                          "vocab.json", "merges.txt", "vocab.txt", "generation_config.json"}) {
      fs::path src = model.dir() / f;
      if (!model.dir().empty() && fs::exists(src)) writeFileAtomic(tmp / f, readFile(src));
    }
    writeFileAtomic(tmp / "config.json", config.dump(2) + "\n");
  });
  return block;
}

nlohmann::json exportMoe(const Model& model, const PartitionData& part, const RouterSet& routers, const fs::path& out,
                         const ExportOptions& o, JobContext& job) {
  job.setStage("export: build experts");
  auto moe = buildMoeFfn(model, part, routers, o.topK);
  const auto& c = model.config();
  nlohmann::json block;
  block["expert_size"] = part.meta.value("expert_size", c.dFF / std::max(1, part.experts));
  // Version 2 links (analysis/io/links.h): relative to the export folder.
  block["source_model"] = model.dir().empty() ? nlohmann::json{{"path", ""}, {"fingerprint", model.fingerprint()}}
                                              : makeLink(out, model.dir(), model.fingerprint());
  block["source_model"]["arch"] = archName(c.arch);
  block["partition"] = makeLink(out, part.dir, folderFingerprint(part.dir));
  block["partition"]["method"] = part.meta.value("method", "");
  block["partition"]["labels_hash"] = part.labelsHash;
  block["provenance"] =
      provenanceBlock("export", {{"top_k", o.topK}, {"force", o.force}},
                      {{"model", model.fingerprint()},
                       {"partition", block["partition"]["fingerprint"]},
                       {"router", routers.sourceDir.empty() ? std::string() : folderFingerprint(routers.sourceDir)}});
  return writeMoeFolder(model, *moe, routers.kind, block, out, o.force, job);
}

}  // namespace moefy
