// runSplit (the partition artefact), Partition reader, comparison.
#include "analysis/split/split.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <optional>

#include "analysis/common/error.h"
#include "analysis/io/fsutil.h"
#include "analysis/io/json_input.h"
#include "analysis/io/links.h"
#include "analysis/io/safetensors.h"
#include "analysis/jobs/job.h"
#include "analysis/model/model.h"
#include "analysis/model/site.h"
#include "analysis/record/coact.h"
#include "analysis/record/recorder.h"
#include "analysis/record/recording.h"

namespace moefy {

namespace fs = std::filesystem;

int resolveExperts(int dFF, int experts, int expertSize) {
  if (experts > 0 && expertSize > 0) throw ParameterError("give either --experts or --expert-size, not both");
  if (experts <= 0 && expertSize <= 0) throw ParameterError("give --experts E or --expert-size S");
  // The divisors of d_ff nearest to v (below, above), for the messages.
  auto nearest = [dFF](int v) {
    int below = v, above = v;
    while (below > 1 && dFF % below != 0) --below;
    while (above < dFF && dFF % above != 0) ++above;
    return "; the nearest divisors are " + std::to_string(below) + " and " + std::to_string(above);
  };
  if (expertSize > 0) {
    if (expertSize > dFF)
      throw ParameterError("--expert-size " + std::to_string(expertSize) + " is larger than d_ff " +
                           std::to_string(dFF));
    if (dFF % expertSize != 0)
      throw ParameterError("--expert-size " + std::to_string(expertSize) + " does not divide d_ff " +
                           std::to_string(dFF) + " (equal-size experts need a divisor)" + nearest(expertSize));
    return dFF / expertSize;
  }
  if (experts > dFF)
    throw ParameterError("--experts " + std::to_string(experts) + " is larger than d_ff " + std::to_string(dFF) +
                         " (an expert needs at least one neuron)");
  if (dFF % experts != 0)
    throw ParameterError("--experts " + std::to_string(experts) + " does not divide d_ff " + std::to_string(dFF) +
                         " (equal-size experts need a divisor)" + nearest(experts));
  return experts;
}

namespace {

// "<site>.<what>", e.g. "blk.3.labels", "dec.blk.0.perm".
std::string lname(const Site& site, const char* what) { return site.prefix() + what; }

at::Tensor kmeansRows(const Model& model, const Site& site, const std::string& which) {
  FfnWeights w = model.ffnWeights(site);
  if (!w.gated()) {
    if (which != "up") throw ParameterError("--rows " + which + " applies to gated FFNs only; this FFN is plain");
    return w.up.contiguous();
  }
  if (which == "gate") return w.gate.contiguous();
  if (which == "up") return w.up.contiguous();
  if (which == "both") {
    // Each half normalised first so that neither dominates.
    at::Tensor g = w.gate / w.gate.norm(2, 1, true).clamp_min(1e-12);
    at::Tensor u = w.up / w.up.norm(2, 1, true).clamp_min(1e-12);
    return at::cat({g, u}, 1);
  }
  throw ParameterError("--rows must be gate, up or both, got '" + which + "'");
}

/// The two disjoint halves of the recorded tokens that the half stability
/// compares: rows of the reservoir sample (a uniform sample of the recorded
/// tokens) by a hash of their document id, so no document is in both halves;
/// by row parity when every sampled token comes from one document.
struct SampleHalves {
  at::Tensor rows[2];  // I64 row indices
  std::string by;      // "document" or "token"
};

// Over the reservoir rows `rows` (siteSampleRows) of site L.
SampleHalves sampleHalves(const Recording& rec, int L, const at::Tensor& rows) {
  at::Tensor docs = rec.sampleDocIds(L).index_select(0, rows).contiguous();
  const int64_t S = docs.numel();
  const int64_t* d = docs.data_ptr<int64_t>();
  const int64_t* rowOf = rows.data_ptr<int64_t>();
  std::vector<int64_t> part[2];
  for (int64_t i = 0; i < S; ++i) {
    uint64_t x = static_cast<uint64_t>(d[i]) + 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    part[(x ^ (x >> 31)) & 1].push_back(rowOf[i]);
  }
  SampleHalves h;
  h.by = "document";
  if (part[0].empty() || part[1].empty()) {
    h.by = "token";
    part[0].clear();
    part[1].clear();
    for (int64_t i = 0; i < S; ++i) part[i & 1].push_back(rowOf[i]);
  }
  for (int k = 0; k < 2; ++k) h.rows[k] = at::tensor(part[k], at::kLong);
  return h;
}

/// Binary co-activation counts I32 [n, n] of the sampled tokens `rows` of a
/// layer, with the recording's active rule.
at::Tensor sampleCoact(const Recording& rec, int L, const at::Tensor& rows) {
  at::Tensor act = rec.sampleFfnAct(L).index_select(0, rows).to(at::kFloat).contiguous();  // [R, n]
  const int64_t R = act.size(0), n = act.size(1);
  std::vector<uint64_t> tokenBits(static_cast<size_t>(R * ((n + 63) / 64)));
  activeBits(act.data_ptr<float>(), R, n, rec.activeRule(), tokenBits.data());
  BitMatrix bits;
  packTokenBits(tokenBits.data(), R, n, bits);
  at::Tensor co = at::zeros({n, n}, at::kInt);
  accumulateCoact(bits, co.data_ptr<int32_t>());
  mirrorUpper(co.data_ptr<int32_t>(), n);
  return co;
}

/// The reservoir rows a site's sample-based metrics use: every row, or for an
/// expert site the rows of sampled tokens routed to the expert (the others
/// hold no hidden of it).
at::Tensor siteSampleRows(const Recording& rec, int L) {
  if (rec.site(L).expert < 0) return at::arange(rec.sampleCount(L), at::kLong);
  return rec.sampleRouted(L).to(at::kBool).nonzero().select(1, 0).contiguous();
}

}  // namespace

std::vector<int> resolveSplitSites(const Recording& rec, const SplitOptions& o) {
  if (!o.layers.empty() && !o.sites.empty()) throw ParameterError("--layers and --sites: give one of them");
  std::vector<int> out;
  if (!o.sites.empty()) {
    for (const std::string& item : o.sites) {
      const std::optional<Site> site = Site::tryParse(item);
      if (!site)
        throw ParameterError("--sites: '" + item + "' is not an FFN site name (blk.2, dec.blk.0, blk.1.exp.3)");
      const int L = rec.layerOf(*site);
      if (L >= 0) {
        out.push_back(L);
        continue;
      }
      size_t before = out.size();
      if (site->expert < 0 && !site->shared)  // blk.L of a native MoE layer: its recorded experts
        for (size_t i = 0; i < rec.sites().size(); ++i)
          if (rec.sites()[i].stack == site->stack && rec.sites()[i].layer == site->layer && rec.sites()[i].expert >= 0)
            out.push_back(rec.layers()[i]);
      if (out.size() == before) {
        std::string have;
        for (const Site& s : rec.sites()) have += (have.empty() ? "" : ",") + s.name();
        throw ParameterError("--sites: " + item + " was not recorded in " + rec.dir().string() + " (recorded: " + have +
                             ")");
      }
    }
  } else {
    out = o.layers.empty() ? rec.layers() : o.layers;
    for (int L : out)
      if (!rec.hasLayer(L)) rec.count(L);  // throws ParameterError naming the recorded layers
  }
  // A site named twice (directly, or by its layer and by name) is a typo, not a request.
  std::vector<int> unique;
  for (int L : out) {
    if (std::find(unique.begin(), unique.end(), L) != unique.end())
      throw ParameterError(std::string(o.sites.empty() ? "--layers" : "--sites") + ": " + rec.site(L).name() +
                           " is given twice");
    unique.push_back(L);
  }
  for (int L : unique)
    if (rec.width(L) != rec.width(unique.front()))
      throw ParameterError(std::string(o.sites.empty() ? "--layers" : "--sites") + ": " +
                           rec.site(unique.front()).name() + " has width " + std::to_string(rec.width(unique.front())) +
                           " but " + rec.site(L).name() + " has width " + std::to_string(rec.width(L)) +
                           "; a partition splits sites of one width (split the experts, the shared experts and the "
                           "dense layers separately, e.g. --sites blk.0.exp.0,blk.0.exp.1)");
  return unique;
}

nlohmann::json runSplit(const Recording& rec, const Model* model, const SplitOptions& o, const fs::path& out,
                        JobContext& job) {
  const std::vector<int> layers = resolveSplitSites(rec, o);
  const int n = rec.width(layers.front());
  if (o.shared.enabled() && (o.expertSize > 0 || o.experts <= 0))
    throw ParameterError("--shared needs --experts E (the number of routed experts), not --expert-size");
  // With a shared expert E counts the routed experts, which split the d_ff - N
  // other neurons (sharedNeuronCount checks that they divide).
  const int E = o.shared.enabled() ? o.experts : resolveExperts(n, o.experts, o.expertSize);
  if (o.shared.enabled() && (E < 1 || E > n))
    throw ParameterError("--experts " + std::to_string(E) + " outside [1, d_ff " + std::to_string(n) + "]");
  if (o.method != "coact" && o.method != "kmeans" && o.method != "random")
    throw ParameterError("--method must be coact, kmeans or random, got '" + o.method + "'");
  if (o.graphSource != "binary" && o.graphSource != "soft")
    throw ParameterError("--graph must be binary or soft, got '" + o.graphSource + "'");
  if (o.method == "coact" && o.graphSource == "soft" && !rec.hasSoftCoact())
    throw ParameterError(rec.dir().string() +
                         ": has no soft co-activation; record with --soft-coact or use --graph binary");
  if (o.method == "kmeans") {
    if (!model) throw ParameterError("kmeans needs the model (give --model MODEL_DIR)");
    rec.checkModel(*model);
  }
  OutputLock outputLock(out);
  std::vector<fs::path> inputs = {rec.dir()};
  if (model && !model->dir().empty()) inputs.push_back(model->dir());
  checkOutput(out, o.force, "partition", inputs);

  nlohmann::json metrics = nlohmann::json::object();
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  // Half stability: only the co-activation method depends on the tokens, and
  // the samples only give the binary graph.
  // (Encoder-decoder recordings keep one reservoir per stack: the halves are per site.)
  bool halfStability = o.stability && o.method == "coact" && o.graphSource == "binary";
  for (int L : layers) halfStability = halfStability && siteSampleRows(rec, L).numel() >= 2;
  SampleHalves halves;
  nlohmann::json sharedByLayer = nlohmann::json::object();  // --shared: site key -> shared neurons
  int64_t routedSize = n / E;                               // expert_size: the first site's routed experts
  std::vector<Site> sites;
  job.setStage("split (" + o.method + ")");
  for (size_t li = 0; li < layers.size(); ++li) {
    const int L = layers[li];
    const Site site = rec.site(L);
    sites.push_back(site);
    const at::Tensor sampleRows = siteSampleRows(rec, L);
    if (halfStability) halves = sampleHalves(rec, L, sampleRows);
    job.checkCancel();
    // The shared expert (--shared): its neurons leave the split; the method
    // sees only the routed ones (`routed`, ascending ids), and every
    // per-neuron input is restricted to them (onRouted).
    const int sharedCount = sharedNeuronCount(
        rec.count(L), E, o.shared, site.stack == SiteStack::Single ? "layer " + std::to_string(L) : site.name());
    const std::vector<int32_t> sharedIds = mostActiveNeurons(rec.count(L), sharedCount);
    std::vector<int64_t> routed;
    {
      std::vector<bool> isShared(static_cast<size_t>(n), false);
      for (int32_t i : sharedIds) isShared[static_cast<size_t>(i)] = true;
      for (int64_t i = 0; i < n; ++i)
        if (!isShared[static_cast<size_t>(i)]) routed.push_back(i);
    }
    const int64_t nr = static_cast<int64_t>(routed.size());
    const at::Tensor routedT = at::tensor(routed, at::kLong);
    auto onRouted = [&](const at::Tensor& t, int dims) {  // rows (and columns) of the routed neurons
      if (sharedCount == 0) return t;
      at::Tensor r = t.index_select(0, routedT);
      return (dims == 2 ? r.index_select(1, routedT) : r).contiguous();
    };
    const at::Tensor coact = onRouted(rec.coact(L), 2);
    nlohmann::json m;
    auto split = [&](uint64_t seed, nlohmann::json& info) -> std::vector<int32_t> {
      const auto t0 = std::chrono::steady_clock::now();
      std::vector<int32_t> labels;
      if (o.method == "random") {
        // Each layer its own shuffle (the same seed would give every layer the same labels).
        labels = partitionRandom(nr, E, seed + 0x9E3779B97F4A7C15ull * static_cast<uint64_t>(L + 1));
      } else if (o.method == "coact") {
        at::Tensor src = o.graphSource == "soft" ? onRouted(rec.coactSoft(L), 2) : coact;
        CoactGraph g = buildCoactGraph(src, onRouted(rec.count(L), 1), rec.siteTokens(L), o.graph, E);
        labels = partitionCoact(g, E, seed, o.metisPtype);
        info["graph_edges"] = g.edges();
        info["graph_topk"] = resolveTopk(o.graph, nr, E);
      } else {
        // Labels the restarts' log lines: the stability rerun repeats them.
        job.log("layer " + std::to_string(L) + ": balanced k-means, seed " + std::to_string(seed) +
                (seed == o.seed ? "" : " (the stability rerun)"));
        KmeansResult km =
            balancedKmeans(onRouted(kmeansRows(*model, site, o.rows), 1), E, o.restarts, o.maxIter, seed, job);
        labels = km.labels;
        info["inertia"] = km.inertia;
        info["iterations"] = km.iterations;
      }
      info["seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      return labels;
    };
    std::vector<int32_t> labels = split(o.seed, m);
    m["coact_inside"] = coactInside(coact, labels);
    m["edge_cut"] = edgeCut(coact, labels);
    m["balance"] = sizeBalance(labels, E);
    if (sampleRows.numel() > 0) {
      const at::Tensor act = rec.sampleFfnAct(L).index_select(0, sampleRows);
      m["recall_at_k"] = recallAtK(sharedCount ? act.index_select(1, routedT) : act, labels, E);
    } else
      m["recall_at_k"] = nlohmann::json::array();
    if (o.stability) {
      nlohmann::json info2;
      std::vector<int32_t> other = split(o.seed + 1, info2);
      const LabelAgreement g = labelAgreement(labels, other);
      m["stability_ari"] = g.ari;
      m["stability_nmi"] = g.nmi;
    }
    if (halfStability) {
      // The question a researcher asks: does the partition come from the
      // model, or from the tokens it happened to see? Split each half's graph
      // (same weighting, same seed) and compare.
      job.checkCancel();
      std::vector<int32_t> half[2];
      for (int k = 0; k < 2; ++k) {
        at::Tensor co = onRouted(sampleCoact(rec, L, halves.rows[k]), 2);
        at::Tensor cnt = co.diagonal().to(at::kLong).contiguous();
        CoactGraph g = buildCoactGraph(co, cnt, halves.rows[k].numel(), o.graph, E);
        half[k] = partitionCoact(g, E, o.seed, o.metisPtype);
      }
      const LabelAgreement g = labelAgreement(half[0], half[1]);
      m["half_stability_ari"] = g.ari;
      m["half_stability_nmi"] = g.nmi;
    }
    if (o.shared.enabled()) {
      // The share of the recorded activation mass (active token-neuron pairs) the shared expert holds.
      at::Tensor cnt = rec.count(L).to(at::kDouble);
      const double total = cnt.sum().item<double>();
      const double held =
          sharedCount ? cnt.index_select(0, at::tensor(sharedIds, at::kLong)).sum().item<double>() : 0.0;
      m["shared_neurons"] = sharedCount;
      m["shared_mass"] = total > 0 ? held / total : 0.0;
      sharedByLayer[siteJsonKey(site)] = sharedCount;
      if (li == 0) routedSize = nr / E;
      // Back to every neuron: routed labels in place, the shared ones label E.
      std::vector<int32_t> full(static_cast<size_t>(n), E);
      for (int64_t i = 0; i < nr; ++i) full[static_cast<size_t>(routed[i])] = labels[static_cast<size_t>(i)];
      labels = std::move(full);
    }
    metrics[siteJsonKey(site)] = m;
    std::vector<int32_t> perm = permutationOf(labels, E + (sharedCount > 0 ? 1 : 0));
    tensors.emplace_back(lname(site, "labels"), at::tensor(labels, at::kInt));
    tensors.emplace_back(lname(site, "perm"), at::tensor(perm, at::kInt));
    job.log(site.name() + ": coact inside " + std::to_string(m["coact_inside"].get<double>()) + ", balance " +
            std::to_string(m["balance"].get<double>()));
    job.setProgress(static_cast<double>(li + 1) / static_cast<double>(layers.size()));
  }
  nlohmann::json j;
  j["format"] = "moefy-partition";
  j["version"] = 2;
  j["tool_version"] = MOEFY_VERSION;
  j["method"] = o.method;
  nlohmann::json opts = nlohmann::json::object();
  if (o.method == "coact") {
    opts["weighting"] = o.graph.weighting;
    if (o.graph.topk >= 0)
      opts["topk"] = o.graph.topk;
    else
      opts["topk"] = "auto";
    opts["graph"] = o.graphSource;
    opts["metis_ptype"] = metisPtypeName(o.metisPtype);
  } else if (o.method == "kmeans") {
    opts["rows"] = o.rows;
    opts["restarts"] = o.restarts;
    opts["max_iter"] = o.maxIter;
  }
  opts["stability"] = o.stability;
  if (halfStability)
    opts["half_stability"] = {
        {"source", "samples"}, {"by", halves.by}, {"tokens", {halves.rows[0].numel(), halves.rows[1].numel()}}};
  j["options"] = opts;
  j["seed"] = o.seed;
  j["experts"] = E;
  j["expert_size"] = routedSize;
  if (o.shared.enabled()) {
    j["shared"] = {{"rule", o.shared.mode}, {"neurons", sharedByLayer}};
    if (o.shared.mode == "auto") {
      j["shared"]["mass"] = o.shared.mass;
      j["shared"]["max_fraction"] = o.shared.maxFraction;
    }
  }
  j["d_ff"] = n;
  // Expert sites: what their site indices derive from (site.h "Expert site indices").
  for (const Site& s : sites)
    if (s.expert >= 0 || s.shared) {
      j["native_experts"] = rec.experts();
      j["model_layers"] = rec.modelLayers();
      break;
    }
  j["layers"] = layers;
  j["sites"] = siteNames(sites);  // FFN sites (analysis/model/site.h) of `layers` (site indices)
  j["model_fingerprint"] = rec.fingerprint();
  // Version 2 links (analysis/project/links.h): relative to the partition folder + fingerprint.
  const std::string recFingerprint = folderFingerprint(rec.dir());
  j["model"] = rec.modelPath().empty() ? nlohmann::json("") : makeLink(out, rec.modelPath(), rec.fingerprint());
  j["recording"] = makeLink(out, rec.dir(), recFingerprint);
  j["metrics"] = metrics;
  {
    nlohmann::json all = {{"method", o.method},
                          {"experts", o.experts},
                          {"expert_size", o.expertSize},
                          {"layers", o.layers},
                          {"seed", o.seed},
                          {"weighting", o.graph.weighting},
                          {"topk", o.graph.topk},
                          {"graph", o.graphSource},
                          {"metis_ptype", metisPtypeName(o.metisPtype)},
                          {"rows", o.rows},
                          {"restarts", o.restarts},
                          {"max_iter", o.maxIter},
                          {"stability", o.stability},
                          {"model", o.modelPath.string()},
                          {"shared", o.shared.mode == "count" ? std::to_string(o.shared.neurons) : o.shared.mode},
                          {"shared_mass", o.shared.mass},
                          {"shared_max", o.shared.maxFraction},
                          {"force", o.force}};
    j["provenance"] = provenanceBlock("split", all, {{"recording", recFingerprint}, {"model", rec.fingerprint()}});
  }
  writeFolderAtomic(
      out, o.force,
      [&](const fs::path& tmp) {
        writeSafetensors(tmp / "labels.safetensors", tensors);
        writeFileAtomic(tmp / "partition.json", j.dump(2) + "\n");
      },
      inputs);
  return j;
}

// ------------------------------------------------------------ Partition

Partition Partition::open(const fs::path& dir) {
  Partition p;
  p.dir_ = dir;
  const fs::path jp = dir / "partition.json";
  if (!fs::is_directory(dir)) throw IoError(dir.string() + ": not a partition folder (no such directory)");
  if (!fs::exists(jp)) throw FormatError(jp.string() + ": missing (not a partition folder)");
  try {
    p.json_ = readJsonFile(jp);
    const auto& j = p.json_;
    if (j.at("format").get<std::string>() != "moefy-partition")
      throw FormatError(jp.string() + ": format is not 'moefy-partition'");
    // Integers are range-checked in 64 bits before narrowing (2^32 + 4 experts must not read as 4).
    constexpr int kMax = std::numeric_limits<int>::max();
    const int64_t version = jsonInteger(j.at("version"), INT64_MIN, INT64_MAX, jp.string() + ": version");
    if (version != 1 && version != 2)
      throw FormatError(jp.string() + ": unsupported version " + std::to_string(version));
    p.experts_ = jsonInt(j.at("experts"), 1, kMax, jp.string() + ": experts");
    p.dFF_ = jsonInt(j.at("d_ff"), 1, kMax, jp.string() + ": d_ff");
    p.method_ = j.at("method").get<std::string>();
    p.fingerprint_ = j.at("model_fingerprint").get<std::string>();
    p.layers_ = jsonIntList(j.at("layers"), 0, kMax, jp.string() + ": layers");
    // `sites` names the site of each entry of `layers` (site indices); older
    // partitions of single-stack models may lack it.
    p.sites_ = readSiteList(j, p.layers_, jp.string());
    // Optional shared experts (split --shared): neurons per site, keyed by
    // siteJsonKey (the bare layer number for single-stack sites); absent
    // (older partitions, no --shared) = none.
    if (j.contains("shared")) {
      const auto& neurons = j.at("shared").at("neurons");
      if (!neurons.is_object()) throw FormatError(jp.string() + ": shared.neurons must be an object");
      for (size_t li = 0; li < p.layers_.size(); ++li) {
        const std::string key = siteJsonKey(p.sites_[li]);
        const auto it = neurons.find(key);
        if (it == neurons.end()) continue;
        const int N = jsonInt(*it, 0, p.dFF_ - p.experts_, jp.string() + ": shared.neurons." + key);
        if (N > 0) p.shared_.emplace_back(p.layers_[li], N);
      }
    }
  } catch (const nlohmann::json::exception& e) {
    throw FormatError(jp.string() + ": malformed partition (" + std::string(e.what()) + ")");
  }
  if (p.experts_ < 1 || p.dFF_ < 1 || (p.shared_.empty() && p.dFF_ % p.experts_ != 0))
    throw FormatError(jp.string() + ": experts " + std::to_string(p.experts_) + " does not divide d_ff " +
                      std::to_string(p.dFF_));
  auto f = SafetensorsFile::open(dir / "labels.safetensors");
  for (size_t li = 0; li < p.layers_.size(); ++li) {
    const int L = p.layers_[li];
    const Site& site = p.sites_[li];
    for (const char* what : {"labels", "perm"}) {
      const TensorInfo* t = f->find(lname(site, what));
      if (!t) throw FormatError(f->path().string() + ": missing tensor '" + lname(site, what) + "'");
      if (t->dtype != DType::I32 || t->shape != std::vector<int64_t>{p.dFF_})
        throw FormatError(f->path().string() + ": tensor '" + lname(site, what) + "' must be I32 [" +
                          std::to_string(p.dFF_) + "], got " + dtypeName(t->dtype) + " " + shapeString(t->shape));
    }
    at::Tensor lab = f->raw(lname(site, "labels")).clone();
    // Label E marks the shared expert's neurons, in sites that have one.
    const int sharedN = p.sharedNeurons(L);
    const int blocks = p.experts_ + (sharedN > 0 ? 1 : 0);
    if (lab.min().item<int>() < 0 || lab.max().item<int>() >= blocks)
      throw FormatError(f->path().string() + ": " + lname(site, "labels") + " holds ids outside [0, " +
                        std::to_string(blocks) + ")" + (sharedN > 0 ? " (label E is the shared expert)" : ""));
    at::Tensor sizes = at::bincount(lab.to(at::kLong), {}, blocks);
    if (sharedN > 0 && sizes[p.experts_].item<int64_t>() != sharedN)
      throw FormatError(f->path().string() + ": " + lname(site, "labels") + " gives the shared expert " +
                        std::to_string(sizes[p.experts_].item<int64_t>()) + " neurons, partition.json shared.neurons " +
                        std::to_string(sharedN));
    at::Tensor routedSizes = sizes.narrow(0, 0, p.experts_);
    if (routedSizes.min().item<int64_t>() != routedSizes.max().item<int64_t>())
      throw FormatError(f->path().string() + ": " + lname(site, "labels") + " does not give equal-size experts");
    p.labels_.emplace_back(L, lab);
    p.perm_.emplace_back(L, f->raw(lname(site, "perm")).clone());
  }
  return p;
}

int Partition::sharedNeurons(int layer) const {
  for (const auto& [L, n] : shared_)
    if (L == layer) return n;
  return 0;
}

Site Partition::site(int layer) const {
  for (size_t i = 0; i < layers_.size(); ++i)
    if (layers_[i] == layer) return sites_[i];
  throw ParameterError(dir_.string() + ": has no partition for layer " + std::to_string(layer));
}

at::Tensor Partition::labelsTensor(int layer) const {
  for (const auto& [L, t] : labels_)
    if (L == layer) return t;
  throw ParameterError(dir_.string() + ": has no partition for layer " + std::to_string(layer));
}

std::vector<int32_t> Partition::labels(int layer) const {
  at::Tensor t = labelsTensor(layer).contiguous();
  return std::vector<int32_t>(t.data_ptr<int32_t>(), t.data_ptr<int32_t>() + t.numel());
}

at::Tensor Partition::perm(int layer) const {
  for (const auto& [L, t] : perm_)
    if (L == layer) return t;
  throw ParameterError(dir_.string() + ": has no partition for layer " + std::to_string(layer));
}

nlohmann::json comparePartitions(const std::vector<Partition>& parts) {
  if (parts.size() < 2) throw ParameterError("--compare needs at least two partitions");
  const Partition& a = parts[0];
  for (size_t i = 1; i < parts.size(); ++i) {
    if (parts[i].dFF() != a.dFF())
      throw ParameterError(parts[i].dir().string() + ": partition is for d_ff " + std::to_string(parts[i].dFF()) +
                           ", but " + a.dir().string() + " is for d_ff " + std::to_string(a.dFF()) +
                           "; they split different models");
    if (parts[i].fingerprint() != a.fingerprint())
      throw ParameterError(parts[i].dir().string() + ": partition is for model " + parts[i].fingerprint() + ", but " +
                           a.dir().string() + " is for model " + a.fingerprint());
  }
  nlohmann::json j;
  j["partitions"] = nlohmann::json::array();
  for (const auto& p : parts)
    j["partitions"].push_back({{"dir", p.dir().string()},
                               {"method", p.method()},
                               {"experts", p.experts()},
                               {"seed", p.json().value("seed", 0)},
                               {"options", p.json().value("options", nlohmann::json::object())},
                               {"metrics", p.json().value("metrics", nlohmann::json::object())}});
  nlohmann::json agree = nlohmann::json::array();
  for (size_t x = 0; x < parts.size(); ++x)
    for (size_t y = x + 1; y < parts.size(); ++y)
      for (int L : parts[x].layers()) {
        const auto& ly = parts[y].layers();
        if (std::find(ly.begin(), ly.end(), L) == ly.end()) continue;
        const LabelAgreement g = labelAgreement(parts[x].labels(L), parts[y].labels(L));
        agree.push_back({{"a", x}, {"b", y}, {"layer", L}, {"ari", g.ari}, {"nmi", g.nmi}});
      }
  j["agreement"] = agree;
  return j;
}

}  // namespace moefy
