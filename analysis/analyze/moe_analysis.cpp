#include "analysis/analyze/moe_analysis.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <map>
#include <set>

#include "analysis/analyze/moe_stats.h"
#include "analysis/checkpoint/loader.h"
#include "analysis/common/error.h"
#include "analysis/eval/sequences.h"
#include "analysis/experts/moe_layer.h"
#include "analysis/io/fsutil.h"
#include "analysis/io/json_input.h"
#include "analysis/io/safetensors.h"
#include "analysis/jobs/job.h"
#include "analysis/model/model.h"
#include "analysis/moe/moe_ffn.h"
#include "analysis/route/router.h"

namespace moefy {

namespace {

namespace fs = std::filesystem;

constexpr const char* kFormat = "moefy-moe-analysis";
constexpr const char* kProjections[3] = {"gate", "up", "down"};
// The neuron matrices (E d_expert rows of 3 d_model doubles) of the matching
// and the neuron PCA stay below this many values (2 GiB).
constexpr int64_t kMaxNeuronValues = int64_t{1} << 28;

Site expertSite(int layer, int e) { return Site{SiteStack::Single, layer, e, false}; }

at::Tensor toTensor(const Eigen::MatrixXd& m) {
  at::Tensor t = at::empty({m.rows(), m.cols()}, at::kDouble);  // [rows, cols]
  auto a = t.accessor<double, 2>();
  for (Eigen::Index i = 0; i < m.rows(); ++i)
    for (Eigen::Index j = 0; j < m.cols(); ++j) a[i][j] = m(i, j);
  return t;
}

at::Tensor toTensor(const std::vector<double>& v) {
  return at::tensor(at::ArrayRef<double>(v), at::TensorOptions().dtype(at::kDouble)).clone();
}

// A float tensor [r, c] as a row-major double matrix.
MatrixXdR toEigen(const at::Tensor& t) {
  at::Tensor d = t.to(at::kDouble).contiguous();
  return Eigen::Map<const MatrixXdR>(d.data_ptr<double>(), d.size(0), d.size(1));
}

nlohmann::json r2Json(const std::optional<double>& r2) { return r2 ? nlohmann::json(*r2) : nlohmann::json(); }

// One expert's weights, contiguous F32: gate (undefined for plain FFNs) and up
// [s, d_model], down [d_model, s], s the expert's neurons.
struct ExpertWeights {
  at::Tensor gate, up, down;
  int64_t size() const { return up.size(0); }
};

std::vector<ExpertWeights> expertWeights(const Model& model, int layer) {
  const auto& c = model.config();
  std::vector<ExpertWeights> w(c.expertCount);
  for (int e = 0; e < c.expertCount; ++e) {
    const FfnWeights f = model.ffnWeights(expertSite(layer, e));
    if (!f.gated())
      throw FormatError(model.dir().string() + ": expert " + expertSite(layer, e).name() + " has no gate projection");
    w[e] = {f.gate.to(at::kFloat).contiguous(), f.up.to(at::kFloat).contiguous(), f.down.to(at::kFloat).contiguous()};
  }
  return w;
}

// The routed experts of a MoE export's layer, from its packed blocks (the
// shared expert, block E, is left out: it is not routed).
std::vector<ExpertWeights> expertWeights(const MoeLayerWeights& m) {
  std::vector<ExpertWeights> w(m.layout.experts);
  for (int e = 0; e < m.layout.experts; ++e) {
    const int64_t off = m.layout.offsets[e], s = m.layout.expertSize(e);
    if (m.gated()) w[e].gate = m.gate.narrow(0, off, s).to(at::kFloat).contiguous();
    w[e].up = m.up.narrow(0, off, s).to(at::kFloat).contiguous();
    w[e].down = m.downT.narrow(0, off, s).t().to(at::kFloat).contiguous();
  }
  return w;
}

const at::Tensor& projection(const ExpertWeights& w, int p) { return p == 0 ? w.gate : p == 1 ? w.up : w.down; }

// Dot products of the flattened projection p of every pair of experts, in
// double without a double copy of the weights (they may be gigabytes); NaN for
// a pair of experts of different sizes (their matrices have different shapes).
Eigen::MatrixXd flatGram(const std::vector<ExpertWeights>& w, int p) {
  const int E = static_cast<int>(w.size());
  Eigen::MatrixXd G(E, E);
  for (int i = 0; i < E; ++i) {
    const at::Tensor& a = projection(w[i], p);
    const Eigen::Map<const Eigen::VectorXf> va(a.data_ptr<float>(), a.numel());
    for (int j = i; j < E; ++j) {
      const at::Tensor& b = projection(w[j], p);
      const Eigen::Map<const Eigen::VectorXf> vb(b.data_ptr<float>(), b.numel());
      G(i, j) = G(j, i) = w[i].size() == w[j].size() ? va.cast<double>().dot(vb.cast<double>())
                                                     : std::numeric_limits<double>::quiet_NaN();
    }
  }
  return G;
}

// Expert e's neuron vectors [s, P d_model]: row a = [gate row a | up row a |
// down column a] (plain FFNs: [up row a | down column a]).
MatrixXdR neuronVectors(const ExpertWeights& w) {
  return toEigen(w.gate.defined() ? at::cat({w.gate, w.up, w.down.t()}, 1) : at::cat({w.up, w.down.t()}, 1));
}

double rowCosine(const MatrixXdR& A, Eigen::Index a, const MatrixXdR& B, Eigen::Index b, Eigen::Index from,
                 Eigen::Index len) {
  const auto x = A.row(a).segment(from, len);
  const auto y = B.row(b).segment(from, len);
  const double n = x.norm() * y.norm();
  return n > 0 ? std::clamp(x.dot(y) / n, -1.0, 1.0) : 0.0;
}

// The entries i < j where both matrices are finite (pairs of unequal-size experts are NaN).
std::pair<std::vector<double>, std::vector<double>> finitePairs(const Eigen::MatrixXd& x, const Eigen::MatrixXd& y) {
  const std::vector<double> a = upperOffDiagonal(x), b = upperOffDiagonal(y);
  std::pair<std::vector<double>, std::vector<double>> r;
  for (size_t i = 0; i < a.size(); ++i)
    if (std::isfinite(a[i]) && std::isfinite(b[i])) {
      r.first.push_back(a[i]);
      r.second.push_back(b[i]);
    }
  return r;
}

// The static analyses of one layer's routed experts `w` (equal or unequal
// sizes) and, when defined, its router rows [E, d_model] (undefined: skipped,
// `routerSkip` says why). See moe_analysis.h.
nlohmann::json staticAnalysis(const std::vector<ExpertWeights>& w, const at::Tensor& routerRows,
                              const std::string& routerSkip, const std::string& site, const AnalyzeOptions& o,
                              NamedTensors& out, JobContext& job) {
  const int E = static_cast<int>(w.size());
  const int64_t d = w[0].up.size(1);
  const bool gated = w[0].gate.defined();
  std::vector<int> projs = gated ? std::vector<int>{0, 1, 2} : std::vector<int>{1, 2};
  const int P = static_cast<int>(projs.size());
  std::vector<int64_t> sizes(E);
  int64_t total = 0, maxSize = 0;
  for (int e = 0; e < E; ++e) {
    sizes[e] = w[e].size();
    total += sizes[e];
    maxSize = std::max(maxSize, sizes[e]);
  }
  const bool equal = std::all_of(sizes.begin(), sizes.end(), [&](int64_t s) { return s == sizes[0]; });
  const double nan = std::numeric_limits<double>::quiet_NaN();
  nlohmann::json info;
  info["experts"] = E;
  info["d_expert"] = equal ? nlohmann::json(sizes[0]) : nlohmann::json();
  info["expert_sizes"] = sizes;

  // Flattened and neuron-mean similarities, per projection.
  Eigen::MatrixXd flatSim[3], meanSim[3], gramAll = Eigen::MatrixXd::Zero(E, E);
  for (int p : projs) {
    const Eigen::MatrixXd G = flatGram(w, p);
    gramAll += G;
    flatSim[p] = cosineFromGram(G);
    for (int i = 0; i < E; ++i)
      for (int j = 0; j < E; ++j)
        if (sizes[i] != sizes[j]) flatSim[p](i, j) = nan;
    MatrixXdR means(E, d);  // [E, d_model]
    for (int e = 0; e < E; ++e) {
      // gate/up rows are neurons; down's neurons are its columns.
      // In float64: a float32 mean would cost the similarity ~1e-7.
      at::Tensor m = p == 2 ? w[e].down.to(at::kDouble).mean(1) : projection(w[e], p).to(at::kDouble).mean(0);
      means.row(e) = toEigen(m.unsqueeze(0));
    }
    meanSim[p] = cosineMatrix(means);
    out.emplace_back(site + ".sim." + kProjections[p], toTensor(flatSim[p]));
    out.emplace_back(site + ".mean_sim." + kProjections[p], toTensor(meanSim[p]));
  }
  job.checkCancel();

  // Router rows against the expert similarities.
  if (routerRows.defined()) {
    const Eigen::MatrixXd routerSim = cosineMatrix(toEigen(routerRows));
    out.emplace_back(site + ".router_sim", toTensor(routerSim));
    nlohmann::json r2Flat, r2Mean;
    for (int p : projs) {
      const auto [fx, fy] = finitePairs(flatSim[p], routerSim);
      const auto [mx, my] = finitePairs(meanSim[p], routerSim);
      r2Flat[kProjections[p]] = r2Json(linearFitR2(fx, fy));
      r2Mean[kProjections[p]] = r2Json(linearFitR2(mx, my));
    }
    info["router_r2"] = {{"sim", r2Flat}, {"mean_sim", r2Mean}};
  } else {
    info["router_r2"] = nullptr;
    info["router_sim"] = "skipped: " + routerSkip;
  }

  // Experts' PCA from the Gram matrix of their flattened [gate | up | down] (equal sizes only).
  nlohmann::json explained;
  if (equal) {
    const Pca2 expertPca = pca2FromGram(gramAll);
    out.emplace_back(site + ".pca.experts", toTensor(Eigen::MatrixXd(expertPca.scores)));
    explained["experts"] = {expertPca.explained[0], expertPca.explained[1]};
  } else {
    explained["experts"] = nullptr;
  }

  const bool neuronsFit = total * P * d <= kMaxNeuronValues;
  const bool match = maxSize <= o.matchMaxNeurons && neuronsFit;
  std::vector<MatrixXdR> neurons;  // E x [s_e, P d_model]
  if (match || neuronsFit)
    for (int e = 0; e < E; ++e) neurons.push_back(neuronVectors(w[e]));

  if (neuronsFit) {
    MatrixXdR all(total, P * d);
    std::vector<int32_t> owner;
    int64_t row = 0;
    for (int e = 0; e < E; ++e) {
      all.middleRows(row, sizes[e]) = neurons[e];
      row += sizes[e];
      owner.insert(owner.end(), sizes[e], e);
    }
    const Pca2 neuronPca = pca2(all);
    out.emplace_back(site + ".pca.neurons", toTensor(Eigen::MatrixXd(neuronPca.scores)));
    out.emplace_back(site + ".pca.neuron_expert", at::tensor(at::ArrayRef<int32_t>(owner), at::kInt).clone());
    explained["neurons"] = {neuronPca.explained[0], neuronPca.explained[1]};
  } else {
    explained["neurons"] = nullptr;
    job.log(site + ": neuron PCA skipped (" + std::to_string(total) + " neurons x " + std::to_string(P * d) +
            " values exceed 2^28)");
  }
  info["pca_explained"] = explained;

  if (!match) {
    info["matching"] = "skipped: d_expert " + std::to_string(maxSize) +
                       (maxSize > o.matchMaxNeurons ? " > --match-max " + std::to_string(o.matchMaxNeurons)
                                                    : " neurons exceed the memory bound");
    job.log(site + ": neuron matching " + info["matching"].get<std::string>());
    return info;
  }
  info["matching"] =
      equal ? "optimal" : "optimal for the pairs of equal-size experts (NaN for the others, no match_perm)";
  Eigen::MatrixXd matchSim = Eigen::MatrixXd::Identity(E, E), tau = Eigen::MatrixXd::Identity(E, E);
  Eigen::MatrixXd matchProj[3];
  for (auto& m : matchProj) m = Eigen::MatrixXd::Identity(E, E);
  const int64_t F = sizes[0];
  at::Tensor perm;  // [E, E, F], equal sizes only
  if (equal) perm = at::arange(F, at::kInt).repeat({E, E, 1}).contiguous();
  // The diagonal: a zero neuron has cosine 0 with itself (cosineMatrix's rule).
  for (int e = 0; e < E; ++e) {
    const Eigen::MatrixXd self = cosineMatrix(neurons[e]);
    matchSim(e, e) = self.diagonal().mean();
    for (int q = 0; q < P; ++q) {
      double s = 0;
      for (int64_t a = 0; a < sizes[e]; ++a) s += rowCosine(neurons[e], a, neurons[e], a, q * d, d);
      matchProj[projs[q]](e, e) = s / static_cast<double>(sizes[e]);
    }
  }
  const int pairs = E * (E - 1) / 2;
  int done = 0;
  for (int i = 0; i < E; ++i) {
    for (int j = i + 1; j < E; ++j) {
      job.checkCancel();
      if (sizes[i] != sizes[j]) {
        matchSim(i, j) = matchSim(j, i) = tau(i, j) = tau(j, i) = nan;
        for (int p : projs) matchProj[p](i, j) = matchProj[p](j, i) = nan;
        job.setProgress(static_cast<double>(++done) / pairs);
        continue;
      }
      const int64_t n = sizes[i];
      const Eigen::MatrixXd S = cosineMatrix(neurons[i], neurons[j]);  // [n, n]
      const std::vector<int64_t> p = maxAssignment(S);
      double sum = 0, proj[3] = {0, 0, 0};
      std::vector<int64_t> inverse(n);
      for (int64_t a = 0; a < n; ++a) {
        sum += S(a, p[a]);
        for (int q = 0; q < P; ++q) proj[q] += rowCosine(neurons[i], a, neurons[j], p[a], q * d, d);
        inverse[p[a]] = a;
      }
      if (equal) {
        auto pa = perm.accessor<int32_t, 3>();
        for (int64_t a = 0; a < n; ++a) pa[i][j][a] = static_cast<int32_t>(p[a]);
        for (int64_t b = 0; b < n; ++b) pa[j][i][b] = static_cast<int32_t>(inverse[b]);
      }
      matchSim(i, j) = matchSim(j, i) = sum / static_cast<double>(n);
      for (int q = 0; q < P; ++q)
        matchProj[projs[q]](i, j) = matchProj[projs[q]](j, i) = proj[q] / static_cast<double>(n);
      // A permutation and its inverse have the same inversions, so one tau serves both directions.
      tau(i, j) = tau(j, i) = kendallTauToIdentity(p);
      job.setProgress(static_cast<double>(++done) / pairs);
    }
  }
  out.emplace_back(site + ".match_sim", toTensor(matchSim));
  for (int p : projs) out.emplace_back(site + ".match_sim." + kProjections[p], toTensor(matchProj[p]));
  out.emplace_back(site + ".match_tau", toTensor(tau));
  if (equal) out.emplace_back(site + ".match_perm", perm);
  return info;
}

}  // namespace

std::vector<int> moeLayersToAnalyse(const Model& model, const std::vector<int>& layers, const std::string& modelName) {
  const auto& c = model.config();
  std::vector<int> all;
  for (int L = 0; L < c.nLayer; ++L)
    if (c.moeLayer(L)) all.push_back(L);
  if (all.empty())
    throw ParameterError(modelName + ": has no native MoE layer (" + c.modelType +
                         "); moefy analyze needs a Mixtral, Qwen2-MoE or OLMoE checkpoint");
  if (layers.empty()) return all;
  std::set<int> chosen;
  for (int L : layers) {
    if (!c.moeLayer(L))
      throw ParameterError("--sites: " + Site::ofLayer(L).name() + " is not a MoE layer of " + modelName + " (" +
                           std::to_string(c.nLayer) + " layers, MoE: " + c.moeSummary() + ")");
    chosen.insert(L);
  }
  return {chosen.begin(), chosen.end()};
}

nlohmann::json staticExpertAnalysis(const Model& model, int L, const AnalyzeOptions& o, NamedTensors& out,
                                    JobContext& job) {
  if (!model.config().moeLayer(L)) throw ParameterError(Site::ofLayer(L).name() + " is not a MoE layer");
  const at::Tensor router =
      model.tensors().at(model.tensorName(Role::MoeRouter, L)).to(at::kFloat);  // [E, d_model] (F32 when mapped)
  return staticAnalysis(expertWeights(model, L), router, "", Site::ofLayer(L).name(), o, out, job);
}

namespace {

// The per-layer accumulators of the dynamic analyses.
struct LayerAcc {
  int layer = 0;
  int64_t experts = 0;                // E, routed experts
  at::Tensor logits;                  // native: [n, E] F64, this batch's valid tokens
  at::Tensor chosen;                  // native: [n, E] U8, this batch
  std::vector<at::Tensor> outputs;    // native: E x [n, d_model] F64, this batch
  at::Tensor outSimSum;               // [E, E] F64, sum over tokens of the angular similarity
  at::Tensor rankCounts;              // [E * E] I64
  int64_t top1Hits = 0;               // tokens whose top-scored expert has the largest output norm
  int64_t tokens = 0;                 // tokens seen
  std::vector<at::Tensor> chosenAll;  // per batch [n, E] U8
  std::vector<at::Tensor> fired;      // E x [s_e] bool: neuron fired on a token routed to the expert

  LayerAcc(int L, const std::vector<int64_t>& sizes) : layer(L), experts(static_cast<int64_t>(sizes.size())) {
    outSimSum = at::zeros({experts, experts}, at::kDouble);
    rankCounts = at::zeros({experts * experts}, at::kLong);
    for (int64_t s : sizes) fired.push_back(at::zeros({s}, at::kBool));
    outputs.resize(sizes.size());
  }
};

// Rank of every expert per row of scores [n, E] (0 = largest), ties broken by
// expert id (a stable descending sort).
at::Tensor ranksOf(const at::Tensor& scores, at::Tensor* order) {
  at::Tensor o = std::get<1>(scores.sort(/*stable=*/true, /*dim=*/1, /*descending=*/true));  // [n, E]
  at::Tensor rank = at::empty_like(o);
  rank.scatter_(1, o, at::arange(scores.size(1), o.options()).expand_as(o).contiguous());
  if (order) *order = o;
  return rank;
}

// One batch of n tokens: the experts' outputs Y [n, E, d_model] F64 and the
// router scores [n, E] into the output similarity, rank counts and top-1 hits.
void addOutputs(LayerAcc& a, const at::Tensor& Y, const at::Tensor& scores) {
  const int64_t E = a.experts;
  at::Tensor norms = Y.norm(2, {-1});  // [n, E]
  at::Tensor inv = at::where(norms > 0, 1.0 / norms, at::zeros_like(norms));
  at::Tensor Yn = Y * inv.unsqueeze(-1);
  at::Tensor cos = at::bmm(Yn, Yn.transpose(1, 2)).clamp(-1.0, 1.0);  // [n, E, E]
  a.outSimSum += (1.0 - at::acos(cos) / M_PI).sum(0);
  at::Tensor scoreOrder, normOrder;
  at::Tensor rs = ranksOf(scores, &scoreOrder), rn = ranksOf(norms, &normOrder);  // [n, E]
  a.rankCounts += at::bincount((rs * E + rn).flatten(), {}, E * E);
  a.top1Hits += (scoreOrder.select(1, 0) == normOrder.select(1, 0)).sum().item<int64_t>();
  a.tokens += Y.size(0);
}

// Channel usage: the neurons of expert e (hidden h [n, s_e]) that fire on a token routed to it.
void addFired(LayerAcc& a, int e, const at::Tensor& h, const at::Tensor& routed, double eps) {
  if (routed.any().item<bool>()) a.fired[e].logical_or_((h.index({routed}).abs() > eps).any(0));
}

// The per-site tensors and scalars from the accumulators of `layers` (ascending) over N tokens.
nlohmann::json finishDynamic(std::map<int, LayerAcc>& layers, int64_t N, NamedTensors& out) {
  nlohmann::json sites = nlohmann::json::object();
  at::Tensor rankTotal;
  bool sameE = true;
  int64_t hitsTotal = 0;
  std::vector<std::pair<int, at::Tensor>> chosenByLayer;
  for (auto& [L, a] : layers) {
    const std::string site = Site::ofLayer(L).name();
    const int64_t E = a.experts;
    if (a.tokens != N)
      throw Error(site + ": " + std::to_string(a.tokens) + " tokens analysed, expected " + std::to_string(N));
    nlohmann::json s;
    at::Tensor outSim = a.outSimSum / static_cast<double>(N);
    out.emplace_back(site + ".output_sim", outSim);
    const Eigen::MatrixXd os = Eigen::Map<const Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>(
        outSim.contiguous().data_ptr<double>(), E, E);
    const std::vector<double> off = upperOffDiagonal(os);
    double mean = 0;
    for (double v : off) mean += v;
    s["output_similarity"] = off.empty() ? nlohmann::json() : nlohmann::json(mean / off.size());
    at::Tensor counts = a.rankCounts.view({E, E});
    out.emplace_back(site + ".rank_counts", counts);
    if (rankTotal.defined() && rankTotal.size(0) != E) sameE = false;
    if (sameE) rankTotal = rankTotal.defined() ? rankTotal + counts : counts;
    hitsTotal += a.top1Hits;
    s["top1_norm_share"] = static_cast<double>(a.top1Hits) / static_cast<double>(N);
    at::Tensor chosen = at::cat(a.chosenAll).contiguous();  // [N, E] U8
    out.emplace_back(site + ".chosen", chosen);
    chosenByLayer.emplace_back(L, chosen);
    s["mean_k"] = chosen.sum(1).to(at::kDouble).mean().item<double>();
    const UsageHealth h =
        usageHealth(Eigen::Map<const Eigen::Matrix<uint8_t, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>(
            chosen.data_ptr<uint8_t>(), N, E));
    out.emplace_back(site + ".usage", toTensor(h.share));
    out.emplace_back(site + ".cooccurrence", toTensor(h.cooccurrence));
    s["usage_perplexity"] = h.perplexity;
    s["dead_share"] = h.deadShare;
    std::vector<double> channel;
    for (const at::Tensor& f : a.fired) channel.push_back(f.to(at::kDouble).mean().item<double>());
    out.emplace_back(site + ".channel_usage", toTensor(channel));
    sites[site] = s;
  }
  for (size_t i = 0; i + 1 < chosenByLayer.size(); ++i) {
    const auto& [L, a] = chosenByLayer[i];
    const auto& [next, b] = chosenByLayer[i + 1];
    const std::string site = Site::ofLayer(L).name();
    sites[site]["next"] = Site::ofLayer(next).name();
    if (a.size(1) != b.size(1)) {
      sites[site]["overlap_next"] = nullptr;
      sites[site]["overlap_skipped"] =
          "the layers have " + std::to_string(a.size(1)) + " and " + std::to_string(b.size(1)) + " experts";
      continue;
    }
    // |S_L ∩ S_L'| / min(|S_L|, |S_L'|) per token: / k with a fixed top-k.
    at::Tensor both = (a * b).sum(1).to(at::kDouble);  // [N] experts chosen at both layers
    at::Tensor fewer = at::minimum(a.sum(1), b.sum(1)).to(at::kDouble).clamp_min(1.0);
    sites[site]["overlap_next"] = (both / fewer).mean().item<double>();
    // Counts below 2^53 are exact in double; the product then rounds back to integers.
    out.emplace_back(site + ".transition", at::matmul(a.t().to(at::kDouble), b.to(at::kDouble)).round().to(at::kLong));
  }
  nlohmann::json r;
  r["sites"] = sites;
  r["tokens"] = N;
  r["top1_norm_share"] = static_cast<double>(hitsTotal) / static_cast<double>(N * layers.size());
  if (sameE) out.emplace_back("rank_counts", rankTotal);
  return r;
}

// Runs `model` over `sequences` in batches of options.batch windows with
// `sink` (told each batch's valid positions through `setValid` first), and
// appends token_ids / token_sequence to `out`. Returns N, the tokens seen;
// ParameterError when there is none.
int64_t runBatches(const Model& model, const std::vector<std::vector<int64_t>>& sequences, const AnalyzeOptions& o,
                   HookSink& sink, const std::function<void(at::Tensor)>& setValid, NamedTensors& out,
                   JobContext& job) {
  std::vector<at::Tensor> tokenIds, tokenSeq;
  const size_t S = sequences.size();
  const size_t B = static_cast<size_t>(std::max(1, o.batch));
  for (size_t start = 0; start < S; start += B) {
    job.checkCancel();
    std::vector<std::vector<int64_t>> part(sequences.begin() + start, sequences.begin() + std::min(S, start + B));
    const Batch batch = makeBatch(part);
    at::Tensor valid = batch.mask.flatten().nonzero().squeeze(1);  // [n] flat positions b * T + t
    setValid(valid);
    model.forward(batch, &sink);
    tokenIds.push_back(batch.ids.flatten().index_select(0, valid));
    tokenSeq.push_back((at::div(valid, batch.seqLen(), "floor") + static_cast<int64_t>(start)).to(at::kInt));
    job.setProgress(static_cast<double>(std::min(S, start + B)) / static_cast<double>(S));
  }
  const at::Tensor ids = tokenIds.empty() ? at::zeros({0}, at::kLong) : at::cat(tokenIds);
  if (ids.numel() == 0) throw ParameterError("the corpus gave no token to analyse");
  out.emplace_back("token_ids", ids);
  out.emplace_back("token_sequence", at::cat(tokenSeq));
  return ids.numel();
}

// Passes the FFN inputs of a MoE export's analysed layers (valid tokens) to ExportDynamics.
class ExportSink : public HookSink {
 public:
  ExportSink(ExportDynamics& dyn, std::set<int> layers) : dyn_(dyn), layers_(std::move(layers)) {}
  void setValid(at::Tensor valid) { valid_ = std::move(valid); }
  bool wants(int layer, HookPoint p) const override { return p == HookPoint::FfnIn && layers_.count(layer); }
  void on(int layer, HookPoint, const at::Tensor& x) override {
    dyn_.add(layer, x.reshape({-1, x.size(-1)}).index_select(0, valid_));
  }

 private:
  ExportDynamics& dyn_;
  std::set<int> layers_;
  at::Tensor valid_;
};

class AnalysisSink : public HookSink {
 public:
  AnalysisSink(const Model& model, const std::vector<int>& layers, const AnalyzeOptions& o)
      : model_(model), eps_(o.fireEps) {
    const auto& c = model.config();
    for (int L : layers) {
      acc_.emplace(L, LayerAcc(L, std::vector<int64_t>(c.expertCount, c.dExpert)));
      for (int e = 0; e < c.expertCount; ++e)
        down_[{L, e}] = model.ffnWeights(expertSite(L, e)).down.to(at::kDouble).contiguous();  // [d_model, F]
    }
  }
  /// The flat positions b * T + t of the batch's non-padding tokens.
  void setValid(at::Tensor valid) { valid_ = std::move(valid); }
  std::map<int, LayerAcc>& layers() { return acc_; }

  bool wants(int, HookPoint) const override { return false; }
  void on(int, HookPoint, const at::Tensor&) override {}
  bool allExperts() const override { return true; }
  bool wantsSite(const Site& s, HookPoint p) const override {
    if (s.stack != SiteStack::Single || s.shared || !acc_.count(s.layer)) return false;
    if (s.expert < 0) return p == HookPoint::RouterLogits || p == HookPoint::TopkIds;
    return p == HookPoint::FfnAct;
  }
  void onSite(const Site& s, HookPoint p, const at::Tensor& x) override {
    LayerAcc& a = acc_.at(s.layer);
    const int64_t E = model_.config().expertCount;
    if (p == HookPoint::RouterLogits) {
      a.logits = x.reshape({-1, E}).index_select(0, valid_).to(at::kDouble);  // [n, E]
    } else if (p == HookPoint::TopkIds) {
      at::Tensor ids = x.reshape({-1, x.size(-1)}).index_select(0, valid_);  // [n, k]
      a.chosen = at::zeros({ids.size(0), E}, at::kByte).scatter_(1, ids, 1);
      a.chosenAll.push_back(a.chosen);
    } else if (p == HookPoint::FfnAct && s.expert >= 0) {
      // Every-expert mode: x [B * T, F] holds every token in order.
      at::Tensor h = x.index_select(0, valid_);                                                // [n, F]
      a.outputs[s.expert] = at::matmul(h.to(at::kDouble), down_.at({s.layer, s.expert}).t());  // [n, d_model]
      addFired(a, s.expert, h, a.chosen.select(1, s.expert).to(at::kBool), eps_);
      if (s.expert == E - 1) {
        addOutputs(a, at::stack(a.outputs, 1), a.logits);
        for (auto& y : a.outputs) y = at::Tensor();
      }
    }
  }

 private:
  const Model& model_;
  double eps_;
  at::Tensor valid_;
  std::map<int, LayerAcc> acc_;
  std::map<std::pair<int, int>, at::Tensor> down_;
};

}  // namespace

nlohmann::json dynamicExpertAnalysis(const Model& model, const std::vector<int>& layers,
                                     const std::vector<std::vector<int64_t>>& sequences, const AnalyzeOptions& o,
                                     NamedTensors& out, JobContext& job) {
  c10::InferenceMode guard;
  const auto& c = model.config();
  for (int L : layers)
    if (!c.moeLayer(L)) throw ParameterError(Site::ofLayer(L).name() + " is not a MoE layer");
  AnalysisSink sink(model, layers, o);
  const int64_t N = runBatches(
      model, sequences, o, sink, [&](at::Tensor v) { sink.setValid(std::move(v)); }, out, job);
  return finishDynamic(sink.layers(), N, out);
}

// ---- MoE exports of this project ----

struct ExportDynamics::Impl {
  std::shared_ptr<const MoeFfn> moe;
  double eps = 0;
  std::map<int, LayerAcc> acc;
};

ExportDynamics::ExportDynamics(std::shared_ptr<const MoeFfn> moe, const std::vector<int>& layers, double fireEps)
    : impl_(std::make_unique<Impl>()) {
  if (!moe) throw ParameterError("ExportDynamics: no MoE FFN");
  impl_->moe = std::move(moe);
  impl_->eps = fireEps;
  for (int L : layers) {
    if (!impl_->moe->isMoe(L)) throw ParameterError(Site::ofLayer(L).name() + " is not a MoEfied layer");
    const ExpertLayout& lay = impl_->moe->layers()[L].weights->layout;
    std::vector<int64_t> sizes;
    for (int e = 0; e < lay.experts; ++e) sizes.push_back(lay.expertSize(e));
    impl_->acc.emplace(L, LayerAcc(L, sizes));
  }
}

ExportDynamics::~ExportDynamics() = default;

void ExportDynamics::add(int L, const at::Tensor& xIn) {
  c10::InferenceMode guard;
  auto it = impl_->acc.find(L);
  if (it == impl_->acc.end()) throw ParameterError(Site::ofLayer(L).name() + " is not an analysed layer");
  LayerAcc& a = it->second;
  const MoeLayer& layer = impl_->moe->layers()[L];
  // The layer recomputed in float64 from its FFN inputs (which come from the
  // float32 forward pass): the router scores, the selection and the hiddens,
  // so that ranks and choices do not hinge on float32 rounding. A token within
  // float32 rounding of a tie may be assigned otherwise than in the forward pass.
  auto f64 = [](const at::Tensor& t) { return t.defined() ? t.to(at::kDouble) : t; };
  const MoeLayerWeights& wf = *layer.weights;
  MoeLayerWeights w;
  w.layout = wf.layout;
  w.up = f64(wf.up);
  w.gate = f64(wf.gate);
  w.upBias = f64(wf.upBias);
  w.downT = f64(wf.downT);
  w.act = wf.act;
  LayerRouter router = *layer.router;
  router.centroids = f64(router.centroids);
  router.w1 = f64(router.w1);
  router.w2 = f64(router.w2);
  router.b1 = f64(router.b1);
  const at::Tensor x = xIn.to(at::kDouble).contiguous();  // [n, d_model]
  const int64_t E = a.experts, n = x.size(0);
  const at::Tensor h = w.packedHidden(x);         // [n, d_ff] packed
  const at::Tensor scores = router.scores(x, w);  // [n, E]
  // The MoE FFN's rule (MoeFfn::route): top-k, or dynamic-k with -1 in a token's unused slots.
  const at::Tensor sel = router.kind == RouterKind::DynamicK
                             ? dynamicKExperts(scores, router.tau, router.minK, layer.topK)
                             : topKExperts(scores, layer.topK);  // [n, k] I64
  at::Tensor chosen = at::zeros({n, E + 1}, at::kByte)
                          .scatter_(1, at::where(sel < 0, at::full_like(sel, E), sel), 1)
                          .narrow(1, 0, E)
                          .contiguous();  // [n, E]
  a.chosenAll.push_back(chosen);
  std::vector<at::Tensor> ys;
  for (int e = 0; e < E; ++e) {
    const int64_t off = w.layout.offsets[e], s = w.layout.expertSize(e);
    const at::Tensor he = h.narrow(1, off, s);                // [n, s]
    ys.push_back(at::matmul(he, w.downT.narrow(0, off, s)));  // [n, d_model]
    addFired(a, e, he, chosen.select(1, e).to(at::kBool), impl_->eps);
  }
  addOutputs(a, at::stack(ys, 1), scores);
}

nlohmann::json ExportDynamics::finish(int64_t tokens, NamedTensors& out) {
  if (tokens <= 0) throw ParameterError("the corpus gave no token to analyse");
  return finishDynamic(impl_->acc, tokens, out);
}

std::shared_ptr<const MoeFfn> withOracleRouters(const MoeFfn& moe) {
  std::vector<MoeLayer> layers = moe.layers();
  for (MoeLayer& l : layers) {
    if (!l.weights) continue;
    auto r = std::make_shared<LayerRouter>();
    r->kind = RouterKind::Oracle;
    r->experts = l.weights->layout.experts;
    l.router = r;  // top-k kept: a dynamic-k layer's most experts per token
  }
  return std::make_shared<MoeFfn>(std::move(layers), moe.dense(), moe.sites());
}

nlohmann::json exportStaticAnalysis(const MoeFfn& moe, int L, const AnalyzeOptions& o, NamedTensors& out,
                                    JobContext& job) {
  if (!moe.isMoe(L)) throw ParameterError(Site::ofLayer(L).name() + " is not a MoEfied layer");
  const MoeLayer& layer = moe.layers()[L];
  at::Tensor rows;
  std::string skip;
  switch (layer.router->kind) {
    case RouterKind::Similarity:
      rows = layer.router->centroids;
      break;
    case RouterKind::Sigmoid:
    case RouterKind::DynamicK:
      rows = layer.router->w1;
      break;
    case RouterKind::Mlp:
      skip = "the mlp router's W1 rows are hidden units mixed by W2, not one row per expert";
      break;
    case RouterKind::Oracle:
      skip = "the oracle router has no parameters";
      break;
  }
  nlohmann::json info = staticAnalysis(expertWeights(*layer.weights), rows, skip, Site::ofLayer(L).name(), o, out, job);
  info["router"] = routerKindName(layer.router->kind);
  info["shared_expert"] = layer.weights->layout.sharedSize();
  return info;
}

namespace {

// The dynamic analyses of a MoE export's `layers` over `sequences`, with its
// stored routers or (options.oracleRouter) the oracle's choice.
nlohmann::json exportDynamicAnalysis(Model& model, const std::shared_ptr<const MoeFfn>& moe,
                                     const std::vector<int>& layers, const std::vector<std::vector<int64_t>>& sequences,
                                     const AnalyzeOptions& o, NamedTensors& out, JobContext& job) {
  c10::InferenceMode guard;
  // The oracle's choice is analysed with the oracle routing the forward pass
  // too, so that later layers see the inputs the oracle MoE gives them.
  std::shared_ptr<const MoeFfn> analysed = o.oracleRouter ? withOracleRouters(*moe) : moe;
  struct Restore {
    Model& m;
    std::shared_ptr<const FfnOverride> saved;
    ~Restore() { m.setFfnOverride(saved); }
  } restore{model, model.ffnOverride()};
  model.setFfnOverride(analysed);
  ExportDynamics dyn(analysed, layers, o.fireEps);
  ExportSink sink(dyn, std::set<int>(layers.begin(), layers.end()));
  const int64_t N = runBatches(
      model, sequences, o, sink, [&](at::Tensor v) { sink.setValid(std::move(v)); }, out, job);
  return dyn.finish(N, out);
}

std::vector<int> exportLayersToAnalyse(const MoeFfn& moe, const std::vector<int>& layers,
                                       const std::string& modelName) {
  if (!moe.sites().empty())
    throw ParameterError(modelName +
                         ": an encoder-decoder MoE export; moefy analyze covers single-stack exports (blk.L sites)");
  std::vector<int> all;
  for (int L = 0; L < static_cast<int>(moe.layers().size()); ++L)
    if (moe.isMoe(L)) all.push_back(L);
  if (all.empty()) throw ParameterError(modelName + ": a MoE export without a MoEfied layer");
  if (layers.empty()) return all;
  std::set<int> chosen;
  for (int L : layers) {
    if (!moe.isMoe(L))
      throw ParameterError("--sites: " + Site::ofLayer(L).name() + " is not a MoEfied layer of " + modelName);
    chosen.insert(L);
  }
  return {chosen.begin(), chosen.end()};
}

}  // namespace

nlohmann::json analyzeMoeModel(const LoadedModel& loaded, const fs::path& modelDir, const fs::path& corpus,
                               const AnalyzeOptions& o, const fs::path& out, bool force, JobContext& job) {
  const std::string modelName = modelDir.string();
  Model& model = *loaded.model;
  std::shared_ptr<const MoeFfn> moe;
  if (loaded.isMoe()) {
    moe = std::dynamic_pointer_cast<const MoeFfn>(model.ffnOverride());
    if (!moe) throw FormatError(modelName + ": a MoE export whose MoE FFN is not installed");
  } else if (o.oracleRouter) {
    throw ParameterError("--router oracle: " + modelName +
                         " is not a MoE export of this project; the oracle is analysed for MoE exports only");
  }
  const std::vector<int> layers =
      moe ? exportLayersToAnalyse(*moe, o.layers, modelName) : moeLayersToAnalyse(model, o.layers, modelName);
  if (o.dynamicAnalyses && corpus.empty())
    throw ParameterError("the dynamic analyses need a CORPUS (give --static-only for the weight analyses alone)");
  checkOutput(out, force, "MoE analysis", {modelDir, corpus});
  const auto& c = model.config();

  // The corpus first, so that a bad one is refused before the static analyses' work.
  std::vector<std::vector<int64_t>> sequences;
  if (o.dynamicAnalyses) {
    job.setStage("read corpus");
    sequences = readSequences(corpus, loaded, o.seqLen, o.maxTokens, Split::All, &job);
  }
  NamedTensors tensors;
  nlohmann::json sites = nlohmann::json::object();
  std::set<int64_t> expertCounts, topKs, dExperts;
  for (int L : layers) {
    job.setStage("static " + Site::ofLayer(L).name());
    nlohmann::json info =
        moe ? exportStaticAnalysis(*moe, L, o, tensors, job) : staticExpertAnalysis(model, L, o, tensors, job);
    info["top_k"] = moe ? moe->layers()[L].topK : c.expertTopK;
    expertCounts.insert(info["experts"].get<int64_t>());
    topKs.insert(info["top_k"].get<int64_t>());
    dExperts.insert(info["d_expert"].is_null() ? -1 : info["d_expert"].get<int64_t>());
    sites[Site::ofLayer(L).name()] = info;
  }
  auto common = [](const std::set<int64_t>& v) {
    return v.size() == 1 && *v.begin() >= 0 ? nlohmann::json(*v.begin()) : nlohmann::json();
  };
  nlohmann::json doc;
  doc["format"] = kFormat;
  doc["version"] = 1;
  doc["tool_version"] = MOEFY_VERSION;
  doc["model"] = {{"dir", fs::absolute(modelDir).lexically_normal().string()},
                  {"fingerprint", model.fingerprint()},
                  {"model_type", c.modelType},
                  {"kind", moe ? "moefied export" : "native"},
                  {"experts", common(expertCounts)},
                  {"top_k", common(topKs)},
                  {"d_expert", common(dExperts)},
                  {"d_model", c.dModel}};
  // The routing analysed: the native router, an export's stored router kind, or the oracle.
  std::string routerKind = "native";
  if (moe) routerKind = o.oracleRouter ? "oracle" : routerKindName(moe->layers()[layers[0]].router->kind);
  doc["router"] = {{"kind", routerKind}, {"source", o.oracleRouter ? "oracle" : "stored"}};
  doc["options"] = {{"static_only", !o.dynamicAnalyses},
                    {"seq_len", o.seqLen},
                    {"batch", o.batch},
                    {"tokens", o.maxTokens},
                    {"fire_eps", o.fireEps},
                    {"match_max", o.matchMaxNeurons},
                    {"router", o.oracleRouter ? "oracle" : "stored"}};
  doc["corpus"] = nullptr;
  if (o.dynamicAnalyses) {
    job.setStage("dynamic analyses");
    nlohmann::json dyn = moe ? exportDynamicAnalysis(model, moe, layers, sequences, o, tensors, job)
                             : dynamicExpertAnalysis(model, layers, sequences, o, tensors, job);
    for (auto& [site, v] : dyn["sites"].items()) sites[site]["dynamic"] = v;
    doc["corpus"] = {{"path", fs::absolute(corpus).lexically_normal().string()},
                     {"sequences", sequences.size()},
                     {"tokens", dyn["tokens"]}};
    doc["top1_norm_share"] = dyn["top1_norm_share"];
    if (loaded.tokenizer) {
      nlohmann::json text = nlohmann::json::array();
      for (const auto& [name, t] : tensors) {
        if (name != "token_ids") continue;
        const int64_t* p = t.data_ptr<int64_t>();
        for (int64_t i = 0; i < t.numel(); ++i) text.push_back(loaded.tokenizer->idToToken(static_cast<int32_t>(p[i])));
      }
      doc["token_text"] = text;
    }
  }
  doc["sites"] = sites;
  nlohmann::json list = nlohmann::json::object();
  for (const auto& [name, t] : tensors) list[name] = t.sizes().vec();
  doc["tensors"] = list;

  job.setStage("write");
  // token_text may hold bytes that are not UTF-8 (byte-level vocabularies): replaced, not thrown on.
  const std::string text = doc.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  writeFolderAtomic(out, force,
                    [&](const fs::path& tmp) {
                      writeSafetensors(tmp / "analysis.safetensors", tensors, {{"format", kFormat}});
                      writeFileAtomic(tmp / "analysis.json", text);
                    },
                    {modelDir, corpus});
  return doc;
}

at::Tensor MoeAnalysis::tensor(const std::string& name) const {
  if (!file->contains(name)) throw FormatError(file->path().string() + ": has no tensor '" + name + "'");
  return file->raw(name);
}

bool MoeAnalysis::has(const std::string& name) const { return file->contains(name); }

MoeAnalysis readMoeAnalysis(const fs::path& dir) {
  const fs::path metaPath = dir / "analysis.json";
  MoeAnalysis a;
  a.meta = readJsonFile(metaPath);
  const std::string where = metaPath.string();
  if (!a.meta.is_object() || a.meta.value("format", std::string()) != kFormat)
    throw FormatError(where + ": not a MoE analysis (\"format\" is not \"" + kFormat + "\")");
  if (jsonInt(a.meta.value("version", nlohmann::json()), 1, 1, where + ": version") != 1)
    throw FormatError(where + ": unsupported version");
  if (!a.meta.contains("sites") || !a.meta["sites"].is_object())
    throw FormatError(where + ": \"sites\" is missing or not an object");
  if (!a.meta.contains("tensors") || !a.meta["tensors"].is_object())
    throw FormatError(where + ": \"tensors\" is missing or not an object");
  // Version 1 files written before MoE exports were analysed have no model.kind: native.
  if (a.meta.contains("model") && a.meta["model"].is_object() && a.meta["model"].contains("kind")) {
    const nlohmann::json& kind = a.meta["model"]["kind"];
    if (!kind.is_string() || (kind != "native" && kind != "moefied export"))
      throw FormatError(where + ": model.kind must be \"native\" or \"moefied export\"");
  }
  a.file = SafetensorsFile::open(dir / "analysis.safetensors");
  for (const auto& [name, shape] : a.meta["tensors"].items()) {
    const TensorInfo* t = a.file->find(name);
    if (!t) throw FormatError(a.file->path().string() + ": has no tensor '" + name + "' (listed in analysis.json)");
    const std::vector<int> listed = jsonIntList(shape, 0, std::numeric_limits<int>::max(), where + ": tensors." + name);
    const std::vector<int64_t> want(listed.begin(), listed.end());
    if (want != t->shape)
      throw FormatError(a.file->path().string() + ": tensor '" + name + "' has shape " + shapeString(t->shape) +
                        ", analysis.json says " + shapeString(want));
  }
  return a;
}

}  // namespace moefy
