#include "analysis/route/router.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>

#include <torch/torch.h>

#include "analysis/common/error.h"
#include "analysis/experts/moe_layer.h"
#include "analysis/io/fsutil.h"
#include "analysis/io/json_input.h"
#include "analysis/io/links.h"
#include "analysis/io/safetensors.h"
#include "analysis/model/site.h"

namespace moefy {

namespace fs = std::filesystem;

const char* routerKindName(RouterKind k) {
  switch (k) {
    case RouterKind::Oracle: return "oracle";
    case RouterKind::Similarity: return "similarity";
    case RouterKind::Mlp: return "mlp";
    case RouterKind::Sigmoid:
      return "sigmoid";
    case RouterKind::DynamicK:
      return "dynamic-k";
  }
  return "?";
}

RouterKind routerKindFromName(const std::string& n, const std::string& ctx) {
  if (n == "oracle") return RouterKind::Oracle;
  if (n == "similarity") return RouterKind::Similarity;
  if (n == "mlp") return RouterKind::Mlp;
  if (n == "sigmoid") return RouterKind::Sigmoid;
  if (n == "dynamic-k") return RouterKind::DynamicK;
  throw ParameterError(ctx + ": unknown router kind '" + n + "' (oracle, similarity, mlp, sigmoid or dynamic-k)");
}

at::Tensor l2Normalize(const at::Tensor& x) {
  return x / x.norm(2, {-1}, true).clamp_min(1e-12);
}

int topKForFraction(double fraction, int experts) {
  const int k = static_cast<int>(std::lround(fraction * experts));
  return std::max(1, std::min(experts, k));
}

at::Tensor topKExperts(const at::Tensor& scores, int k) {
  return std::get<1>(scores.topk(k, -1, /*largest=*/true, /*sorted=*/false));
}

at::Tensor dynamicKExperts(const at::Tensor& scoresIn, double tau, int minK, int maxK) {
  const int64_t N = scoresIn.size(0), E = scoresIn.size(1);
  if (!(tau > 0 && tau <= 1)) throw ParameterError("dynamic-k: tau " + std::to_string(tau) + " outside (0, 1]");
  if (minK < 1 || minK > maxK || maxK > E)
    throw ParameterError("dynamic-k: need 1 <= min k (" + std::to_string(minK) + ") <= max k (" + std::to_string(maxK) +
                         ") <= E (" + std::to_string(E) + ")");
  // One loop over the rows instead of a chain of a dozen tensor ops (sort,
  // cumsum, compare, sum, clamp, mask, ...): this runs before every MoE layer
  // call, where at batch 1 each op's dispatch costs about as much as its work
  // and the chain was a visible share of a sparse layer. The same arithmetic:
  // a stable descending sort (equal scores keep the lower expert id first,
  // NaN first as in torch.sort), prefix sums in double from the left,
  // k_t = 1 + #(prefix sums still below tau * the row's total), clamped.
  at::Tensor scores = scoresIn.to(at::kDouble).cpu().contiguous();  // the loop runs on the host
  at::Tensor sel = at::empty({N, maxK}, at::kLong);
  const double* rows = scores.data_ptr<double>();
  int64_t* out = sel.data_ptr<int64_t>();
  std::vector<int64_t> order(static_cast<size_t>(E));
  std::vector<double> cum(static_cast<size_t>(E));
  for (int64_t t = 0; t < N; ++t) {
    const double* row = rows + t * E;
    for (int64_t e = 0; e < E; ++e) order[e] = e;
    std::stable_sort(order.begin(), order.end(), [row](int64_t a, int64_t b) {
      return (std::isnan(row[a]) && !std::isnan(row[b])) || row[a] > row[b];
    });
    double acc = 0.0;
    for (int64_t j = 0; j < E; ++j) cum[j] = acc += row[order[j]];
    const double target = cum[E - 1] * tau;
    int64_t k = 1;
    for (int64_t j = 0; j < E; ++j) k += cum[j] < target ? 1 : 0;
    k = std::clamp<int64_t>(k, minK, maxK);
    for (int64_t j = 0; j < maxK; ++j) out[t * maxK + j] = j < k ? order[j] : -1;
  }
  return sel.to(scoresIn.device());
}

LayerRouter LayerRouter::to(c10::Device device) const {
  LayerRouter out = *this;
  for (at::Tensor* t : {&out.centroids, &out.w1, &out.w2, &out.b1})
    if (t->defined()) *t = t->to(device);
  return out;
}

at::Tensor similarityCentroids(const MoeLayerWeights& w) {
  at::NoGradGuard guard;  // normal tensors: calibration may train them
  at::Tensor rows = l2Normalize(w.gated() ? w.gate : w.up);  // [d_ff, d_model], packed
  // Every packed block (the shared expert too, block E), then the routed ones:
  // a router scores routed experts only.
  const int B = w.layout.blocks(), E = w.layout.experts;
  at::Tensor sums = at::zeros({B, rows.size(1)}, rows.options());
  sums.index_add_(0, w.layout.rowExpert, rows);
  at::Tensor counts = at::zeros({B}, rows.options());
  counts.index_add_(0, w.layout.rowExpert, at::ones({rows.size(0)}, rows.options()));
  return (sums / counts.unsqueeze(1)).narrow(0, 0, E).contiguous();
}

at::Tensor LayerRouter::scores(const at::Tensor& x, const MoeLayerWeights& w) const {
  if (kind == RouterKind::Oracle) return w.expertMass(w.packedHidden(x));
  if (kind == RouterKind::DynamicK) return at::exp(logits(x));  // predicted output norms
  return kind == RouterKind::Sigmoid ? at::sigmoid(logits(x)) : logits(x);
}

at::Tensor LayerRouter::logits(const at::Tensor& x) const {
  if (kind == RouterKind::Similarity) return at::mm(l2Normalize(x), centroids.t());
  if (kind == RouterKind::Mlp) return at::mm(at::tanh(at::mm(l2Normalize(x), w1.t())), w2.t());
  if (kind == RouterKind::Sigmoid) return at::mm(x, w1.t());
  if (kind == RouterKind::DynamicK) return at::addmm(b1, x, w1.t());
  throw ParameterError("the oracle router has no logits (it has no parameters)");
}

void LayerRouter::validate(int64_t dModel, const std::string& ctx) const {
  auto check = [&](const at::Tensor& t, std::vector<int64_t> want, const char* name) {
    if (!t.defined()) throw FormatError(ctx + ": missing tensor '" + name + "'");
    if (t.sizes().vec() != want)
      throw FormatError(ctx + ": tensor '" + name + "' has shape " + shapeString(t) + ", expected " + shapeString(want));
  };
  if (kind == RouterKind::Similarity) check(centroids, {experts, dModel}, "centroids");
  if (kind == RouterKind::Mlp || kind == RouterKind::Sigmoid || kind == RouterKind::DynamicK)
    check(w1, {experts, dModel}, "w1");
  if (kind == RouterKind::Mlp) check(w2, {experts, experts}, "w2");
  if (kind == RouterKind::DynamicK) {
    check(b1, {experts}, "b1");
    if (!(tau > 0 && tau <= 1)) throw FormatError(ctx + ": dynamic-k tau " + std::to_string(tau) + " outside (0, 1]");
    if (minK < 1 || minK > experts)
      throw FormatError(ctx + ": dynamic-k min_k " + std::to_string(minK) + " outside [1, " + std::to_string(experts) +
                        "]");
  }
}

namespace {

// The allocation block of a budgeted router (docs/formats.md "Router"),
// validated: the report and the studio read it without further checks.
nlohmann::json checkedAllocation(const nlohmann::json& a, size_t layers, const std::vector<int>& experts,
                                 const std::string& file) {
  const std::string ctx = file + ": allocation";
  if (!a.is_object()) throw FormatError(ctx + " is not an object");
  const double budget = jsonFinite(a.at("budget"), ctx + ".budget");
  if (!(budget > 0 && budget <= 1)) throw FormatError(ctx + ".budget " + std::to_string(budget) + " outside (0, 1]");
  const std::string method = a.at("method").get<std::string>();
  if (method != "activity" && method != "greedy")
    throw FormatError(ctx + ".method '" + method + "' is not activity or greedy");
  auto fractions = [&](const char* key, double hi) {
    const auto& v = a.at(key);
    if (!v.is_array() || v.size() != layers)
      throw FormatError(ctx + "." + key + " needs one entry per layer (" + std::to_string(layers) + ")");
    for (const auto& x : v) {
      const double f = jsonFinite(x, ctx + "." + key);
      if (!(f >= 0 && f <= hi)) throw FormatError(ctx + "." + key + " value " + std::to_string(f) + " outside [0, 1]");
    }
  };
  const double total = jsonFinite(a.at("flops_fraction"), ctx + ".flops_fraction");
  if (!(total > 0 && total <= 1))
    throw FormatError(ctx + ".flops_fraction " + std::to_string(total) + " outside (0, 1]");
  fractions("layer_flops_fraction", 1);
  fractions("flops_share", 1);
  if (method == "activity") fractions("activity", 1);
  if (method == "greedy") {
    const auto& e = a.at("probe_error");
    if (!e.is_array() || e.size() != layers)
      throw FormatError(ctx + ".probe_error needs one list per layer (" + std::to_string(layers) + ")");
    for (size_t i = 0; i < e.size(); ++i) {
      const auto& row = e[i];
      // One error per k = 1..E of the layer (the report reads the entry at its k).
      if (!row.is_array() || i >= experts.size() || row.size() != static_cast<size_t>(experts[i]))
        throw FormatError(ctx + ".probe_error[" + std::to_string(i) + "] is not a list of one error per expert");
      for (const auto& x : row) jsonFinite(x, ctx + ".probe_error");
    }
  }
  jsonInt(a.at("min_k"), 1, std::numeric_limits<int>::max(), ctx + ".min_k");
  return a;
}

}  // namespace

bool routerKindTrained(RouterKind k) {
  return k == RouterKind::Mlp || k == RouterKind::Sigmoid || k == RouterKind::DynamicK;
}

const char* routerLossName(RouterKind k) {
  switch (k) {
    case RouterKind::Mlp:
    case RouterKind::Sigmoid:
      return "BCE with logits";
    case RouterKind::DynamicK:
      return "log-norm MSE";
    case RouterKind::Oracle:
    case RouterKind::Similarity:
      break;
  }
  return "";
}

RouterSiteReport RouterSet::siteReport(size_t i) const {
  if (i >= layers.size())
    throw std::out_of_range("RouterSet::siteReport: entry " + std::to_string(i) + " of " +
                            std::to_string(layers.size()));
  const Site site = siteAt(i);
  const std::string key = siteJsonKey(site);
  const std::string file = (sourceDir.empty() ? fs::path("router.json") : sourceDir / "router.json").string();
  constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
  // The entry of `block` ("training" or "metrics") for this site, nullptr when absent.
  auto entryOf = [&](const nlohmann::json& block, const char* name) -> const nlohmann::json* {
    if (block.is_null()) return nullptr;
    if (!block.is_object())
      throw FormatError(file + ": " + name + " must be an object (got " + block.type_name() + ")");
    for (const std::string& k : {key, site.name()}) {
      const auto it = block.find(k);
      if (it != block.end()) {
        if (!it->is_object())
          throw FormatError(file + ": " + name + "." + k + " must be an object (got " + it->type_name() + ")");
        return &*it;
      }
    }
    return nullptr;
  };
  // A loss: a finite number, or null (a mean over no samples, NaN when written).
  auto lossOf = [&](const nlohmann::json& v, const std::string& what) {
    return v.is_null() ? kNaN : jsonFinite(v, what);
  };
  RouterSiteReport r;
  if (const nlohmann::json* t = entryOf(training, "training")) {
    const auto ep = t->find("epochs");
    if (ep != t->end()) {
      const std::string where = file + ": training." + key + ".epochs";
      if (!ep->is_array()) throw FormatError(where + " must be a list (got " + ep->type_name() + ")");
      for (size_t e = 0; e < ep->size(); ++e) {
        const nlohmann::json& row = (*ep)[e];
        const std::string at = where + "[" + std::to_string(e) + "]";
        if (!row.is_object() || !row.contains("train")) throw FormatError(at + " must be an object {train, held_out}");
        r.trainLoss.push_back(lossOf(row.at("train"), at + ".train"));
        const auto h = row.find("held_out");
        r.heldOutLoss.push_back(h == row.end() ? kNaN : lossOf(*h, at + ".held_out"));
      }
    }
  }
  if (const nlohmann::json* m = entryOf(metrics, "metrics")) {
    const std::string where = file + ": metrics." + key + ".";
    if (m->contains("mass_recall")) r.massRecall = jsonFinite(m->at("mass_recall"), where + "mass_recall");
    if (m->contains("overlap")) r.overlap = jsonFinite(m->at("overlap"), where + "overlap");
    if (m->contains("samples"))
      r.samples = jsonInteger(m->at("samples"), 0, std::numeric_limits<int64_t>::max(), where + "samples");
    if (m->contains("mean_k")) r.meanK = jsonFinite(m->at("mean_k"), where + "mean_k");
  }
  return r;
}

Site RouterSet::siteAt(size_t i) const { return i < sites.size() ? sites[i] : Site::ofLayer(layers.at(i)); }

int RouterSet::indexOfLayer(int layer) const {
  for (size_t i = 0; i < layers.size(); ++i)
    if (layers[i] == layer) return static_cast<int>(i);
  return -1;
}

void RouterSet::writeInto(const fs::path& dir) const {
  nlohmann::json j;
  j["format"] = "moefy-router";
  j["version"] = 2;
  j["tool_version"] = MOEFY_VERSION;
  j["kind"] = routerKindName(kind);
  j["layers"] = layers;
  std::vector<Site> all;
  for (size_t i = 0; i < layers.size(); ++i) all.push_back(siteAt(i));
  j["sites"] = siteNames(all);  // FFN sites (analysis/model/site.h) of `layers` (site indices)
  if (modelLayers > 0 && nativeExperts > 0) {
    // What expert sites' indices derive from (readSiteList needs them).
    j["model_layers"] = modelLayers;
    j["native_experts"] = nativeExperts;
  }
  j["top_k"] = topK;
  j["experts"] = experts;
  j["model_fingerprint"] = modelFingerprint;
  if (partitionPath.empty()) {
    j["partition"] = {{"path", ""}, {"labels_hash", partitionLabelsHash}};
  } else {
    j["partition"] = makeLink(dir, partitionPath, folderFingerprint(partitionPath));
    j["partition"]["labels_hash"] = partitionLabelsHash;
  }
  if (!provenance.is_null()) j["provenance"] = provenance;
  j["training"] = training;
  j["metrics"] = metrics;
  if (kind == RouterKind::DynamicK) {
    std::vector<double> taus;
    std::vector<int> minKs;
    for (const auto& r : routers) taus.push_back(r.tau), minKs.push_back(r.minK);
    j["dynamic_k"] = {{"tau", taus}, {"min_k", minKs}};  // per layer; top_k is each layer's max k
  }
  if (!allocation.is_null()) j["allocation"] = allocation;  // per-layer budget (analysis/moe/layer_budget.h)
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (size_t i = 0; i < layers.size(); ++i) {
    const std::string p = siteAt(i).prefix();
    const auto& r = routers[i];
    if (kind == RouterKind::Similarity) tensors.emplace_back(p + "centroids", r.centroids.contiguous());
    if (kind == RouterKind::Mlp || kind == RouterKind::Sigmoid || kind == RouterKind::DynamicK)
      tensors.emplace_back(p + "w1", r.w1.detach().contiguous());
    if (kind == RouterKind::Mlp) tensors.emplace_back(p + "w2", r.w2.detach().contiguous());
    if (kind == RouterKind::DynamicK) tensors.emplace_back(p + "b1", r.b1.detach().contiguous());
  }
  writeSafetensors(dir / "router.safetensors", tensors, {{"format", "moefy-router"}});
  writeFileAtomic(dir / "router.json", j.dump(2) + "\n");
}

RouterSet RouterSet::read(const fs::path& dir) {
  if (!fs::is_directory(dir)) throw IoError(dir.string() + ": not a router folder");
  fs::path jf = dir / "router.json";
  if (!fs::exists(jf)) throw IoError(jf.string() + ": missing");
  nlohmann::json j = readJsonFile(jf);
  if (!j.is_object() || j.value("format", "") != "moefy-router")
    throw FormatError(jf.string() + ": not a moefy router (format must be 'moefy-router')");
  RouterSet r;
  r.sourceDir = dir;
  try {
    r.kind = routerKindFromName(j.at("kind").get<std::string>(), jf.string());
    // Range-checked in 64 bits before narrowing: layer 2^32 must not read as 0.
    constexpr int kMax = std::numeric_limits<int>::max();
    r.layers = jsonIntList(j.at("layers"), 0, kMax, jf.string() + ": layers");
    r.topK = jsonIntList(j.at("top_k"), 0, kMax, jf.string() + ": top_k");
    r.experts = jsonIntList(j.at("experts"), 0, kMax, jf.string() + ": experts");
    r.sites = readSiteList(j, r.layers, jf.string());
    if (j.contains("model_layers") && j.contains("native_experts")) {  // validated by readSiteList
      r.modelLayers = j.at("model_layers").get<int>();
      r.nativeExperts = j.at("native_experts").get<int>();
    }
    // Identity keys are required: a router without them could be paired
    // with any model or partition of the same shape.
    r.modelFingerprint = j.at("model_fingerprint").get<std::string>();
    const auto& part = j.at("partition");
    r.partitionPath = resolveLinkPath(dir, part).string();  // version 2 link or version 1 path
    r.partitionLabelsHash = part.at("labels_hash").get<std::string>();
    auto isHash = [](const std::string& h) {
      return h.size() == 16 && h.find_first_not_of("0123456789abcdef") == std::string::npos;
    };
    if (!isHash(r.modelFingerprint))
      throw FormatError(jf.string() + ": model_fingerprint '" + r.modelFingerprint + "' is not 16 hex digits");
    if (!isHash(r.partitionLabelsHash))
      throw FormatError(jf.string() + ": partition.labels_hash '" + r.partitionLabelsHash + "' is not 16 hex digits");
    if (j.contains("training")) r.training = j["training"];
    if (j.contains("metrics")) r.metrics = j["metrics"];
    if (r.kind == RouterKind::DynamicK) {
      const auto& dk = j.at("dynamic_k");
      r.dynamicTau.clear();
      for (const auto& t : dk.at("tau")) r.dynamicTau.push_back(jsonFinite(t, jf.string() + ": dynamic_k.tau"));
      r.dynamicMinK = jsonIntList(dk.at("min_k"), 1, kMax, jf.string() + ": dynamic_k.min_k");
    }
    if (j.contains("allocation"))
      r.allocation = checkedAllocation(j["allocation"], r.layers.size(), r.experts, jf.string());
  } catch (const nlohmann::json::exception& e) {
    throw FormatError(jf.string() + ": missing or malformed key (kind, layers, top_k, experts, model_fingerprint, "
                      "partition.labels_hash): " + e.what());
  } catch (const ParameterError& e) {
    throw FormatError(e.what());
  }
  if (r.layers.empty()) throw FormatError(jf.string() + ": no layers");
  if (r.topK.size() != r.layers.size() || r.experts.size() != r.layers.size())
    throw FormatError(jf.string() + ": 'layers', 'top_k' and 'experts' must have the same length");
  if (r.kind == RouterKind::DynamicK &&
      (r.dynamicTau.size() != r.layers.size() || r.dynamicMinK.size() != r.layers.size()))
    throw FormatError(jf.string() + ": 'dynamic_k.tau' and 'dynamic_k.min_k' need one entry per layer");
  for (size_t i = 0; i < r.layers.size(); ++i)
    if (r.experts[i] <= 0 || r.topK[i] <= 0 || r.topK[i] > r.experts[i])
      throw FormatError(jf.string() + ": layer " + std::to_string(r.layers[i]) + " has top_k " + std::to_string(r.topK[i]) +
                        " outside [1, " + std::to_string(r.experts[i]) + "]");
  std::shared_ptr<SafetensorsFile> st;
  fs::path sf = dir / "router.safetensors";
  if (r.kind != RouterKind::Oracle) {
    if (!fs::exists(sf)) throw IoError(sf.string() + ": missing");
    st = SafetensorsFile::open(sf);
  }
  for (size_t i = 0; i < r.layers.size(); ++i) {
    LayerRouter lr;
    lr.kind = r.kind;
    lr.experts = r.experts[i];
    const std::string p = r.siteAt(i).prefix();
    auto get = [&](const std::string& name) {
      if (!st->contains(p + name)) throw FormatError(sf.string() + ": missing tensor '" + p + name + "'");
      at::Tensor t = st->f32(p + name).contiguous();
      requireFinite(t, sf.string(), p + name);  // NaN router weights would route every token to expert 0
      return t;
    };
    if (r.kind == RouterKind::Similarity) lr.centroids = get("centroids");
    if (r.kind == RouterKind::Mlp || r.kind == RouterKind::Sigmoid || r.kind == RouterKind::DynamicK) lr.w1 = get("w1");
    if (r.kind == RouterKind::Mlp) lr.w2 = get("w2");
    if (r.kind == RouterKind::DynamicK) {
      lr.b1 = get("b1");
      lr.tau = r.dynamicTau[i];
      lr.minK = r.dynamicMinK[i];
      if (!(lr.tau > 0 && lr.tau <= 1) || lr.minK > r.topK[i])
        throw FormatError(jf.string() + ": layer " + std::to_string(r.layers[i]) + ": dynamic_k tau " +
                          std::to_string(lr.tau) + " outside (0, 1] or min_k " + std::to_string(lr.minK) +
                          " above top_k " + std::to_string(r.topK[i]));
    }
    r.routers.push_back(std::move(lr));
  }
  return r;
}

}  // namespace moefy
