#include "analysis/analyze/moe_analysis.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <set>

#include "analysis/analyze/moe_stats.h"
#include "analysis/checkpoint/loader.h"
#include "analysis/common/error.h"
#include "analysis/eval/sequences.h"
#include "analysis/io/fsutil.h"
#include "analysis/io/json_input.h"
#include "analysis/io/safetensors.h"
#include "analysis/jobs/job.h"
#include "analysis/model/model.h"

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

// One expert's weights, contiguous F32: gate/up [F, d_model], down [d_model, F].
struct ExpertWeights {
  at::Tensor gate, up, down;
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

const at::Tensor& projection(const ExpertWeights& w, int p) { return p == 0 ? w.gate : p == 1 ? w.up : w.down; }

// Dot products of the flattened projection p of every pair of experts, in
// double without a double copy of the weights (they may be gigabytes).
Eigen::MatrixXd flatGram(const std::vector<ExpertWeights>& w, int p) {
  const int E = static_cast<int>(w.size());
  Eigen::MatrixXd G(E, E);
  for (int i = 0; i < E; ++i) {
    const at::Tensor& a = projection(w[i], p);
    const Eigen::Map<const Eigen::VectorXf> va(a.data_ptr<float>(), a.numel());
    for (int j = i; j < E; ++j) {
      const at::Tensor& b = projection(w[j], p);
      const Eigen::Map<const Eigen::VectorXf> vb(b.data_ptr<float>(), b.numel());
      G(i, j) = G(j, i) = va.cast<double>().dot(vb.cast<double>());
    }
  }
  return G;
}

// Expert e's neuron vectors [F, 3 d_model]: row a = [gate row a | up row a | down column a].
MatrixXdR neuronVectors(const ExpertWeights& w) { return toEigen(at::cat({w.gate, w.up, w.down.t()}, 1)); }

double rowCosine(const MatrixXdR& A, Eigen::Index a, const MatrixXdR& B, Eigen::Index b, Eigen::Index from,
                 Eigen::Index len) {
  const auto x = A.row(a).segment(from, len);
  const auto y = B.row(b).segment(from, len);
  const double n = x.norm() * y.norm();
  return n > 0 ? std::clamp(x.dot(y) / n, -1.0, 1.0) : 0.0;
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
  const auto& c = model.config();
  if (!c.moeLayer(L)) throw ParameterError(Site::ofLayer(L).name() + " is not a MoE layer");
  const int E = c.expertCount;
  const int64_t F = c.dExpert, d = c.dModel;
  const std::string site = Site::ofLayer(L).name();
  const std::vector<ExpertWeights> w = expertWeights(model, L);
  nlohmann::json info;
  info["experts"] = E;
  info["d_expert"] = F;

  // Flattened and neuron-mean similarities, per projection.
  Eigen::MatrixXd flatSim[3], meanSim[3], gramAll = Eigen::MatrixXd::Zero(E, E);
  for (int p = 0; p < 3; ++p) {
    const Eigen::MatrixXd G = flatGram(w, p);
    gramAll += G;
    flatSim[p] = cosineFromGram(G);
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
  const at::Tensor router = model.tensors().at(model.tensorName(Role::MoeRouter, L));  // [E, d_model]
  const Eigen::MatrixXd routerSim = cosineMatrix(toEigen(router));
  out.emplace_back(site + ".router_sim", toTensor(routerSim));
  const std::vector<double> routerPairs = upperOffDiagonal(routerSim);
  nlohmann::json r2Flat, r2Mean;
  for (int p = 0; p < 3; ++p) {
    r2Flat[kProjections[p]] = r2Json(linearFitR2(upperOffDiagonal(flatSim[p]), routerPairs));
    r2Mean[kProjections[p]] = r2Json(linearFitR2(upperOffDiagonal(meanSim[p]), routerPairs));
  }
  info["router_r2"] = {{"sim", r2Flat}, {"mean_sim", r2Mean}};

  // Experts' PCA from the Gram matrix of their flattened [gate | up | down].
  const Pca2 expertPca = pca2FromGram(gramAll);
  out.emplace_back(site + ".pca.experts", toTensor(Eigen::MatrixXd(expertPca.scores)));
  nlohmann::json explained;
  explained["experts"] = {expertPca.explained[0], expertPca.explained[1]};

  const bool neuronsFit = E * F * 3 * d <= kMaxNeuronValues;
  const bool match = F <= o.matchMaxNeurons && neuronsFit;
  std::vector<MatrixXdR> neurons;  // E x [F, 3 d_model]
  if (match || neuronsFit)
    for (int e = 0; e < E; ++e) neurons.push_back(neuronVectors(w[e]));

  if (neuronsFit) {
    MatrixXdR all(E * F, 3 * d);
    for (int e = 0; e < E; ++e) all.middleRows(e * F, F) = neurons[e];
    const Pca2 neuronPca = pca2(all);
    out.emplace_back(site + ".pca.neurons", toTensor(Eigen::MatrixXd(neuronPca.scores)));
    out.emplace_back(site + ".pca.neuron_expert", at::arange(E, at::kInt).repeat_interleave(F));
    explained["neurons"] = {neuronPca.explained[0], neuronPca.explained[1]};
  } else {
    explained["neurons"] = nullptr;
    job.log(site + ": neuron PCA skipped (" + std::to_string(E * F) + " neurons x " + std::to_string(3 * d) +
            " values exceed 2^28)");
  }
  info["pca_explained"] = explained;

  if (!match) {
    info["matching"] = "skipped: d_expert " + std::to_string(F) +
                       (F > o.matchMaxNeurons ? " > --match-max " + std::to_string(o.matchMaxNeurons)
                                              : " neurons exceed the memory bound");
    job.log(site + ": neuron matching " + info["matching"].get<std::string>());
    return info;
  }
  info["matching"] = "optimal";
  Eigen::MatrixXd matchSim = Eigen::MatrixXd::Identity(E, E), tau = Eigen::MatrixXd::Identity(E, E);
  Eigen::MatrixXd matchProj[3];
  for (auto& m : matchProj) m = Eigen::MatrixXd::Identity(E, E);
  at::Tensor perm = at::arange(F, at::kInt).repeat({E, E, 1}).contiguous();  // [E, E, F]
  auto pa = perm.accessor<int32_t, 3>();
  // The diagonal: a zero neuron has cosine 0 with itself (cosineMatrix's rule).
  for (int e = 0; e < E; ++e) {
    const Eigen::MatrixXd self = cosineMatrix(neurons[e]);
    matchSim(e, e) = self.diagonal().mean();
    for (int p = 0; p < 3; ++p) {
      double s = 0;
      for (int64_t a = 0; a < F; ++a) s += rowCosine(neurons[e], a, neurons[e], a, p * d, d);
      matchProj[p](e, e) = s / static_cast<double>(F);
    }
  }
  const int pairs = E * (E - 1) / 2;
  int done = 0;
  for (int i = 0; i < E; ++i) {
    for (int j = i + 1; j < E; ++j) {
      job.checkCancel();
      const Eigen::MatrixXd S = cosineMatrix(neurons[i], neurons[j]);  // [F, F]
      const std::vector<int64_t> p = maxAssignment(S);
      double total = 0, proj[3] = {0, 0, 0};
      std::vector<int64_t> inverse(F);
      for (int64_t a = 0; a < F; ++a) {
        total += S(a, p[a]);
        for (int q = 0; q < 3; ++q) proj[q] += rowCosine(neurons[i], a, neurons[j], p[a], q * d, d);
        pa[i][j][a] = static_cast<int32_t>(p[a]);
        inverse[p[a]] = a;
      }
      for (int64_t b = 0; b < F; ++b) pa[j][i][b] = static_cast<int32_t>(inverse[b]);
      matchSim(i, j) = matchSim(j, i) = total / static_cast<double>(F);
      for (int q = 0; q < 3; ++q) matchProj[q](i, j) = matchProj[q](j, i) = proj[q] / static_cast<double>(F);
      // A permutation and its inverse have the same inversions, so one tau serves both directions.
      tau(i, j) = tau(j, i) = kendallTauToIdentity(p);
      job.setProgress(static_cast<double>(++done) / pairs);
    }
  }
  out.emplace_back(site + ".match_sim", toTensor(matchSim));
  for (int q = 0; q < 3; ++q) out.emplace_back(site + ".match_sim." + kProjections[q], toTensor(matchProj[q]));
  out.emplace_back(site + ".match_tau", toTensor(tau));
  out.emplace_back(site + ".match_perm", perm);
  return info;
}

namespace {

// The per-layer accumulators of the dynamic analyses.
struct LayerAcc {
  int layer = 0;
  at::Tensor logits;                  // [n, E] F64, this batch's valid tokens
  at::Tensor chosen;                  // [n, E] U8, this batch
  std::vector<at::Tensor> outputs;    // E x [n, d_model] F64, this batch
  at::Tensor outSimSum;               // [E, E] F64, sum over tokens of the angular similarity
  at::Tensor rankCounts;              // [E * E] I64
  int64_t top1Hits = 0;               // tokens whose top-scored expert has the largest output norm
  std::vector<at::Tensor> chosenAll;  // per batch [n, E] U8
  at::Tensor fired;                   // [E, F] bool: neuron fired on a routed token
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

class AnalysisSink : public HookSink {
 public:
  AnalysisSink(const Model& model, const std::vector<int>& layers, const AnalyzeOptions& o)
      : model_(model), eps_(o.fireEps) {
    const auto& c = model.config();
    for (int L : layers) {
      LayerAcc a;
      a.layer = L;
      a.outSimSum = at::zeros({c.expertCount, c.expertCount}, at::kDouble);
      a.rankCounts = at::zeros({int64_t{c.expertCount} * c.expertCount}, at::kLong);
      a.fired = at::zeros({c.expertCount, c.dExpert}, at::kBool);
      a.outputs.resize(c.expertCount);
      acc_.emplace(L, std::move(a));
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
      at::Tensor routed = a.chosen.select(1, s.expert).to(at::kBool);                          // [n]
      if (routed.any().item<bool>()) {
        at::Tensor f = (h.index({routed}).abs() > eps_).any(0);  // [F]
        a.fired[s.expert].logical_or_(f);
      }
      if (s.expert == E - 1) finishBatch(a);
    }
  }

 private:
  void finishBatch(LayerAcc& a) {
    const int64_t E = static_cast<int64_t>(a.outputs.size());
    at::Tensor Y = at::stack(a.outputs, 1);  // [n, E, d_model]
    at::Tensor norms = Y.norm(2, {-1});      // [n, E]
    at::Tensor inv = at::where(norms > 0, 1.0 / norms, at::zeros_like(norms));
    at::Tensor Yn = Y * inv.unsqueeze(-1);
    at::Tensor cos = at::bmm(Yn, Yn.transpose(1, 2)).clamp(-1.0, 1.0);  // [n, E, E]
    a.outSimSum += (1.0 - at::acos(cos) / M_PI).sum(0);
    at::Tensor scoreOrder, normOrder;
    at::Tensor rs = ranksOf(a.logits, &scoreOrder), rn = ranksOf(norms, &normOrder);  // [n, E]
    a.rankCounts += at::bincount((rs * E + rn).flatten(), {}, E * E);
    a.top1Hits += (scoreOrder.select(1, 0) == normOrder.select(1, 0)).sum().item<int64_t>();
    for (auto& y : a.outputs) y = at::Tensor();
  }

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
  std::vector<at::Tensor> tokenIds, tokenSeq;
  const size_t S = sequences.size();
  const size_t B = static_cast<size_t>(std::max(1, o.batch));
  for (size_t start = 0; start < S; start += B) {
    job.checkCancel();
    std::vector<std::vector<int64_t>> part(sequences.begin() + start, sequences.begin() + std::min(S, start + B));
    const Batch batch = makeBatch(part);
    at::Tensor valid = batch.mask.flatten().nonzero().squeeze(1);  // [n] flat positions b * T + t
    sink.setValid(valid);
    model.forward(batch, &sink);
    tokenIds.push_back(batch.ids.flatten().index_select(0, valid));
    tokenSeq.push_back((at::div(valid, batch.seqLen(), "floor") + static_cast<int64_t>(start)).to(at::kInt));
    job.setProgress(static_cast<double>(std::min(S, start + B)) / static_cast<double>(S));
  }
  const at::Tensor ids = tokenIds.empty() ? at::zeros({0}, at::kLong) : at::cat(tokenIds);
  const int64_t N = ids.numel();
  if (N == 0) throw ParameterError("the corpus gave no token to analyse");
  out.emplace_back("token_ids", ids);
  out.emplace_back("token_sequence", at::cat(tokenSeq));

  nlohmann::json sites = nlohmann::json::object();
  at::Tensor rankTotal;
  int64_t hitsTotal = 0;
  std::vector<std::pair<int, at::Tensor>> chosenByLayer;
  for (auto& [L, a] : sink.layers()) {
    const std::string site = Site::ofLayer(L).name();
    const int64_t E = c.expertCount;
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
    // Every MoE layer of a native model has the same E (config expertCount).
    rankTotal = rankTotal.defined() ? rankTotal + counts : counts;
    hitsTotal += a.top1Hits;
    s["top1_norm_share"] = static_cast<double>(a.top1Hits) / static_cast<double>(N);
    at::Tensor chosen = at::cat(a.chosenAll).contiguous();  // [N, E] U8
    out.emplace_back(site + ".chosen", chosen);
    chosenByLayer.emplace_back(L, chosen);
    const UsageHealth h =
        usageHealth(Eigen::Map<const Eigen::Matrix<uint8_t, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>(
            chosen.data_ptr<uint8_t>(), N, E));
    out.emplace_back(site + ".usage", toTensor(h.share));
    out.emplace_back(site + ".cooccurrence", toTensor(h.cooccurrence));
    s["usage_perplexity"] = h.perplexity;
    s["dead_share"] = h.deadShare;
    out.emplace_back(site + ".channel_usage", a.fired.to(at::kDouble).mean(1));
    sites[site] = s;
  }
  for (size_t i = 0; i + 1 < chosenByLayer.size(); ++i) {
    const auto& [L, a] = chosenByLayer[i];
    const auto& [next, b] = chosenByLayer[i + 1];
    const std::string site = Site::ofLayer(L).name();
    at::Tensor both = (a * b).sum(1).to(at::kDouble);  // [N] experts chosen at both layers
    sites[site]["overlap_next"] = both.mean().item<double>() / c.expertTopK;
    sites[site]["next"] = Site::ofLayer(next).name();
    // Counts below 2^53 are exact in double; the product then rounds back to integers.
    out.emplace_back(site + ".transition", at::matmul(a.t().to(at::kDouble), b.to(at::kDouble)).round().to(at::kLong));
  }
  nlohmann::json r;
  r["sites"] = sites;
  r["tokens"] = N;
  r["top1_norm_share"] = static_cast<double>(hitsTotal) / static_cast<double>(N * sink.layers().size());
  out.emplace_back("rank_counts", rankTotal);
  return r;
}

nlohmann::json analyzeMoeModel(const LoadedModel& loaded, const fs::path& modelDir, const fs::path& corpus,
                               const AnalyzeOptions& o, const fs::path& out, bool force, JobContext& job) {
  const std::string modelName = modelDir.string();
  if (loaded.isMoe())
    throw ParameterError(modelName +
                         ": is a MoE export of this project; moefy analyze covers native MoE checkpoints (Mixtral, "
                         "Qwen2-MoE, OLMoE): its routers are not linear maps with one row per expert");
  const Model& model = *loaded.model;
  const std::vector<int> layers = moeLayersToAnalyse(model, o.layers, modelName);
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
  for (int L : layers) {
    job.setStage("static " + Site::ofLayer(L).name());
    sites[Site::ofLayer(L).name()] = staticExpertAnalysis(model, L, o, tensors, job);
  }
  nlohmann::json doc;
  doc["format"] = kFormat;
  doc["version"] = 1;
  doc["tool_version"] = MOEFY_VERSION;
  doc["model"] = {{"dir", fs::absolute(modelDir).lexically_normal().string()},
                  {"fingerprint", model.fingerprint()},
                  {"model_type", c.modelType},
                  {"experts", c.expertCount},
                  {"top_k", c.expertTopK},
                  {"d_expert", c.dExpert},
                  {"d_model", c.dModel}};
  doc["options"] = {{"static_only", !o.dynamicAnalyses},
                    {"seq_len", o.seqLen},
                    {"batch", o.batch},
                    {"tokens", o.maxTokens},
                    {"fire_eps", o.fireEps},
                    {"match_max", o.matchMaxNeurons}};
  doc["corpus"] = nullptr;
  if (o.dynamicAnalyses) {
    job.setStage("dynamic analyses");
    nlohmann::json dyn = dynamicExpertAnalysis(model, layers, sequences, o, tensors, job);
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
